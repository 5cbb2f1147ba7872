#!/bin/sh
# icount.sh - instructions the daemon executes per request, by valgrind's
# callgrind: a figure that does not depend on how busy the machine is
# (throughput and latency on a shared 2-core VM do), to compare builds.
#
#   bench/icount.sh [-n N] LLMGUARDD...
#
# For each daemon: start it under callgrind on a temporary socket, an
# in-memory database and one provider, make N requests of each kind from
# one Python client (python/llmguard, /usr/bin/python3 with msgpack), stop
# it, and take the instructions of the run less those of a run with no
# request; print instructions per request: acquire (timeout 0), quota
# reservation, permit+report without quota and with quota.  N defaults to
# 4000.  Needs valgrind.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
n=4000
if [ "${1:-}" = -n ]; then n=$2; shift 2; fi
[ $# -ge 1 ] || { sed -n '2,/^set/s/^# \{0,1\}//p' "$0" >&2; exit 2; }
PY=${PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d /tmp/llmguard-icount.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 1' INT TERM
printf 'PROVIDER_BENCH_RATE_PER_SEC=100000000\nPROVIDER_BENCH_BURST=100000000\n' \
    > "$tmp/env"

# drive KIND COUNT: COUNT requests of KIND through one connection.
cat > "$tmp/drive.py" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
from llmguard.client import Client
kind, count, sock = sys.argv[2], int(sys.argv[3]), sys.argv[4]
c = Client(sock)
for i in range(count):
    if kind == "acquire":
        c.call("acquire", {"provider": "bench", "tokens": 1, "timeout_ms": 0})
    elif kind == "quota":
        c.call("quota_reserve", {"workflow_id": "wf", "tokens": 1})
    else:
        f = {"tokens_estimate": 1, "timeout_ms": 0}
        if kind == "permit_quota":
            f["workflow_id"] = "wf"
        p = c.call("permit", f)
        c.call("report", {"permit_id": p["permit_id"], "outcome": "ok",
                          "latency_ms": 1.0, "final": True})
EOF

# run DAEMON KIND COUNT: the instructions of a whole run.
run() {
    rm -f "$tmp/s" "$tmp/cg.out"
    valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out" \
        "$1" --socket "$tmp/s" --db :memory: --env-file "$tmp/env" \
        --log-level error 2>"$tmp/vg.log" &
    pid=$!
    for _ in $(seq 1 300); do [ -S "$tmp/s" ] && break; sleep 0.1; done
    "$PY" "$tmp/drive.py" "$here/../python" "$2" "$3" "$tmp/s"
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=
    sed -n 's/^summary: *//p; s/^totals: *//p' "$tmp/cg.out" | head -1
}

printf '%-40s %10s %10s %12s %12s\n' daemon acquire quota permit+rep \
    permit+rep+q
for d in "$@"; do
    base=$(run "$d" acquire 0)
    line=$(printf '%-40s' "$(echo "$d" | tail -c 40)")
    for kind in acquire quota permit permit_quota; do
        total=$(run "$d" "$kind" "$n")
        line="$line $(awk -v t="$total" -v b="$base" -v n="$n" \
                      'BEGIN { printf "%10.0f", (t - b) / n }')"
    done
    echo "$line"
done
