"""llmguard for asyncio: the same API, with coroutines.

::

    from llmguard import aio

    limiter = aio.get_rate_limiter()
    ok = await limiter.acquire("groq", timeout=5.0)

    @aio.rate_limit_middleware
    async def my_llm_call(provider_name, prompt):
        ...

One connection per event loop carries every request of that loop at once:
requests are pipelined and replies matched by id (proto/PROTOCOL.md,
"Pipelining and order"), so many tasks may wait for tokens together.  The
socket never blocks the loop.  The rules of llmguard.client hold: lazy
connect, a new connection when the old one is gone, and every exchange
bounded by its wait plus LLMGUARD_CLIENT_TIMEOUT_MS, past which the
connection is closed (and every request on it raises DaemonUnavailable).
"""
import asyncio
import functools
import inspect
from typing import Any, Callable, Dict, List, Optional, TypeVar

from . import _args, _trace, _wire
from ._failover import CallPlan, check_attempts, check_timeout, split_kwargs
from .client import _late_error, _settings, client_timeout_ms, \
    default_socket_path
from .errors import (DaemonUnavailable, LlmguardError, PermissionDenied,
                     ProtocolError, QuotaExceededError, RateLimitTimeout)
from . import limiter as _lim, quota as _quota
from .metrics import MetricsPages
from .router import fail_open, select_fields

__all__ = ["AsyncClient", "AsyncRateLimiter", "AsyncQuotaManager",
           "AsyncProviderRouter", "get_rate_limiter", "get_quota_manager",
           "get_provider_router", "get_metrics_summary",
           "rate_limit_middleware", "default_client"]

F = TypeVar("F", bound=Callable[..., Any])


class _Protocol(asyncio.Protocol):
    """One connection: frames in, replies handed to the futures waiting
    for their ids."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: Optional[asyncio.Transport] = None
        self.buf = bytearray()
        self.packer = _wire.Packer()
        self.next_id = 1
        self.pending: Dict[int, asyncio.Future] = {}
        # Replies nobody waits for any more, and what to do with them.
        self.orphans: Dict[int, Callable[[dict], None]] = {}
        self.error: Optional[LlmguardError] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        try:
            while (body := _wire.next_frame(self.buf)) is not None:
                msg = _wire.decode_reply(body)
                fut = self.pending.pop(msg["id"], None)
                if fut is not None:
                    if not fut.done():
                        fut.set_result(msg)
                elif msg["id"] in self.orphans:
                    self.orphans.pop(msg["id"])(msg)
        except ProtocolError as e:
            self.fail(e)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.fail(DaemonUnavailable("llmguardd closed the connection"
                                    + (f": {exc}" if exc else "")))

    @property
    def usable(self) -> bool:
        return (self.error is None and self.transport is not None
                and not self.transport.is_closing())

    def fail(self, err: LlmguardError) -> None:
        """Close the connection; every request waiting on it raises err."""
        if self.error is None:
            self.error = err
        if self.transport is not None:
            self.transport.close()
        pending, self.pending = self.pending, {}
        self.orphans.clear()
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(self.error)

    def send(self, op: str, fields: Dict[str, Any]) -> int:
        rid = self.next_id
        self.next_id += 1
        self.transport.write(self.packer.frame(op, rid, fields))
        return rid


class AsyncClient:
    """A handle on llmguardd for asyncio; as llmguard.Client, its
    ``socket_path`` and ``timeout_ms``.  Usable from any event loop (one
    connection per loop)."""

    def __init__(self, socket_path: Optional[str] = None,
                 timeout_ms: Optional[float] = None) -> None:
        self.socket_path, self.timeout_ms = _settings(socket_path, timeout_ms)
        self._proto: Optional[_Protocol] = None
        self._connecting: Optional[asyncio.Future] = None

    def __repr__(self) -> str:
        return (f"AsyncClient({self.socket_path!r}, "
                f"timeout_ms={self.timeout_ms:g})")

    async def _connection(self, budget_s: Optional[float]) -> _Protocol:
        loop = asyncio.get_running_loop()
        p = self._proto
        if p is not None and p.loop is loop and p.usable:
            return p
        if self._connecting is None or self._connecting.get_loop() is not loop:
            self._connecting = loop.create_task(self._open(loop))
        connecting = self._connecting
        try:
            return await asyncio.wait_for(asyncio.shield(connecting),
                                          budget_s)
        except asyncio.TimeoutError:
            raise _late_error(self.socket_path, budget_s,
                             self.timeout_ms) from None
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Protocol:
        try:
            _, proto = await loop.create_unix_connection(
                lambda: _Protocol(loop), self.socket_path)
        except PermissionError as e:
            raise PermissionDenied(f"connect {self.socket_path}: "
                                   f"{e.strerror}") from None
        except OSError as e:
            raise DaemonUnavailable(f"no llmguardd on {self.socket_path}: "
                                    f"{e.strerror or e}") from None
        self._proto = proto
        return proto

    async def call(self, op: str, fields: Optional[Dict[str, Any]] = None,
                   wait_s: float = 0.0,
                   orphan: Optional[Callable[[dict], None]] = None
                   ) -> Dict[str, Any]:
        """Send request ``op`` and await its checked reply (as
        Client.call).  ``orphan``, if given, is called with the reply should
        the caller be cancelled before it comes."""
        budget_s = self._budget_s(wait_s)
        p = self._proto
        if p is None or not p.usable or p.loop is not \
                asyncio.get_running_loop():
            p = await self._connection(budget_s)
        fut = p.loop.create_future()
        rid = p.send(op, fields or {})
        p.pending[rid] = fut
        # A timer, not asyncio.wait_for: no task per request.
        timer = None if budget_s is None else \
            p.loop.call_later(budget_s, self._expire, p, fut, budget_s)
        try:
            msg = await fut
        except asyncio.CancelledError:
            p.pending.pop(rid, None)
            if orphan is not None and p.usable:
                p.orphans[rid] = orphan
            raise
        finally:
            if timer is not None:
                timer.cancel()
        return _wire.result(op, msg)

    def _budget_s(self, wait_s: float) -> Optional[float]:
        return wait_s + self.timeout_ms / 1e3 if self.timeout_ms else None

    def _expire(self, p: _Protocol, fut: asyncio.Future,
                budget_s: float) -> None:
        """A reply did not come in time: the connection is closed, and
        every request on it raises."""
        if not fut.done():
            p.fail(_late_error(self.socket_path, budget_s, self.timeout_ms))

    def post(self, op: str, fields: Dict[str, Any]) -> None:
        """Send a request whose reply nobody awaits, if connected (a report
        from a cancelled call)."""
        p = self._proto
        if p is not None and p.usable:
            p.send(op, fields)

    async def ping(self) -> float:
        """Round trip to the daemon; its uptime in seconds."""
        return float((await self.call("ping")).get("uptime_s", 0.0))

    async def close(self) -> None:
        """Close the connection of this loop."""
        if self._proto is not None:
            self._proto.fail(DaemonUnavailable("the client was closed"))
            self._proto = None


_default: Optional[AsyncClient] = None


def default_client() -> AsyncClient:
    """The process's shared AsyncClient for the default socket; as
    llmguard.default_client, it follows LLMGUARD_SOCKET and
    LLMGUARD_CLIENT_TIMEOUT_MS."""
    global _default
    path, ms = default_socket_path(), client_timeout_ms()
    if _default is None or _default.socket_path != path or \
            _default.timeout_ms != ms:
        _default = AsyncClient(path, ms)
    return _default


class _Bound:
    def __init__(self, client: Optional[AsyncClient] = None) -> None:
        self._client = client

    @property
    def client(self) -> AsyncClient:
        """The client this object talks through."""
        return self._client or default_client()


class AsyncRateLimiter(_Bound):
    """llmguard.limiter.RateLimiter with coroutine methods."""

    async def acquire(self, provider_name: str, tokens: int = 1,
                      timeout: float = 5.0, llm_tokens: int = 0) -> bool:
        """As RateLimiter.acquire: True when granted, False when the wait
        ran out."""
        op, fields, wait = _lim.acquire_request(provider_name, tokens,
                                                timeout, llm_tokens)
        try:
            await self.client.call(op, fields, wait)
        except RateLimitTimeout:
            return False
        return True

    async def release(self, provider_name: str, tokens: int = 1,
                      llm_tokens: int = 0) -> float:
        """As RateLimiter.release."""
        rep = await self.client.call("release", _lim.release_request(
            provider_name, tokens, llm_tokens))
        return float(rep["available_tokens"])

    async def get_status(self, provider_name: str) -> Dict[str, Any]:
        """As RateLimiter.get_status."""
        rep = await self.client.call("limiter_status", {
            "provider": _args.name(provider_name, "provider_name")})
        return _lim.status_dict(rep)


class AsyncQuotaManager(_Bound):
    """llmguard.quota.QuotaManager with coroutine methods."""

    async def check_and_reserve(self, workflow_id: Optional[str] = None,
                                tenant_id: Optional[str] = None,
                                tokens: int = 0) -> bool:
        """As QuotaManager.check_and_reserve."""
        try:
            await self.reserve(workflow_id, tenant_id, tokens)
        except QuotaExceededError:
            return False
        return True

    async def reserve(self, workflow_id: Optional[str] = None,
                      tenant_id: Optional[str] = None,
                      tokens: int = 0) -> Dict[str, Any]:
        """As QuotaManager.reserve."""
        rep = await self.client.call("quota_reserve", _quota.reserve_fields(
            workflow_id, tenant_id, tokens))
        return _quota.decision_dict(rep)

    async def commit(self, workflow_id: Optional[str] = None,
                     tenant_id: Optional[str] = None, *, reservation: int,
                     estimate: int, actual: int) -> None:
        """As QuotaManager.commit."""
        await self.client.call("quota_commit", _quota.commit_fields(
            workflow_id, tenant_id, reservation, estimate, actual))

    async def get_quota_status(self, workflow_id: Optional[str] = None,
                               tenant_id: Optional[str] = None
                               ) -> Dict[str, Any]:
        """As QuotaManager.get_quota_status."""
        rep = await self.client.call("quota_status", _quota.subject_fields(
            workflow_id, tenant_id))
        return _quota.status_dict(rep)


async def _report(client: AsyncClient, fields: Dict[str, Any]) -> None:
    try:
        await client.call("report", fields)
    except LlmguardError:
        pass                    # a lost report loses health data only


async def run_call(client: AsyncClient, plan: CallPlan,
                   fn: Callable[..., Any], args: tuple,
                   kwargs: Dict[str, Any]) -> Any:
    """Run plan's attempts of fn (a coroutine function or a plain one),
    as llmguard.router.run_call does."""
    with _trace.call_span(plan.traceparent) as (span, traceparent):
        plan.traceparent = plan.info.traceparent = traceparent
        try:
            return await _attempts(client, plan, fn, args, kwargs)
        finally:
            _trace.set_call_attributes(span, plan.span_attributes())


def _abandoned(client: AsyncClient) -> Callable[[dict], None]:
    """For a permit whose caller was cancelled while it waited: report it
    unused when it comes, so that it holds nothing."""
    def close(msg: dict) -> None:
        if msg.get("ok") and _wire._is_uint(msg.get("permit_id")):
            client.post("report", {"permit_id": msg["permit_id"],
                                   "outcome": "client_error",
                                   "tokens_used": 0, "final": True})
    return close


async def _call(fn: Callable[..., Any], args: tuple,
                kwargs: Dict[str, Any]) -> Any:
    out = fn(*args, **kwargs)
    return await out if inspect.isawaitable(out) else out


async def _attempts(client: AsyncClient, plan: CallPlan,
                    fn: Callable[..., Any], args: tuple,
                    kwargs: Dict[str, Any]) -> Any:
    last: Optional[BaseException] = None
    while True:
        try:
            rep = await client.call("permit", plan.permit_fields(),
                                    plan.timeout, orphan=_abandoned(client))
        except DaemonUnavailable as e:
            if last is not None:
                raise last
            provider = fail_open(plan, e)
            result = await _call(fn, args,
                                 dict(kwargs, provider_name=provider))
            plan.info.success = True
            return result
        except LlmguardError as e:
            if last is not None:
                raise last
            if isinstance(e, QuotaExceededError):
                plan.info.quota_allowed = False
            raise
        provider = plan.permitted(rep)
        try:
            result = await _call(fn, args,
                                 dict(kwargs, provider_name=provider))
        except asyncio.CancelledError as exc:
            fields, _ = plan.failed(exc)       # final: not the provider's
            client.post("report", fields)       # no waiting once cancelled
            raise
        except BaseException as exc:
            fields, final = plan.failed(exc)
            await _report(client, fields)
            if final:
                raise
            last = exc
            continue
        await _report(client, plan.succeeded(result))
        return result


class AsyncProviderRouter(_Bound):
    """llmguard.router.ProviderRouter with coroutine methods."""

    async def select_provider(self, workflow_id: Optional[str] = None,
                              preferred_provider: Optional[str] = None,
                              exclude: Optional[List[str]] = None) -> str:
        """As ProviderRouter.select_provider."""
        rep = await self.client.call("select_provider", select_fields(
            workflow_id, preferred_provider, exclude))
        return rep["provider"]

    async def execute_with_failover(self, func: Callable[..., Any],
                                    workflow_id: Optional[str] = None,
                                    max_attempts: int = 3,
                                    **kwargs: Any) -> Any:
        """As ProviderRouter.execute_with_failover; func may be a coroutine
        function."""
        func = getattr(func, "_llmguard_fn", func)
        if not callable(func):
            raise TypeError("execute_with_failover: func must be callable")
        kwargs["workflow_id"] = workflow_id
        kwargs["max_attempts"] = max_attempts
        plan, rest = split_kwargs(kwargs, {})
        return await run_call(self.client, plan, func, (), rest)


def rate_limit_middleware(fn: Optional[F] = None, *, timeout: float = 5.0,
                          max_attempts: int = 3,
                          client: Optional[AsyncClient] = None) -> Any:
    """llmguard.middleware.rate_limit_middleware for asyncio: the guarded
    function is a coroutine function (fn may be one, or a plain
    function); the keywords are the same."""
    defaults = {"timeout": check_timeout(timeout),
                "max_attempts": check_attempts(max_attempts)}

    def decorate(f: F) -> F:
        @functools.wraps(f)
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            plan, rest = split_kwargs(kwargs, defaults)
            return await run_call(client or default_client(), plan, f, args,
                                  rest)

        guarded._llmguard_fn = f  # type: ignore[attr-defined]
        return guarded  # type: ignore[return-value]

    if fn is not None:
        if not callable(fn):
            raise TypeError("rate_limit_middleware: expected a function")
        return decorate(fn)
    return decorate


async def get_metrics_summary(client: Optional[AsyncClient] = None
                              ) -> Dict[str, Any]:
    """As llmguard.metrics.get_metrics_summary."""
    client = client or default_client()
    pages = MetricsPages()
    while (fields := pages.next_fields()) is not None:
        pages.add(await client.call("metrics", fields))
    return pages.summary()


_limiter = AsyncRateLimiter()
_manager = AsyncQuotaManager()
_router = AsyncProviderRouter()


def get_rate_limiter() -> AsyncRateLimiter:
    """The process's AsyncRateLimiter, on the default async client."""
    return _limiter


def get_quota_manager() -> AsyncQuotaManager:
    """The process's AsyncQuotaManager, on the default async client."""
    return _manager


def get_provider_router() -> AsyncProviderRouter:
    """The process's AsyncProviderRouter, on the default async client."""
    return _router
