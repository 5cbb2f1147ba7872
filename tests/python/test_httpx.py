"""llmguard.httpx: GuardedTransport and AsyncGuardedTransport against a
daemon and the mock providers (and httpx.MockTransport for streamed and
compressed answers)."""
import gzip
import json

import httpx
import pytest

import llmguard
from llmguard import last_call
from llmguard.httpx import AsyncGuardedTransport, GuardedTransport

BODY = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}


def state(daemon, name):
    doc = json.loads(daemon.ctl("--json", "status").stdout)
    return next(p for p in doc["providers"] if p["name"] == name)


def test_one_permit_per_request_usage_charged(daemon, mock):
    groq = mock("groq")
    transport = GuardedTransport(provider="groq", workflow_id="wf",
                                 tenant_id="t", tokens_estimate=500)
    with httpx.Client(transport=transport, base_url=groq.base_url) as http:
        r = http.post("/chat/completions", json=BODY)
        assert r.status_code == 200
        assert r.json()["choices"][0]["message"]["content"] == "groq"
        assert daemon.used("wf") == 42             # usage, not 500
        groq.mode("ok:77")
        http.post("/chat/completions", json=BODY, extensions={
            "llmguard": {"workflow_id": "other", "tokens_estimate": 0}})
    assert daemon.used("other") == 77 and daemon.used("wf") == 42
    assert daemon.metric("llm_requests_total", provider="groq",
                         workflow_id="wf") == 1
    assert last_call().provider == "groq" and last_call().success


def test_errors_are_reported_as_such(start_daemon, mock, monkeypatch):
    d = start_daemon("PROVIDER_GROQ_RATE_PER_SEC=50\n"
                     "PROVIDER_OPENAI_RATE_PER_SEC=50\n"
                     "PROVIDER_COOLDOWN_SEC=1\n")
    monkeypatch.setenv("LLMGUARD_SOCKET", d.sock)
    groq = mock("groq", "429:6")
    with httpx.Client(transport=GuardedTransport("groq", workflow_id="e"),
                      base_url=groq.base_url, timeout=0.5) as http:
        r = http.post("/chat/completions", json=BODY)
        assert r.status_code == 429                 # returned, not raised
        st = state(d, "groq")
        assert st["state"] == "degraded"
        assert 5.0 < st["cooldown_remaining_s"] <= 6.0   # its Retry-After
        assert d.metric("llm_rate_limited_total", provider="groq") == 1
        # While degraded, the permit is still for groq (never openai).
        groq.mode("500")
        assert http.post("/chat/completions", json=BODY).status_code == 500
        assert last_call().provider == "groq"
        groq.mode("400")
        assert http.post("/chat/completions", json=BODY).status_code == 400
        assert last_call().outcome == "client_error"
        groq.mode("hang")
        with pytest.raises(httpx.ReadTimeout):
            http.post("/chat/completions", json=BODY)
        assert last_call().outcome == "timeout"
    assert d.metric("llm_requests_total", provider="groq",
                    workflow_id="e") == 4
    assert d.used("e") == 0


def test_unknown_provider_and_bad_options(daemon):
    with httpx.Client(transport=GuardedTransport("mistral")) as http:
        with pytest.raises(llmguard.NoProviderError, match="mistral"):
            http.get("http://127.0.0.1:9/")
    with pytest.raises(llmguard.InvalidRequest, match="provider"):
        GuardedTransport("")
    with pytest.raises(llmguard.InvalidRequest):
        GuardedTransport("groq", tokens_estimate=-1)
    with httpx.Client(transport=GuardedTransport("groq")) as http:
        with pytest.raises(TypeError, match="unknown key"):
            http.get("http://127.0.0.1:9/",
                     extensions={"llmguard": {"workflow": "x"}})


def test_fail_open_and_closed(tmp_path, monkeypatch, mock):
    groq = mock("groq")
    monkeypatch.setenv("LLMGUARD_SOCKET", str(tmp_path / "nobody.sock"))
    with httpx.Client(transport=GuardedTransport("groq"),
                      base_url=groq.base_url) as http:
        assert http.post("/chat/completions", json=BODY).status_code == 200
        assert last_call().guarded is False
        monkeypatch.setenv("LLMGUARD_FAIL_MODE", "closed")
        with pytest.raises(llmguard.DaemonUnavailable):
            http.post("/chat/completions", json=BODY)
    assert groq.requests() == 1


def fake_provider(request):
    """Answers a streamed chat completion (usage in its last event) or a
    gzip-compressed one, with a body to be read (as a network transport
    gives it)."""
    if json.loads(request.content).get("stream"):
        events = [{"choices": [{"delta": {"content": "hel"}}]},
                  {"choices": [{"delta": {"content": "lo"}}]},
                  {"choices": [], "usage": {"total_tokens": 11}}]
        text = "".join(f"data: {json.dumps(e)}\n\n" for e in events)
        text += "data: [DONE]\n\n"
        return httpx.Response(200, stream=httpx.ByteStream(text.encode()),
                              headers={"content-type": "text/event-stream"})
    body = gzip.compress(json.dumps({"usage": {"total_tokens": 13}}).encode())
    return httpx.Response(200, stream=httpx.ByteStream(body), headers={
        "content-type": "application/json", "content-encoding": "gzip"})


def test_streamed_and_compressed_answers(daemon):
    transport = GuardedTransport("groq", workflow_id="s", tokens_estimate=99,
                                 transport=httpx.MockTransport(fake_provider))
    with httpx.Client(transport=transport) as http:
        with http.stream("POST", "http://p/v1/chat/completions",
                         json=dict(BODY, stream=True)) as r:
            chunks = list(r.iter_lines())
        assert any("hel" in c for c in chunks)
        assert daemon.used("s") == 11
        assert http.post("http://p/v1/chat/completions",
                         json=BODY).json() == {"usage": {"total_tokens": 13}}
        assert daemon.used("s") == 24
        with http.stream("POST", "http://p/v1/chat/completions",
                         json=dict(BODY, stream=True)) as r:
            pass                  # closed unread: the estimate is charged
        assert daemon.used("s") == 24 + 99


@pytest.mark.asyncio
async def test_async_transport(daemon, mock):
    groq = mock("groq")
    transport = AsyncGuardedTransport("groq", workflow_id="a")
    async with httpx.AsyncClient(transport=transport,
                                 base_url=groq.base_url) as http:
        r = await http.post("/chat/completions", json=BODY)
        assert r.json()["usage"]["total_tokens"] == 42
        groq.mode("500")
        assert (await http.post("/chat/completions",
                                json=BODY)).status_code == 500
    assert daemon.used("a") == 42
    assert state(daemon, "groq")["state"] == "degraded"
    assert last_call().outcome == "server_error"
