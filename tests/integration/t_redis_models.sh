#!/bin/sh
# Model deployments in multi-host mode, against a real redis-server of the
# test's own: three daemons standing in for three hosts share each
# deployment's bucket (MODEL_<ALIAS>_RPM) within burst + rate x (T + lease)
# as they share the providers', reloads included; a deployment without RPM or TPM stays each
# host's own (nothing to share, no key in Redis).  A 429 on a deployment
# via host 1 cools that deployment down on host 2 within a second, not
# its provider nor the provider's other models.  Fallback closed: a
# permit naming a model answers busy at once.
. "${top_srcdir:-.}/tests/integration/lib.sh"
timing_test
ACQ="$top_builddir/tests/integration/acquirer"
command -v redis-server >/dev/null || { echo "not ok - redis-server is not installed (Debian: redis-server)"; exit 1; }

start_redis r
RCLI="redis-cli -s $TMP/r.sock"

# GEMMA: 600 a minute (10/s, burst 600) on a provider that does not limit
# it (1000/s); the burst is spent before the measured interval.
for n in 1 2 3; do
    cat > "$TMP/h$n.env" <<ENV
PROVIDER_GROQ_RATE_PER_SEC=1000
PROVIDER_GROQ_BURST=1000
PROVIDER_GROQ_PRIORITY=1
PROVIDER_TOGETHER_RATE_PER_SEC=1000
PROVIDER_TOGETHER_BURST=1000
PROVIDER_TOGETHER_PRIORITY=2
MODEL_GEMMA_PROVIDER=groq
MODEL_GEMMA_NAME=gemma
MODEL_GEMMA_RPM=600
MODEL_FREE_PROVIDER=groq
MODEL_FREE_NAME=free
MODEL_LLAMA_GROQ_PROVIDER=groq
MODEL_LLAMA_GROQ_NAME=llama-groq
MODEL_LLAMA_GROQ_GROUP=llama
MODEL_LLAMA_TOG_PROVIDER=together
MODEL_LLAMA_TOG_NAME=llama-tog
MODEL_LLAMA_TOG_GROUP=llama
PROVIDER_COOLDOWN_SEC=8
REDIS_URL=unix://$TMP/r.sock
LLMGUARD_HOST_ID=host$n
LLMGUARD_LEASE_MS=200
ENV
    SOCK="$TMP/d$n.sock" DB_OVERRIDE="$TMP/d$n.db" ENVFILE="$TMP/h$n.env" \
        start_daemon
done
check "each daemon says it is connected" \
    test "$(grep -c 'redis: connected to unix://.* as host host[123]' "$TMP/daemon.log")" -eq 3

# Spend the burst (600) through host 1, so that what follows is the rate.
out=$("$ACQ" race "$TMP/d1.sock" model:gemma 4 2)
echo "# burst: $out"
grants=${out#grants }; grants=${grants%% *}
check "the deployment's burst of 600 is global: host 1 alone gets it ($grants in 2 s, 600 + 10/s)" \
    test "$grants" -ge 540 -a "$grants" -le 630
check "its bucket is in Redis under model/" \
    test -n "$($RCLI hget 'llmguard:{bucket:model/gemma}:tokens' ts)"

# 3 daemons x 3 processes naming the model for 4 s: 10/s for the fleet.
for n in 1 2 3; do
    "$ACQ" span "$TMP/d$n.sock" model:gemma 3 4 > "$TMP/span$n" &
    eval "SPAN$n=\$!"
done
wait $SPAN1 $SPAN2 $SPAN3
cat "$TMP"/span[123] | sed 's/^/# /'
read -r total first last <<EOF2
$(cat "$TMP"/span[123] | awk '{ g += $2; if (NR == 1 || $4 < f) f = $4;
    if ($6 > l) l = $6 } END { printf "%d %.6f %.6f", g, f, l }')
EOF2
# What the burst left (at most one second's refill, 10) counts as burst.
bound=$(awk -v f="$first" -v l="$last" 'BEGIN { printf "%d", 10 + 10 * (l - f + 0.2) }')
low=$(awk 'BEGIN { printf "%d", 0.9 * 10 * 4 }')
echo "# total $total over $(awk -v f="$first" -v l="$last" 'BEGIN { print l - f }') s, bound $bound, low $low"
check "3 daemons on one deployment: grants ($total) <= burst left + rate x (T + lease) ($bound)" \
    test "$total" -le "$bound"
check "3 daemons on one deployment: grants ($total) >= 90% of rate x 4 s ($low)" \
    test "$total" -ge "$low"
for n in 1 2 3; do
    g=$(awk '{ print $2 }' "$TMP/span$n")
    check "daemon $n got some of them ($g)" test "$g" -ge 3
done

# After a reload of each daemon the deployment's bucket stays global.
for n in 1 2 3; do "$LLMGUARDCTL" -s "$TMP/d$n.sock" reload >/dev/null; done
for n in 1 2 3; do
    "$ACQ" span "$TMP/d$n.sock" model:gemma 2 2 > "$TMP/re$n" &
    eval "RE$n=\$!"
done
wait $RE1 $RE2 $RE3
read -r total first last <<EOF2
$(cat "$TMP"/re[123] | awk '{ g += $2; if (NR == 1 || $4 < f) f = $4;
    if ($6 > l) l = $6 } END { printf "%d %.6f %.6f", g, f, l }')
EOF2
bound=$(awk -v f="$first" -v l="$last" 'BEGIN { printf "%d", 10 + 10 * (l - f + 0.2) }')
check "after a reload: grants ($total) <= burst left + rate x (T + lease) ($bound)" \
    test "$total" -le "$bound"

# A deployment with neither RPM nor TPM: not leased, no key.
out=$("$ACQ" race "$TMP/d2.sock" model:free 2 1)
grants=${out#grants }; grants=${grants%% *}
check "a deployment without limits is not held up ($grants permits in 1 s)" \
    test "$grants" -ge 100
expect_eq "and has no bucket in Redis" 0 \
    "$($RCLI exists 'llmguard:{bucket:model/free}:tokens')"
check "no settings warning while the hosts agree" sh -c "! grep -q 'file differs' '$TMP/daemon.log'"

# Deployment health.  call HOST MODEL OUTCOME: one permit naming MODEL on
# HOST's daemon, reported with OUTCOME; prints the deployment's provider.
export PYTHONPATH="$top_srcdir/python"
cat > "$TMP/call.py" <<'PY'
import sys
from llmguard.client import Client
c = Client(sys.argv[1])
p = c.call("permit", {"model": sys.argv[2], "timeout_ms": 2000})
c.call("report", {"permit_id": p["permit_id"], "outcome": sys.argv[3],
                  "final": True})
print(p["provider"])
PY
call() { ${PYTHON:-/usr/bin/python3} "$TMP/call.py" "$TMP/d$1.sock" "$2" "$3"; }
# mstate HOST ALIAS: the deployment's state in status; pstate: a provider's.
mstate() {
    "$LLMGUARDCTL" -s "$TMP/d$1.sock" --json status |
        jq -r --arg a "$2" '.models[] | select(.alias == $a) | .state'
}
pstate() {
    "$LLMGUARDCTL" -s "$TMP/d$1.sock" --json status |
        jq -r --arg a "$2" '.providers[] | select(.name == $a) | .state'
}
expect_eq "host 2: llama goes to groq's deployment first" groq "$(call 2 llama ok)"
expect_eq "host 1: a 429 on groq's llama" groq "$(call 1 llama rate_limited)"
expect_eq "degraded on host 1" degraded "$(mstate 1 llama_groq)"
# wait_degraded HOST ALIAS: poll for up to 2 s.
wait_degraded() {
    for _ in $(seq 1 40); do
        [ "$(mstate "$1" "$2")" = degraded ] && break
        sleep 0.05
    done
}
t0=$(date +%s.%N)
wait_degraded 2 llama_groq
took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
expect_eq "and on host 2 (${took} s after the report answered)" degraded "$(mstate 2 llama_groq)"
check "within a second (${took} s)" awk -v t="$took" 'BEGIN { exit !(t <= 1.0) }'
wait_degraded 3 llama_groq
expect_eq "host 3 too" degraded "$(mstate 3 llama_groq)"
expect_eq "host 2: llama goes to together's deployment now" together "$(call 2 llama ok)"
expect_eq "host 2: groq itself stays healthy" healthy "$(pstate 2 groq)"
expect_eq "host 2: and so do groq's other models" "healthy healthy" \
    "$(mstate 2 gemma) $(mstate 2 free)"
expect_eq "host 2: together's deployment too" healthy "$(mstate 2 llama_tog)"
check "logged on host 2 as the fleet's" \
    grep -q 'model/llama_groq answered rate_limited on host host1: degraded here too' "$TMP/daemon.log"
expect_match "the fault is in Redis under model/" '^[0-9]+ [0-9]+ rate_limited ' \
    "$($RCLI hget 'llmguard:{fleet}:health' model/llama_groq)"
expect_eq "and the provider has no field" "" \
    "$($RCLI hget 'llmguard:{fleet}:health' groq)"

# Fallback closed with Redis away: busy, not a wait for a lease.
sed -e "s|^REDIS_URL=.*|REDIS_URL=unix://$TMP/nothing-here.sock|" \
    -e 's/^LLMGUARD_HOST_ID=.*/LLMGUARD_HOST_ID=host9/' "$TMP/h1.env" > "$TMP/h9.env"
echo "LLMGUARD_REDIS_FALLBACK=closed" >> "$TMP/h9.env"
SOCK="$TMP/d9.sock" DB_OVERRIDE="$TMP/d9.db" ENVFILE="$TMP/h9.env" start_daemon
t0=$(date +%s%N)
out=$("$RAWCLIENT" "$TMP/d9.sock" req:permit:1:model=gemma,timeout_ms=3000 | head -1)
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
expect_match "fallback closed: a permit naming a model is busy" \
    "^err 1 busy gemma: Redis is unreachable and LLMGUARD_REDIS_FALLBACK is closed" "$out"
check "at once, not after its 3 s timeout ($ms ms)" test "$ms" -lt 2000
finish
