"""``@rate_limit_middleware``: guard a function that calls an LLM provider.

::

    @rate_limit_middleware
    def my_llm_call(provider_name, prompt, **kwargs):
        return call_provider(provider_name, prompt)

    result = my_llm_call(prompt="Hello", workflow_id="wf-123",
                         tokens_estimate=50)

Each call is run with failover as ProviderRouter.execute_with_failover
runs it (see llmguard.router): the llmguard keywords are taken off the call
and the function is called with ``provider_name=`` the routed provider.
"""
import asyncio
import functools
from typing import Any, Callable, Optional, TypeVar, Union, overload

from ._failover import check_attempts, check_timeout, split_kwargs
from .client import Client, default_client
from .router import run_call

__all__ = ["rate_limit_middleware"]

F = TypeVar("F", bound=Callable[..., Any])


@overload
def rate_limit_middleware(fn: F) -> F: ...


@overload
def rate_limit_middleware(*, timeout: float = 5.0, max_attempts: int = 3,
                          client: Optional[Client] = None
                          ) -> Callable[[F], F]: ...


def rate_limit_middleware(fn: Optional[F] = None, *, timeout: float = 5.0,
                          max_attempts: int = 3,
                          client: Optional[Client] = None
                          ) -> Union[F, Callable[[F], F]]:
    """Guard ``fn(provider_name, *args, **kwargs)``: used bare
    (``@rate_limit_middleware``) or with defaults
    (``@rate_limit_middleware(timeout=1.0, max_attempts=2)``).

    A call of the guarded function takes these keywords for itself:
    ``workflow_id``, ``tenant_id`` (the quotas charged), ``tokens_estimate``
    (default 0: nothing reserved up front, the real usage charged after
    the call), ``preferred_provider``, ``model``, ``timeout`` (the wait for a
    token, in seconds), ``max_attempts`` and ``traceparent``; the other
    arguments go to fn, with ``provider_name=`` the routed provider.  What
    fn returns is returned; its ``usage.total_tokens`` (attribute or key),
    when there, is what the quotas are charged.  In hard quota mode an
    over-quota call raises QuotaExceededError before fn is called.  With
    the daemon unreachable, LLMGUARD_FAIL_MODE=open (the default) calls fn
    once on ``preferred_provider``, unguarded; ``closed`` raises
    DaemonUnavailable.  ``llmguard.last_call()`` tells how the call went.
    """
    defaults = {"timeout": check_timeout(timeout),
                "max_attempts": check_attempts(max_attempts)}

    def decorate(f: F) -> F:
        if asyncio.iscoroutinefunction(f):
            raise TypeError(f"{f.__name__} is async: use "
                            "llmguard.aio.rate_limit_middleware")

        @functools.wraps(f)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            plan, rest = split_kwargs(kwargs, defaults)
            return run_call(client or default_client(), plan, f, args, rest)

        guarded._llmguard_fn = f  # type: ignore[attr-defined]
        return guarded  # type: ignore[return-value]

    if fn is not None:
        if not callable(fn):
            raise TypeError("rate_limit_middleware: expected a function")
        return decorate(fn)
    return decorate
