#!/bin/sh
# What a provider's rate-limit headers do to the fleet's bucket, against a
# real redis-server of the test's own: three daemons stand in for hosts
# a, b and c.  "remaining 0, reset 2s" reported through a stops the grants
# of b and c, which are busy on the same provider, within a lease (and a
# margin), and they resume after the reset.  Then the three call a mock
# provider that allows 2 requests a second and says so in its headers,
# each host as fast as it is let: the mock answers nearly none of them 429.
# The LLM-token bucket alike (remaining-tokens).  Redis unreachable: the reporting host's own bucket is held, as on one
# host.
. "${top_srcdir:-.}/tests/integration/lib.sh"
timing_test
command -v redis-server >/dev/null || { echo "not ok - redis-server is not installed (Debian: redis-server)"; exit 1; }
PY="${PYTHON:-/usr/bin/python3}"
export PYTHONPATH="$top_srcdir/python"
export LLMGUARD_DEMO_HTTP_TIMEOUT_MS=2000

start_redis r
RPID=$REDIS_PID
RCLI="redis-cli -s $TMP/r.sock"

# The mock: 6 requests a window of 3 s (2 a second), full at first.
rm -f "$TMP/groq.port"
"$MOCK" --name groq --port-file "$TMP/groq.port" --rpm 6 --window 3 &
MOCK_PIDS="$MOCK_PIDS $!"
for _ in $(seq 1 100); do
    [ -s "$TMP/groq.port" ] && break
    sleep 0.05
done
export PROVIDER_GROQ_BASE_URL="http://127.0.0.1:$(cat "$TMP/groq.port")/v1"
stats() { curl -sf "http://127.0.0.1:$(cat "$TMP/groq.port")/stats"; }
stat() { stats | sed "s/.*\"$1\": *\([0-9]*\).*/\1/"; }

# The daemons let 20 a second through, ten times what the mock takes.
for h in a b c; do
    cat > "$TMP/$h.env" <<ENV
PROVIDER_GROQ_RATE_PER_SEC=20
PROVIDER_GROQ_BURST=20
PROVIDER_COOLDOWN_SEC=0
REDIS_URL=unix://$TMP/r.sock
LLMGUARD_HOST_ID=$h
LLMGUARD_LEASE_MS=200
ENV
    SOCK="$TMP/$h.sock" DB_OVERRIDE="$TMP/$h.db" ENVFILE="$TMP/$h.env" \
        start_daemon
    eval "PID_$h=\$DAEMON_PID"
done
check "each daemon is connected" \
    test "$(grep -c 'redis: connected to unix://.* as host [abc]' "$TMP/daemon.log")" -eq 3

# ---- remaining 0, reset 2s through a: b and c stop, then resume ----------
# b and c take permits (and report them ok) as fast as they are granted,
# each time stamped; after 1 s a reports "remaining 0, reset 2s".  Prints
# b's and c's grants in the second before the report, in the lease after
# it (200 ms and a margin of 250 ms), between then and 1.8 s after it,
# and the time of the first grant after that.
cat > "$TMP/hold.py" <<'PY'
import sys, threading, time
import llmguard
a, b, c = sys.argv[1:4]
stamps, stop = {b: [], c: []}, threading.Event()
def busy(sock):
    cl = llmguard.Client(sock)
    while not stop.is_set():
        p = cl.call("permit", {"timeout_ms": 5000, "tokens_estimate": 1},
                    wait_s=5.0)
        stamps[sock].append(time.time())
        cl.call("report", {"permit_id": p["permit_id"], "outcome": "ok"})
ts = [threading.Thread(target=busy, args=(s,)) for s in (b, c)]
for t in ts:
    t.start()
time.sleep(1.0)
ca = llmguard.Client(a)
p = ca.call("permit", {"timeout_ms": 5000, "tokens_estimate": 1},
            wait_s=5.0)
ca.call("report", {"permit_id": p["permit_id"], "outcome": "ok", "headers": {
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "2s"}})
t0 = time.time()
time.sleep(3.0)
stop.set()
for t in ts:
    t.join()
def count(lo, hi):
    return sum(1 for s in stamps.values() for t in s if lo <= t - t0 < hi)
after = [t - t0 for s in stamps.values() for t in s if t - t0 >= 0.45]
print("before %d lease %d held %d resumed %.3f" % (count(-1.0, 0), count(0, 0.45),
      count(0.45, 1.8), min(after) if after else -1))
PY
out=$("$PY" "$TMP/hold.py" "$TMP/a.sock" "$TMP/b.sock" "$TMP/c.sock")
echo "# $out"
read -r _ before _ lease _ held _ resumed <<EOF
$out
EOF
check "b and c were busy before the report ($before grants in 1 s)" \
    test "$before" -ge 10
check "within the lease after it they stop ($lease grants, then $held between 0.45 s and 1.8 s)" \
    test "$held" -eq 0
check "they resume after the reset (first at $resumed s)" \
    awk -v t="$resumed" 'BEGIN { exit !(t >= 1.8 && t <= 2.8) }'
expect_match "Redis keeps the bucket's count of leased tokens" '^[0-9.e+]+$' \
    "$($RCLI hget 'llmguard:{bucket:groq}:tokens' n)"

# ---- the mock's own limit, through the demo on every host ------------------
# 2 a second for 6 s, each host calling one at a time: the fleet follows
# what the mock says remains; every answer it sends carries its headers.
sleep 3.1                   # the mock's window is full again
for h in a b c; do
    (
        end=$(($(date +%s) + 6))
        while [ "$(date +%s)" -lt "$end" ]; do
            "$DEMO" -s "$TMP/$h.sock" -p groq -e 10 -a 1 -T 5 hello \
                2>>"$TMP/demo.err" | head -1
        done > "$TMP/demo.$h"
    ) &
    eval "L_$h=\$!"
done
wait $L_a $L_b $L_c
ok=$(cat "$TMP"/demo.[abc] | grep -c '^provider=groq success=1 ')
limited=$(stat rate_limited)
served=$(stat ok)
echo "# the demo: $ok calls succeeded, the mock answered $served and refused $limited (429)"
check "the fleet got about what the mock allows ($served answered in 6 s: 6 + 2/s)" \
    test "$served" -ge 12 -a "$served" -le 22
check "the mock answered at most 3 with a 429 ($limited)" test "$limited" -le 3

# ---- the LLM-token bucket alike: "remaining-tokens 0, reset 2s" ---------
# A provider with TOKENS_PER_MIN, added by a reload (groq excluded below,
# so that nothing moves to it meanwhile).
for h in a b c; do
    printf 'PROVIDER_TOK_RATE_PER_SEC=50\nPROVIDER_TOK_TOKENS_PER_MIN=60000\n' \
        >> "$TMP/$h.env"
    "$LLMGUARDCTL" -s "$TMP/$h.sock" reload >/dev/null
done
sleep 1.1                   # every host leases with the fleet's settings
res=$("$PY" - "$TMP/a.sock" "$TMP/b.sock" <<'PYEOF'
import sys, time
import llmguard
a, b = llmguard.Client(sys.argv[1]), llmguard.Client(sys.argv[2])
def permit(c, timeout_ms):
    return c.call("permit", {"preferred": "tok", "exclude": ["groq"],
                             "timeout_ms": timeout_ms, "tokens_estimate": 100},
                  wait_s=timeout_ms / 1e3)
a.call("report", {"permit_id": permit(a, 2000)["permit_id"], "outcome": "ok",
                  "headers": {"x-ratelimit-remaining-tokens": "0",
                              "x-ratelimit-reset-tokens": "2s"}})
t0 = time.monotonic()
rep = permit(b, 5000)
print("waited %.0f" % ((time.monotonic() - t0) * 1e3))
PYEOF
)
w=$(echo "$res" | sed -n 's/^waited \([0-9]*\)$/\1/p')
check "tokens: b's next permit of 100 waited about 2 s for the fleet's LLM tokens ($w ms)" \
    awk -v w="$w" 'BEGIN { exit !(w >= 1700 && w <= 3000) }'
lhold=$($RCLI hget 'llmguard:{bucket:tok}:tokens' lhold)
check "tokens: Redis held its LLM refill (lhold $lhold)" \
    awk -v v="$lhold" 'BEGIN { exit !(v + 0 > 0) }'

# ---- Redis unreachable: the reporting host's own bucket, as on one host ----
kill_redis "$RPID"
sleep 0.6                   # leases lapsed: each host in fallback share
res=$("$PY" - "$TMP/a.sock" "$TMP/b.sock" <<'PYEOF'
import sys, time
import llmguard
a, b = llmguard.Client(sys.argv[1]), llmguard.Client(sys.argv[2])
def permit(c, timeout_ms):
    return c.call("permit", {"timeout_ms": timeout_ms, "exclude": ["tok"],
                             "tokens_estimate": 1}, wait_s=timeout_ms / 1e3)
def at_once(c):
    try:
        c.call("report", {"permit_id": permit(c, 0)["permit_id"],
                          "outcome": "ok"})
        return "granted"
    except llmguard.LlmguardError as e:
        return e.code
a.call("report", {"permit_id": permit(a, 2000)["permit_id"], "outcome": "ok",
                  "headers": {"x-ratelimit-remaining-requests": "0",
                              "x-ratelimit-reset-requests": "2s"}})
print("a", at_once(a), "b", at_once(b))
t0 = time.monotonic()
rep = permit(a, 5000)
print("waited %.0f" % ((time.monotonic() - t0) * 1e3))
PYEOF
)
expect_match "unreachable: a holds, b (its own share) does not" "^a timeout b granted$" "$res"
w=$(echo "$res" | sed -n 's/^waited \([0-9]*\)$/\1/p')
check "unreachable: a's next permit waited about 2 s ($w ms)" \
    awk -v w="$w" 'BEGIN { exit !(w >= 1700 && w <= 3000) }'
finish
