#!/bin/sh
# Provider health shared through a real redis-server of the test's own:
# two daemons standing in for hosts a and b.  A 429 reported on a puts the
# provider in cooldown on b within 1.5 s (b's next permit goes elsewhere,
# status says from host a); the longer of two cooldowns wins on both; a
# success on a clears b; Redis killed: both keep serving on their own
# health, and what a learned meanwhile reaches b once Redis is back; a
# daemon restarted learns back the cooldowns it wrote.
. "${top_srcdir:-.}/tests/integration/lib.sh"
timing_test
command -v redis-server >/dev/null || { echo "not ok - redis-server is not installed (Debian: redis-server)"; exit 1; }
PY="${PYTHON:-/usr/bin/python3}"
export PYTHONPATH="$top_srcdir/python"

start_redis r
RPID=$REDIS_PID
RCLI="redis-cli -s $TMP/r.sock"

for h in a b; do
    cat > "$TMP/$h.env" <<ENV
PROVIDER_OPENAI_RATE_PER_SEC=100
PROVIDER_OPENAI_PRIORITY=1
PROVIDER_GROQ_RATE_PER_SEC=100
PROVIDER_GROQ_PRIORITY=2
PROVIDER_COOLDOWN_SEC=8
REDIS_URL=unix://$TMP/r.sock
LLMGUARD_HOST_ID=$h
ENV
    SOCK="$TMP/$h.sock" DB_OVERRIDE="$TMP/$h.db" ENVFILE="$TMP/$h.env" \
        start_daemon
    eval "PID_$h=\$DAEMON_PID"
done

# call HOST OUTCOME [RETRY_AFTER [EXCLUDE]]: one permit on HOST's daemon
# (EXCLUDE: a provider it may not route to), reported with OUTCOME;
# prints the provider it went to and the state the report answered.
cat > "$TMP/call.py" <<'PY'
import sys
from llmguard.client import Client
sock, outcome = sys.argv[1], sys.argv[2]
ra = float(sys.argv[3]) if len(sys.argv) > 3 else 0
c = Client(sock)
f = {"workflow_id": "wf", "tokens_estimate": 1, "timeout_ms": 2000}
if len(sys.argv) > 4:
    f["exclude"] = [sys.argv[4]]
p = c.call("permit", f)
r = {"permit_id": p["permit_id"], "outcome": outcome, "final": True}
if ra > 0:
    r["retry_after_s"] = ra
print(p["provider"], c.call("report", r)["state"])
PY
call() { h=$1; shift; "$PY" "$TMP/call.py" "$TMP/$h.sock" "$@"; }
# state HOST: openai's state, cooldown left (s), cause and host in status.
state() {
    "$LLMGUARDCTL" -s "$TMP/$1.sock" --json status | jq -r '.providers[] |
        select(.name == "openai") | [.state, .cooldown_remaining_s,
        .cooldown_cause // "-", .cooldown_host // "-"] | join(" ")'
}
# wait_state HOST STATE: poll for up to 5 s; prints the seconds it took.
wait_state() {
    t0=$(date +%s.%N)
    for _ in $(seq 1 100); do
        [ "$(state "$1" | cut -d' ' -f1)" = "$2" ] && break
        sleep 0.05
    done
    awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'
}
left() { state "$1" | cut -d' ' -f2; }

expect_eq "both healthy at first" "healthy healthy" \
    "$(state a | cut -d' ' -f1) $(state b | cut -d' ' -f1)"
sleep 0.6   # each daemon has read the fleet's (empty) health once

# A 429 on a: b is degraded within 1.5 s.
expect_eq "a: openai answers 429: degraded on a" "openai degraded" \
    "$(call a rate_limited)"
took=$(wait_state b degraded)
# Timed by the daemons' own log lines (one clock, no client in between).
at() { grep -m1 "$1" "$TMP/daemon.log" | sed 's/^[^T]*T\([0-9:.]*\)Z.*/\1/' |
       awk -F: '{ printf "%.3f", $1 * 3600 + $2 * 60 + $3 }'; }
lag=$(awk -v a="$(at 'openai answered rate_limited: degraded for 8.0 s')" \
    -v b="$(at 'openai answered rate_limited on host a: degraded here too')" \
    'BEGIN { printf "%.3f", b - a }')
check "b: degraded within 1.5 s of a's report ($lag s; seen by status after $took s)" \
    awk -v t="$lag" 'BEGIN { exit !(t >= 0 && t <= 1.5) }'
expect_match "b: status --json says why and from which host" \
    "^degraded [0-9.]+ rate_limited a$" "$(state b)"
check "b: the cooldown is a's: 8 s from the fault ($(left b) s)" \
    awk -v l="$(left b)" 'BEGIN { exit !(l > 4 && l <= 8) }'
expect_match "b: llmguardctl status says from host a" \
    "^openai: degraded by rate_limited since .*, from host a$" \
    "$("$LLMGUARDCTL" -s "$TMP/b.sock" status)"
expect_eq "python -m llmguard status says the same" \
    "$("$LLMGUARDCTL" -s "$TMP/b.sock" status | grep '^openai:')" \
    "$("$PY" -m llmguard --socket "$TMP/b.sock" status | grep '^openai:')"
expect_match "a: its own cooldown, no host" "^degraded [0-9.]+ rate_limited -$" \
    "$(state a)"
expect_eq "b: the next permit goes to groq" "groq healthy" "$(call b ok)"
check "b: the log says it learned it from a" \
    grep -q "openai answered rate_limited on host a: degraded here too" \
    "$TMP/daemon.log"
expect_match "Redis holds the fleet's entry" "^[0-9]+ [0-9]+ rate_limited 0 a [0-9a-f]{16} [0-9]+$" \
    "$($RCLI hget 'llmguard:{fleet}:health' openai)"

# The longer wins: a Retry-After of 20 s on b reaches a; a's own shorter
# fault afterwards shortens neither.
expect_eq "b: a 429 with Retry-After 20 (routed there: groq excluded)" \
    "openai degraded" "$(call b rate_limited 20 groq)"
for _ in $(seq 1 30); do
    awk -v l="$(left a)" 'BEGIN { exit !(l > 15) }' && break
    sleep 0.05
done
expect_match "a: b's longer cooldown, from host b" \
    "^degraded (1[5-9]|20)[0-9.]* rate_limited b$" "$(state a)"
expect_eq "a: a shorter 429 of its own" "openai degraded" \
    "$(call a rate_limited 0 groq)"
sleep 1.1
check "a: still the longer ($(left a) s)" \
    awk -v l="$(left a)" 'BEGIN { exit !(l > 14) }'
expect_match "a: and still says it is b's" "^degraded [0-9.]+ rate_limited b$" \
    "$(state a)"
check "b: still the longer ($(left b) s)" \
    awk -v l="$(left b)" 'BEGIN { exit !(l > 14) }'

# A success on a (routed to openai by the all-degraded fallback) clears b.
expect_eq "a: a success clears its cooldown" "openai healthy" \
    "$(call a ok 0 groq)"
took=$(wait_state b healthy)
check "b: healthy again, seen by status within 2.5 s of a's answer ($took s)" \
    awk -v t="$took" 'BEGIN { exit !(t <= 2.5) }'
check "b: the log says a cleared it" \
    grep -q "openai: cooldown cleared by a success on host a" "$TMP/daemon.log"
expect_eq "b: openai takes its permits again" "openai healthy" "$(call b ok)"

# A success whose attempt was in flight when b's 429 came clears nothing,
# on a or in the fleet: a call cannot cancel a fresh 429 from another host.
cat > "$TMP/inflight.py" <<'PY'
import sys, time
from llmguard.client import Client
a, b = Client(sys.argv[1]), Client(sys.argv[2])
# groq excluded: a slow lease under load would move a permit to it.
f = {"workflow_id": "wf", "tokens_estimate": 1, "timeout_ms": 2000,
     "exclude": ["groq"]}
pa = a.call("permit", f)                    # in flight on a
pb = b.call("permit", f)
b.call("report", {"permit_id": pb["permit_id"], "outcome": "rate_limited",
                  "final": True})
time.sleep(1.0)                             # a has learned it
r = a.call("report", {"permit_id": pa["permit_id"], "outcome": "ok",
                      "final": True})
print(pa["provider"], pb["provider"], r["state"])
PY
expect_eq "a: an ok in flight before b's 429 leaves a degraded" \
    "openai openai degraded" \
    "$("$PY" "$TMP/inflight.py" "$TMP/a.sock" "$TMP/b.sock")"
sleep 0.6
expect_match "b: still degraded, its own cooldown" "^degraded [0-9.]+ rate_limited -$" \
    "$(state b)"
expect_match "a: degraded from host b" "^degraded [0-9.]+ rate_limited b$" \
    "$(state a)"
expect_eq "a success routed after the 429 clears both" "openai healthy" \
    "$(call a ok 0 groq)"
took=$(wait_state b healthy)
expect_eq "b: healthy again ($took s)" healthy "$(state b | cut -d' ' -f1)"

# Redis killed: health is each daemon's own, both keep serving.
kill_redis "$RPID"
sleep 0.3
expect_eq "Redis down: a's 429 (Retry-After 30) degrades a" \
    "openai degraded" "$(call a rate_limited 30)"
expect_eq "Redis down: a keeps serving (groq)" "groq healthy" "$(call a ok)"
sleep 1.1
expect_eq "Redis down: b stays healthy and serves on openai" \
    "openai healthy" "$(call b ok)"
# Back (empty): a writes what it owes, b learns it.
start_redis r
took=$(wait_state b degraded)
expect_match "Redis back: b learns a's cooldown ($took s)" \
    "^degraded [0-9.]+ rate_limited a$" "$(state b)"
check "Redis back: about the 30 s a had left ($(left b) s)" \
    awk -v l="$(left b)" 'BEGIN { exit !(l > 20 && l <= 30) }'

# a restarted learns back the cooldown it had written before.
DAEMON_PID=$PID_a stop_daemon
SOCK="$TMP/a.sock" DB_OVERRIDE="$TMP/a.db" ENVFILE="$TMP/a.env" start_daemon
took=$(wait_state a degraded)
expect_match "a restarted: degraded again from the fleet's health ($took s)" \
    "^degraded [0-9.]+ rate_limited a$" "$(state a)"

# The key of another type: said once, health stays local, serving goes on.
$RCLI del 'llmguard:{fleet}:health' >/dev/null
$RCLI set 'llmguard:{fleet}:health' garbage >/dev/null
expect_eq "a bad key: a's 429 on groq still degrades groq on a" \
    "groq degraded" "$(call a rate_limited 0 openai)"
sleep 1.1
check "the write refused, logged" \
    grep -q "redis: cannot write the health of groq: WRONGTYPE" "$TMP/daemon.log"
check "the read refused, logged" \
    grep -q "redis: cannot read the health of the fleet: WRONGTYPE" "$TMP/daemon.log"
check "logged once per daemon" \
    test "$(grep -c 'cannot read the health of the fleet' "$TMP/daemon.log")" -le 2
expect_eq "b keeps serving (groq: openai is in a's cooldown)" "groq healthy" \
    "$(call b ok)"
finish
