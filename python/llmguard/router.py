"""Provider routing and calls with failover: ``get_provider_router()``.

A guarded call is a loop of attempts.  Each attempt is one ``permit`` (the
quota reserved, a provider chosen, its token taken, in one round trip), a
call of the caller's function with ``provider_name=`` the chosen provider,
and one ``report`` of its outcome: 429 rate limited, 5xx and connection
errors server errors, timeouts, other 4xx client errors (proto/PROTOCOL.md,
report).  A rate limit, a server error or a timeout is tried again on a
provider not tried yet, up to ``max_attempts``; a client error, or a
failure that is not the provider's, is raised at once.  When every attempt
failed the last error is raised.
"""
import logging
from typing import Any, Callable, Dict, List, Optional

from . import _trace
from ._failover import CallPlan, split_kwargs
from .client import Client, default_client, fail_mode
from .errors import DaemonUnavailable, LlmguardError, QuotaExceededError

__all__ = ["ProviderRouter", "get_provider_router"]

log = logging.getLogger("llmguard")


def _report(client: Client, fields: Dict[str, Any]) -> None:
    # A lost report loses health data, not the caller's answer.
    try:
        client.call("report", fields)
    except LlmguardError as e:
        log.debug("llmguard: report of permit %s lost: %s",
                  fields["permit_id"], e)


def fail_open(plan: CallPlan, err: DaemonUnavailable) -> str:
    """The provider to call unguarded after err, under LLMGUARD_FAIL_MODE;
    raises err (or why not) when the call must not go out."""
    if fail_mode() == "closed":
        raise DaemonUnavailable(f"{err.message} (LLMGUARD_FAIL_MODE=closed)")
    if plan.preferred is None:
        raise DaemonUnavailable(f"{err.message}; fail-open needs a "
                                "preferred_provider")
    log.warning("llmguard: %s; calling %s unguarded (LLMGUARD_FAIL_MODE="
                "open)", err.message, plan.preferred)
    return plan.unguarded()


def run_call(client: Client, plan: CallPlan, fn: Callable[..., Any],
             args: tuple, kwargs: Dict[str, Any]) -> Any:
    """Run plan's attempts of fn(*args, provider_name=..., **kwargs)."""
    with _trace.call_span(plan.traceparent) as (span, traceparent):
        plan.traceparent = plan.info.traceparent = traceparent
        try:
            return _attempts(client, plan, fn, args, kwargs)
        finally:
            _trace.set_call_attributes(span, plan.span_attributes())


def _attempts(client: Client, plan: CallPlan, fn: Callable[..., Any],
              args: tuple, kwargs: Dict[str, Any]) -> Any:
    last: Optional[BaseException] = None
    while True:
        try:
            rep = client.call("permit", plan.permit_fields(), plan.timeout)
        except DaemonUnavailable as e:
            if last is not None:
                raise last
            provider = fail_open(plan, e)
            result = fn(*args, provider_name=provider, **kwargs)
            plan.info.success = True
            return result
        except LlmguardError as e:
            if last is not None:
                raise last          # the provider's error, not the refusal
            if isinstance(e, QuotaExceededError):
                plan.info.quota_allowed = False
            raise
        provider = plan.permitted(rep)
        try:
            result = fn(*args, provider_name=provider, **kwargs)
        except BaseException as exc:
            fields, final = plan.failed(exc)
            _report(client, fields)
            if final:
                raise
            last = exc
            continue
        _report(client, plan.succeeded(result))
        return result


class ProviderRouter:
    """Routing among the configured providers, through llmguardd (``client``
    None: the default client)."""

    def __init__(self, client: Optional[Client] = None) -> None:
        self._client = client

    @property
    def client(self) -> Client:
        """The client this router talks through."""
        return self._client or default_client()

    def select_provider(self, workflow_id: Optional[str] = None,
                        preferred_provider: Optional[str] = None,
                        exclude: Optional[List[str]] = None) -> str:
        """The provider a call would be routed to now (``preferred_provider``
        for the primary policy, never one in ``exclude``).  Takes no token
        and reserves nothing.  Raises NoProviderError when none is left."""
        rep = self.client.call("select_provider", select_fields(
            workflow_id, preferred_provider, exclude))
        return rep["provider"]

    def execute_with_failover(self, func: Callable[..., Any],
                              workflow_id: Optional[str] = None,
                              max_attempts: int = 3, **kwargs: Any) -> Any:
        """Call ``func(provider_name=..., **kwargs)`` with failover and
        return what it returns.

        The llmguard keywords ``tenant_id``, ``tokens_estimate`` (default 0:
        nothing reserved up front, the real usage charged at the report),
        ``preferred_provider``, ``model``, ``timeout`` (the wait for a token,
        5.0 s) and ``traceparent`` are taken off ``kwargs``; the rest go to
        func.  A func decorated with ``@rate_limit_middleware`` is called
        undecorated, so each attempt takes one permit.  Raises
        QuotaExceededError (hard quota), RateLimitTimeout (no token in
        time), NoProviderError, DaemonUnavailable (LLMGUARD_FAIL_MODE=closed),
        or the last error of func.
        """
        func = getattr(func, "_llmguard_fn", func)
        if not callable(func):
            raise TypeError("execute_with_failover: func must be callable")
        kwargs["workflow_id"] = workflow_id
        kwargs["max_attempts"] = max_attempts
        plan, rest = split_kwargs(kwargs, {})
        return run_call(self.client, plan, func, (), rest)


def select_fields(workflow_id: Optional[str], preferred: Optional[str],
                  exclude: Optional[List[str]]) -> Dict[str, Any]:
    """The fields of a select_provider request."""
    for name, v in (("workflow_id", workflow_id),
                    ("preferred_provider", preferred)):
        if v is not None and not isinstance(v, str):
            raise TypeError(f"{name} must be a str or None")
    if exclude is not None:
        exclude = list(exclude)
        if not all(isinstance(p, str) for p in exclude):
            raise TypeError("exclude must be a list of str")
    return {"workflow_id": workflow_id, "preferred": preferred,
            "exclude": exclude}


_router: Optional[ProviderRouter] = None


def get_provider_router() -> ProviderRouter:
    """The process's ProviderRouter, on the default client."""
    global _router
    if _router is None:
        _router = ProviderRouter()
    return _router
