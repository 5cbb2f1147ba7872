"""python3 -m llmguard status | metrics | quota: the output and exit
statuses of llmguardctl, compared line by line on one daemon."""
import json
import os
import re
import subprocess
import sys
import time

import pytest

from conftest import SRCDIR

from llmguard import ProviderError
from llmguard.middleware import rate_limit_middleware


def pyctl(*args, sock=None):
    env = dict(os.environ, PYTHONPATH=str(SRCDIR / "python"))
    cmd = [sys.executable, "-m", "llmguard"]
    if sock:
        cmd += ["-s", sock]
    return subprocess.run(cmd + list(args), capture_output=True, text=True,
                          timeout=30, env=env)


@pytest.fixture
def busy(daemon):
    @rate_limit_middleware
    def fn(provider_name):
        return {"usage": {"total_tokens": 30}}

    for wf in ("alpha", "beta", "beta"):
        fn(workflow_id=wf, tenant_id="acme", tokens_estimate=10)
    time.sleep(0.2)                 # the buckets refill to their burst
    return daemon


WINDOW = re.compile(r"^(window_start|window_end) +\d{4}-\d\d-\d\dT\d\d:\d\d:"
                    r"\d\dZ$")


UPTIME = re.compile(r'^uptime +\d+ s\n|"uptime_s":[0-9.e+-]+,', re.M)


def test_status_and_metrics_match_llmguardctl(busy):
    for args in (["status"], ["--json", "status"], ["metrics"],
                 ["--json", "metrics"]):
        ours, theirs = pyctl(*args, sock=busy.sock), busy.ctl(*args)
        assert ours.returncode == theirs.returncode == 0
        # All but the daemon's uptime, which runs on between the two.
        assert UPTIME.sub("", ours.stdout) == UPTIME.sub("", theirs.stdout)
        assert "status" not in args or len(UPTIME.findall(ours.stdout)) == 1
    out = pyctl("status", sock=busy.sock).stdout
    assert re.search(r"^groq +50\.00 +50 +50 +healthy +- +[0-9.]+ +0 +-$",
                     out, re.M)
    doc = json.loads(pyctl("--json", "metrics", sock=busy.sock).stdout)
    assert sum(r["value"] for r in doc["counters"]["llm_requests_total"]) \
        == 3


@pytest.mark.parametrize("args", [["quota", "beta"], ["quota", "acme",
                                                       "--tenant"],
                                  ["quota", "--tenant", "acme"],
                                  ["quota", "never-seen"]])
def test_quota_matches_llmguardctl(busy, args):
    ours, theirs = pyctl(*args, sock=busy.sock), busy.ctl(*args)
    assert ours.returncode == theirs.returncode == 0
    mine = ours.stdout.splitlines()
    assert [line for line in mine if not WINDOW.match(line)] == \
        [line for line in theirs.stdout.splitlines()
         if not WINDOW.match(line)]
    assert sum(1 for line in mine if WINDOW.match(line)) == 2
    j1 = json.loads(pyctl("--json", *args, sock=busy.sock).stdout)
    j2 = json.loads(busy.ctl("--json", *args).stdout)
    for k in ("window_start", "window_end"):
        assert abs(j1.pop(k) - j2.pop(k)) < 5
    assert j1 == j2


def test_status_notes_match_llmguardctl(start_daemon, monkeypatch):
    d = start_daemon("PROVIDER_GROQ_RATE_PER_SEC=50\n"
                     "PROVIDER_TPM_RATE_PER_SEC=5\n"
                     "PROVIDER_TPM_TOKENS_PER_MIN=600\n")
    monkeypatch.setenv("LLMGUARD_SOCKET", d.sock)

    @rate_limit_middleware(max_attempts=1)
    def fn(provider_name):
        raise ProviderError(429, retry_after=30)

    with pytest.raises(ProviderError):
        fn(preferred_provider="groq")
    notes = re.compile(r"^\w+: (degraded by|\d+ of).*$", re.M)
    ours = notes.findall(pyctl("status", sock=d.sock).stdout)
    assert ours == notes.findall(d.ctl("status").stdout)
    text = pyctl("status", sock=d.sock).stdout
    assert re.search(r"^groq: degraded by rate_limited since \d{4}-.*Z, "
                     r"Retry-After 30 s$", text, re.M)
    assert re.search(r"^tpm: 600 of 600 LLM tokens available$", text, re.M)
    doc = json.loads(pyctl("--json", "status", sock=d.sock).stdout)
    groq = next(p for p in doc["providers"] if p["name"] == "groq")
    assert groq["cooldown_cause"] == "rate_limited"
    assert groq["retry_after_s"] == 30.0


def test_unlearned_rate_matches_llmguardctl(start_daemon):
    """A rate to learn shows no AVAILABLE until learned, in both."""
    d = start_daemon("PROVIDER_LEARN_RATE_PER_SEC=learn\n"
                     "PROVIDER_FIXED_RATE_PER_SEC=5\n")
    row = re.compile(r"^(learn|fixed) .*$", re.M)
    ours = row.findall(pyctl("status", sock=d.sock).stdout)
    text = d.ctl("status").stdout
    assert ours == row.findall(text)
    assert re.search(r"^learn +- +0 +0 ", text, re.M)
    assert re.search(r"^fixed +5\.00 +5 +5 ", text, re.M)


def test_json_after_the_command(busy):
    for args in (["status", "--json"], ["quota", "beta", "--json",
                                        "--tenant"]):
        out = pyctl(*args, sock=busy.sock)
        assert out.returncode == 0 and json.loads(out.stdout), args


def test_quota_values(busy):
    out = pyctl("quota", "beta", sock=busy.sock).stdout
    assert "tokens_used       60\n" in out
    assert re.search(r"^reset_at +\d{4}-", out, re.M)
    out = pyctl("--json", "quota", "acme", "--tenant", sock=busy.sock).stdout
    doc = json.loads(out)
    assert doc["subject"] == "tenant:acme" and doc["tokens_used"] == 90
    doc = json.loads(pyctl("--json", "quota", "never-seen",
                           sock=busy.sock).stdout)
    assert doc["reset_at"] is None and doc["tokens_used"] == 0


def test_default_socket_from_the_environment(busy, monkeypatch):
    monkeypatch.setenv("LLMGUARD_SOCKET", busy.sock)
    assert pyctl("status").returncode == 0


def test_exit_statuses(busy, tmp_path):
    nobody = str(tmp_path / "nobody.sock")
    r = pyctl("status", sock=nobody)
    assert r.returncode == 69 and "no llmguardd on" in r.stderr
    r = pyctl("quota", "bad\x01id", sock=busy.sock)
    assert r.returncode == 1 == busy.ctl("quota", "bad\x01id").returncode
    assert "control character" in r.stderr
    for args in ([], ["frobnicate"], ["quota"], ["status", "extra"]):
        assert pyctl(*args, sock=busy.sock).returncode == 2, args
    assert pyctl("status", sock="/tmp/" + "x" * 200).returncode == 2
    assert pyctl("-T", "-1", "status", sock=busy.sock).returncode == 2
    assert pyctl("-T", "0.5", "status", sock=busy.sock).returncode == 0
    r = pyctl("--help")
    assert r.returncode == 0 and "status" in r.stdout
