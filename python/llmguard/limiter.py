"""Per-provider token buckets, held by llmguardd: ``get_rate_limiter()``.

Every process on the host shares one bucket per provider, so the rate
configured with ``PROVIDER_<NAME>_RATE_PER_SEC`` is the rate of all of
them together (proto/PROTOCOL.md, "Providers and buckets").
"""
from typing import Any, Dict, Optional, Tuple

from . import _args
from .client import Client, default_client
from .errors import InvalidRequest, RateLimitTimeout

__all__ = ["RateLimiter", "get_rate_limiter"]


def acquire_request(provider_name: str, tokens: int, timeout: float,
                    llm_tokens: int) -> Tuple[str, Dict[str, Any], float]:
    """(op, fields, wait) of an acquire."""
    _args.name(provider_name, "provider_name")
    if _args.count(tokens, "tokens") == 0:
        raise InvalidRequest("tokens must be at least 1")
    wait = _args.seconds(timeout, "timeout")
    return "acquire", {
        "provider": provider_name, "tokens": tokens,
        "llm_tokens": _args.count(llm_tokens, "llm_tokens") or None,
        "timeout_ms": wait * 1e3}, wait


def release_request(provider_name: str, tokens: int,
                    llm_tokens: int) -> Dict[str, Any]:
    """The fields of a release."""
    return {"provider": _args.name(provider_name, "provider_name"),
            "tokens": _args.count(tokens, "tokens"),
            "llm_tokens": _args.count(llm_tokens, "llm_tokens") or None}


def status_dict(rep: Dict[str, Any]) -> Dict[str, Any]:
    """get_status's dict from a limiter_status reply."""
    st = {k: rep[k] for k in ("available_tokens", "rate_per_sec",
                              "max_tokens", "enabled", "waiters",
                              "tokens_per_min")}
    for k in ("available_tokens", "rate_per_sec", "max_tokens",
              "tokens_per_min"):
        st[k] = float(st[k])
    if "available_llm_tokens" in rep:
        st["available_llm_tokens"] = float(rep["available_llm_tokens"])
    return st


class RateLimiter:
    """The token buckets of llmguardd (``client`` None: the default
    client)."""

    def __init__(self, client: Optional[Client] = None) -> None:
        self._client = client

    @property
    def client(self) -> Client:
        """The client this limiter talks through."""
        return self._client or default_client()

    def acquire(self, provider_name: str, tokens: int = 1,
                timeout: float = 5.0, llm_tokens: int = 0) -> bool:
        """Take ``tokens`` request tokens (and ``llm_tokens`` LLM tokens,
        when the provider has TOKENS_PER_MIN) from provider_name's bucket,
        waiting in its first-in, first-out queue up to ``timeout`` seconds
        (0: try once).  True when granted; False when the wait ran out
        (nothing was taken).  Raises NoProviderError for an unknown
        provider, InvalidRequest for tokens above its burst."""
        op, fields, wait = acquire_request(provider_name, tokens, timeout,
                                           llm_tokens)
        try:
            self.client.call(op, fields, wait)
        except RateLimitTimeout:
            return False
        return True

    def release(self, provider_name: str, tokens: int = 1,
                llm_tokens: int = 0) -> float:
        """Give tokens back (a permit that was not used); the bucket is
        capped at its burst.  Returns the request tokens available after."""
        rep = self.client.call("release", release_request(
            provider_name, tokens, llm_tokens))
        return float(rep["available_tokens"])

    def get_status(self, provider_name: str) -> Dict[str, Any]:
        """``{available_tokens, rate_per_sec, max_tokens, enabled, waiters,
        tokens_per_min}`` of provider_name's bucket (and
        ``available_llm_tokens`` when it has TOKENS_PER_MIN)."""
        rep = self.client.call("limiter_status", {
            "provider": _args.name(provider_name, "provider_name")})
        return status_dict(rep)


_limiter: Optional[RateLimiter] = None


def get_rate_limiter() -> RateLimiter:
    """The process's RateLimiter, on the default client."""
    global _limiter
    if _limiter is None:
        _limiter = RateLimiter()
    return _limiter
