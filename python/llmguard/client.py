"""The connection to llmguardd: a blocking request/reply client, as
libllmguard's (libllmguard(3)).

- The socket is the one given, else ``$LLMGUARD_SOCKET``, else
  ``$XDG_RUNTIME_DIR/llmguard/llmguardd.sock`` (when that variable holds an
  absolute path), else ``/tmp/llmguard-<uid>/llmguardd.sock``.
- Nothing connects before the first call; a call whose send fails on an old
  connection (the daemon restarted) is sent once more on a new one.  A
  request that was sent is never sent again.
- Every exchange is bounded: the wait the request asked for (an acquire's or
  a permit's timeout) plus LLMGUARD_CLIENT_TIMEOUT_MS (2000 ms by default).
  Past that the connection is closed and the call raises
  :class:`DaemonUnavailable`; it is not retried, so a stopped or wedged
  daemon never holds a caller longer.
- Each thread has its own connection (and a forked child makes a new one),
  so threads never wait for each other's replies.
- The bound is the socket's own (SO_SNDTIMEO, SO_RCVTIMEO), so an exchange
  is one send and one receive: no system call of its own.
"""
import os
import socket
import struct
import threading
import time
from typing import Any, Dict, Optional, Tuple

from . import _wire
from .errors import DaemonUnavailable, InvalidRequest, PermissionDenied, \
    ProtocolError

__all__ = ["Client", "default_client", "default_socket_path",
           "client_timeout_ms", "fail_mode"]

DEFAULT_CLIENT_TIMEOUT_MS = 2000.0
MAX_CLIENT_TIMEOUT_MS = 86400e3
_SUN_PATH_MAX = 107     # sizeof(sun_path) less the NUL


def default_socket_path() -> str:
    """The socket path used when none is given: $LLMGUARD_SOCKET, else the
    per-user default of llmguardd(8)."""
    env = os.environ.get("LLMGUARD_SOCKET", "")
    if env:
        return env
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg.startswith("/"):
        return f"{xdg}/llmguard/llmguardd.sock"
    return f"/tmp/llmguard-{os.getuid()}/llmguardd.sock"


def client_timeout_ms() -> float:
    """LLMGUARD_CLIENT_TIMEOUT_MS (default 2000; 0: no bound): how long past
    the wait it asked for an exchange may take."""
    raw = os.environ.get("LLMGUARD_CLIENT_TIMEOUT_MS", "")
    if raw == "":
        return DEFAULT_CLIENT_TIMEOUT_MS
    try:
        ms = float(raw)
    except ValueError:
        ms = -1.0
    if not 0 <= ms <= MAX_CLIENT_TIMEOUT_MS:
        raise InvalidRequest(f"LLMGUARD_CLIENT_TIMEOUT_MS={raw}: expected "
                             "milliseconds from 0 (no bound) to 86400000")
    return ms


def fail_mode() -> str:
    """LLMGUARD_FAIL_MODE: ``open`` (the default: a guarded call goes to its
    preferred provider unguarded while the daemon is unreachable) or
    ``closed`` (it raises DaemonUnavailable)."""
    raw = os.environ.get("LLMGUARD_FAIL_MODE", "")
    mode = raw.lower() or "open"
    if mode not in ("open", "closed"):
        raise InvalidRequest(f"LLMGUARD_FAIL_MODE={raw}: expected open or "
                             "closed")
    return mode


def _settings(socket_path: Optional[str],
             timeout_ms: Optional[float]) -> Tuple[str, float]:
    """The socket path and client timeout of a new client, checked."""
    path = socket_path if socket_path else default_socket_path()
    if not isinstance(path, str):
        raise TypeError("socket_path must be a str")
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise InvalidRequest(f"socket path too long for a Unix socket "
                             f"({_SUN_PATH_MAX} bytes at most): {path}")
    if timeout_ms is None:
        timeout_ms = client_timeout_ms()
    elif (not isinstance(timeout_ms, (int, float))
          or isinstance(timeout_ms, bool)
          or not 0 <= timeout_ms <= MAX_CLIENT_TIMEOUT_MS):
        raise InvalidRequest("timeout_ms must be from 0 (no bound) to "
                             "86400000")
    return path, float(timeout_ms)


def _late_error(path: str, budget_s: float,
               timeout_ms: float) -> DaemonUnavailable:
    """The error of an exchange that ran out of time."""
    return DaemonUnavailable(
        f"llmguardd on {path} did not answer within {budget_s * 1e3:.0f} ms "
        f"(LLMGUARD_CLIENT_TIMEOUT_MS {timeout_ms:g} beyond the request's "
        "wait); the connection was closed")


_generation = 0         # of the process: a forked child starts a new one


def _forked() -> None:
    global _generation
    _generation += 1


os.register_at_fork(after_in_child=_forked)


class _Conn:
    """One thread's connection: its socket (None until connected), the
    bytes received and not yet decoded, its request ids, and the time
    bound its socket has now."""

    __slots__ = ("sock", "buf", "packer", "next_id", "gen", "bound_us")

    def __init__(self) -> None:
        self.sock: Optional[socket.socket] = None
        self.buf = bytearray()
        self.packer = _wire.Packer()
        self.next_id = 1
        self.gen = _generation
        self.bound_us = 0

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.buf.clear()

    def bound(self, secs: Optional[float]) -> None:
        """Let each send, receive and connect block at most secs (None: no
        bound), with the kernel's SO_SNDTIMEO and SO_RCVTIMEO: no system
        call per exchange while the bound stays the same."""
        us = 0 if secs is None else max(1, int(secs * 1e6))
        if us != self.bound_us:
            tv = struct.pack("@ll", us // 1000000, us % 1000000)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
            self.bound_us = us


class Client:
    """A handle on llmguardd at ``socket_path`` (None: the default path
    rules above).  ``timeout_ms`` bounds each exchange beyond its wait
    (None: LLMGUARD_CLIENT_TIMEOUT_MS; 0: no bound).  Safe to share between
    threads."""

    def __init__(self, socket_path: Optional[str] = None,
                 timeout_ms: Optional[float] = None) -> None:
        self.socket_path, self.timeout_ms = _settings(socket_path, timeout_ms)
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"Client({self.socket_path!r}, timeout_ms={self.timeout_ms:g})"

    def _conn(self) -> _Conn:
        c = getattr(self._local, "conn", None)
        if c is None or c.gen != _generation:
            c = _Conn()         # a forked child leaves the parent's alone
            self._local.conn = c
        return c

    def close(self) -> None:
        """Close the calling thread's connection (the next call opens a new
        one)."""
        c = getattr(self._local, "conn", None)
        if c is not None and c.gen == _generation:
            c.close()

    def call(self, op: str, fields: Optional[Dict[str, Any]] = None,
             wait_s: float = 0.0) -> Dict[str, Any]:
        """Send request ``op`` with ``fields`` (None values left out) and
        return its checked reply map, or raise the error it was answered
        with.  ``wait_s`` is how long the daemon may hold the reply back
        (the request's own timeout); the exchange may take that plus the
        client timeout."""
        c = self._conn()
        rid = c.next_id
        c.next_id += 1
        frame = c.packer.frame(op, rid, fields or {})
        budget_s = self.budget_s(wait_s)
        deadline = time.monotonic() + (budget_s or float("inf"))
        for attempt in (0, 1):
            fresh = c.sock is None
            try:
                if fresh:
                    self._connect(c, budget_s)
                else:
                    c.bound(budget_s)
                c.sock.sendall(frame, socket.MSG_NOSIGNAL)
                break
            except BlockingIOError:         # the bound ran out
                c.close()
                raise self._late(budget_s) from None
            except PermissionError as e:
                c.close()
                raise PermissionDenied(f"connect {self.socket_path}: "
                                       f"{e.strerror}") from None
            except OSError as e:
                c.close()
                if fresh:
                    raise DaemonUnavailable(
                        f"no llmguardd on {self.socket_path}: "
                        f"{e.strerror or e}") from None
                if attempt:
                    raise DaemonUnavailable(
                        f"send to llmguardd on {self.socket_path}: "
                        f"{e.strerror or e}") from None
        try:
            msg = self._receive(c, rid, deadline, budget_s)
        except ProtocolError:
            c.close()       # the stream cannot be trusted after it
            raise
        return _wire.result(op, msg)

    def budget_s(self, wait_s: float) -> Optional[float]:
        """How long an exchange that asked to wait wait_s may take; None
        with a client timeout of 0 (no bound)."""
        return wait_s + self.timeout_ms / 1e3 if self.timeout_ms else None

    def _connect(self, c: _Conn, budget_s: Optional[float]) -> None:
        c.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.bound_us = 0
        c.buf.clear()
        c.bound(budget_s)
        c.sock.connect(self.socket_path)

    def _receive(self, c: _Conn, rid: int, deadline: float,
                 budget_s: Optional[float]) -> Dict[str, Any]:
        """Read replies until the one to rid; others (left from an exchange
        that was given up) are skipped."""
        first = True
        while True:
            body = _wire.next_frame(c.buf)
            if body is not None:
                msg = _wire.decode_reply(body)
                if msg["id"] == rid:
                    return msg
                continue
            if not first and budget_s is not None:  # a frame in pieces
                left = deadline - time.monotonic()
                if left <= 0:
                    c.close()
                    raise self._late(budget_s)
                c.bound(left)
            first = False
            try:
                data = c.sock.recv(65540)
            except BlockingIOError:
                c.close()
                raise self._late(budget_s) from None
            except OSError as e:
                c.close()
                raise DaemonUnavailable(f"llmguardd closed the connection: "
                                        f"{e.strerror or e}") from None
            if not data:
                c.close()
                raise DaemonUnavailable("llmguardd closed the connection")
            c.buf += data

    def _late(self, budget_s: Optional[float]) -> DaemonUnavailable:
        return _late_error(self.socket_path, budget_s or 0.0, self.timeout_ms)

    def ping(self) -> float:
        """Round trip to the daemon; its uptime in seconds."""
        return float(self.call("ping").get("uptime_s", 0.0))

    def hello(self, client_name: str = "llmguard-python") -> Dict[str, Any]:
        """Check that the daemon speaks protocol 1: ``{version, server}``;
        raises ProtocolError when it does not."""
        rep = self.call("hello", {"version": _wire.PROTOCOL_VERSION,
                                  "client": client_name})
        return {"version": rep["version"], "server": rep["server"]}


_default_lock = threading.Lock()
_default: Optional[Client] = None


def default_client() -> Client:
    """The process's shared client for the default socket.  It follows
    LLMGUARD_SOCKET and LLMGUARD_CLIENT_TIMEOUT_MS as they are when it is
    asked for: a change of either gives a new client."""
    global _default
    path, ms = default_socket_path(), client_timeout_ms()
    with _default_lock:
        if (_default is None or _default.socket_path != path
                or _default.timeout_ms != ms):
            _default = Client(path, ms)
        return _default
