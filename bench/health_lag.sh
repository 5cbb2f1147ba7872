#!/bin/sh
# health_lag.sh - how long a cooldown, and its clearing, take to reach
# another host: two daemons (hosts a and b) on one redis-server of its
# own; N times (default 20) a 429 reported on a, then a success on a that
# clears it.  The lag of a cooldown is b's log line "degraded here too"
# less a's "answered rate_limited" (both daemons' own clock); the lag of
# a clear is b's "cooldown cleared" less the moment a's report returned.
#
#   bench/health_lag.sh [-n N] [PATH/TO/llmguardd]
set -eu
N=20
if [ "${1:-}" = -n ]; then N=$2; shift 2; fi
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
DAEMON=${1:-$top/_build/default/daemon/llmguardd}
PY=/usr/bin/python3
TMP_PREFIX=llmguard-health-lag
. "$here/lib.sh"

redis-server --port 0 --unixsocket "$TMP/r.sock" --save '' --appendonly no \
    --dir "$TMP" --logfile "$TMP/r.log" &
PIDS="$PIDS $!"
for _ in $(seq 1 100); do [ -S "$TMP/r.sock" ] && break; sleep 0.05; done
for h in a b; do
    cat > "$TMP/$h.env" <<ENV
PROVIDER_OPENAI_RATE_PER_SEC=1000
PROVIDER_OPENAI_PRIORITY=1
PROVIDER_GROQ_RATE_PER_SEC=1000
PROVIDER_GROQ_PRIORITY=2
PROVIDER_COOLDOWN_SEC=30
REDIS_URL=unix://$TMP/r.sock
LLMGUARD_HOST_ID=$h
ENV
    env -i "$DAEMON" --socket "$TMP/$h.sock" --db "$TMP/$h.db" \
        --env-file "$TMP/$h.env" 2> "$TMP/$h.log" &
    PIDS="$PIDS $!"
done
sleep 1.5

cat > "$TMP/drive.py" <<'PY'
import sys, time
from llmguard.client import Client
a, n = Client(sys.argv[1]), int(sys.argv[2])
f = {"workflow_id": "w", "tokens_estimate": 1, "timeout_ms": 2000}
for i in range(n):
    p = a.call("permit", f)
    a.call("report", {"permit_id": p["permit_id"], "outcome": "rate_limited",
                      "final": True})
    time.sleep(1.2)
    p = a.call("permit", dict(f, exclude=["groq"]))
    a.call("report", {"permit_id": p["permit_id"], "outcome": "ok",
                      "final": True})
    print("%.3f" % time.time(), flush=True)     # the clear, as a saw it
    time.sleep(1.2)
PY
PYTHONPATH="$top/python" "$PY" "$TMP/drive.py" "$TMP/a.sock" "$N" > "$TMP/clears"

# Seconds since the epoch of each log line matching $2 in file $1.
stamps() {
    grep "$2" "$1" | sed 's/^\([0-9-]*\)T\([0-9:.]*\)Z.*/\1 \2/' |
        while read -r d t; do
            s=$(date -u -d "$d ${t%.*}" +%s)
            echo "$s.${t#*.}"
        done
}
stamps "$TMP/a.log" 'openai answered rate_limited: degraded' > "$TMP/fa"
stamps "$TMP/b.log" 'openai answered rate_limited on host a' > "$TMP/fb"
stamps "$TMP/b.log" 'openai: cooldown cleared by a success on host a' > "$TMP/cb"

summary() {
    sort -n | awk -v what="$1" '{ v[NR] = $1 } END {
        if (NR == 0) { printf "%s: none seen\n", what; exit 1 }
        printf "%s: n=%d  p50 %.0f ms  p90 %.0f ms  max %.0f ms\n", what, NR,
            v[int(NR * 0.5 + 0.5)] * 1e3, v[int(NR * 0.9 + 0.5)] * 1e3,
            v[NR] * 1e3 }'
}
paste "$TMP/fa" "$TMP/fb" | awk 'NF == 2 { print $2 - $1 }' |
    summary "cooldown a -> b"
paste "$TMP/clears" "$TMP/cb" | awk 'NF == 2 { print $2 - $1 }' |
    summary "clear    a -> b"
