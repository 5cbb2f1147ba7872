"""The provider's rate-limit headers go with the report, and the daemon
fits its buckets to them and learns the limits it was not given."""
import json
from types import SimpleNamespace

import pytest

from llmguard import last_call
from llmguard._failover import report_headers
from llmguard.middleware import rate_limit_middleware


def provider(daemon, name):
    doc = json.loads(daemon.ctl("--json", "status").stdout)
    return next(p for p in doc["providers"] if p["name"] == name)


def answering(headers):
    """A guarded function whose answer carries headers."""
    @rate_limit_middleware(max_attempts=1)
    def fn(provider_name):
        return SimpleNamespace(headers=headers, usage={"total_tokens": 10})
    return fn


def test_report_headers_known_names_lowered():
    hdrs = {"X-RateLimit-Remaining-Requests": "0", "Server": "mock",
            "Retry-After": "2", "content-type": "application/json"}
    assert report_headers(hdrs) == {"x-ratelimit-remaining-requests": "0",
                                    "retry-after": "2"}
    assert report_headers({"Server": "x"}) is None
    many = {f"x-ratelimit-{w}-{k}": "1" for w in ("limit", "remaining",
                                                  "reset")
            for k in ("requests", "tokens")}
    many.update({f"anthropic-ratelimit-{k}-{w}": "1"
                 for k in ("requests", "tokens", "input-tokens",
                           "output-tokens")
                 for w in ("limit", "remaining", "reset")})
    many.update({"retry-after": "1", "retry-after-ms": "1"})
    assert len(many) == 20
    assert len(report_headers(many)) == 20
    assert report_headers({1: "x", "retry-after": 5}) is None


def test_remaining_zero_empties_the_bucket(start_daemon, monkeypatch):
    d = start_daemon("PROVIDER_GROQ_RATE_PER_SEC=1\n"
                     "PROVIDER_GROQ_BURST=5\n")
    monkeypatch.setenv("LLMGUARD_SOCKET", d.sock)
    answering({"X-RateLimit-Remaining-Requests": "0",
               "X-RateLimit-Reset-Requests": "30s",
               "Server": "mock"})(preferred_provider="groq")
    assert last_call().headers == {"x-ratelimit-remaining-requests": "0",
                                   "x-ratelimit-reset-requests": "30s"}
    # Without the headers 4 of 5 would be left; with them none, and none
    # refills before the reset.
    assert provider(d, "groq")["available_tokens"] < 0.01


def test_learned_limits_in_status(start_daemon, monkeypatch):
    d = start_daemon("PROVIDER_GROQ_RATE_PER_SEC=learn\n")
    monkeypatch.setenv("LLMGUARD_SOCKET", d.sock)
    p = provider(d, "groq")
    assert (p["rate_source"], p["tokens_per_min_source"]) == ("none", "none")
    assert p["rate_per_sec"] == 0
    answering({"x-ratelimit-limit-requests": "120",
               "x-ratelimit-remaining-requests": "119",
               "x-ratelimit-reset-requests": "500ms",
               "x-ratelimit-limit-tokens": "6000",
               "x-ratelimit-remaining-tokens": "5990",
               "x-ratelimit-reset-tokens": "100ms"})(preferred_provider="groq")
    p = provider(d, "groq")
    assert (p["rate_source"], p["tokens_per_min_source"]) == \
        ("learned", "learned")
    assert p["rate_per_sec"] == pytest.approx(2.0)
    assert p["max_tokens"] == pytest.approx(120.0)
    assert p["tokens_per_min"] == pytest.approx(6000.0)
