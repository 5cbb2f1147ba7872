"""llmguard: exact per-provider rate limits, quotas and failover for LLM
calls, shared by every process on the host through llmguardd.

::

    from llmguard.limiter import get_rate_limiter
    from llmguard.quota import get_quota_manager
    from llmguard.router import get_provider_router
    from llmguard.metrics import get_metrics_summary
    from llmguard.middleware import rate_limit_middleware
    from llmguard import QuotaExceededError, LlmguardError, DaemonUnavailable

The package speaks llmguardd's wire protocol (proto/PROTOCOL.md) itself; it
needs only msgpack.  ``llmguard.aio`` is the same API for asyncio, and
``llmguard.httpx`` guards any httpx-based SDK.  See llmguard-python(7).
"""
from ._failover import CallInfo, last_call
from .client import Client, default_client
from .errors import (DaemonUnavailable, InvalidRequest, LlmguardError,
                     NoProviderError, PermissionDenied, ProtocolError,
                     ProviderError, QuotaExceededError, RateLimitTimeout)

__version__ = "0.1.0"

__all__ = [
    "CallInfo", "Client", "DaemonUnavailable", "InvalidRequest",
    "LlmguardError", "NoProviderError", "PermissionDenied", "ProtocolError",
    "ProviderError", "QuotaExceededError", "RateLimitTimeout",
    "default_client", "last_call", "__version__",
]
