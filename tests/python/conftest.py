"""Fixtures: a private llmguardd on a temporary socket and database, mock
OpenAI-compatible providers, and the C programs of the build tree.  Every
process a test starts is stopped, and its files removed, however the test
ends.

The build tree is $LLMGUARD_BUILDDIR (tests/python/run.sh sets it to the
automake build directory), else _build/default of the source tree.  The
package is imported from $LLMGUARD_PYTHONPATH, else python/ of the source
tree.
"""
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

import pytest

SRCDIR = Path(__file__).resolve().parents[2]
BUILDDIR = Path(os.environ.get("LLMGUARD_BUILDDIR")
                or SRCDIR / "_build" / "default")
sys.path.insert(0, os.environ.get("LLMGUARD_PYTHONPATH")
                or str(SRCDIR / "python"))

LLMGUARDD = BUILDDIR / "daemon" / "llmguardd"
LLMGUARDCTL = BUILDDIR / "cli" / "llmguardctl"
MOCKPROVIDER = BUILDDIR / "tests" / "mockprovider"
ACQUIRER = BUILDDIR / "tests" / "integration" / "acquirer"

import llmguard  # noqa: E402  (after the path above)

# Each daemon and mock is killed when pytest dies, however it dies (even
# stopped by a test); and a SIGTERM to pytest is an interruption, so that
# the fixtures' teardown stops them and removes their files.
_prctl = ctypes.CDLL(None, use_errno=True).prctl
_PR_SET_PDEATHSIG = 1


def _die_with_pytest() -> None:
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


signal.signal(signal.SIGTERM, _interrupt)


def _clean_env() -> Dict[str, str]:
    """The environment without the developer's llmguard settings."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("LLMGUARD_", "PROVIDER_", "OTEL_"))
            and k not in ("REDIS_URL", "XDG_RUNTIME_DIR")}


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    """Each test starts from an environment without llmguard settings."""
    for k in list(os.environ):
        if k.startswith(("LLMGUARD_", "PROVIDER_", "OTEL_")) or \
                k in ("REDIS_URL", "XDG_RUNTIME_DIR"):
            monkeypatch.delenv(k)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGCONT)    # a test may have stopped it
        proc.terminate()
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Daemon:
    """llmguardd on ``sock`` and ``db`` in a temporary directory, with the
    env file given as text."""

    def __init__(self, tmp: Path, env_text: str, name: str = "d") -> None:
        self.dir = tmp
        self.sock = str(tmp / f"{name}.sock")
        self.db = str(tmp / f"{name}.db")
        self.envfile = tmp / f"{name}.env"
        self.envfile.write_text(env_text)
        self.log = tmp / f"{name}.log"
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "Daemon":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(LLMGUARDD), "--socket", self.sock, "--db", self.db,
                 "--env-file", str(self.envfile)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env=_clean_env(), preexec_fn=_die_with_pytest)
        client = llmguard.Client(self.sock)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                client.close()
                return self
            except llmguard.DaemonUnavailable:
                if self.proc.poll() is not None or \
                        time.monotonic() > deadline:
                    raise RuntimeError("llmguardd did not start:\n"
                                       + self.log.read_text())
                time.sleep(0.02)

    def stop(self) -> int:
        """SIGTERM; its exit status."""
        assert self.proc is not None
        _stop(self.proc)
        return self.proc.returncode

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def client(self, **kw) -> llmguard.Client:
        return llmguard.Client(self.sock, **kw)

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(LLMGUARDCTL), "-s", self.sock, *args],
                              capture_output=True, text=True, timeout=30,
                              env=_clean_env())

    def used(self, workflow: str) -> int:
        out = json.loads(self.ctl("--json", "quota", workflow).stdout)
        return out["tokens_used"]

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a counter or gauge over its label sets that hold
        labels, from llmguardctl."""
        doc = json.loads(self.ctl("--json", "metrics").stdout)
        return sum(row["value"] for kind in ("counters", "gauges")
                   for row in doc[kind].get(name, [])
                   if labels.items() <= row["labels"].items())


DEFAULT_ENV = """\
PROVIDER_GROQ_RATE_PER_SEC=50
PROVIDER_GROQ_PRIORITY=1
PROVIDER_OPENAI_RATE_PER_SEC=20
PROVIDER_OPENAI_PRIORITY=2
PROVIDER_COOLDOWN_SEC=60
QUOTA_ENFORCEMENT=soft
DEFAULT_DAILY_QUOTA_TOKENS=100000
"""


@pytest.fixture
def start_daemon(tmp_path):
    """start_daemon(env_text=DEFAULT_ENV, name="d") -> a running Daemon;
    all are stopped at the end of the test."""
    started: List[Daemon] = []

    def start(env_text: str = DEFAULT_ENV, name: str = "d") -> Daemon:
        d = Daemon(tmp_path, env_text, name).start()
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc is not None:
            _stop(d.proc)


@pytest.fixture
def daemon(start_daemon, monkeypatch):
    """A daemon with groq (priority 1) and openai, soft quotas of 100000;
    LLMGUARD_SOCKET points at it, so the default client uses it."""
    d = start_daemon()
    monkeypatch.setenv("LLMGUARD_SOCKET", d.sock)
    return d


class Mock:
    """A tests/mockprovider: an OpenAI-compatible endpoint at ``base_url``."""

    def __init__(self, tmp: Path, name: str, mode: str) -> None:
        port_file = tmp / f"{name}.port"
        self.name = name
        self.traces = tmp / f"{name}.traces.jsonl"
        self.proc = subprocess.Popen(
            [str(MOCKPROVIDER), "--name", name, "--port-file", str(port_file),
             "--mode", mode, "--traces-file", str(self.traces)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            preexec_fn=_die_with_pytest)
        deadline = time.monotonic() + 10
        while not port_file.exists() or not port_file.read_text().strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mockprovider {name} did not start")
            time.sleep(0.02)
        self.port = int(port_file.read_text())
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.url}/v1"

    def mode(self, mode: str) -> None:
        urllib.request.urlopen(urllib.request.Request(
            f"{self.url}/control?mode={mode}", method="POST"), timeout=5)

    def stats(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/stats", timeout=5) as r:
            return json.loads(r.read())

    def requests(self) -> int:
        return self.stats()["requests"]

    def spans(self, n: int = 1, wait_s: float = 10.0) -> List[dict]:
        """The spans posted to it as an OTLP collector, once there are n."""
        deadline = time.monotonic() + wait_s
        while True:
            spans = []
            if self.traces.exists():
                for line in self.traces.read_text().splitlines():
                    for rs in json.loads(line)["resourceSpans"]:
                        for ss in rs["scopeSpans"]:
                            spans.extend(ss["spans"])
            if len(spans) >= n or time.monotonic() > deadline:
                return spans
            time.sleep(0.05)


@pytest.fixture
def mock(tmp_path, monkeypatch):
    """mock(name, mode="ok") -> a running Mock, its base URL exported as
    PROVIDER_<NAME>_BASE_URL; all are stopped at the end of the test."""
    started: List[Mock] = []

    def start(name: str, mode: str = "ok") -> Mock:
        m = Mock(tmp_path, name, mode)
        started.append(m)
        monkeypatch.setenv(f"PROVIDER_{name.upper()}_BASE_URL", m.base_url)
        return m

    yield start
    for m in started:
        _stop(m.proc)
