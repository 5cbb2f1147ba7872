"""One bucket shared exactly by C and Python processes at once: 4 processes
of tests/integration/acquirer (libllmguard) and 4 Python processes race
for a provider of 200/s, burst 10, for 3 s.  Together they get no more
than burst + rate x T (+1), and at least 90 % of it, and each side a fair
part of it."""
import os
import subprocess
import time

import llmguard
from llmguard.limiter import RateLimiter
from conftest import ACQUIRER

RATE, BURST, SECONDS, PROCS = 200.0, 10.0, 3.0, 4


def python_racer(sock, start, end, fd):
    """A forked child: acquire one token at a time from start to end;
    writes "GRANTS LAST_GRANT_TIME" to fd."""
    lim = RateLimiter(llmguard.Client(sock))
    grants, last = 0, 0.0
    while time.monotonic() < start:
        time.sleep(0.001)
    while (left := end - time.monotonic()) > 0:
        if lim.acquire("acc", timeout=left):
            grants += 1
            last = time.monotonic()
    os.write(fd, f"{grants} {last!r}\n".encode())


def test_c_and_python_processes_share_one_bucket(start_daemon):
    d = start_daemon(f"PROVIDER_ACC_RATE_PER_SEC={RATE:g}\n"
                     f"PROVIDER_ACC_BURST={BURST:g}\n")
    r, w = os.pipe()
    start = time.monotonic() + 0.5
    end = start + SECONDS
    kids = []
    for _ in range(PROCS):
        pid = os.fork()
        if pid == 0:
            try:
                python_racer(d.sock, start, end, w)
            finally:
                os._exit(0)
        kids.append(pid)
    os.close(w)
    while time.monotonic() < start:
        time.sleep(0.001)
    t_launch = time.monotonic()
    c = subprocess.run([str(ACQUIRER), "race", d.sock, "acc", str(PROCS),
                        str(SECONDS)], capture_output=True, text=True,
                       timeout=60)
    t_c_exit = time.monotonic()
    for pid in kids:
        os.waitpid(pid, 0)
    with os.fdopen(r) as f:
        rows = [line.split() for line in f.read().splitlines()]
    assert c.returncode == 0, c.stderr
    c_grants = int(c.stdout.split()[1])
    py_grants = sum(int(g) for g, _ in rows)
    assert len(rows) == PROCS
    last = max([t_c_exit] + [float(t) for _, t in rows])
    window = last - min(start, t_launch)
    total = c_grants + py_grants
    bound = BURST + RATE * window + 1
    low = 0.9 * (BURST + RATE * SECONDS)
    print(f"C {c_grants} + Python {py_grants} = {total} grants in "
          f"{window:.3f} s: bound {bound:.1f}, 90 % of the nominal {low:.1f}")
    assert total <= bound
    assert total >= low
    # The FIFO queue serves both kinds of client alike.
    assert c_grants >= 0.25 * total and py_grants >= 0.25 * total
