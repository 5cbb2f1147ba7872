"""The limiter, quota, router and metrics modules against a real daemon."""
import time
from datetime import datetime, timedelta, timezone

import pytest

import llmguard
from llmguard.limiter import RateLimiter, get_rate_limiter
from llmguard.metrics import get_metrics_summary
from llmguard.quota import QuotaManager, get_quota_manager
from llmguard.router import ProviderRouter, get_provider_router


def test_singletons():
    assert get_rate_limiter() is get_rate_limiter()
    assert get_quota_manager() is get_quota_manager()
    assert get_provider_router() is get_provider_router()


def test_acquire_release_status(daemon):
    lim = get_rate_limiter()
    st = lim.get_status("groq")
    assert st["rate_per_sec"] == 50.0 and st["max_tokens"] == 50.0
    assert st["enabled"] is True and st["waiters"] == 0
    assert st["tokens_per_min"] == 0.0 and "available_llm_tokens" not in st
    assert lim.acquire("groq", tokens=50, timeout=0)
    assert lim.get_status("groq")["available_tokens"] < 1
    assert lim.acquire(provider_name="groq", tokens=1, timeout=0) is False
    t0 = time.monotonic()
    assert lim.acquire("groq", tokens=5, timeout=2.0)    # 5 at 50/s: ~0.1 s
    assert time.monotonic() - t0 < 1.9
    assert lim.release("groq", tokens=10) >= 10
    assert lim.release("groq", tokens=1000) == 50.0     # capped at the burst


def test_limiter_errors(daemon):
    lim = get_rate_limiter()
    with pytest.raises(llmguard.NoProviderError, match=r"unknown provider "
                       r"'nosuch' \(configured: groq, openai\)"):
        lim.acquire("nosuch")
    with pytest.raises(llmguard.NoProviderError):
        lim.get_status("nosuch")
    with pytest.raises(llmguard.InvalidRequest, match="exceed the burst"):
        lim.acquire("groq", tokens=51)
    with pytest.raises(llmguard.InvalidRequest, match="at least 1"):
        lim.acquire("groq", tokens=0)
    with pytest.raises(llmguard.InvalidRequest, match="timeout"):
        lim.acquire("groq", timeout=-1)
    with pytest.raises(TypeError, match="provider_name must be a str"):
        lim.acquire(None)
    with pytest.raises(llmguard.InvalidRequest, match="tokens must be an int"):
        lim.release("groq", tokens=1.5)


def test_llm_token_bucket(start_daemon):
    d = start_daemon("PROVIDER_TPM_RATE_PER_SEC=100\n"
                     "PROVIDER_TPM_TOKENS_PER_MIN=600\n")
    lim = RateLimiter(d.client())
    assert lim.get_status("tpm")["available_llm_tokens"] == 600.0
    assert lim.acquire("tpm", llm_tokens=500, timeout=0)
    assert not lim.acquire("tpm", llm_tokens=500, timeout=0)
    lim.release("tpm", tokens=0, llm_tokens=500)
    assert lim.acquire("tpm", llm_tokens=500, timeout=0)


def test_quota_soft(daemon):
    q = get_quota_manager()
    st = q.get_quota_status(workflow_id="fresh")
    assert st["subject"] == "workflow:fresh"
    assert (st["tokens_used"], st["tokens_remaining"], st["tokens_limit"]) \
        == (0, 100000, 100000)
    assert st["reset_at"] is None
    assert st["window_end"] - st["window_start"] == timedelta(days=30)
    assert abs(st["window_end"] - datetime.now(timezone.utc)) < \
        timedelta(seconds=30)
    assert q.check_and_reserve(workflow_id="wf", tenant_id="t", tokens=100)
    d = q.reserve("wf", "t", 99950)
    assert d["allowed"] and d["over_quota"]
    assert d["subject"] == "workflow:wf" and d["tokens_used"] == 100050
    assert d["tokens_remaining"] == 0
    assert isinstance(d["reset_at"], datetime) and d["reset_at"].tzinfo
    q.commit("wf", "t", reservation=d["reservation"], estimate=99950,
             actual=50)
    st = q.get_quota_status(tenant_id="t")
    assert (st["subject"], st["tokens_used"]) == ("tenant:t", 150)
    assert st["reset_at"] > datetime.now(timezone.utc)
    assert daemon.used("wf") == 150


def test_quota_hard(start_daemon):
    d = start_daemon("QUOTA_ENFORCEMENT=hard\n"
                     "DEFAULT_DAILY_QUOTA_TOKENS=100\n")
    q = QuotaManager(d.client())
    assert q.check_and_reserve(workflow_id="capped", tokens=60)
    assert q.check_and_reserve(workflow_id="capped", tokens=60) is False
    with pytest.raises(llmguard.QuotaExceededError) as ei:
        q.reserve(workflow_id="capped", tokens=41)
    e = ei.value
    assert (e.subject, e.tokens_used, e.tokens_limit) == \
        ("workflow:capped", 60, 100)
    assert isinstance(e.reset_at, datetime)
    assert q.get_quota_status("capped")["tokens_used"] == 60
    assert q.check_and_reserve(workflow_id="capped", tokens=40)


def test_quota_errors(daemon):
    q = get_quota_manager()
    with pytest.raises(llmguard.InvalidRequest,
                       match="give workflow_id, tenant_id or both"):
        q.check_and_reserve(tokens=1)
    with pytest.raises(llmguard.InvalidRequest, match="not both"):
        q.get_quota_status("a", "b")
    with pytest.raises(llmguard.InvalidRequest, match="control character"):
        q.get_quota_status("bad\x01id")
    with pytest.raises(llmguard.InvalidRequest, match="tokens must be"):
        q.check_and_reserve("wf", tokens=-1)
    with pytest.raises(TypeError):
        q.get_quota_status(workflow_id=7)
    with pytest.raises(llmguard.InvalidRequest, match="is not one"):
        q.commit("wf", reservation=3, estimate=1, actual=1)


def test_select_provider(daemon):
    r = get_provider_router()
    assert r.select_provider() == "groq"
    assert r.select_provider(workflow_id="wf", preferred_provider="openai") \
        == "openai"
    assert r.select_provider(exclude=["groq"]) == "openai"
    with pytest.raises(llmguard.NoProviderError, match="every provider"):
        r.select_provider(exclude=["groq", "openai"])
    with pytest.raises(llmguard.NoProviderError, match="preferred"):
        r.select_provider(preferred_provider="nosuch")
    assert ProviderRouter(daemon.client()).select_provider() == "groq"


def test_metrics_summary(daemon):
    calls = 3
    for _ in range(calls):
        get_provider_router().execute_with_failover(
            lambda provider_name: {"usage": {"total_tokens": 5}},
            workflow_id="m", tokens_estimate=10)
    m = get_metrics_summary()
    assert m["counters"]["llm_requests_total"] == calls
    assert isinstance(m["counters"]["llm_requests_total"], int)
    assert m["counters"].get("llm_failovers_total", 0) == 0
    assert m["histograms"]["llm_request_latency_ms"]["count"] == calls
    # Charged the usage (5 a call), not the estimate (10).
    assert m["gauges"]["workflow_quota_remaining_tokens"] == 100000 - 3 * 5
    rows = m["series"]["counters"]["llm_requests_total"]
    assert rows == [{"labels": {"provider": "groq", "workflow_id": "m",
                                "outcome": "ok", "model": ""},
                     "value": float(calls)}]
    hist = m["series"]["histograms"]["llm_request_latency_ms"][0]
    assert hist["buckets"][-1] == {"le": "+Inf", "count": calls}
    assert daemon.metric("llm_requests_total", provider="groq",
                         workflow_id="m") == calls


def test_metrics_pages(start_daemon):
    # Enough series for more than one page of about 48000 bytes.
    d = start_daemon("PROVIDER_GROQ_RATE_PER_SEC=100000\n"
                     "PROVIDER_GROQ_BURST=100000\n")
    q = QuotaManager(d.client())
    for i in range(1500):
        q.check_and_reserve(workflow_id=f"workflow-with-a-long-name-{i:05d}",
                            tokens=1)
    m = get_metrics_summary(d.client())
    rows = m["series"]["gauges"]["workflow_quota_remaining_tokens"]
    assert len(rows) == 1500
    assert len({r["labels"]["workflow_id"] for r in rows}) == 1500
