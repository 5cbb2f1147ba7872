"""The codec without a daemon: frames byte for byte as proto/PROTOCOL.md's
examples, replies checked against the field tables, errors mapped."""
from datetime import datetime, timezone

import msgpack
import pytest

from llmguard import _wire, errors


def hexbytes(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


def test_ping_frame_is_protocol_md_example():
    assert _wire.Packer().frame("ping", 1, {}) == hexbytes(
        "00 00 00 0d 82 a2 6f 70 a4 70 69 6e 67 a2 69 64 01")


def test_acquire_frame_is_protocol_md_example():
    frame = _wire.Packer().frame("acquire", 7, {
        "provider": "groq", "tokens": 1, "llm_tokens": None,
        "timeout_ms": 1000.0})
    assert frame == hexbytes(
        "00 00 00 3a 85 a8 70 72 6f 76 69 64 65 72 a4 67 72 6f 71 a6 74 6f"
        "6b 65 6e 73 01 aa 74 69 6d 65 6f 75 74 5f 6d 73 cb 40 8f 40 00 00"
        "00 00 00 a2 6f 70 a7 61 63 71 75 69 72 65 a2 69 64 07")


def test_permit_frame_is_protocol_md_example():
    frame = _wire.Packer().frame("permit", 1, {
        "workflow_id": "wf", "tokens_estimate": 500, "timeout_ms": 1000.0,
        "call_id": "c1"})
    assert frame == hexbytes(
        "00 00 00 50 86 ab 77 6f 72 6b 66 6c 6f 77 5f 69 64 a2 77 66 af 74"
        "6f 6b 65 6e 73 5f 65 73 74 69 6d 61 74 65 cd 01 f4 aa 74 69 6d 65"
        "6f 75 74 5f 6d 73 cb 40 8f 40 00 00 00 00 00 a7 63 61 6c 6c 5f 69"
        "64 a2 63 31 a2 6f 70 a6 70 65 72 6d 69 74 a2 69 64 01")


def test_reply_examples_decode():
    body = hexbytes(
        "83 a8 75 70 74 69 6d 65 5f 73 cb 40 1f e1 1a c1 d5 d6 80 a2 69 64"
        "01 a2 6f 6b c3")
    msg = _wire.decode_reply(body)
    assert _wire.result("ping", msg)["uptime_s"] == pytest.approx(7.9698286)
    err = hexbytes(
        "83 a2 69 64 05 a2 6f 6b c2 a3 65 72 72 82 a4 63 6f 64 65 aa 75 6e"
        "6b 6e 6f 77 6e 5f 6f 70 a3 6d 73 67 b7 75 6e 6b 6e 6f 77 6e 20 6f"
        "70 20 27 66 72 6f 62 6e 69 63 61 74 65 27")
    with pytest.raises(errors.ProtocolError, match="unknown op 'frobnicate'"):
        _wire.result("ping", _wire.decode_reply(err))


def test_quota_exceeded_carries_its_details():
    body = msgpack.packb({"id": 9, "ok": False, "err": {
        "code": "quota_exceeded", "msg": "workflow:wf would exceed",
        "subject": "workflow:wf", "tokens_used": 90, "tokens_limit": 100,
        "reset_at": 1800000000.5}})
    with pytest.raises(errors.QuotaExceededError) as ei:
        _wire.result("quota_reserve", _wire.decode_reply(body))
    e = ei.value
    assert (e.subject, e.tokens_used, e.tokens_limit) == \
        ("workflow:wf", 90, 100)
    assert e.reset_at == datetime.fromtimestamp(1800000000.5, timezone.utc)
    assert isinstance(e, errors.LlmguardError) and e.code == "quota_exceeded"


@pytest.mark.parametrize("code, cls", [
    ("bad_request", errors.InvalidRequest),
    ("frame_too_large", errors.InvalidRequest),
    ("unknown_provider", errors.NoProviderError),
    ("no_provider", errors.NoProviderError),
    ("timeout", errors.RateLimitTimeout),
    ("permission_denied", errors.PermissionDenied),
    ("version", errors.ProtocolError),
    ("internal", errors.LlmguardError),
    ("busy", errors.LlmguardError),
    ("no_such_code", errors.ProtocolError),
])
def test_error_codes_map_to_classes(code, cls):
    e = errors.from_wire({"code": code, "msg": "why"})
    assert type(e) is cls
    assert "why" in str(e)


@pytest.mark.parametrize("reply, why", [
    ({"id": 1, "ok": True}, "missing field 'waited_ms'"),
    ({"id": 1, "ok": True, "waited_ms": "soon"}, "wrong type"),
    ({"id": 1, "ok": True, "waited_ms": True}, "wrong type"),
    ({"id": 1, "ok": False}, "expected a map"),
    ({"id": 1, "ok": False, "err": {"code": "timeout"}},
     "missing field 'msg'"),
])
def test_malformed_replies_are_protocol_errors(reply, why):
    msg = _wire.decode_reply(msgpack.packb(reply))
    with pytest.raises(errors.ProtocolError, match=why):
        _wire.result("acquire", msg)


def test_nested_tables_are_checked():
    provider = {"name": "groq", "available_tokens": 1.0, "rate_per_sec": 1,
                "max_tokens": 1.0, "waiters": 0, "tokens_per_min": 0.0,
                "state": "healthy", "cooldown_remaining_s": 0.0,
                "latency_ewma_ms": None}
    ok = {"id": 1, "ok": True, "enabled": True, "policy": "primary",
          "enforcement": "soft", "window_days": 30.0, "providers": [provider]}
    rep = _wire.result("status", _wire.decode_reply(msgpack.packb(ok)))
    assert rep["providers"][0]["latency_ewma_ms"] is None
    bad = dict(ok, providers=[dict(provider, waiters=-1)])
    with pytest.raises(errors.ProtocolError, match="providers"):
        _wire.result("status", _wire.decode_reply(msgpack.packb(bad)))


def test_decode_refuses_what_is_not_a_reply():
    for body in (b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"ok": True}),
                 msgpack.packb({"id": 1, "ok": True}) + b"\x00"):
        with pytest.raises(errors.ProtocolError):
            _wire.decode_reply(body)


def test_next_frame_waits_for_whole_frames_and_checks_lengths():
    frame = _wire.Packer().frame("ping", 3, {})
    buf = bytearray(frame[:5])
    assert _wire.next_frame(buf) is None
    buf += frame[5:] + frame
    assert _wire.next_frame(buf) == frame[4:]
    assert _wire.next_frame(buf) == frame[4:]
    assert _wire.next_frame(buf) is None and not buf
    for n in (0, 65537):
        with pytest.raises(errors.ProtocolError, match="length"):
            _wire.next_frame(bytearray(n.to_bytes(4, "big") + b"x"))


def test_packer_refuses_what_cannot_be_sent():
    p = _wire.Packer()
    with pytest.raises(errors.InvalidRequest, match="unknown operation"):
        p.frame("frobnicate", 1, {})
    with pytest.raises(errors.InvalidRequest, match="cannot be encoded"):
        p.frame("quota_reserve", 1, {"workflow_id": "w", "tokens": 2 ** 64})
    with pytest.raises(errors.InvalidRequest, match="does not fit"):
        p.frame("quota_status", 1, {"workflow_id": "w" * 70000})


def test_provider_error_checks_its_status():
    e = errors.ProviderError(429, 2.5, headers={"Retry-After": "2"})
    assert (e.status_code, e.retry_after) == (429, 2.5)
    assert isinstance(e, errors.LlmguardError)
    with pytest.raises(TypeError):
        errors.ProviderError("429")
