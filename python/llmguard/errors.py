"""The exceptions of llmguard; every one derives from :class:`LlmguardError`.

A daemon's error reply (proto/PROTOCOL.md, "Error codes") becomes the class
of its ``code`` by :func:`from_wire`; its ``msg`` is the exception's text.
"""
from datetime import datetime, timezone
from typing import Any, Mapping, Optional

__all__ = [
    "LlmguardError", "DaemonUnavailable", "ProtocolError", "InvalidRequest",
    "NoProviderError", "RateLimitTimeout", "PermissionDenied",
    "QuotaExceededError", "ProviderError",
]


class LlmguardError(Exception):
    """Any failure of llmguard.

    ``code`` is the wire error code (``bad_request``, ``timeout``, ...,
    proto/PROTOCOL.md) when the daemon refused the request, else a word for
    what happened on this side (``unavailable``, ``protocol``, ``provider``).
    """

    code: str = "internal"

    def __init__(self, message: str, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class DaemonUnavailable(LlmguardError):
    """No llmguardd answered: nobody listens on the socket, the connection
    broke, or no reply came within the client timeout
    (LLMGUARD_CLIENT_TIMEOUT_MS beyond the wait the request asked for)."""

    code = "unavailable"


class ProtocolError(LlmguardError):
    """The daemon's reply was malformed or not one this client understands
    (also ``unknown_op`` and ``version`` replies: a daemon of another
    protocol version)."""

    code = "protocol"


class InvalidRequest(LlmguardError, ValueError):
    """The request was refused as bad (``bad_request``, ``frame_too_large``),
    or was refused here before it was sent."""

    code = "bad_request"


class NoProviderError(LlmguardError):
    """``unknown_provider``: the provider is not configured; ``no_provider``:
    none is configured, or every one was excluded."""

    code = "no_provider"


class RateLimitTimeout(LlmguardError):
    """``timeout``: no token came within the timeout; nothing was taken."""

    code = "timeout"


class PermissionDenied(LlmguardError):
    """``permission_denied``, or the socket refused this user (EACCES)."""

    code = "permission_denied"


def _utc(ts: Optional[float]) -> Optional[datetime]:
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc)


class QuotaExceededError(LlmguardError):
    """A hard quota refused the call (``quota_exceeded``); nothing was
    reserved.

    ``subject`` is ``workflow:<id>`` or ``tenant:<id>``, ``tokens_used`` and
    ``tokens_limit`` its usage and limit, ``reset_at`` a timezone-aware UTC
    :class:`~datetime.datetime` when its usage next drops (None when it has
    used nothing).
    """

    code = "quota_exceeded"

    def __init__(self, message: str, subject: str = "", tokens_used: int = 0,
                 tokens_limit: int = 0,
                 reset_at: Optional[datetime] = None) -> None:
        super().__init__(message)
        self.subject = subject
        self.tokens_used = tokens_used
        self.tokens_limit = tokens_limit
        self.reset_at = reset_at


class ProviderError(LlmguardError):
    """A provider call failed with an HTTP status; raise it from a guarded
    function to say so.

    429 is classified as rate limited, 5xx as a server error, any other 4xx
    as a client error (no failover).  ``retry_after`` (seconds) is passed on
    to the daemon, which keeps the provider in cooldown at least that long;
    ``headers`` are the response's headers, if any.
    """

    code = "provider"

    def __init__(self, status_code: int, retry_after: Optional[float] = None,
                 message: Optional[str] = None,
                 headers: Optional[Mapping[str, str]] = None) -> None:
        if not isinstance(status_code, int) or isinstance(status_code, bool):
            raise TypeError("ProviderError: status_code must be an int")
        super().__init__(message or f"the provider answered {status_code}")
        self.status_code = status_code
        self.retry_after = retry_after
        self.headers = dict(headers) if headers is not None else {}


_BY_CODE = {
    "bad_request": InvalidRequest,
    "frame_too_large": InvalidRequest,
    "unknown_op": ProtocolError,
    "version": ProtocolError,
    "unknown_provider": NoProviderError,
    "no_provider": NoProviderError,
    "timeout": RateLimitTimeout,
    "permission_denied": PermissionDenied,
    "busy": LlmguardError,
    "internal": LlmguardError,
}


def from_wire(err: Mapping[str, Any]) -> LlmguardError:
    """The exception for an ``err`` map of a failed reply (already checked
    to hold a str ``code`` and ``msg``)."""
    code, msg = err["code"], err["msg"]
    text = f"{code}: {msg}"
    if code == "quota_exceeded":
        return QuotaExceededError(
            text, subject=err.get("subject", ""),
            tokens_used=err.get("tokens_used", 0),
            tokens_limit=err.get("tokens_limit", 0),
            reset_at=_utc(err.get("reset_at")))
    cls = _BY_CODE.get(code)
    if cls is None:
        # A code this client does not know: a malformed reply to it.
        return ProtocolError(f"unknown error code in a reply: {text}")
    return cls(text, code)
