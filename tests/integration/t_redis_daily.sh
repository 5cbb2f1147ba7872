#!/bin/sh
# Daily limits (PROVIDER_<NAME>_RPD, _TPD) counted by the fleet in
# multi-host mode, against a real redis-server of the test's own: three
# daemons standing in for three hosts, clients on every one.  The fleet
# grants at most the limit plus the staleness bound; Redis and every
# daemon's status then say the same usage; Redis SIGKILLed and restarted
# empty mid-run counts nothing twice, nor do SCRIPT FLUSH and CLIENT
# PAUSE; Redis unreachable, each host keeps to its share of the headroom
# it last saw.
. "${top_srcdir:-.}/tests/integration/lib.sh"
timing_test
PY=${PYTHON:-/usr/bin/python3}
command -v redis-server >/dev/null || { echo "not ok - redis-server is not installed (Debian: redis-server)"; exit 1; }

start_redis r
RPID=$REDIS_PID
RCLI="redis-cli -s $TMP/r.sock"

# A client: acquires on PROVIDER with LLM tokens each, one every PACE
# seconds for SECONDS, at most MAX granted (0: no maximum).  Prints the
# acquires granted, those refused by the daily limit, and the errors.
cat > "$TMP/dload.py" <<'EOF'
import sys, time
from llmguard.client import Client
from llmguard.errors import LlmguardError, DaemonUnavailable
sock, prov, llm, pace, secs, most = sys.argv[1:7]
llm, pace, secs, most = int(llm), float(pace), float(secs), int(most)
c = Client(sock, timeout_ms=5000)
granted = refused = errors = 0
end = time.monotonic() + secs
while time.monotonic() < end and (most == 0 or granted < most):
    try:
        c.call("acquire", {"provider": prov, "llm_tokens": llm,
                           "timeout_ms": 2000})
        granted += 1
    except DaemonUnavailable:
        break
    except LlmguardError as e:
        if e.code == "timeout" and str(e).startswith("timeout: daily_limit"):
            refused += 1
        else:
            errors += 1
    time.sleep(pace)
print(granted, refused, errors)
EOF
LOADS=""
load_bg() { out=$1; shift; PYTHONPATH="$top_srcdir/python" "$PY" "$TMP/dload.py" "$@" > "$out" & LOADS="$LOADS $!"; }
load_wait() { for p in $LOADS; do wait "$p"; done; LOADS=""; }
# sum FILES...: the first column added up.
sum() { cat "$@" | awk '{ s += $1 } END { print s + 0 }'; }

# Providers, each with its own limit: groq and oai for the run,
# mis for the Redis outage, pau for SCRIPT FLUSH and CLIENT PAUSE, out
# for the share while it is unreachable; and a deployment, mm on mod.
for n in 1 2 3; do
    cat > "$TMP/h$n.env" <<ENV
REDIS_URL=unix://$TMP/r.sock
LLMGUARD_HOST_ID=host$n
LLMGUARD_QUOTA_FLUSH_MS=200
LLMGUARD_REDIS_TIMEOUT_MS=500
PROVIDER_GROQ_RATE_PER_SEC=100000
PROVIDER_GROQ_RPD=300
PROVIDER_OAI_RATE_PER_SEC=100000
PROVIDER_OAI_TOKENS_PER_MIN=100000000
PROVIDER_OAI_TPD=3000
PROVIDER_MIS_RATE_PER_SEC=100000
PROVIDER_MIS_RPD=300
PROVIDER_OUT_RATE_PER_SEC=100000
PROVIDER_OUT_RPD=300
PROVIDER_PAU_RATE_PER_SEC=100000
PROVIDER_PAU_RPD=100000
PROVIDER_MOD_RATE_PER_SEC=100000
MODEL_MM_PROVIDER=mod
MODEL_MM_NAME=mm-1
MODEL_MM_GROUP=mm
MODEL_MM_RPD=5
ENV
    SOCK="$TMP/d$n.sock" DB_OVERRIDE="$TMP/d$n.db" ENVFILE="$TMP/h$n.env" \
        start_daemon
    eval "PID$n=\$DAEMON_PID"
done
wait_up() {
    for _ in $(seq 1 50); do
        [ "$("$LLMGUARDCTL" -s "$TMP/d$1.sock" --json status | jq -r '.redis.state + " " + (.redis.hosts | tostring)')" = "connected 3" ] && return 0
        sleep 0.1
    done
}
for n in 1 2 3; do wait_up $n; done
sleep 1.5       # every daemon's first exchange: the fleet's usage read

# fleet UNIT NAME: the fleet's usage of a daily counter in Redis.
fleet() { $RCLI hvals "llmguard:{daily}:used:$1:$2" | awk '{ s += $1 } END { print s + 0 }'; }
# status N NAME UNIT FIELD: a daily counter's field in daemon N's status.
status() {
    "$LLMGUARDCTL" -s "$TMP/d$1.sock" --json status |
        jq -r ".daily_limits[] | select(.name == \"$2\" and .unit == \"$3\") | .$4"
}
# settle: a write and then a read by every daemon (one exchange a second).
settle() { sleep 2.5; }

# ---- RPD 300 and TPD 3000 on 3 daemons -------------------------------------
# Each client asks 10 times a second for 20 s: three hosts counting alone
# would grant 3 x 300 (600 in that time); the fleet at most 300 plus what
# it grants while a host's view is stale.  A check sees the others' usage
# as of its last read (at most a second old), which holds what each other
# host had at its last write (at most a second before): the bound is what
# the fleet grants in 2 s, 60 at 30 a second.
for n in 1 2 3; do
    load_bg "$TMP/g$n" "$TMP/d$n.sock" groq 0 0.1 20 0
    load_bg "$TMP/o$n" "$TMP/d$n.sock" oai 10 0.1 20 0
done
load_wait
got=$(sum "$TMP"/g?)
tok=$(( $(sum "$TMP"/o?) * 10 ))
echo "# RPD: $got of 300 granted ($(cat "$TMP"/g? | tr '\n' ' ')); TPD: $tok of 3000"
check "RPD: the fleet grants at most 300 + 60 ($got)" test "$got" -le 360
check "RPD: and most of it ($got >= 290)" test "$got" -ge 290
check "TPD: the fleet grants at most 3000 + 600 tokens ($tok)" test "$tok" -le 3600
check "TPD: and most of them ($tok >= 2900)" test "$tok" -ge 2900
expect_eq "no acquire failed otherwise" 0 \
    "$(cat "$TMP"/g? "$TMP"/o? | awk '{ s += $3 } END { print s + 0 }')"
settle
expect_eq "RPD: Redis holds what the fleet granted" "$got" "$(fleet requests provider/groq)"
expect_eq "TPD: and the tokens" "$tok" "$(fleet tokens provider/oai)"
for n in 1 2 3; do
    expect_eq "RPD: daemon $n's status says the fleet's usage" "$got" \
        "$(status $n provider/groq requests used)"
    expect_eq "RPD: and its own part" "$(sum "$TMP/g$n")" \
        "$(status $n provider/groq requests own_used)"
    expect_eq "TPD: daemon $n's status says the fleet's usage" "$tok" \
        "$(status $n provider/oai tokens used)"
done
expect_match "llmguardctl status: the fleet's usage and this host's" \
    "^provider/groq: $got of 300 requests a day used by the fleet \(this host $(sum "$TMP/g2")\), frees " \
    "$("$LLMGUARDCTL" -s "$TMP/d2.sock" status)"
expect_eq "python -m llmguard status says the same" \
    "$("$LLMGUARDCTL" -s "$TMP/d2.sock" status | grep '^provider/')" \
    "$(PYTHONPATH="$top_srcdir/python" "$PY" -m llmguard --socket "$TMP/d2.sock" status | grep '^provider/')"
expect_eq "host2's part in Redis is what its clients got" "$(sum "$TMP/g2")" \
    "$($RCLI hgetall 'llmguard:{daily}:by:requests:provider/groq' |
        awk 'NR % 2 == 1 { k = $1 } NR % 2 == 0 && k ~ /^[0-9]+@host2$/ { s += $1 } END { print s + 0 }')"

# ---- a deployment's MODEL_<ALIAS>_RPD is the fleet's too --------------------
# permits N K: K permits for model mm on daemon N; how many were granted.
permits() {
    for _ in $(seq 1 "$2"); do echo '{"op":"permit","model":"mm","timeout_ms":2000}'; done |
        /usr/bin/python3 "$top_srcdir/tests/integration/wire.py" "$TMP/d$1.sock" |
        grep -c '"ok": true'
}
expect_eq "model RPD 5: daemon 1 is granted 3 of 3" 3 "$(permits 1 3)"
settle
expect_eq "model RPD 5: daemon 2 then 2 of 4" 2 "$(permits 2 4)"
settle
expect_eq "model RPD 5: daemon 3 then none" 0 "$(permits 3 2)"
expect_eq "model RPD 5: Redis holds the fleet's 5" 5 "$(fleet requests model/mm)"

# ---- Redis SIGKILLed and restarted empty mid-run ---------------------------
for n in 1 2 3; do load_bg "$TMP/m$n" "$TMP/d$n.sock" mis 0 0.1 16 0; done
sleep 3
kill_redis "$RPID"
sleep 1
rm -f "$TMP/r.sock"
start_redis r
RPID=$REDIS_PID
load_wait
sleep 4.5       # reconnected, the rebuild's 3 s over, written and read
got=$(sum "$TMP"/m?)
echo "# outage: $got of 300 granted ($(cat "$TMP"/m? | tr '\n' ' '))"
check "outage: the fleet grants at most 300 + 60 ($got)" test "$got" -le 360
check "outage: and most of it ($got >= 290)" test "$got" -ge 290
expect_eq "outage: Redis came back empty and was rebuilt: fleet = granted" \
    "$got" "$(fleet requests provider/mis)"
expect_eq "outage: the earlier counters were rebuilt, nothing twice" \
    "$(sum "$TMP"/g?)" "$(fleet requests provider/groq)"
expect_eq "outage: and the tokens" "$tok" "$(fleet tokens provider/oai)"
for n in 1 2 3; do
    expect_eq "outage: daemon $n's status says the same" "$got" \
        "$(status $n provider/mis requests used)"
done
check "outage: the rebuild was logged" grep -q "daily counters are new" "$TMP/daemon.log"

# ---- SCRIPT FLUSH and CLIENT PAUSE during traffic --------------------------
# A write that timed out may still run later: the seq keeps it from
# undoing a newer one, and absolute values from counting twice.
for n in 1 2 3; do load_bg "$TMP/p$n" "$TMP/d$n.sock" pau 0 0.02 4 0; done
sleep 1
$RCLI script flush >/dev/null
sleep 1
$RCLI client pause 800 all >/dev/null
load_wait
sleep 3         # reconnected (backoff), written and read again
got=$(sum "$TMP"/p?)
check "SCRIPT FLUSH and CLIENT PAUSE: clients were granted some ($got)" test "$got" -gt 100
expect_eq "SCRIPT FLUSH and CLIENT PAUSE: nothing counted twice, nothing lost" \
    "$got" "$(fleet requests provider/pau)"
expect_eq "SCRIPT FLUSH and CLIENT PAUSE: daemon 1 says the same" "$got" \
    "$(status 1 provider/pau requests used)"

# ---- Redis unreachable: each host keeps to its share -----------------------
# Daemon 1 uses 60 of 300; once every daemon has read that, Redis goes
# away.  Each host may then take (300 - 60) / 3 = 80 more, no more.
load_bg "$TMP/u0" "$TMP/d1.sock" out 0 0.01 5 60
load_wait
settle
for n in 1 2 3; do
    expect_eq "share: daemon $n read the fleet's 60" 60 "$(status $n provider/out requests used)"
done
kill_redis "$RPID"
sleep 0.5
for n in 1 2 3; do load_bg "$TMP/u$n" "$TMP/d$n.sock" out 0 0.01 3 0; done
load_wait
for n in 1 2 3; do
    expect_eq "share: daemon $n granted its share of the headroom, 80" 80 \
        "$(sum "$TMP/u$n")"
done
check "share: the rest was refused by the daily limit" \
    test "$(cat "$TMP"/u1 "$TMP"/u2 "$TMP"/u3 | awk '{ s += $2 } END { print s + 0 }')" -gt 0
# (Under the sanitizers: nothing freed twice, nothing leaked.)
eval "DAEMON_PID=\$PID3"
stop_daemon
expect_eq "a daemon stops cleanly with Redis away" 0 "$STOP_STATUS"

finish
