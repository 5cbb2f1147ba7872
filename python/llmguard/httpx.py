"""httpx transports that guard every request: ``GuardedTransport`` and
``AsyncGuardedTransport``.

Any SDK built on httpx (openai, groq and anthropic take ``http_client=``)
is guarded with one line::

    client = OpenAI(http_client=httpx.Client(transport=GuardedTransport(
        provider="openai", workflow_id="summarize")))

Each request takes one permit for ``provider`` (its quota reserved, its
token taken, waiting up to ``timeout`` seconds) and is reported when its
response is closed: 429 as rate limited, 5xx as a server error, other 4xx
as a client error, 2xx and 3xx as ok with the ``usage`` of the JSON answer
(or of the last event of a streamed one) charged to the quotas, and the
response's Retry-After passed on.  A transport error is reported as a
timeout or a server error and raised.  The transport does not fail over:
the SDK's base URL belongs to one provider, so the permit may only be
given for that provider, and the SDK's own retries each take a permit.

The constructor keywords ``provider``, ``workflow_id``, ``tenant_id``,
``tokens_estimate``, ``model`` and ``timeout`` may be overridden for one
request with ``extensions={"llmguard": {...}}`` (and ``traceparent``; else
a ``traceparent`` header of the request, as OpenTelemetry's httpx
instrumentation sets, parents the daemon's span).
"""
import json
from typing import Any, AsyncIterator, Dict, Iterator, List, Optional

import httpx

from . import _args, aio
from ._failover import CallPlan, check_timeout
from .client import Client, default_client
from .errors import DaemonUnavailable, LlmguardError, NoProviderError, \
    ProviderError
from .router import fail_open

__all__ = ["GuardedTransport", "AsyncGuardedTransport"]

_OPTIONS = ("provider", "workflow_id", "tenant_id", "tokens_estimate",
            "model", "timeout", "traceparent")
_MAX_BODY = 4 << 20         # bytes of an answer kept to read its usage


class _Answer:
    """What a report needs of a response: its usage and its headers."""

    def __init__(self, usage: Any, headers: httpx.Headers) -> None:
        self.usage = usage
        self.headers = headers


def _usage(response: httpx.Response, body: bytes) -> Any:
    """The ``usage`` object of a JSON answer, or of the last server-sent
    event that has one; None when there is none."""
    if response.headers.get("content-encoding"):
        body = httpx.Response(200, headers={
            "content-encoding": response.headers["content-encoding"]},
            content=body).read()
    ctype = response.headers.get("content-type", "")
    try:
        if "text/event-stream" in ctype:
            for line in reversed(body.decode("utf-8", "replace").splitlines()):
                if line.startswith("data:") and "usage" in line:
                    data = json.loads(line[5:])
                    if isinstance(data, dict) and data.get("usage"):
                        return data["usage"]
            return None
        data = json.loads(body)
    except (ValueError, httpx.DecodingError):
        return None
    return data.get("usage") if isinstance(data, dict) else None


class _Guard:
    """What both transports share: the options, the providers to exclude,
    the plan of one request and its report."""

    def __init__(self, provider: str, *, workflow_id: Optional[str] = None,
                 tenant_id: Optional[str] = None, tokens_estimate: int = 0,
                 model: Optional[str] = None, timeout: float = 5.0) -> None:
        _args.name(provider, "provider")
        self.options: Dict[str, Any] = {
            "provider": provider,
            "workflow_id": _args.opt_id(workflow_id, "workflow_id"),
            "tenant_id": _args.opt_id(tenant_id, "tenant_id"),
            "tokens_estimate": _args.count(tokens_estimate,
                                           "tokens_estimate"),
            "model": _args.opt_id(model, "model"),
            "timeout": check_timeout(timeout)}
        self.configured: Optional[List[str]] = None

    def plan_for(self, request: httpx.Request) -> CallPlan:
        opts = dict(self.options)
        extra = request.extensions.get("llmguard") or {}
        unknown = set(extra) - set(_OPTIONS)
        if unknown:
            raise TypeError(f"extensions['llmguard']: unknown key(s) "
                            f"{', '.join(sorted(unknown))}")
        opts.update(extra)
        tp = opts.pop("traceparent", None) or \
            request.headers.get("traceparent")
        provider = opts.pop("provider")
        return CallPlan(preferred_provider=provider, max_attempts=1,
                        traceparent=tp, **opts)

    def needs_status(self, plan: CallPlan) -> bool:
        """Whether the configured providers must be (re)read first."""
        return self.configured is None or plan.preferred not in self.configured

    def learn(self, plan: CallPlan, status: Dict[str, Any]) -> None:
        """Note the configured providers of a status reply; NoProviderError
        when the plan's provider is not one of them."""
        names = [p["name"] for p in status["providers"]]
        self.configured = names
        if plan.preferred not in names:
            raise NoProviderError(
                f"unknown_provider: unknown provider '{plan.preferred}' "
                f"(configured: {', '.join(names) or 'none'})")

    def permit_fields(self, plan: CallPlan) -> Dict[str, Any]:
        """The permit of plan, excluding every provider but its own, so
        that the daemon can only give it that one."""
        fields = plan.permit_fields()
        others = [n for n in self.configured or [] if n != plan.preferred]
        fields["exclude"] = others or None
        return fields

    def elsewhere(self, plan: CallPlan, rep: Dict[str, Any]
                  ) -> Optional[Dict[str, Any]]:
        """For a permit given for another provider (one configured since
        the providers were read): the report that gives it back unused;
        None for a permit of the plan's provider."""
        if rep["provider"] == plan.preferred:
            return None
        self.configured = None
        return {"permit_id": rep["permit_id"], "outcome": "client_error",
                "tokens_used": 0, "final": False}

    @staticmethod
    def report(plan: CallPlan, response: httpx.Response,
               body: Optional[bytes]) -> Dict[str, Any]:
        """The report of a response, from its status, headers and (when it
        was read whole) its body."""
        code = response.status_code
        if code >= 400:
            fields, _ = plan.failed(ProviderError(code,
                                                  headers=response.headers))
            return fields
        usage = _usage(response, body) if body is not None else None
        return plan.succeeded(_Answer(usage, response.headers))


class _Tee:
    """Keeps the bytes of a body as it is read, up to _MAX_BODY."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.whole = True
        self.done = False

    def add(self, chunk: bytes) -> None:
        if self.whole and len(self.buf) + len(chunk) <= _MAX_BODY:
            self.buf += chunk
        else:
            self.whole = False

    def body(self, finished: bool) -> Optional[bytes]:
        return bytes(self.buf) if finished and self.whole else None


class _ReportingStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, finish) -> None:
        self.inner, self.finish, self.tee = inner, finish, _Tee()
        self.finished = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            self.tee.add(chunk)
            yield chunk
        self.finished = True

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            if not self.tee.done:
                self.tee.done = True
                self.finish(self.tee.body(self.finished))


class _AsyncReportingStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, finish) -> None:
        self.inner, self.finish, self.tee = inner, finish, _Tee()
        self.finished = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            self.tee.add(chunk)
            yield chunk
        self.finished = True

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        finally:
            if not self.tee.done:
                self.tee.done = True
                await self.finish(self.tee.body(self.finished))


class GuardedTransport(httpx.BaseTransport):
    """An httpx transport whose every request is permitted and reported by
    llmguardd (see the module's text).  ``transport`` is the one that sends
    the requests (default: httpx.HTTPTransport()); ``client`` the llmguard
    client (default: the default client)."""

    def __init__(self, provider: str, *, workflow_id: Optional[str] = None,
                 tenant_id: Optional[str] = None, tokens_estimate: int = 0,
                 model: Optional[str] = None, timeout: float = 5.0,
                 transport: Optional[httpx.BaseTransport] = None,
                 client: Optional[Client] = None) -> None:
        self._guard = _Guard(provider, workflow_id=workflow_id,
                             tenant_id=tenant_id,
                             tokens_estimate=tokens_estimate, model=model,
                             timeout=timeout)
        self._inner = transport or httpx.HTTPTransport()
        self._client = client

    @property
    def client(self) -> Client:
        """The llmguard client the permits come from."""
        return self._client or default_client()

    def _report(self, fields: Dict[str, Any]) -> None:
        try:
            self.client.call("report", fields)
        except LlmguardError:
            pass                # a lost report loses health data only

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Permit, send, and report when the response is closed."""
        g, client = self._guard, self.client
        plan = g.plan_for(request)
        try:
            for _ in range(2):
                if g.needs_status(plan):
                    g.learn(plan, client.call("status"))
                rep = client.call("permit", g.permit_fields(plan),
                                  plan.timeout)
                unused = g.elsewhere(plan, rep)
                if unused is None:
                    break
                self._report(unused)
            else:
                raise NoProviderError(f"no_provider: llmguardd gave no "
                                      f"permit for {plan.preferred}")
        except DaemonUnavailable as e:
            fail_open(plan, e)
            return self._inner.handle_request(request)
        plan.permitted(rep)
        try:
            response = self._inner.handle_request(request)
        except BaseException as exc:
            self._report(plan.failed(exc)[0])
            raise
        response.stream = _ReportingStream(
            response.stream,  # type: ignore[arg-type]
            lambda body: self._report(g.report(plan, response, body)))
        return response

    def close(self) -> None:
        """Close the inner transport."""
        self._inner.close()


class AsyncGuardedTransport(httpx.AsyncBaseTransport):
    """GuardedTransport for httpx.AsyncClient, through llmguard.aio."""

    def __init__(self, provider: str, *, workflow_id: Optional[str] = None,
                 tenant_id: Optional[str] = None, tokens_estimate: int = 0,
                 model: Optional[str] = None, timeout: float = 5.0,
                 transport: Optional[httpx.AsyncBaseTransport] = None,
                 client: Optional[aio.AsyncClient] = None) -> None:
        self._guard = _Guard(provider, workflow_id=workflow_id,
                             tenant_id=tenant_id,
                             tokens_estimate=tokens_estimate, model=model,
                             timeout=timeout)
        self._inner = transport or httpx.AsyncHTTPTransport()
        self._client = client

    @property
    def client(self) -> aio.AsyncClient:
        """The llmguard client the permits come from."""
        return self._client or aio.default_client()

    async def _report(self, fields: Dict[str, Any]) -> None:
        try:
            await self.client.call("report", fields)
        except LlmguardError:
            pass

    async def handle_async_request(self, request: httpx.Request
                                   ) -> httpx.Response:
        """Permit, send, and report when the response is closed."""
        g, client = self._guard, self.client
        plan = g.plan_for(request)
        try:
            for _ in range(2):
                if g.needs_status(plan):
                    g.learn(plan, await client.call("status"))
                rep = await client.call("permit", g.permit_fields(plan),
                                        plan.timeout)
                unused = g.elsewhere(plan, rep)
                if unused is None:
                    break
                await self._report(unused)
            else:
                raise NoProviderError(f"no_provider: llmguardd gave no "
                                      f"permit for {plan.preferred}")
        except DaemonUnavailable as e:
            fail_open(plan, e)
            return await self._inner.handle_async_request(request)
        plan.permitted(rep)
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException as exc:
            await self._report(plan.failed(exc)[0])
            raise
        response.stream = _AsyncReportingStream(
            response.stream,  # type: ignore[arg-type]
            lambda body: self._report(g.report(plan, response, body)))
        return response

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self._inner.aclose()
