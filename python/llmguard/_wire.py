"""Frames and messages of the llmguard wire protocol (proto/PROTOCOL.md).

Like the C codec, nothing here does I/O: requests go out as frame bytes,
frame bytes come in as checked reply maps.  A frame is a 4-byte big-endian
length (1 to 65536) and one msgpack map.  Each reply is checked against the
table of its operation below (the reply field tables of PROTOCOL.md): a
reply that misses a required field, or holds one of the wrong type, is a
:class:`ProtocolError`, as libllmguard's EPROTO.
"""
import math
import struct
from typing import Any, Callable, Dict, List, Optional, Tuple

import msgpack

from .errors import InvalidRequest, ProtocolError, from_wire

PROTOCOL_VERSION = 1
MAX_FRAME = 65536
_LEN = struct.Struct(">I")

# Field checkers, one per field type of PROTOCOL.md ("Keys and field types").
Check = Callable[[Any], bool]


def _is_uint(v: Any) -> bool:
    return type(v) is int and v >= 0


def _is_int(v: Any) -> bool:
    return type(v) is int


def _is_double(v: Any) -> bool:
    return (type(v) is float and math.isfinite(v)) or type(v) is int


def _is_str(v: Any) -> bool:
    return type(v) is str


def _is_bool(v: Any) -> bool:
    return type(v) is bool


def _is_strs(v: Any) -> bool:
    return type(v) is list and all(type(x) is str for x in v)


def _is_doubles(v: Any) -> bool:
    return type(v) is list and all(_is_double(x) for x in v)


# A table row: (name, checker or nested table for a map array, presence);
# presence is "required", "optional" or "nullable" (optional, nil = absent).
Row = Tuple[str, Any, str]
R, O, N = "required", "optional", "nullable"

_PROVIDER_STATUS: List[Row] = [
    ("name", _is_str, R), ("available_tokens", _is_double, R),
    ("rate_per_sec", _is_double, R), ("max_tokens", _is_double, R),
    ("waiters", _is_uint, R), ("tokens_per_min", _is_double, R),
    ("state", _is_str, R), ("cooldown_remaining_s", _is_double, R),
    ("latency_ewma_ms", _is_double, N), ("cooldown_cause", _is_str, O),
    ("cooldown_since", _is_double, O), ("retry_after_s", _is_double, O),
    ("available_llm_tokens", _is_double, O), ("rate_source", _is_str, O),
    ("tokens_per_min_source", _is_str, O), ("cooldown_host", _is_str, O),
]
_MODEL_STATUS: List[Row] = [
    ("alias", _is_str, R), ("model", _is_str, R), ("provider", _is_str, R),
    ("group", _is_str, R), ("rate_per_sec", _is_double, R),
    ("tokens_per_min", _is_double, R), ("waiters", _is_uint, R),
    ("state", _is_str, R), ("cooldown_remaining_s", _is_double, R),
    ("latency_ewma_ms", _is_double, N), ("available_tokens", _is_double, O),
    ("max_tokens", _is_double, O), ("available_llm_tokens", _is_double, O),
    ("cooldown_cause", _is_str, O), ("cooldown_since", _is_double, O),
    ("retry_after_s", _is_double, O),
]
_METRIC_SERIES: List[Row] = [
    ("labels", _is_strs, R), ("value", _is_double, O), ("count", _is_uint, O),
    ("sum", _is_double, O), ("buckets", _is_doubles, O),
]
_METRIC_FAMILY: List[Row] = [
    ("name", _is_str, R), ("type", _is_str, R), ("help", _is_str, R),
    ("label_names", _is_strs, R), ("bounds", _is_doubles, O),
    ("series", _METRIC_SERIES, R),
]
_ERR: List[Row] = [
    ("code", _is_str, R), ("msg", _is_str, R), ("subject", _is_str, O),
    ("tokens_used", _is_uint, O), ("tokens_limit", _is_uint, O),
    ("reset_at", _is_double, N),
]

#: The reply table of every operation of protocol version 1.
REPLIES: Dict[str, List[Row]] = {
    "hello": [("version", _is_uint, R), ("server", _is_str, R)],
    "ping": [("uptime_s", _is_double, O)],
    "acquire": [("waited_ms", _is_double, R)],
    "release": [("available_tokens", _is_double, R)],
    "limiter_status": [
        ("available_tokens", _is_double, R), ("rate_per_sec", _is_double, R),
        ("max_tokens", _is_double, R), ("enabled", _is_bool, R),
        ("waiters", _is_uint, R), ("tokens_per_min", _is_double, R),
        ("available_llm_tokens", _is_double, O)],
    "status": [
        ("enabled", _is_bool, R), ("policy", _is_str, R),
        ("enforcement", _is_str, R), ("window_days", _is_double, R),
        ("default_quota_tokens", _is_uint, O), ("quota_from", _is_str, O),
        ("providers", _PROVIDER_STATUS, R), ("version", _is_str, O),
        ("env_file", _is_str, O), ("database", _is_str, O),
        ("uptime_s", _is_double, O), ("connections", _is_uint, O),
        ("open_permits", _is_uint, O), ("last_flush", _is_double, N),
        ("store", _is_str, O), ("store_error", _is_str, O),
        ("models", _MODEL_STATUS, O)],
    "quota_reserve": [
        ("allowed", _is_bool, R), ("over_quota", _is_bool, R),
        ("subject", _is_str, R), ("tokens_used", _is_uint, R),
        ("tokens_limit", _is_uint, R), ("tokens_remaining", _is_uint, R),
        ("reset_at", _is_double, N), ("reservation", _is_int, R)],
    "quota_commit": [],
    "quota_status": [
        ("subject", _is_str, R), ("tokens_used", _is_uint, R),
        ("tokens_remaining", _is_uint, R), ("tokens_limit", _is_uint, R),
        ("window_start", _is_double, R), ("window_end", _is_double, R),
        ("reset_at", _is_double, N), ("known", _is_bool, O)],
    "quota_set": [("subject", _is_str, R), ("tokens_limit", _is_uint, R)],
    "quota_reset": [("subject", _is_str, R)],
    "select_provider": [("provider", _is_str, R),
                        ("all_degraded", _is_bool, R)],
    "permit": [
        ("permit_id", _is_uint, R), ("provider", _is_str, R),
        ("wait_ms", _is_double, R), ("quota_allowed", _is_bool, R),
        ("quota_remaining", _is_uint, N), ("rate_limited", _is_bool, R),
        ("all_degraded", _is_bool, R), ("model", _is_str, O)],
    "report": [("state", _is_str, R), ("cooldown_remaining_s", _is_double, R)],
    "metrics": [
        ("families", _METRIC_FAMILY, O), ("text", _is_str, O),
        ("next_cursor", _is_uint, O)],
    "reload": [("providers", _is_uint, R), ("env_file", _is_str, R)],
}


def _check(msg: Any, table: List[Row], where: str) -> None:
    """Check msg against table in place; a nullable field left out or nil
    becomes None."""
    if type(msg) is not dict:
        raise ProtocolError(f"{where}: expected a map")
    for name, check, presence in table:
        v = msg.get(name)
        if v is None:
            if presence == R:
                raise ProtocolError(f"{where}: missing field '{name}'")
            if presence == N:
                msg[name] = None
            elif name in msg:
                raise ProtocolError(f"{where}: field '{name}' is nil")
            continue
        if type(check) is list:
            if type(v) is not list:
                raise ProtocolError(f"{where}: field '{name}': expected an "
                                    "array of maps")
            for item in v:
                _check(item, check, f"{where}.{name}")
        elif not check(v):
            raise ProtocolError(f"{where}: field '{name}' has the wrong type")


class Packer:
    """Encodes requests as frames: the fields in the order given, then op
    and id, as the C codec writes them.  Not thread-safe: one per
    connection."""

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=True)

    def frame(self, op: str, rid: int, fields: Dict[str, Any]) -> bytes:
        """The frame of request ``op`` with id ``rid``; fields whose value
        is None are left out."""
        if op not in REPLIES:
            raise InvalidRequest(f"unknown operation '{op}'")
        msg = {k: v for k, v in fields.items() if v is not None}
        msg["op"] = op
        msg["id"] = rid
        try:
            body = self._packer.pack(msg)
        except (OverflowError, TypeError, ValueError) as e:
            raise InvalidRequest(f"{op}: a field cannot be encoded: {e}") \
                from None
        if len(body) > MAX_FRAME:
            raise InvalidRequest(f"{op}: the request does not fit in a frame "
                                 f"({len(body)} bytes, at most {MAX_FRAME})")
        return _LEN.pack(len(body)) + body


def next_frame(buf: bytearray) -> Optional[bytes]:
    """Take one whole frame's body off the front of buf, or None when buf
    does not hold one yet."""
    if len(buf) < 4:
        return None
    n = _LEN.unpack_from(buf)[0]
    if n < 1 or n > MAX_FRAME:
        raise ProtocolError(f"bad frame from llmguardd: length {n}")
    if len(buf) < 4 + n:
        return None
    body = bytes(buf[4:4 + n])
    del buf[:4 + n]
    return body


def decode_reply(body: bytes) -> Dict[str, Any]:
    """The reply map of a frame body, checked for ``id`` and ``ok`` (its
    result fields are checked by :func:`result`)."""
    try:
        msg = msgpack.unpackb(body, raw=False, strict_map_key=False,
                              unicode_errors="surrogateescape")
    except Exception as e:  # msgpack's errors share no base class
        raise ProtocolError(f"a reply is not one msgpack value: {e}") from None
    if type(msg) is not dict:
        raise ProtocolError("a reply is not a map")
    if not _is_uint(msg.get("id")) or not _is_bool(msg.get("ok")):
        raise ProtocolError("a reply without a valid 'id' and 'ok'")
    return msg


def result(op: str, msg: Dict[str, Any]) -> Dict[str, Any]:
    """The result fields of reply msg to op, checked, or the exception of
    an error reply raised."""
    if not msg["ok"]:
        err = msg.get("err")
        _check(err, _ERR, f"error reply to {op}")
        raise from_wire(err)
    _check(msg, REPLIES[op], f"reply to {op}")
    return msg

