"""Routing by model from Python: the permit names the model, the reply's
model id reaches CallInfo, a 429 on one deployment fails over to another
and cools down only that deployment; an unknown model is a bad request."""
import json
import re
import time

import pytest

from test_cli import UPTIME, pyctl

import llmguard
from llmguard import last_call
from llmguard.middleware import rate_limit_middleware

MODELS_ENV = """\
PROVIDER_GROQ_RPM=600
PROVIDER_GROQ_PRIORITY=1
PROVIDER_TOGETHER_RPM=600
PROVIDER_TOGETHER_PRIORITY=2
PROVIDER_COOLDOWN_SEC=30
MODEL_LLAMA_GROQ_PROVIDER=groq
MODEL_LLAMA_GROQ_NAME=llama-3.3-70b-versatile
MODEL_LLAMA_GROQ_GROUP=llama
MODEL_LLAMA_TOG_PROVIDER=together
MODEL_LLAMA_TOG_NAME=meta-llama/Llama-3.3-70B-Instruct-Turbo
MODEL_LLAMA_TOG_GROUP=llama
MODEL_GEMMA_PROVIDER=groq
MODEL_GEMMA_NAME=gemma2-9b-it
MODEL_GEMMA_RPM=30
MODEL_GEMMA_TPM=6000
"""


def models_status(daemon):
    doc = json.loads(daemon.ctl("--json", "status").stdout)
    return {m["alias"]: m for m in doc["models"]}


def test_model_routing_and_failover(start_daemon, monkeypatch):
    d = start_daemon(MODELS_ENV)
    monkeypatch.setenv("LLMGUARD_SOCKET", d.sock)
    seen = []

    @rate_limit_middleware(max_attempts=2)
    def call(provider_name, model_name=None):
        info = last_call()
        seen.append((provider_name, info.model))
        if provider_name == "groq" and info.model.startswith("llama"):
            raise llmguard.ProviderError(429)
        return "ok"

    assert call(model="llama") == "ok"
    assert seen == [("groq", "llama-3.3-70b-versatile"),
                    ("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo")]
    assert last_call().model == "meta-llama/Llama-3.3-70B-Instruct-Turbo"
    assert last_call().failover_attempts == 1
    st = models_status(d)
    assert st["llama_groq"]["state"] == "degraded"
    assert st["llama_tog"]["state"] == "healthy"
    # The provider itself, and its other model, are untouched.
    assert st["gemma"]["state"] == "healthy"
    doc = json.loads(d.ctl("--json", "status").stdout)
    groq = next(p for p in doc["providers"] if p["name"] == "groq")
    assert groq["state"] == "healthy"
    seen.clear()
    assert call(model="gemma2-9b-it") == "ok"
    assert seen == [("groq", "gemma2-9b-it")]
    # The group now goes straight to the deployment not in cooldown.
    seen.clear()
    call(model="llama")
    assert seen == [("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo")]


def test_without_model_no_model(start_daemon, monkeypatch):
    d = start_daemon(MODELS_ENV)
    monkeypatch.setenv("LLMGUARD_SOCKET", d.sock)

    @rate_limit_middleware
    def call(provider_name):
        return provider_name

    assert call() == "groq"
    assert last_call().model is None


def test_unknown_model(start_daemon, monkeypatch):
    d = start_daemon(MODELS_ENV)
    monkeypatch.setenv("LLMGUARD_SOCKET", d.sock)

    @rate_limit_middleware
    def call(provider_name):
        return provider_name

    with pytest.raises(llmguard.InvalidRequest, match="unknown model 'gpt'"):
        call(model="gpt")


def test_status_lists_models_like_llmguardctl(start_daemon, monkeypatch):
    d = start_daemon(MODELS_ENV)
    monkeypatch.setenv("LLMGUARD_SOCKET", d.sock)

    @rate_limit_middleware(max_attempts=1)
    def call(provider_name):
        raise llmguard.ProviderError(503, retry_after=40)

    with pytest.raises(llmguard.ProviderError):
        call(model="llama-3.3-70b-versatile", tokens_estimate=10)
    time.sleep(0.3)                 # the buckets refill to their burst
    # The cooldown runs on between the two as the uptime does, and its
    # start (the wall clock less its monotonic age, taken at each request)
    # may differ in the last digit.
    cool = re.compile(r'"cooldown_(remaining_s|since)":[0-9.e+-]+|'
                      r'\b\d+\.\ds\b')
    for args in (["status"], ["--json", "status"]):
        ours, theirs = pyctl(*args, sock=d.sock), d.ctl(*args)
        assert ours.returncode == theirs.returncode == 0
        assert cool.sub("", UPTIME.sub("", ours.stdout)) == \
            cool.sub("", UPTIME.sub("", theirs.stdout))
    out = d.ctl("status").stdout
    assert re.search(r"^gemma +gemma2-9b-it +groq +gemma2-9b-it +30\.00 +"
                     r"0\.5 +healthy +- +0 +6000/6000$", out, re.M)
    assert re.search(r"^llama_groq +llama-3\.3-70b-versatile +groq +llama +"
                     r"- +- +degraded +(3\d|40)\.\ds +0 +-$", out, re.M)
    st = models_status(d)
    assert st["llama_groq"]["cooldown_cause"] == "server_error"
    assert st["llama_groq"]["retry_after_s"] == 40
    assert "available_tokens" not in st["llama_groq"]
    assert st["gemma"]["max_tokens"] == 30


def test_failover_to_another_model_of_the_same_provider(start_daemon,
                                                         monkeypatch):
    d = start_daemon("PROVIDER_GROQ_RPM=600\n"
                     "MODEL_BIG_PROVIDER=groq\nMODEL_BIG_NAME=llama-70b\n"
                     "MODEL_BIG_GROUP=chat\n"
                     "MODEL_SMALL_PROVIDER=groq\nMODEL_SMALL_NAME=llama-8b\n"
                     "MODEL_SMALL_GROUP=chat\n")
    monkeypatch.setenv("LLMGUARD_SOCKET", d.sock)
    seen = []

    @rate_limit_middleware(max_attempts=3)
    def call(provider_name):
        seen.append((provider_name, last_call().model))
        raise llmguard.ProviderError(429)

    # Both deployments are on groq: the call tries each once, then none is
    # left (the daemon remembers the call's deployments).
    with pytest.raises(llmguard.ProviderError):
        call(model="chat")
    assert seen == [("groq", "llama-70b"), ("groq", "llama-8b")]
    st = models_status(d)
    assert st["big"]["state"] == st["small"]["state"] == "degraded"


def test_asyncio_flavour(start_daemon, monkeypatch):
    import asyncio

    from llmguard import aio

    d = start_daemon(MODELS_ENV)
    monkeypatch.setenv("LLMGUARD_SOCKET", d.sock)
    seen = []

    @aio.rate_limit_middleware(max_attempts=2)
    async def call(provider_name):
        seen.append((provider_name, last_call().model))
        if provider_name == "groq":
            raise llmguard.ProviderError(429)
        return "ok"

    async def main():
        try:
            return await call(model="llama")
        finally:
            await aio.default_client().close()

    assert asyncio.run(main()) == "ok"
    assert seen == [("groq", "llama-3.3-70b-versatile"),
                    ("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo")]
