"""The pieces of a guarded call that need no daemon: classification,
Retry-After, rate-limit headers, usage."""
import asyncio
import email.utils
from types import SimpleNamespace

import httpx
import pytest

from llmguard import ProviderError, _failover as f


@pytest.mark.parametrize("exc, outcome", [
    (ProviderError(429), f.RATE_LIMITED),
    (ProviderError(500), f.SERVER_ERROR),
    (ProviderError(599), f.SERVER_ERROR),
    (ProviderError(403), f.CLIENT_ERROR),
    (ProviderError(302), None),
    (type("E", (Exception,), {"status": 503})(), f.SERVER_ERROR),
    (asyncio.TimeoutError(), f.TIMEOUT),
    (httpx.PoolTimeout("p"), f.TIMEOUT),
    (httpx.RemoteProtocolError("eof"), f.SERVER_ERROR),
    (BrokenPipeError(), f.SERVER_ERROR),
    (type("APITimeoutError", (Exception,), {})(), f.TIMEOUT),
    (type("APIConnectionError", (Exception,), {})(), f.SERVER_ERROR),
    (RuntimeError("bug"), None),
    (KeyboardInterrupt(), None),
])
def test_classify(exc, outcome):
    assert f.classify(exc) == outcome


def test_retry_after_forms():
    assert f.retry_after_s({"retry-after": "3"}) == 3.0
    assert f.retry_after_s({"retry-after": "1.5", "retry-after-ms": "250"}) \
        == 0.25
    when = email.utils.formatdate(1000.0 + 30, usegmt=True)
    assert f.retry_after_s({"retry-after": when}, now=1000.0) == 30.0
    assert f.retry_after_s({"retry-after": "0"}) is None
    assert f.retry_after_s({"retry-after": "tomorrow"}) is None
    assert f.retry_after_s({"retry-after": "1e9"}) == 86400.0
    assert f.retry_after_s({}) is None


def test_headers_of():
    resp = httpx.Response(429, headers={"Retry-After": "2", "Date": "x",
                                        "X-RateLimit-Limit-Tokens": "6000"})
    req = httpx.Request("GET", "http://h")
    exc = httpx.HTTPStatusError("429", request=req, response=resp)
    assert f.headers_of(exc) == {"retry-after": "2",
                                 "x-ratelimit-limit-tokens": "6000"}
    assert f.headers_of(SimpleNamespace(headers={
        "anthropic-ratelimit-tokens-remaining": "10"})) == {
        "anthropic-ratelimit-tokens-remaining": "10"}
    assert f.headers_of(object()) == {}
    assert len(f.RATE_LIMIT_HEADERS) == 20


def test_usage_tokens():
    assert f.usage_tokens({"usage": {"total_tokens": 9}}) == 9
    assert f.usage_tokens(SimpleNamespace(
        usage=SimpleNamespace(total_tokens=4))) == 4
    assert f.usage_tokens({"usage": {"input_tokens": 2,
                                     "output_tokens": 3}}) == 5
    assert f.usage_tokens({"usage": {"total_tokens": -1}}) is None
    assert f.usage_tokens({"usage": None}) is None
    assert f.usage_tokens("text") is None


def test_call_ids_differ():
    ids = {f.new_call_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) <= 128 for i in ids)
