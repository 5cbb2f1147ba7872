"""@rate_limit_middleware and execute_with_failover against a real daemon:
what each failure is classified as, failover or not, quotas, fail-open and
fail-closed, Retry-After and the rate-limit headers, usage, traces."""
import json
import logging
from types import SimpleNamespace

import httpx
import pytest

import llmguard
from llmguard import _trace, last_call
from llmguard.middleware import rate_limit_middleware
from llmguard.router import ProviderRouter, get_provider_router

FAST_COOLDOWN_ENV = """\
PROVIDER_GROQ_RATE_PER_SEC=50
PROVIDER_GROQ_PRIORITY=1
PROVIDER_OPENAI_RATE_PER_SEC=20
PROVIDER_OPENAI_PRIORITY=2
PROVIDER_COOLDOWN_SEC=2
"""


def provider_state(daemon, name):
    doc = json.loads(daemon.ctl("--json", "status").stdout)
    p = next(p for p in doc["providers"] if p["name"] == name)
    return p["state"], p["cooldown_remaining_s"]


class StatusError(Exception):
    """Like the openai/groq SDK errors: a status_code attribute."""

    def __init__(self, status_code):
        super().__init__(f"status {status_code}")
        self.status_code = status_code


def http_error(code, headers=None):
    req = httpx.Request("POST", "http://provider/v1/chat/completions")
    resp = httpx.Response(code, headers=headers or {}, request=req)
    return httpx.HTTPStatusError(f"{code}", request=req, response=resp)


def failing_first(exc):
    """A guarded function: raises exc on groq, answers on openai."""
    calls = []

    @rate_limit_middleware
    def fn(prompt, provider_name):
        calls.append(provider_name)
        if provider_name == "groq":
            raise exc
        return {"answer": f"{prompt} from {provider_name}",
                "usage": {"total_tokens": 42}}
    return fn, calls


FAILOVER = [
    ("429 ProviderError", llmguard.ProviderError(429), "rate_limited"),
    ("503 ProviderError", llmguard.ProviderError(503), "server_error"),
    ("SDK status_code 500", StatusError(500), "server_error"),
    ("httpx 502", http_error(502), "server_error"),
    ("httpx 429", http_error(429), "rate_limited"),
    ("TimeoutError", TimeoutError("slow"), "timeout"),
    ("httpx.ReadTimeout", httpx.ReadTimeout("slow"), "timeout"),
    ("ConnectionError", ConnectionRefusedError("refused"), "server_error"),
    ("httpx.ConnectError", httpx.ConnectError("refused"), "server_error"),
]


@pytest.mark.parametrize("what, exc, outcome", FAILOVER,
                         ids=[f[0] for f in FAILOVER])
def test_failover_on_provider_failures(daemon, what, exc, outcome):
    fn, calls = failing_first(exc)
    out = fn("hi", workflow_id="wf", tokens_estimate=100)
    assert out["answer"] == "hi from openai"
    assert calls == ["groq", "openai"]
    info = last_call()
    assert (info.provider, info.failover_attempts, info.success) == \
        ("openai", 1, True)
    assert info.rate_limited == (outcome == "rate_limited")
    assert info.guarded and info.quota_allowed
    assert provider_state(daemon, "groq")[0] == "degraded"
    assert daemon.metric("llm_failovers_total", from_provider="groq",
                         to_provider="openai") == 1
    # Charged 42 for the success, nothing for the failed attempt.
    assert daemon.used("wf") == 42


NO_FAILOVER = [
    ("400 ProviderError", llmguard.ProviderError(400)),
    ("SDK status_code 404", StatusError(404)),
    ("httpx 401", http_error(401)),
    ("ValueError", ValueError("a bug in the caller")),
    ("KeyError", KeyError("choices")),
]


@pytest.mark.parametrize("what, exc", NO_FAILOVER,
                         ids=[f[0] for f in NO_FAILOVER])
def test_no_failover_on_client_errors(daemon, what, exc):
    fn, calls = failing_first(exc)
    with pytest.raises(type(exc)) as ei:
        fn("hi", workflow_id="wf", tokens_estimate=100)
    assert ei.value is exc
    assert calls == ["groq"]
    info = last_call()
    assert (info.provider, info.failover_attempts, info.success,
            info.outcome) == ("groq", 0, False, "client_error")
    assert provider_state(daemon, "groq")[0] == "healthy"
    assert daemon.metric("llm_requests_total", provider="groq",
                         workflow_id="wf") == 1
    assert daemon.used("wf") == 0


def test_every_attempt_fails_the_last_error_is_raised(daemon):
    errors = {p: llmguard.ProviderError(500, message=f"{p} is down")
              for p in ("groq", "openai")}

    @rate_limit_middleware
    def fn(provider_name):
        raise errors[provider_name]

    with pytest.raises(llmguard.ProviderError, match="openai is down") as ei:
        fn(workflow_id="wf")         # 3 attempts, but only 2 providers
    assert ei.value is errors["openai"]
    info = last_call()
    assert (info.failover_attempts, info.success, info.provider) == \
        (1, False, "openai")
    with pytest.raises(llmguard.ProviderError, match="groq is down"):
        fn(workflow_id="wf", max_attempts=1, preferred_provider="groq")


def test_retry_after_and_rate_limit_headers(start_daemon, monkeypatch):
    d = start_daemon(FAST_COOLDOWN_ENV + "PROVIDER_MISTRAL_RATE_PER_SEC=5\n"
                     "PROVIDER_MISTRAL_PRIORITY=3\n")
    monkeypatch.setenv("LLMGUARD_SOCKET", d.sock)
    headers = {"Retry-After": "5", "X-RateLimit-Remaining-Requests": "0",
               "x-ratelimit-reset-requests": "5s", "Server": "mock"}
    fn, _ = failing_first(http_error(429, headers))
    fn("hi")
    state, cooldown = provider_state(d, "groq")
    # Retry-After 5 s beats the 2 s cooldown.
    assert state == "degraded" and 4.0 < cooldown <= 5.0
    assert last_call().headers == {}        # the last answer, openai's

    @rate_limit_middleware(max_attempts=1)
    def fails(provider_name, exc):
        raise exc

    with pytest.raises(llmguard.ProviderError):
        fails(preferred_provider="openai",
              exc=llmguard.ProviderError(503, retry_after=8.0))
    assert 7.0 < provider_state(d, "openai")[1] <= 8.0
    with pytest.raises(httpx.HTTPStatusError):
        fails(preferred_provider="mistral", exc=http_error(429, {
            "retry-after-ms": "7000", "X-RateLimit-Remaining-Tokens": "12"}))
    assert last_call().headers == {"retry-after-ms": "7000",
                                   "x-ratelimit-remaining-tokens": "12"}
    assert 6.0 < provider_state(d, "mistral")[1] <= 7.0


def test_usage_reconciles_the_estimate(daemon):
    @rate_limit_middleware
    def attr(provider_name):
        return SimpleNamespace(usage=SimpleNamespace(total_tokens=17))

    @rate_limit_middleware
    def anthropic(provider_name):
        return {"usage": {"input_tokens": 3, "output_tokens": 4}}

    @rate_limit_middleware
    def silent(provider_name):
        return "no usage"

    attr(workflow_id="a", tokens_estimate=500)
    anthropic(workflow_id="b", tokens_estimate=500)
    silent(workflow_id="c", tokens_estimate=500)
    silent(workflow_id="d")
    assert [daemon.used(w) for w in "abcd"] == [17, 7, 500, 0]


def test_hard_quota_raises_before_the_call(start_daemon, monkeypatch):
    d = start_daemon("PROVIDER_GROQ_RATE_PER_SEC=50\n"
                     "QUOTA_ENFORCEMENT=hard\n"
                     "DEFAULT_DAILY_QUOTA_TOKENS=100\n")
    monkeypatch.setenv("LLMGUARD_SOCKET", d.sock)
    calls = []

    @rate_limit_middleware
    def fn(provider_name):
        calls.append(provider_name)
        return {"usage": {"total_tokens": 80}}

    fn(workflow_id="capped", tokens_estimate=10)
    with pytest.raises(llmguard.QuotaExceededError) as ei:
        fn(workflow_id="capped", tenant_id="t", tokens_estimate=30)
    e = ei.value
    assert (e.subject, e.tokens_used, e.tokens_limit) == \
        ("workflow:capped", 80, 100)
    assert e.reset_at is not None
    assert calls == ["groq"]
    assert last_call().quota_allowed is False
    assert d.used("capped") == 80


def test_soft_quota_goes_ahead_with_a_warning(start_daemon, monkeypatch,
                                              caplog):
    d = start_daemon("PROVIDER_GROQ_RATE_PER_SEC=50\n"
                     "QUOTA_ENFORCEMENT=soft\n"
                     "DEFAULT_DAILY_QUOTA_TOKENS=100\n")
    monkeypatch.setenv("LLMGUARD_SOCKET", d.sock)

    @rate_limit_middleware
    def fn(provider_name):
        return provider_name

    with caplog.at_level(logging.WARNING, logger="llmguard"):
        assert fn(workflow_id="over", tokens_estimate=150) == "groq"
    info = last_call()
    assert info.quota_allowed is False and info.quota_remaining == 0
    assert "workflow:over over its quota (soft mode)" in caplog.text
    assert d.used("over") == 150


def test_fail_open_and_closed(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMGUARD_SOCKET", str(tmp_path / "nobody.sock"))
    calls = []

    @rate_limit_middleware
    def fn(provider_name):
        calls.append(provider_name)
        return "answer"

    assert fn(preferred_provider="groq", workflow_id="wf") == "answer"
    assert calls == ["groq"] and last_call().guarded is False
    with pytest.raises(llmguard.DaemonUnavailable, match="needs a preferred"):
        fn(workflow_id="wf")
    monkeypatch.setenv("LLMGUARD_FAIL_MODE", "closed")
    with pytest.raises(llmguard.DaemonUnavailable,
                       match="LLMGUARD_FAIL_MODE=closed"):
        fn(preferred_provider="groq")
    monkeypatch.setenv("LLMGUARD_FAIL_MODE", "sometimes")
    with pytest.raises(llmguard.InvalidRequest, match="open or closed"):
        fn(preferred_provider="groq")
    assert calls == ["groq"]
    # Not the middleware: the other calls raise.
    with pytest.raises(llmguard.DaemonUnavailable):
        get_provider_router().select_provider()


def test_waiting_for_a_token_and_running_out(start_daemon, monkeypatch):
    d = start_daemon("PROVIDER_SLOW_RATE_PER_SEC=4\nPROVIDER_SLOW_BURST=1\n")
    monkeypatch.setenv("LLMGUARD_SOCKET", d.sock)

    @rate_limit_middleware(timeout=0, max_attempts=1)
    def fn(provider_name):
        return provider_name

    assert fn() == "slow"
    with pytest.raises(llmguard.RateLimitTimeout, match="no token from slow"):
        fn()
    assert fn(timeout=2.0) == "slow"
    info = last_call()
    assert info.rate_limited and info.ratelimit_wait_ms > 0


def test_decorator_checks_and_keywords(daemon):
    with pytest.raises(llmguard.InvalidRequest, match="max_attempts"):
        rate_limit_middleware(max_attempts=0)
    with pytest.raises(TypeError, match="async"):
        @rate_limit_middleware
        async def coro(provider_name):
            return 1

    @rate_limit_middleware
    def fn(provider_name, **kwargs):
        return provider_name, kwargs

    assert fn(temperature=0.2, workflow_id="w") == ("groq",
                                                    {"temperature": 0.2})
    with pytest.raises(TypeError, match="preferred_provider"):
        fn(provider_name="openai")
    with pytest.raises(llmguard.InvalidRequest, match="traceparent"):
        fn(traceparent="00-zz")
    with pytest.raises(llmguard.InvalidRequest, match="tokens_estimate"):
        fn(tokens_estimate=-5)
    assert fn.__name__ == "fn"


def test_execute_with_failover_takes_one_permit_per_attempt(daemon):
    @rate_limit_middleware
    def guarded(provider_name, prompt):
        return f"{provider_name}: {prompt}"

    router = ProviderRouter(daemon.client())
    out = router.execute_with_failover(guarded, workflow_id="once",
                                       prompt="hi", tokens_estimate=9)
    assert out == "groq: hi"
    assert daemon.metric("llm_requests_total", provider="groq",
                         workflow_id="once") == 1
    assert daemon.used("once") == 9
    with pytest.raises(TypeError, match="callable"):
        router.execute_with_failover(42)


TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_traceparent_parents_the_daemons_span(start_daemon, mock,
                                              monkeypatch):
    collector = mock("collector")
    d = start_daemon(FAST_COOLDOWN_ENV + "OTEL_EXPORTER_OTLP_ENDPOINT="
                     f"{collector.url}\n")
    monkeypatch.setenv("LLMGUARD_SOCKET", d.sock)
    fn, _ = failing_first(llmguard.ProviderError(429))
    fn("hi", workflow_id="wf-t", tokens_estimate=120, traceparent=TP)
    assert last_call().traceparent == TP
    spans = collector.spans(1)
    assert len(spans) == 1      # one span for both attempts
    span = spans[0]
    assert span["traceId"] == "0af7651916cd43dd8448eb211c80319c"
    assert span["parentSpanId"] == "b7ad6b7169203331"
    attrs = {a["key"]: a["value"] for a in span["attributes"]}
    assert attrs["llm.routed_to"] == {"stringValue": "openai"}
    assert attrs["llm.failover_attempts"] == {"intValue": "1"}


class FakeSpan:
    def __init__(self):
        self.attributes = {}

    def set_attribute(self, k, v):
        self.attributes[k] = v

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class FakeOtel:
    """The few names of opentelemetry's API that llmguard uses."""

    class SpanKind:
        CLIENT = "client"

    def __init__(self):
        self.spans = []
        outer = self

        class Tracer:
            def start_as_current_span(self, name, kind=None):
                assert (name, kind) == ("llm.call", "client")
                span = FakeSpan()
                outer.spans.append(span)
                return span
        self.tracer = Tracer()

    def get_tracer(self, name):
        return self.tracer

    def inject(self, carrier):
        carrier["traceparent"] = TP


def test_opentelemetry_span_when_importable(start_daemon, mock, monkeypatch):
    collector = mock("collector")
    d = start_daemon(FAST_COOLDOWN_ENV + "OTEL_EXPORTER_OTLP_ENDPOINT="
                     f"{collector.url}\n")
    monkeypatch.setenv("LLMGUARD_SOCKET", d.sock)
    fake = FakeOtel()
    monkeypatch.setattr(_trace, "_api", (fake, fake))
    fn, _ = failing_first(TimeoutError())
    fn("hi", workflow_id="wf-o", tenant_id="t-o")
    (span,) = fake.spans
    a = span.attributes
    assert a["llm.routed_to"] == "openai" and a["llm.failover_attempts"] == 1
    assert a["llm.success"] is True and a["llm.workflow_id"] == "wf-o"
    assert a["llm.tenant_id"] == "t-o" and a["llm.quota.allowed"] is True
    assert a["llm.ratelimit_acquired"] is True
    # Its traceparent went to the daemon: the daemon's span is its child.
    assert collector.spans(1)[0]["parentSpanId"] == "b7ad6b7169203331"
