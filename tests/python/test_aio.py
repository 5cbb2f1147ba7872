"""llmguard.aio: the same API on asyncio, many requests pipelined on one
connection, cancellation, the client timeout, fail-open."""
import asyncio
import os
import signal
import time

import pytest

import llmguard
from llmguard import aio, last_call

pytestmark = pytest.mark.asyncio


async def test_api_round_trip(daemon):
    lim, quota, router = (aio.get_rate_limiter(), aio.get_quota_manager(),
                          aio.get_provider_router())
    assert await aio.default_client().ping() >= 0
    st = await lim.get_status("groq")
    assert st["max_tokens"] == 50.0 and st["enabled"] is True
    assert await lim.acquire("groq", tokens=50, timeout=0)
    assert await lim.acquire("groq", timeout=0) is False
    assert await lim.release("groq", tokens=50) == 50.0
    assert await quota.check_and_reserve(workflow_id="wf", tokens=10)
    d = await quota.reserve("wf", tokens=5)
    await quota.commit("wf", reservation=d["reservation"], estimate=5,
                       actual=0)
    st = await quota.get_quota_status(workflow_id="wf")
    assert st["tokens_used"] == 10 and st["reset_at"] is not None
    assert await router.select_provider(preferred_provider="openai") == \
        "openai"
    out = await router.execute_with_failover(
        lambda provider_name: {"usage": {"total_tokens": 3}},
        workflow_id="wf")
    assert out["usage"]["total_tokens"] == 3
    m = await aio.get_metrics_summary()
    assert m["counters"]["llm_requests_total"] == 1
    with pytest.raises(llmguard.NoProviderError):
        await lim.acquire("nosuch")


async def test_many_concurrent_permits_on_one_connection(start_daemon,
                                                         monkeypatch):
    # 10/s, burst 5: 25 calls at once take about 2 s, all waiting together.
    d = start_daemon("PROVIDER_SLOW_RATE_PER_SEC=10\nPROVIDER_SLOW_BURST=5\n")
    client = aio.AsyncClient(d.sock)
    active = peak = 0

    @aio.rate_limit_middleware(timeout=10, client=client)
    async def call(i, provider_name):
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        active -= 1
        return i

    t0 = time.monotonic()
    out = await asyncio.gather(*(call(i, workflow_id="many")
                                 for i in range(25)))
    secs = time.monotonic() - t0
    assert out == list(range(25))
    assert 1.5 <= secs <= 8.0          # 20 tokens beyond the burst at 10/s
    assert peak >= 2                   # calls overlapped
    assert d.metric("llm_requests_total", provider="slow",
                    workflow_id="many") == 25
    # One connection served all of them.
    assert client._proto is not None and client._proto.next_id > 50


async def test_failover_and_sync_functions(daemon):
    calls = []

    @aio.rate_limit_middleware
    async def fn(provider_name):
        calls.append(provider_name)
        if provider_name == "groq":
            raise llmguard.ProviderError(503)
        return provider_name

    assert await fn(workflow_id="wf") == "openai"
    assert calls == ["groq", "openai"]
    assert last_call().failover_attempts == 1

    @aio.rate_limit_middleware
    def plain(provider_name):
        raise llmguard.ProviderError(400)

    with pytest.raises(llmguard.ProviderError):
        await plain(workflow_id="wf")
    assert last_call().outcome == "client_error"


async def test_cancelled_waits_hold_nothing(start_daemon):
    d = start_daemon("PROVIDER_SLOW_RATE_PER_SEC=2\nPROVIDER_SLOW_BURST=1\n"
                     "DEFAULT_DAILY_QUOTA_TOKENS=100000\n")
    client = aio.AsyncClient(d.sock)
    lim = aio.AsyncRateLimiter(client)
    assert await lim.acquire("slow", timeout=0)
    router = aio.AsyncProviderRouter(client)
    task = asyncio.ensure_future(router.execute_with_failover(
        lambda provider_name: 1, workflow_id="cancelled",
        tokens_estimate=500, timeout=5))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The permit is granted after the cancel (in ~0.5 s) and reported
    # unused at once: its 500-token reservation is given back.
    deadline = time.monotonic() + 5
    while d.used("cancelled") != 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert d.used("cancelled") == 0

    async def slow_call(provider_name):
        await asyncio.sleep(10)

    task = asyncio.ensure_future(router.execute_with_failover(
        slow_call, workflow_id="cancelled2", tokens_estimate=300, timeout=5))
    await asyncio.sleep(1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await client.ping()         # the report went out before this
    assert d.used("cancelled2") == 0


async def test_stopped_daemon_bounded(daemon, monkeypatch):
    monkeypatch.setenv("LLMGUARD_CLIENT_TIMEOUT_MS", "500")
    client = aio.default_client()
    await client.ping()
    lim = aio.get_rate_limiter()
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        results = await asyncio.gather(
            client.ping(), lim.acquire("groq", timeout=0.3),
            aio.get_quota_manager().get_quota_status("wf"),
            return_exceptions=True)
        secs = time.monotonic() - t0
        assert all(isinstance(r, llmguard.DaemonUnavailable)
                   for r in results), results
        assert secs <= 0.8 + 2.0
        called = []
        out = await aio.get_provider_router().execute_with_failover(
            lambda provider_name: called.append(provider_name) or "x",
            preferred_provider="groq", timeout=0.2)
        assert out == "x" and last_call().guarded is False
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
    assert await client.ping() >= 0
    assert await lim.acquire("groq", timeout=1)


async def test_unavailable_and_fail_closed(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMGUARD_SOCKET", str(tmp_path / "nobody.sock"))
    with pytest.raises(llmguard.DaemonUnavailable, match="no llmguardd"):
        await aio.get_rate_limiter().acquire("groq")
    monkeypatch.setenv("LLMGUARD_FAIL_MODE", "closed")

    @aio.rate_limit_middleware
    async def fn(provider_name):
        return provider_name

    with pytest.raises(llmguard.DaemonUnavailable, match="closed"):
        await fn(preferred_provider="groq")
    monkeypatch.setenv("LLMGUARD_FAIL_MODE", "open")
    assert await fn(preferred_provider="groq") == "groq"


async def test_reconnects_after_a_restart(start_daemon):
    d = start_daemon()
    client = aio.AsyncClient(d.sock)
    await client.ping()
    d.stop()
    await asyncio.sleep(0.1)
    with pytest.raises(llmguard.DaemonUnavailable):
        await client.ping()
    d.start()
    assert await client.ping() >= 0
    await client.close()
