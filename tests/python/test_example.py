"""examples/python/groq_client.py: the seed's call_groq_sync, a real chat
completion over httpx through the middleware, against two mock providers;
the seed's "Basic Usage", "Failover Example" and quota blocks with
``app.llm.groq_client`` replaced by ``groq_client``."""
import subprocess
import sys

import pytest

import llmguard
from conftest import SRCDIR

EXAMPLES = SRCDIR / "examples" / "python"
sys.path.insert(0, str(EXAMPLES))

BASIC_USAGE = '''
from groq_client import call_groq_sync

# Middleware is applied automatically
result = call_groq_sync(
    prompt="Hello, world!",
    workflow_id="my-workflow",  # For quota tracking
    tenant_id="tenant-123",     # Optional
    tokens_estimate=100,        # Optional token estimate
)
'''

QUOTA_SUBJECTS = '''
# Per-workflow quota
call_groq_sync(prompt="Hello", workflow_id="wf-123")

# Per-tenant quota
call_groq_sync(prompt="Hello", tenant_id="tenant-456")

# Both (separate quotas)
call_groq_sync(prompt="Hello", workflow_id="wf-123", tenant_id="tenant-456")
'''


@pytest.fixture
def providers(daemon, mock, monkeypatch):
    monkeypatch.setenv("PROVIDER_GROQ_API_KEY", "gsk-test")
    return mock("groq"), mock("openai")


def test_basic_usage_block(daemon, providers):
    groq, _ = providers
    ns = {}
    exec(BASIC_USAGE, ns)
    assert ns["result"]["choices"][0]["message"]["content"] == "groq"
    assert daemon.used("my-workflow") == 42
    assert groq.stats()["auth"] == "Bearer gsk-test"


def test_failover_example(daemon, providers):
    groq, openai = providers
    from groq_client import call_groq_sync
    groq.mode("429:1")
    result = call_groq_sync(prompt="Hello")
    info = llmguard.last_call()
    assert result["choices"][0]["message"]["content"] == "openai"
    assert (info.provider, info.failover_attempts) == ("openai", 1)
    assert groq.requests() == 1 and openai.requests() == 1


def test_quota_subject_blocks(daemon, providers):
    from groq_client import call_groq_sync
    exec(QUOTA_SUBJECTS, {"call_groq_sync": call_groq_sync})
    assert daemon.used("wf-123") == 84
    out = daemon.ctl("--json", "quota", "tenant-456", "--tenant").stdout
    assert '"tokens_used":84' in out.replace(" ", "")


def run(daemon, *args, **env):
    import os
    e = dict(os.environ, **env)
    e["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return subprocess.run([sys.executable, str(EXAMPLES / "groq_client.py"),
                           "-s", daemon.sock, *args], capture_output=True,
                          text=True, timeout=60, env=e)


def test_as_a_program(daemon, providers):
    groq, openai = providers
    r = run(daemon, "-w", "prog", "-e", "500", "hello")
    assert r.returncode == 0, r.stderr
    line, answer = r.stdout.splitlines()
    assert line == ("provider=groq success=1 failover_attempts=0 "
                    "rate_limited=0 quota_allowed=1 quota_remaining=99500 "
                    "wait_ms=0.0 guarded=1 tokens=42")
    assert answer == "groq"
    assert daemon.used("prog") == 42
    groq.mode("500")
    openai.mode("500")
    r = run(daemon, "-w", "prog", "hello")
    assert r.returncode == 1
    assert r.stdout.startswith("provider=openai success=0 "
                               "failover_attempts=1 ")


def test_program_without_a_daemon(tmp_path, providers, daemon):
    groq, _ = providers
    daemon.stop()
    r = run(daemon, "hello", LLMGUARD_FAIL_MODE="open")
    assert r.returncode == 0 and "guarded=0" in r.stdout
    r = run(daemon, "hello", LLMGUARD_FAIL_MODE="closed")
    assert r.returncode == 69 and "LLMGUARD_FAIL_MODE=closed" in r.stderr
    assert groq.requests() == 1


def test_program_hard_quota(start_daemon, mock):
    groq = mock("groq")
    d = start_daemon("PROVIDER_GROQ_RATE_PER_SEC=50\nQUOTA_ENFORCEMENT=hard\n"
                     "DEFAULT_DAILY_QUOTA_TOKENS=100\n")
    r = run(d, "-w", "capped", "-e", "150", "hello")
    assert r.returncode == 3 and "quota_exceeded" in r.stderr
    assert groq.requests() == 0
