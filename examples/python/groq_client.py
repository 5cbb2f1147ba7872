#!/usr/bin/env python3
"""groq_client - the seed's ``call_groq_sync``: one OpenAI-compatible chat
completion over httpx, guarded by llmguard's middleware.

    from groq_client import call_groq_sync

    result = call_groq_sync(
        prompt="Hello, world!",
        workflow_id="my-workflow",  # for quota tracking
        tenant_id="tenant-123",     # optional
        tokens_estimate=100,        # optional token estimate
    )

llmguardd chooses the provider (groq first, by the daemon's priorities),
waits for its token and checks the quotas; a 429, a 5xx or a timeout fails
over to the next provider.  For a provider <name> the call reads
PROVIDER_<NAME>_BASE_URL (e.g. https://api.groq.com/openai/v1),
PROVIDER_<NAME>_API_KEY and PROVIDER_<NAME>_MODEL from the environment;
LLMGUARD_DEMO_HTTP_TIMEOUT_MS bounds each HTTP request (default 30000).

As a program, like examples/ratelimit_demo:

    groq_client.py [-s SOCKET] [-w WORKFLOW] [-t TENANT] [-p PROVIDER]
                   [-e TOKENS_ESTIMATE] [-a MAX_ATTEMPTS] PROMPT

prints "provider=... success=... failover_attempts=... rate_limited=...
quota_allowed=... quota_remaining=... wait_ms=... guarded=... tokens=..."
and the answer; exits 0 on success, 1 when the call failed, 3 over a hard
quota, 69 when the daemon is unreachable and the call was not made.
"""
import argparse
import os
import sys
from typing import Any, Dict, Optional

import httpx

import llmguard
from llmguard.middleware import rate_limit_middleware


def _env(provider: str, what: str) -> Optional[str]:
    return os.environ.get(f"PROVIDER_{provider.upper()}_{what}")


@rate_limit_middleware
def chat(prompt: str, provider_name: str) -> Dict[str, Any]:
    """One chat completion at provider_name; its JSON answer (whose
    usage.total_tokens the middleware charges).  An HTTP error is raised as
    httpx.HTTPStatusError, which the middleware classifies by its status."""
    base = _env(provider_name, "BASE_URL")
    if base is None:
        raise llmguard.InvalidRequest(
            f"no PROVIDER_{provider_name.upper()}_BASE_URL in the environment")
    headers = {}
    key = _env(provider_name, "API_KEY")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    timeout_s = float(os.environ.get("LLMGUARD_DEMO_HTTP_TIMEOUT_MS",
                                     "30000")) / 1e3
    r = httpx.post(f"{base}/chat/completions", headers=headers,
                   timeout=timeout_s, json={
                       "model": _env(provider_name, "MODEL") or "default",
                       "messages": [{"role": "user", "content": prompt}]})
    print(f"groq_client: {provider_name} answered {r.status_code}",
          file=sys.stderr)
    r.raise_for_status()
    return r.json()


def call_groq_sync(prompt: str, workflow_id: Optional[str] = None,
                   tenant_id: Optional[str] = None,
                   tokens_estimate: Optional[int] = None,
                   **kwargs: Any) -> Dict[str, Any]:
    """A chat completion of prompt, groq preferred, through llmguard;
    ``kwargs`` are the middleware's other keywords (max_attempts, timeout,
    preferred_provider, ...)."""
    kwargs.setdefault("preferred_provider", "groq")
    return chat(prompt, workflow_id=workflow_id, tenant_id=tenant_id,
                tokens_estimate=tokens_estimate or 0, **kwargs)


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(
        description="One chat completion through llmguard.")
    ap.add_argument("-s", "--socket", help="llmguardd's socket")
    ap.add_argument("-w", "--workflow")
    ap.add_argument("-t", "--tenant")
    ap.add_argument("-p", "--provider", default="groq",
                    help="the preferred provider (default groq)")
    ap.add_argument("-e", "--estimate", type=int, default=100)
    ap.add_argument("-a", "--attempts", type=int, default=3)
    ap.add_argument("prompt")
    args = ap.parse_args(argv)
    if args.socket:
        os.environ["LLMGUARD_SOCKET"] = args.socket
    answer, status = None, 0
    try:
        answer = call_groq_sync(args.prompt, workflow_id=args.workflow,
                                tenant_id=args.tenant,
                                tokens_estimate=args.estimate,
                                preferred_provider=args.provider,
                                max_attempts=args.attempts)
    except llmguard.QuotaExceededError as e:
        print(f"groq_client: {e}", file=sys.stderr)
        status = 3
    except llmguard.DaemonUnavailable as e:
        print(f"groq_client: {e}", file=sys.stderr)
        status = 69
    except (llmguard.LlmguardError, httpx.HTTPError) as e:
        print(f"groq_client: {e}", file=sys.stderr)
        status = 1
    info = llmguard.last_call()
    tokens = (answer or {}).get("usage", {}).get("total_tokens", 0)
    print(f"provider={info.provider} success={int(info.success)} "
          f"failover_attempts={info.failover_attempts} "
          f"rate_limited={int(info.rate_limited)} "
          f"quota_allowed={int(info.quota_allowed)} "
          f"quota_remaining={info.quota_remaining or 0} "
          f"wait_ms={info.ratelimit_wait_ms:.1f} "
          f"guarded={int(info.guarded)} tokens={tokens}")
    if answer is not None:
        print(answer["choices"][0]["message"]["content"])
    return status


if __name__ == "__main__":
    sys.exit(main())
