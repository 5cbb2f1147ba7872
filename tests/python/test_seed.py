"""The seed's code blocks ("Programmatic Access", "Manual Middleware
Usage", "API Reference" of the rate limiting document this package was
written for), exactly as written there with ``app.ratelimit`` replaced by
``llmguard``, run against a daemon and two mock providers."""
import textwrap

import httpx
import pytest

import llmguard

PROGRAMMATIC_ACCESS = '''
from llmguard.limiter import get_rate_limiter
from llmguard.quota import get_quota_manager
from llmguard.metrics import get_metrics_summary

# Check rate limiter status
limiter = get_rate_limiter()
status = limiter.get_status("groq")
print(f"Available tokens: {status['available_tokens']}")

# Check quota status
quota_manager = get_quota_manager()
quota_status = quota_manager.get_quota_status(workflow_id="my-workflow")
print(f"Quota remaining: {quota_status['tokens_remaining']}")

# Get metrics
metrics = get_metrics_summary()
print(f"Total requests: {metrics['counters'].get('llm_requests_total', 0)}")
'''

MANUAL_MIDDLEWARE = '''
from llmguard.middleware import rate_limit_middleware

@rate_limit_middleware
def my_llm_call(provider_name, prompt, **kwargs):
    # Your LLM call implementation
    # provider_name is automatically injected by middleware
    return call_provider(provider_name, prompt)

# Call with metadata
result = my_llm_call(
    prompt="Hello",
    workflow_id="wf-123",
    tokens_estimate=50,
)
'''

API_REFERENCE = '''
from llmguard.limiter import get_rate_limiter

limiter = get_rate_limiter()

# Acquire tokens
success = limiter.acquire(provider_name="groq", tokens=1, timeout=5.0)

# Release tokens (for cancellation)
limiter.release(provider_name="groq", tokens=1)

# Get status
status = limiter.get_status(provider_name="groq")
# Returns: {available_tokens, rate_per_sec, max_tokens, enabled}

from llmguard.quota import get_quota_manager

quota_manager = get_quota_manager()

# Check and reserve
allowed = quota_manager.check_and_reserve(
    workflow_id="wf-123",
    tenant_id="tenant-456",
    tokens=100
)

# Get status
status = quota_manager.get_quota_status(workflow_id="wf-123")
# Returns: {tokens_used, tokens_remaining, tokens_limit, window_start, window_end, reset_at}

from llmguard.router import get_provider_router

router = get_provider_router()

# Select provider
provider = router.select_provider(
    workflow_id="wf-123",
    preferred_provider="groq"
)

# Execute with failover
result = router.execute_with_failover(
    func=my_llm_call,
    workflow_id="wf-123",
    max_attempts=3
)
'''


def call_provider(provider_name, prompt):
    """The seed leaves this to the reader: one OpenAI-compatible chat
    completion at PROVIDER_<NAME>_BASE_URL, its JSON returned (with
    usage.total_tokens, which the middleware charges)."""
    import os
    base = os.environ[f"PROVIDER_{provider_name.upper()}_BASE_URL"]
    r = httpx.post(f"{base}/chat/completions", timeout=5, json={
        "model": "default", "messages": [{"role": "user", "content": prompt}]})
    r.raise_for_status()
    return r.json()


@pytest.fixture
def providers(daemon, mock):
    return mock("groq"), mock("openai")


def test_programmatic_access_prints_real_values(daemon, providers, capsys):
    exec(textwrap.dedent(MANUAL_MIDDLEWARE), {"call_provider": call_provider})
    capsys.readouterr()
    ns = {}
    exec(PROGRAMMATIC_ACCESS, ns)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    tokens = float(lines[0].split(": ")[1])
    assert 45 <= tokens <= 50 and lines[0] == \
        f"Available tokens: {ns['status']['available_tokens']}"
    assert lines[1] == "Quota remaining: 100000"
    assert lines[2] == "Total requests: 1"      # my_llm_call's


def test_manual_middleware_usage(daemon, providers):
    groq, openai = providers
    ns = {"call_provider": call_provider}
    exec(MANUAL_MIDDLEWARE, ns)
    result = ns["result"]
    assert result["choices"][0]["message"]["content"] == "groq"
    assert result["usage"]["total_tokens"] == 42
    assert daemon.used("wf-123") == 42          # usage, not the estimate 50
    groq.mode("500")
    ns2 = {"call_provider": call_provider}
    exec(MANUAL_MIDDLEWARE, ns2)
    assert ns2["result"]["choices"][0]["message"]["content"] == "openai"
    assert llmguard.last_call().failover_attempts == 1


def test_api_reference(daemon, providers):
    # The block calls a my_llm_call it does not define; execute_with_failover
    # gives it only provider_name=.
    ns = {"my_llm_call": lambda provider_name: call_provider(provider_name,
                                                             "Hello")}
    exec(API_REFERENCE, ns)
    assert ns["success"] is True
    assert ns["allowed"] is True
    assert ns["provider"] == "groq"
    assert ns["result"]["choices"][0]["message"]["content"] == "groq"
    st = ns["status"]
    assert set(st) == {"subject", "tokens_used", "tokens_remaining",
                       "tokens_limit", "window_start", "window_end",
                       "reset_at"}
    assert st["tokens_used"] == 100 and st["tokens_remaining"] == 99900
    # After the block: its call was charged its usage on top.
    assert daemon.used("wf-123") == 142
    lim = ns["limiter"].get_status(provider_name="groq")
    assert {"available_tokens", "rate_per_sec", "max_tokens",
            "enabled"} <= set(lim)
