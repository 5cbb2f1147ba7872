"""llmguard.Client: the socket path rules, lazy connect, one reconnect,
threads and forks, the client timeout against a stopped daemon, and
replies a daemon should never send."""
import os
import signal
import socket
import struct
import threading
import time

import msgpack
import pytest

import llmguard
import llmguard.limiter
from llmguard import _wire
from llmguard.client import (client_timeout_ms, default_client,
                             default_socket_path, fail_mode)


def test_default_socket_path_rules(monkeypatch):
    monkeypatch.setenv("LLMGUARD_SOCKET", "/run/llmguard/x.sock")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/7")
    assert default_socket_path() == "/run/llmguard/x.sock"
    monkeypatch.setenv("LLMGUARD_SOCKET", "")
    assert default_socket_path() == "/run/user/7/llmguard/llmguardd.sock"
    monkeypatch.setenv("XDG_RUNTIME_DIR", "relative/dir")
    assert default_socket_path() == \
        f"/tmp/llmguard-{os.getuid()}/llmguardd.sock"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert llmguard.Client().socket_path == \
        f"/tmp/llmguard-{os.getuid()}/llmguardd.sock"
    assert llmguard.Client("/x/y.sock").socket_path == "/x/y.sock"


def test_bad_settings_are_refused(monkeypatch):
    with pytest.raises(llmguard.InvalidRequest, match="too long"):
        llmguard.Client("/tmp/" + "x" * 200)
    monkeypatch.setenv("LLMGUARD_CLIENT_TIMEOUT_MS", "soon")
    with pytest.raises(llmguard.InvalidRequest,
                       match="LLMGUARD_CLIENT_TIMEOUT_MS=soon"):
        llmguard.Client("/x.sock")
    monkeypatch.setenv("LLMGUARD_CLIENT_TIMEOUT_MS", "250")
    assert client_timeout_ms() == 250.0
    assert llmguard.Client("/x.sock").timeout_ms == 250.0
    for bad in (-1, 86400e3 + 1, "2000"):
        with pytest.raises(llmguard.InvalidRequest):
            llmguard.Client("/x.sock", timeout_ms=bad)
    monkeypatch.setenv("LLMGUARD_CLIENT_TIMEOUT_MS", "0")
    assert llmguard.Client("/x.sock").timeout_ms == 0
    monkeypatch.setenv("LLMGUARD_FAIL_MODE", "CLOSED")
    assert fail_mode() == "closed"
    monkeypatch.setenv("LLMGUARD_FAIL_MODE", "ajar")
    with pytest.raises(llmguard.InvalidRequest, match="open or closed"):
        fail_mode()


def test_default_client_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMGUARD_SOCKET", str(tmp_path / "a.sock"))
    a = default_client()
    assert default_client() is a
    monkeypatch.setenv("LLMGUARD_SOCKET", str(tmp_path / "b.sock"))
    assert default_client().socket_path == str(tmp_path / "b.sock")


def test_lazy_connect_and_unavailable(tmp_path):
    c = llmguard.Client(str(tmp_path / "nobody.sock"))     # no error yet
    with pytest.raises(llmguard.DaemonUnavailable, match="no llmguardd on"):
        c.ping()


def test_ping_and_hello(daemon):
    c = daemon.client()
    assert c.ping() >= 0
    h = c.hello()
    assert h["version"] == 1 and h["server"].startswith("llmguardd ")


def test_one_transparent_reconnect_after_a_restart(start_daemon):
    d = start_daemon()
    c = d.client()
    c.ping()
    assert d.stop() == 0
    with pytest.raises(llmguard.DaemonUnavailable):
        c.ping()
    d.start()
    assert c.ping() >= 0            # the same client, a new connection
    d.stop()
    d.start()
    assert c.ping() >= 0            # an old connection: resent once


def test_threads_have_their_own_connections(start_daemon):
    # slow refills one token every 5 s: a waiting acquire holds only its
    # own thread's connection.
    d = start_daemon("PROVIDER_SLOW_RATE_PER_SEC=0.2\n"
                     "PROVIDER_FAST_RATE_PER_SEC=100000\n"
                     "PROVIDER_FAST_BURST=100000\n")
    c = d.client()
    lim = llmguard.limiter.RateLimiter(c)
    assert lim.acquire("slow", timeout=0)
    waiter = threading.Thread(target=lim.acquire, args=("slow", 1, 3.0))
    waiter.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    assert c.ping() >= 0
    assert time.monotonic() - t0 < 1.0      # not behind the waiting acquire
    results = []

    def work():
        results.append(sum(lim.acquire("fast", timeout=0)
                           for _ in range(200)))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    waiter.join()
    assert results == [200] * 8


def test_a_forked_child_gets_its_own_connection(daemon):
    c = daemon.client()
    c.ping()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            ok = all(c.ping() >= 0 for _ in range(50))
            os.write(w, b"ok" if ok else b"no")
        except BaseException:
            os.write(w, b"error")
        finally:
            os._exit(0)
    os.close(w)
    for _ in range(50):
        c.ping()
    os.waitpid(pid, 0)
    assert os.read(r, 16) == b"ok"
    os.close(r)


def timed(fn, *args, **kw):
    """(exception or None, seconds) of fn(*args, **kw)."""
    t0 = time.monotonic()
    try:
        fn(*args, **kw)
        err = None
    except Exception as e:
        err = e
    return err, time.monotonic() - t0


def test_stopped_daemon_every_call_bounded_then_works_again(daemon,
                                                            monkeypatch):
    from llmguard.limiter import get_rate_limiter
    from llmguard.metrics import get_metrics_summary
    from llmguard.quota import get_quota_manager
    from llmguard.router import get_provider_router

    monkeypatch.setenv("LLMGUARD_CLIENT_TIMEOUT_MS", "600")
    lim, quota, router = (get_rate_limiter(), get_quota_manager(),
                          get_provider_router())
    assert lim.acquire("groq", timeout=0)
    calls = [
        (lim.acquire, ("groq",), {"timeout": 0.3}, 0.3),
        (lim.release, ("groq",), {}, 0),
        (lim.get_status, ("groq",), {}, 0),
        (quota.check_and_reserve, ("wf",), {"tokens": 1}, 0),
        (quota.get_quota_status, ("wf",), {}, 0),
        (router.select_provider, (), {"workflow_id": "wf"}, 0),
        (get_metrics_summary, (), {}, 0),
        (router.execute_with_failover, (lambda provider_name: 1,),
         {"workflow_id": "wf", "timeout": 0.5}, 0.5),
    ]
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        for fn, args, kw, wait in calls:
            err, secs = timed(fn, *args, **kw)
            name = getattr(fn, "__name__", fn)
            assert isinstance(err, llmguard.DaemonUnavailable), (name, err)
            assert "did not answer within" in str(err)
            # Bounded by the wait asked plus the client timeout (generous
            # slack for a loaded machine), and not given up before it.
            assert wait + 0.55 <= secs <= wait + 0.6 + 2.0, (name, secs)
        # Fail-open in the middleware: the call goes out unguarded.
        called = []
        err, secs = timed(router.execute_with_failover,
                          lambda provider_name: called.append(provider_name),
                          workflow_id="wf", preferred_provider="openai",
                          timeout=0.2)
        assert err is None and called == ["openai"]
        assert llmguard.last_call().guarded is False
        assert secs <= 0.8 + 2.0
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
    assert lim.acquire("groq", timeout=1)
    # A request that was sent is carried out when the daemon resumes, even
    # though its caller gave up: the reservation of 1 token counts.
    assert quota.get_quota_status("wf")["tokens_used"] == 1
    assert get_provider_router().execute_with_failover(
        lambda provider_name: provider_name, workflow_id="wf") == "groq"
    assert llmguard.last_call().guarded is True


def test_timeout_zero_is_no_bound(daemon):
    c = daemon.client(timeout_ms=0)
    assert c.ping() >= 0
    sock = c._local.conn.sock
    tv = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)
    assert tv == bytes(16)          # struct timeval 0: wait for ever
    c2 = daemon.client(timeout_ms=1500)
    c2.ping()
    tv = c2._local.conn.sock.getsockopt(socket.SOL_SOCKET,
                                        socket.SO_RCVTIMEO, 16)
    assert struct.unpack("@ll", tv) == (1, 500000)


def test_default_client_timeout_is_two_seconds(daemon):
    c = daemon.client()
    c.ping()
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        err, secs = timed(c.ping)
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
    assert isinstance(err, llmguard.DaemonUnavailable)
    assert 1.9 <= secs <= 4.5
    assert c.ping() >= 0


class FakeDaemon:
    """A Unix socket server that answers each frame with replies(request)
    (a list of frame bodies), to see what the client does with them."""

    def __init__(self, path, replies):
        self.path = path
        self.replies = replies
        self.requests = []
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(8)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            buf = bytearray()
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                buf += data
                while (body := _wire.next_frame(buf)) is not None:
                    req = msgpack.unpackb(body)
                    self.requests.append(req)
                    for out in self.replies(req):
                        conn.sendall(len(out).to_bytes(4, "big") + out)
            conn.close()

    def close(self):
        self.srv.close()


def test_stale_replies_are_skipped_and_garbage_closes(tmp_path):
    def replies(req):
        if req["op"] == "ping":
            return [msgpack.packb({"id": req["id"] + 100, "ok": True}),
                    msgpack.packb({"id": req["id"], "ok": True,
                                   "uptime_s": 3.5})]
        return [b"\xc1"]
    fake = FakeDaemon(str(tmp_path / "f.sock"), replies)
    try:
        c = llmguard.Client(fake.path)
        assert c.ping() == 3.5
        with pytest.raises(llmguard.ProtocolError, match="not one msgpack"):
            c.call("status")
        assert c.ping() == 3.5      # a new connection after the bad one
    finally:
        fake.close()


def test_a_timed_out_exchange_is_not_retried(tmp_path):
    fake = FakeDaemon(str(tmp_path / "mute.sock"), lambda req: [])
    try:
        c = llmguard.Client(fake.path, timeout_ms=300)
        err, secs = timed(c.ping)
        assert isinstance(err, llmguard.DaemonUnavailable)
        assert 0.25 <= secs <= 2.5
        time.sleep(0.2)
        assert [r["op"] for r in fake.requests] == ["ping"]
    finally:
        fake.close()
