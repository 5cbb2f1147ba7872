"""One guarded call, without I/O: what each attempt's ``permit`` asks, how
the outcome of the caller's function is classified, what its ``report``
says (proto/PROTOCOL.md, "Routing, permits and calls").  The blocking
driver is in router.py, the asyncio one in aio.py."""
import asyncio
import concurrent.futures
import contextvars
import email.utils
import itertools
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ._trace import check_traceparent
from .errors import InvalidRequest, ProviderError

log = logging.getLogger("llmguard")

OK, RATE_LIMITED, SERVER_ERROR, TIMEOUT, CLIENT_ERROR = (
    "ok", "rate_limited", "server_error", "timeout", "client_error")

# The provider rate-limit headers an attempt keeps (names lower-cased): the
# ones OpenAI, Groq and Anthropic send, and Retry-After.
RATE_LIMIT_HEADERS = frozenset(
    [f"x-ratelimit-{w}-{k}" for w in ("limit", "remaining", "reset")
     for k in ("requests", "tokens")]
    + [f"anthropic-ratelimit-{k}-{w}"
       for k in ("requests", "tokens", "input-tokens", "output-tokens")
       for w in ("limit", "remaining", "reset")]
    + ["retry-after", "retry-after-ms"])
MAX_HEADERS = 32
MAX_RETRY_AFTER_S = 86400.0

# Exception classes known by name, so that no SDK need be imported: httpx,
# openai / groq / anthropic (APITimeoutError, APIConnectionError), requests.
_TIMEOUT_NAMES = frozenset(["TimeoutException", "APITimeoutError", "Timeout"])
_NETWORK_NAMES = frozenset(["NetworkError", "RemoteProtocolError",
                            "APIConnectionError", "ConnectionError"])
_TIMEOUT_TYPES = (TimeoutError, asyncio.TimeoutError,
                  concurrent.futures.TimeoutError)


@dataclass
class CallInfo:
    """What a guarded call came to (as libllmguard's struct llmguard_result).

    ``provider`` is that of the last attempt; ``failover_attempts`` the
    attempts after the first; ``rate_limited`` says an attempt waited for a
    token, was moved off a provider without one, or met a 429;
    ``quota_allowed`` is False when a soft quota was over its limit (or a
    hard one refused); ``quota_remaining`` the least remaining over the
    subjects (None when no quota was checked); ``ratelimit_wait_ms`` the
    token waits of all attempts; ``guarded`` False when the daemon was
    unreachable and the call went out unguarded (LLMGUARD_FAIL_MODE=open);
    ``headers`` the rate-limit headers of the last answer; ``model`` the
    provider's model id the last attempt was routed to, when the call
    named a model (None otherwise).
    """

    call_id: str = ""
    provider: Optional[str] = None
    failover_attempts: int = 0
    rate_limited: bool = False
    success: bool = False
    quota_allowed: bool = True
    quota_remaining: Optional[int] = None
    ratelimit_wait_ms: float = 0.0
    guarded: bool = True
    traceparent: Optional[str] = None
    outcome: Optional[str] = None
    headers: Dict[str, str] = field(default_factory=dict)
    model: Optional[str] = None


_last_call: contextvars.ContextVar = contextvars.ContextVar("llmguard_call")


def last_call() -> Optional[CallInfo]:
    """The CallInfo of the latest guarded call made in this thread (or
    asyncio task), or None."""
    return _last_call.get(None)


_counter = itertools.count(1)
_id_prefix = ""


def _new_id_prefix() -> None:
    global _id_prefix
    _id_prefix = f"{os.getpid()}-{secrets.token_hex(4)}"


_new_id_prefix()
os.register_at_fork(after_in_child=_new_id_prefix)


def new_call_id() -> str:
    """An id for a call's attempts, unique in the process and easy to find
    in a log: the pid, random bits drawn once per process, a counter."""
    return f"{_id_prefix}-{next(_counter)}"


# ---- what the caller's function raised or returned -------------------------

def _names(exc: BaseException) -> set:
    return {c.__name__ for c in type(exc).__mro__}


def status_code_of(exc: BaseException) -> Optional[int]:
    """The HTTP status of a failed call: ``exc.status_code`` (ProviderError,
    the openai/groq/anthropic errors), ``exc.response.status_code``
    (httpx.HTTPStatusError) or ``exc.status``; None when it has none."""
    for obj, attr in ((exc, "status_code"),
                      (getattr(exc, "response", None), "status_code"),
                      (exc, "status")):
        code = getattr(obj, attr, None)
        if type(code) is int:
            return code
    return None


def classify(exc: BaseException) -> Optional[str]:
    """The outcome a failure is reported as, or None for a failure that is
    not the provider's (it is re-raised at once, reported client_error)."""
    code = status_code_of(exc)
    if code is not None:
        if code == 429:
            return RATE_LIMITED
        if 500 <= code <= 599:
            return SERVER_ERROR
        if 400 <= code <= 499:
            return CLIENT_ERROR
        return None
    names = _names(exc)
    if isinstance(exc, _TIMEOUT_TYPES) or names & _TIMEOUT_NAMES:
        return TIMEOUT
    if isinstance(exc, ConnectionError) or names & _NETWORK_NAMES:
        return SERVER_ERROR
    return None


def headers_of(obj: Any) -> Dict[str, str]:
    """The rate-limit headers of an answer: obj.headers, else
    obj.response.headers (a mapping, any case), lower-cased, at most 32."""
    for holder in (obj, getattr(obj, "response", None)):
        hdrs = getattr(holder, "headers", None)
        if hdrs is not None and hasattr(hdrs, "items"):
            break
    else:
        return {}
    out: Dict[str, str] = {}
    try:
        items = list(hdrs.items())
    except Exception:
        return {}
    for k, v in items:
        if isinstance(k, bytes):
            k = k.decode("latin-1")
        if isinstance(v, bytes):
            v = v.decode("latin-1")
        if not isinstance(k, str) or not isinstance(v, str):
            continue
        k = k.lower()
        if k in RATE_LIMIT_HEADERS and len(out) < MAX_HEADERS:
            out[k] = v
    return out


def report_headers(headers: Mapping[str, str]) -> Optional[Dict[str, str]]:
    """What a report carries of headers: the known rate-limit names,
    lower-cased, string values, at most 32; None when there are none."""
    out: Dict[str, str] = {}
    for k, v in headers.items():
        if not isinstance(k, str) or not isinstance(v, str):
            continue
        k = k.lower()
        if k in RATE_LIMIT_HEADERS and len(out) < MAX_HEADERS:
            out[k] = v
    return out or None


def retry_after_s(headers: Mapping[str, str],
                  now: Optional[float] = None) -> Optional[float]:
    """Seconds from ``retry-after-ms``, else ``retry-after`` (seconds or an
    HTTP date); None when neither says a positive time.  At most a day."""
    secs: Optional[float] = None
    if "retry-after-ms" in headers:
        try:
            secs = float(headers["retry-after-ms"]) / 1e3
        except ValueError:
            pass
    if secs is None and "retry-after" in headers:
        raw = headers["retry-after"].strip()
        try:
            secs = float(raw)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(raw)
                secs = when.timestamp() - (time.time() if now is None else now)
            except (TypeError, ValueError, IndexError):
                secs = None
    if secs is None or not secs > 0:
        return None
    return min(secs, MAX_RETRY_AFTER_S)


def usage_tokens(result: Any) -> Optional[int]:
    """``usage.total_tokens`` of a result (attribute or key, as the
    openai/groq SDKs and the JSON of a chat completion give it), else
    input_tokens + output_tokens (Anthropic); None when it says nothing."""
    def get(obj: Any, name: str) -> Any:
        if isinstance(obj, Mapping):
            return obj.get(name)
        return getattr(obj, name, None)

    usage = get(result, "usage")
    if usage is None:
        return None
    total = get(usage, "total_tokens")
    if type(total) is int and total >= 0:
        return total
    inp, out = get(usage, "input_tokens"), get(usage, "output_tokens")
    if type(inp) is int and type(out) is int and inp >= 0 and out >= 0:
        return inp + out
    return None


# ---- one call's attempts ---------------------------------------------------

def check_timeout(timeout: Any) -> float:
    """A token wait in seconds, 0 to a day, or InvalidRequest."""
    if (not isinstance(timeout, (int, float)) or isinstance(timeout, bool)
            or not 0 <= timeout < 86400):
        raise InvalidRequest(f"timeout must be seconds from 0 to 86400, not "
                             f"{timeout!r}")
    return float(timeout)


def check_attempts(max_attempts: Any) -> int:
    """A number of attempts, 1 to 64, or InvalidRequest."""
    if type(max_attempts) is not int or not 1 <= max_attempts <= 64:
        raise InvalidRequest(f"max_attempts must be an int from 1 to 64, not "
                             f"{max_attempts!r}")
    return max_attempts


def _opt_id(value: Any, what: str) -> Optional[str]:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{what} must be a str or None, not "
                        f"{type(value).__name__}")
    return value


class CallPlan:
    """The attempts of one guarded call: permit fields in, report fields
    out.  Drivers call permit_fields(), then permitted() with the reply,
    then failed() or succeeded() with what the function did."""

    def __init__(self, *, workflow_id: Optional[str] = None,
                 tenant_id: Optional[str] = None,
                 tokens_estimate: Optional[int] = 0,
                 preferred_provider: Optional[str] = None,
                 model: Optional[str] = None, timeout: float = 5.0,
                 max_attempts: int = 3,
                 traceparent: Optional[str] = None) -> None:
        self.workflow_id = _opt_id(workflow_id, "workflow_id")
        self.tenant_id = _opt_id(tenant_id, "tenant_id")
        self.preferred = _opt_id(preferred_provider, "preferred_provider")
        # A model group or model id: the permit is routed among its
        # deployments (PROTOCOL.md, permit).
        self.model = _opt_id(model, "model")
        est = 0 if tokens_estimate is None else tokens_estimate
        if type(est) is not int or est < 0:
            raise InvalidRequest(f"tokens_estimate must be an int >= 0, not "
                                 f"{tokens_estimate!r}")
        self.tokens_estimate = est
        self.timeout = check_timeout(timeout)
        self.max_attempts = check_attempts(max_attempts)
        self.traceparent = check_traceparent(traceparent)
        self.attempt = 0
        self.tried: List[str] = []
        self.permit_id = 0
        self.t0 = 0.0
        self.info = CallInfo(call_id=new_call_id(), provider=self.preferred)
        _last_call.set(self.info)

    def permit_fields(self) -> Dict[str, Any]:
        """The fields of this attempt's permit, in the table order of
        PROTOCOL.md."""
        return {
            "workflow_id": self.workflow_id, "tenant_id": self.tenant_id,
            "tokens_estimate": self.tokens_estimate or None,
            "preferred": self.preferred, "exclude": self.tried or None,
            "timeout_ms": self.timeout * 1e3, "call_id": self.info.call_id,
            "traceparent": self.traceparent, "model": self.model,
        }

    def permitted(self, rep: Dict[str, Any]) -> str:
        """Note the permit's reply; the provider to call."""
        info = self.info
        self.permit_id = rep["permit_id"]
        info.provider = rep["provider"]
        info.model = rep.get("model")
        info.rate_limited |= rep["rate_limited"]
        info.ratelimit_wait_ms += rep["wait_ms"]
        if self.attempt == 0 or not rep["quota_allowed"]:
            info.quota_allowed = rep["quota_allowed"]
        info.quota_remaining = rep["quota_remaining"]
        if self.attempt > 0:
            info.failover_attempts += 1
        if self.attempt == 0 and not rep["quota_allowed"]:
            log.warning("llmguard: %s over its quota (soft mode): the call "
                        "goes ahead", self._subjects())
        self.t0 = time.monotonic()
        return info.provider

    def _subjects(self) -> str:
        return " and ".join(s for s in (
            self.workflow_id and f"workflow:{self.workflow_id}",
            self.tenant_id and f"tenant:{self.tenant_id}") if s)

    def _report(self, outcome: str, final: bool, tokens_used: Optional[int],
                headers: Dict[str, str],
                retry_after: Optional[float]) -> Dict[str, Any]:
        info = self.info
        info.outcome = outcome
        info.headers = headers
        # Retry-After goes as retry_after_s too (the cooldown); the headers
        # go as they are, for the daemon to fit its buckets to them
        # (PROTOCOL.md, report): only the known names, lower-cased, at
        # most 32 - headers_of() kept no others.
        if retry_after is None:
            retry_after = retry_after_s(headers)
        return {
            "permit_id": self.permit_id, "outcome": outcome,
            "latency_ms": (time.monotonic() - self.t0) * 1e3,
            "tokens_used": tokens_used, "retry_after_s": retry_after,
            "final": final, "headers": report_headers(headers),
        }

    def failed(self, exc: BaseException) -> Tuple[Dict[str, Any], bool]:
        """The report of an attempt whose function raised exc, and whether
        the call is over (exc is then to be raised)."""
        outcome = classify(exc)
        final = (outcome in (None, CLIENT_ERROR)
                 or self.attempt + 1 >= self.max_attempts)
        self.info.rate_limited |= outcome == RATE_LIMITED
        retry_after = exc.retry_after if isinstance(exc, ProviderError) \
            else None
        if retry_after is not None and not (
                isinstance(retry_after, (int, float)) and retry_after > 0):
            retry_after = None
        elif retry_after is not None:
            retry_after = min(float(retry_after), MAX_RETRY_AFTER_S)
        # A failed attempt used no tokens unless it says so: a 429 is not
        # charged its estimate.
        fields = self._report(outcome or CLIENT_ERROR, final,
                              usage_tokens(exc) or 0, headers_of(exc),
                              retry_after)
        # With a model the daemon keeps the call's tried deployments
        # itself: excluding their providers would also leave the
        # providers' other models.
        if self.model is None:
            self.tried.append(self.info.provider)
        self.attempt += 1
        return fields, final

    def succeeded(self, result: Any) -> Dict[str, Any]:
        """The report of an attempt whose function returned result: charged
        its usage when it tells it, else the estimate."""
        self.info.success = True
        return self._report(OK, True, usage_tokens(result),
                            headers_of(result), None)

    def unguarded(self) -> str:
        """Fail-open: the provider to call without the daemon."""
        self.info.guarded = False
        return self.info.provider

    def span_attributes(self) -> Dict[str, Any]:
        """The llm.* attributes of the call's span."""
        i = self.info
        return {
            "llm.workflow_id": self.workflow_id,
            "llm.tenant_id": self.tenant_id,
            "llm.tokens_estimate": self.tokens_estimate,
            "llm.ratelimit_acquired": self.permit_id > 0,
            "llm.ratelimit_provider": i.provider,
            "llm.ratelimit_wait_ms": i.ratelimit_wait_ms,
            "llm.quota.allowed": i.quota_allowed,
            "llm.quota.remaining": i.quota_remaining,
            "llm.routed_to": i.provider,
            "llm.failover_attempts": i.failover_attempts,
            "llm.rate_limited": i.rate_limited,
            "llm.success": i.success,
            "llm.guarded": i.guarded,
            "llm.model": i.model,
        }


# The middleware's own keyword arguments, taken off each call.
CALL_KEYWORDS = ("workflow_id", "tenant_id", "tokens_estimate",
                 "preferred_provider", "model", "timeout", "max_attempts",
                 "traceparent")


def split_kwargs(kwargs: Dict[str, Any],
                 defaults: Dict[str, Any]) -> Tuple[CallPlan, Dict[str, Any]]:
    """The CallPlan of a call's llmguard keywords (over the decorator's
    defaults), and the keywords left for the function."""
    opts = dict(defaults)
    rest = {}
    for k, v in kwargs.items():
        if k in CALL_KEYWORDS:
            opts[k] = v
        else:
            rest[k] = v
    if "provider_name" in rest:
        raise TypeError("provider_name is chosen by llmguard; give "
                        "preferred_provider= instead")
    return CallPlan(**opts), rest
