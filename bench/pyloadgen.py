#!/usr/bin/env python3
"""pyloadgen - bench/loadgen's throughput and permit modes, through the
Python package llmguard (blocking, or asyncio with --aio).

    pyloadgen.py MODE [-s SOCKET] [-p PROVIDER] [-P PROCS] [-d SECONDS]
                 [-w WARMUP] [--aio] [--tasks N] [--ids per-proc|none]
                 [--daemon-pid PID] [--label LABEL] [--json]

MODE is ``throughput`` (sequential ``acquire(provider, 1, timeout=0)``) or
``permit`` (sequential ``execute_with_failover`` calls of a function that
answers at once with usage 1: one permit and one report each, as loadgen's
permit mode).  As loadgen (bench/harness.c): PROCS forked workers, each with
its own connection, connect and ping, then start at one instant of
CLOCK_MONOTONIC; the first WARMUP seconds are run but not counted; each
call is timed around the whole call; percentiles are nearest-rank; the
daemon's CPU over the measured window comes from /proc/PID/stat.  With
--aio each worker runs N tasks (--tasks, default 1) on one event loop and
one connection.  --libllmguard PATH makes the same calls through the C
library by ctypes instead: the pace of a Python program with libllmguard's
bytes and system calls, to tell the two apart (--work-us N makes each
guarded call spend N microseconds first, to match two clients' pace).
The output has loadgen's fields (``permits_per_s`` or ``calls_per_s``,
``p50_us``, ``p99_us``, ``daemon_cpu_us_per_op``, ...), as a text line or,
with --json, one JSON object.

The package is imported from python/ next to this directory unless it is
importable already.
"""
import argparse
import array
import asyncio
import json
import math
import os
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))

import llmguard  # noqa: E402
from llmguard import aio  # noqa: E402
from llmguard.limiter import RateLimiter  # noqa: E402
from llmguard.router import ProviderRouter  # noqa: E402

_SCHEDULE = struct.Struct("ddd")     # go, measure from, end (monotonic s)


WORK_S = 0.0        # --work-us: what each guarded call spends first
TOUCH = None        # --work-touch: a buffer it reads through meanwhile
_touch_at = 0


def work():
    """Spend WORK_S seconds of this process's time, as a provider call's
    own code would (0: nothing); with --work-touch, reading through 8 MiB
    of memory meanwhile, as a big program's code and data evict the
    CPU's caches."""
    global _touch_at
    if WORK_S > 0:
        end = time.perf_counter() + WORK_S
        while time.perf_counter() < end:
            if TOUCH is not None:
                bytes(TOUCH[_touch_at:_touch_at + 65536])
                _touch_at = (_touch_at + 65536) % len(TOUCH)


def answer(provider_name):
    """The guarded call: succeeds at once, having used 1 token."""
    work()
    return {"usage": {"total_tokens": 1}}


def pid_cpu_s(pid):
    """utime + stime of pid in seconds, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Worker:
    """One worker's counts and samples (ns)."""

    def __init__(self):
        self.ok = self.denied = 0
        self.lat = array.array("Q")
        self.cpu0 = None

    def record(self, counted, t0, t1, granted):
        if not counted:
            return
        if self.cpu0 is None:
            self.cpu0 = time.process_time()
        if granted:
            self.ok += 1
            self.lat.append(t1 - t0)
        else:
            self.denied += 1


def one_call_sync(args, index):
    """A function doing one call and saying whether it was granted."""
    client = llmguard.Client(args.socket)
    client.ping()
    if args.mode == "throughput":
        lim = RateLimiter(client)
        return lambda: lim.acquire(args.provider, 1, 0)
    router = ProviderRouter(client)
    wf = None if args.ids == "none" else f"{args.prefix}-p{index}"

    def call():
        try:
            router.execute_with_failover(
                answer, workflow_id=wf, tokens_estimate=1,
                preferred_provider=args.provider, max_attempts=1, timeout=0)
        except llmguard.RateLimitTimeout:
            return False
        if not llmguard.last_call().guarded:
            raise llmguard.DaemonUnavailable("a call went out unguarded")
        return True
    return call


def one_call_libllmguard(args, index):
    """The same calls through libllmguard by ctypes: the Python program's
    pace with the C library's bytes and system calls (a control)."""
    import ctypes as C

    class Request(C.Structure):
        _fields_ = [("workflow_id", C.c_char_p), ("tenant_id", C.c_char_p),
                    ("preferred_provider", C.c_char_p),
                    ("tokens_estimate", C.c_uint64),
                    ("max_attempts", C.c_uint), ("timeout_s", C.c_double),
                    ("traceparent", C.c_char_p)]

    class Result(C.Structure):
        _fields_ = [("provider", C.c_char * 64),
                    ("failover_attempts", C.c_uint),
                    ("rate_limited", C.c_int), ("success", C.c_int),
                    ("quota_allowed", C.c_int),
                    ("quota_remaining", C.c_uint64),
                    ("ratelimit_wait_ms", C.c_double), ("guarded", C.c_int)]

    lib = C.CDLL(args.libllmguard)
    lib.llmguard_open.restype = C.c_void_p
    lib.llmguard_open.argtypes = [C.c_char_p]
    lib.llmguard_ping.argtypes = [C.c_void_p]
    lib.llmguard_acquire.argtypes = [C.c_void_p, C.c_char_p, C.c_uint32,
                                     C.c_double, C.POINTER(C.c_double)]
    fn_t = C.CFUNCTYPE(C.c_int, C.c_char_p, C.c_void_p,
                       C.POINTER(C.c_uint64))
    lib.llmguard_execute_with_failover.argtypes = [
        C.c_void_p, C.POINTER(Request), fn_t, C.c_void_p, C.POINTER(Result)]
    g = lib.llmguard_open(args.socket.encode() if args.socket else None)
    if lib.llmguard_ping(g) != 0:
        raise llmguard.DaemonUnavailable("libllmguard: ping failed")
    provider = args.provider.encode()
    if args.mode == "throughput":
        return lambda: lib.llmguard_acquire(g, provider, 1, 0.0, None) == 0

    @fn_t
    def answer_c(provider_name, arg, tokens_used):
        work()
        tokens_used[0] = 1
        return 0                # LLMGUARD_OUTCOME_OK

    wf = None if args.ids == "none" else f"{args.prefix}-p{index}".encode()
    req = Request(workflow_id=wf, preferred_provider=provider,
                  tokens_estimate=1, max_attempts=1, timeout_s=0.0)
    res = Result()
    keep = (answer_c, req, res)     # alive for as long as call is

    def call():
        rc = lib.llmguard_execute_with_failover(g, C.byref(req), answer_c,
                                                None, C.byref(res))
        return keep is not None and rc == 0
    return call


def run_sync(args, index, sched):
    call = (one_call_libllmguard if args.libllmguard else one_call_sync)(
        args, index)
    yield                          # ready: connected
    go, measure, end = sched()
    w = Worker()
    while time.monotonic() < go:
        pass
    ns, mono = time.monotonic_ns, time.monotonic
    while True:
        start = mono()
        if start >= end:
            break
        t0 = ns()
        granted = call()
        w.record(start >= measure, t0, ns(), granted)
    yield w


async def run_aio(args, index, ready, sched):
    client = aio.AsyncClient(args.socket)
    await client.ping()
    lim, router = aio.AsyncRateLimiter(client), aio.AsyncProviderRouter(client)
    wf = None if args.ids == "none" else f"{args.prefix}-p{index}"

    async def call():
        if args.mode == "throughput":
            return await lim.acquire(args.provider, 1, 0)
        try:
            await router.execute_with_failover(
                answer, workflow_id=wf, tokens_estimate=1,
                preferred_provider=args.provider, max_attempts=1, timeout=0)
        except llmguard.RateLimitTimeout:
            return False
        return True

    ready()
    go, measure, end = sched()
    w = Worker()
    while time.monotonic() < go:
        await asyncio.sleep(0)

    async def task():
        ns, mono = time.monotonic_ns, time.monotonic
        while True:
            start = mono()
            if start >= end:
                break
            t0 = ns()
            granted = await call()
            w.record(start >= measure, t0, ns(), granted)
    await asyncio.gather(*(task() for _ in range(args.tasks)))
    return w


def worker_main(args, index, ready_w, go_r, out_w):
    def ready():
        os.write(ready_w, b"r")

    def sched():
        return _SCHEDULE.unpack(os.read(go_r, _SCHEDULE.size))

    try:
        if args.aio:
            w = asyncio.run(run_aio(args, index, ready, sched))
        else:
            gen = run_sync(args, index, sched)
            next(gen)
            ready()
            w = next(gen)
        cpu = time.process_time() - w.cpu0 if w.cpu0 is not None else 0.0
        head = json.dumps({"ok": w.ok, "denied": w.denied, "cpu_s": cpu,
                           "n": len(w.lat)}).encode()
        os.write(out_w, struct.pack(">I", len(head)) + head)
        data = w.lat.tobytes()
        while data:
            data = data[os.write(out_w, data):]
    except BaseException as e:
        msg = json.dumps({"error": f"{type(e).__name__}: {e}"}).encode()
        os.write(out_w, struct.pack(">I", len(msg)) + msg)
        os._exit(1)
    os._exit(0)


def read_exact(fd, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError("a worker died")
        buf += chunk
    return bytes(buf)


def quantile_us(sorted_ns, q):
    if not sorted_ns:
        return 0.0
    k = min(max(math.ceil(q * len(sorted_ns)), 1), len(sorted_ns))
    return sorted_ns[k - 1] / 1e3


def run(args):
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    outs, pids = [], []
    for k in range(args.procs):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            os.close(go_w)
            os.close(r)
            worker_main(args, k, ready_w, go_r, w)
        os.close(w)
        outs.append(r)
        pids.append(pid)
    os.close(ready_w)
    os.close(go_r)
    read_exact(ready_r, args.procs)
    go = time.monotonic() + 0.02
    measure, end = go + args.warmup, go + args.warmup + args.seconds
    for _ in range(args.procs):
        os.write(go_w, _SCHEDULE.pack(go, measure, end))
    cpu = None
    if args.daemon_pid:
        time.sleep(max(0.0, measure - time.monotonic()))
        cpu = -pid_cpu_s(args.daemon_pid)
        time.sleep(max(0.0, end - time.monotonic()))
        cpu += pid_cpu_s(args.daemon_pid)
    total = {"ok": 0, "denied": 0, "cpu_s": 0.0}
    lat = array.array("Q")
    errors = []
    for fd in outs:
        head = json.loads(read_exact(fd, struct.unpack(">I", read_exact(
            fd, 4))[0]))
        if "error" in head:
            errors.append(head["error"])
            continue
        for k in total:
            total[k] += head[k]
        lat.frombytes(read_exact(fd, 8 * head["n"]))
    for pid in pids:
        os.waitpid(pid, 0)
    if errors:
        sys.exit(f"pyloadgen: {errors[0]}")
    return total, sorted(lat), cpu


def report(args, total, lat, cpu):
    rate = total["ok"] / args.seconds
    ops = max(total["ok"], 1)
    out = {"mode": args.mode, "label": args.label or "",
           "procs": args.procs, "provider": args.provider,
           "client": "python-ctypes-libllmguard" if args.libllmguard
           else "python-aio" if args.aio else "python-sync",
           "tasks": args.tasks if args.aio else 1, "seconds": args.seconds}
    if args.mode == "throughput":
        out.update(permits=total["ok"], denied=total["denied"],
                   permits_per_s=round(rate, 1))
    else:
        out.update(ids=args.ids, calls=total["ok"], denied=total["denied"],
                   calls_per_s=round(rate, 1),
                   round_trips_per_s=round(2 * rate, 1))
    out.update({f"p{n}_us": round(quantile_us(lat, q), 1) for n, q in
                (("50", 0.5), ("99", 0.99), ("999", 0.999))})
    out["max_us"] = round(quantile_us(lat, 1), 1)
    out["clients_cpu_pct"] = round(100 * total["cpu_s"] / args.seconds, 1)
    out["clients_cpu_us_per_op"] = round(1e6 * total["cpu_s"] / ops, 2)
    if cpu is not None:
        out["daemon_cpu_pct"] = round(100 * cpu / args.seconds, 1)
        out["daemon_cpu_us_per_op"] = round(1e6 * cpu / ops, 2)
    if args.json:
        print(json.dumps(out, separators=(",", ":")))
        return
    what = "permits/s" if args.mode == "throughput" else \
        "calls/s = permit+report pairs"
    line = (f"{out['label'] + ' ' if out['label'] else ''}{args.mode} "
            f"({out['client']}, {out['tasks']} task(s)): {args.procs} "
            f"proc{'s' if args.procs > 1 else ''}, {args.seconds:.1f} s: "
            f"{rate:.0f} {what} ({total['ok']} ok, {total['denied']} "
            f"denied), latency p50 {out['p50_us']} us, p99 {out['p99_us']} "
            f"us, p99.9 {out['p999_us']} us; CPU: clients "
            f"{out['clients_cpu_pct']:.0f}% "
            f"({out['clients_cpu_us_per_op']:.1f} us/op)")
    if cpu is not None:
        line += (f", daemon {out['daemon_cpu_pct']:.0f}% "
                 f"({out['daemon_cpu_us_per_op']:.1f} us/op)")
    print(line)


def main():
    ap = argparse.ArgumentParser(
        description="Drive llmguardd through the Python package and "
                    "measure it, as bench/loadgen does through libllmguard.")
    ap.add_argument("mode", choices=["throughput", "permit"])
    ap.add_argument("-s", "--socket")
    ap.add_argument("-p", "--provider", default="bench")
    ap.add_argument("-P", "--procs", type=int, default=1)
    ap.add_argument("-d", "--seconds", type=float, default=5.0)
    ap.add_argument("-w", "--warmup", type=float, default=0.5)
    ap.add_argument("--aio", action="store_true",
                    help="llmguard.aio instead of the blocking client")
    ap.add_argument("--libllmguard", metavar="PATH",
                    help="make the calls through this libllmguard.so by "
                         "ctypes instead of the package (a control)")
    ap.add_argument("--work-us", type=float, default=0.0,
                    help="permit: each guarded call first spends this many "
                         "microseconds (to match two clients' pace)")
    ap.add_argument("--work-touch", action="store_true",
                    help="--work-us reads through 8 MiB of memory")
    ap.add_argument("--tasks", type=int, default=1,
                    help="--aio: concurrent tasks per process")
    ap.add_argument("--ids", choices=["per-proc", "none"], default="per-proc",
                    help="permit: a workflow id per process (a quota "
                         "reservation per permit), or none")
    ap.add_argument("--prefix", default="bench")
    ap.add_argument("--daemon-pid", type=int)
    ap.add_argument("--label")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not 1 <= args.procs <= 256 or args.tasks < 1 or args.seconds <= 0:
        ap.error("--procs 1..256, --tasks >= 1, --seconds > 0")
    if args.libllmguard and args.aio:
        ap.error("--libllmguard is blocking: not with --aio")
    global WORK_S, TOUCH
    WORK_S = args.work_us / 1e6
    if args.work_touch:
        TOUCH = memoryview(bytearray(os.urandom(8 << 20)))
    report(args, *run(args))


if __name__ == "__main__":
    main()
