#!/bin/sh
# Multi-host mode: the quota window, default limit and enforcement are the
# fleet's newest configuration's, against a real redis-server of the
# test's own.  Three daemons whose files differ in QUOTA_WINDOW_DAYS,
# DEFAULT_DAILY_QUOTA_TOKENS and QUOTA_ENFORCEMENT: within a heartbeat
# every one enforces the newest's (a reservation over the newest default
# is refused on the hosts whose own files would allow it, `llmguardctl
# quota` shows the same limit everywhere, status says whose settings
# apply), the usage moves to the new window's slots without being
# counted twice, and a reload of an older host to a newer file takes the
# fleet over.  The guard of a window change: a host still on an older
# configuration's window is refused for a while, then takes over.
. "${top_srcdir:-.}/tests/integration/lib.sh"
timing_test
PY=${PYTHON:-/usr/bin/python3}
command -v redis-server >/dev/null || { echo "not ok - redis-server is not installed (Debian: redis-server)"; exit 1; }

start_redis r
RCLI="redis-cli -s $TMP/r.sock"
SLOTS='llmguard:{quota}:slot_ms'

# host_env N LINES...: the env file of daemon N.
host_env() {
    n=$1; shift
    {
        echo "REDIS_URL=unix://$TMP/r.sock"
        echo "LLMGUARD_HOST_ID=host$n"
        # A loaded machine is not an outage here.
        echo "LLMGUARD_REDIS_TIMEOUT_MS=2000"
        for l in "$@"; do echo "$l"; done
    } > "$TMP/h$n.env"
}
start_host() {
    SOCK="$TMP/d$1.sock" DB_OVERRIDE="$TMP/d$1.db" ENVFILE="$TMP/h$1.env" start_daemon
}
# reserve N WORKFLOW TOKENS: through daemon N; prints "allowed within",
# "allowed over" or "refused", and the usage and limit the reply gave.
cat > "$TMP/reserve.py" <<'EOF'
import sys
from llmguard.client import Client
from llmguard.errors import QuotaExceededError
c = Client(sys.argv[1], timeout_ms=5000)
try:
    r = c.call("quota_reserve", {"workflow_id": sys.argv[2],
                                 "tokens": int(sys.argv[3])})
    print("allowed", "over" if r["over_quota"] else "within",
          r["tokens_used"], r["tokens_limit"])
except QuotaExceededError as e:
    print("refused", e.tokens_used, e.tokens_limit)
EOF
reserve() { PYTHONPATH="$top_srcdir/python" "$PY" "$TMP/reserve.py" "$TMP/d$1.sock" "$2" "$3"; }
# st N FIELD: a field of daemon N's status --json.
st() { "$LLMGUARDCTL" -s "$TMP/d$1.sock" --json status | jq -r ".$2"; }
# settings N: what daemon N's status says of its quota settings.
settings() { "$LLMGUARDCTL" -s "$TMP/d$1.sock" --json status | jq -r '"\(.enforcement) \(.window_days) \(.default_quota_tokens) \(.quota_from)"'; }
# quota N FIELD: a field of `llmguardctl quota w1` through daemon N.
quota() { "$LLMGUARDCTL" -s "$TMP/d$1.sock" quota w1 | awk -v f="$2" '$1 == f { print $2 }'; }
# fleet: w1's usage in Redis (the sum of its slots); by_slots SIZE: whether
# every host's field of w1 is a slot of SIZE ms.
fleet() { $RCLI hvals 'llmguard:{quota}:used:workflow:w1' | awk '{ s += $1 } END { print s + 0 }'; }
by_slots() {
    $RCLI hkeys 'llmguard:{quota}:by:workflow:w1' |
        awk -v z="$1" -F@ '$1 ~ /^[0-9]+$/ { n++; if ($1 % z) bad++ } END { exit !(n > 0 && !bad) }'
}
# wait_for WHAT CODE: up to WAIT tenths of a second (20: 2 s, a heartbeat
# and a batch with room for a loaded machine) for CODE to succeed.
wait_for() {
    for _ in $(seq 1 "${WAIT:-20}"); do eval "$2" && break; sleep 0.1; done
    check "$1" eval "$2"
}
redis_ms() { $RCLI time | awk 'NR == 1 { s = $1 } NR == 2 { printf "%.0f", s * 1000 + $1 / 1000 }'; }

# host1 and host3: a day's window, 1000 tokens by default, soft.
for n in 1 3; do
    host_env $n "QUOTA_WINDOW_DAYS=1" "DEFAULT_DAILY_QUOTA_TOKENS=1000"
    start_host $n
done
expect_eq "host1 alone: its own settings" "soft 1 1000 host1" "$(settings 1)"
expect_eq "reserve 100 on host1 (soft)" "allowed within 100 1000" "$(reserve 1 w1 100)"
expect_eq "reserve 50 on host3" "allowed within" "$(reserve 3 w1 50 | cut -d' ' -f1-2)"
wait_for "Redis holds both: 150" 'test "$(fleet)" = 150'
expect_match "the slots are a day's (120 s), host1's configuration's" \
    "^120000 [0-9]+ host1 [0-9]+$" "$($RCLI get "$SLOTS")"

# host2, loaded last: two days, 300 tokens by default, hard.  Its file is
# the fleet's now, quotas included.
sleep 0.05
host_env 2 "QUOTA_WINDOW_DAYS=2" "DEFAULT_DAILY_QUOTA_TOKENS=300" "QUOTA_ENFORCEMENT=hard"
start_host 2
expect_eq "host2: its own settings" "hard 2 300 host2" "$(settings 2)"
for n in 1 3; do
    wait_for "host$n enforces host2's within a heartbeat" \
        "test \"\$(settings $n)\" = 'hard 2 300 host2'"
done
check "host1 and host3 say they follow host2's, and how their files differ" test \
    "$(grep -c "redis: quotas follow host host2's configuration: QUOTA_WINDOW_DAYS 2 (here 1), DEFAULT_DAILY_QUOTA_TOKENS 300 (here 1000), QUOTA_ENFORCEMENT hard (here soft)$" "$TMP/daemon.log")" -eq 2
wait_for "every host rewrote its part in two days' slots (240 s)" 'by_slots 240000'
expect_match "the fleet's slots are host2's" "^240000 [0-9]+ host2 [0-9]+$" "$($RCLI get "$SLOTS")"
expect_eq "the usage moved, not counted twice" 150 "$(fleet)"
for n in 1 2 3; do
    expect_eq "llmguardctl quota through host$n: the same limit and usage" \
        "300 150" "$(quota $n tokens_limit) $(quota $n tokens_used)"
done
# The quota data is new in this Redis: for 3 s hard mode keeps every host
# to its share (llmguardd(8), "Several hosts").  Past that, the scripts.
WAIT=40 wait_for "Redis' quota data is no longer being rebuilt" \
    "test \"\$($RCLI exists 'llmguard:{quota}:epoch:rebuilding')\" = 0"
expect_eq "200 more on host1, whose file allows 1000 soft: refused" \
    "refused 150 300" "$(reserve 1 w1 200)"
expect_eq "100 more on host3: within host2's 300" "allowed within 250 300" "$(reserve 3 w1 100)"
expect_eq "and 100 more on host1: refused" "refused 250 300" "$(reserve 1 w1 100)"
wait_for "Redis holds 250" 'test "$(fleet)" = 250'

# Status, text and JSON, C and Python alike.
text=$("$LLMGUARDCTL" -s "$TMP/d1.sock" status)
expect_eq "status: the settings in force and whose" \
    "enforcement  hard
window_days  2
quota_limit  300 by default
quota_from   host host2's configuration" \
    "$(printf '%s\n' "$text" | grep '^enforcement \|^window_days \|^quota_')"
expect_eq "python -m llmguard status says the same" \
    "$(printf '%s\n' "$text" | grep '^enforcement \|^window_days \|^quota_')" \
    "$(PYTHONPATH="$top_srcdir/python" "$PY" -m llmguard --socket "$TMP/d1.sock" status | grep '^enforcement \|^window_days \|^quota_')"
expect_eq "and the same JSON" \
    "$("$LLMGUARDCTL" -s "$TMP/d1.sock" --json status | jq -cS '[.enforcement, .window_days, .default_quota_tokens, .quota_from]')" \
    "$(PYTHONPATH="$top_srcdir/python" "$PY" -m llmguard --socket "$TMP/d1.sock" --json status | jq -cS '[.enforcement, .window_days, .default_quota_tokens, .quota_from]')"

# host1 reloaded with a newer file: half a day, 500 tokens, soft.  It
# takes the fleet over, quotas included.
host_env 1 "QUOTA_WINDOW_DAYS=0.5" "DEFAULT_DAILY_QUOTA_TOKENS=500"
"$LLMGUARDCTL" -s "$TMP/d1.sock" reload >/dev/null
expect_eq "host1 applies its reload at once" "soft 0.5 500 host1" "$(settings 1)"
for n in 2 3; do
    wait_for "host$n follows host1's reload within a heartbeat" \
        "test \"\$(settings $n)\" = 'soft 0.5 500 host1'"
done
check "host2 says it follows host1's" grep -q \
    "redis: quotas follow host host1's configuration: QUOTA_WINDOW_DAYS 0.5 (here 2), DEFAULT_DAILY_QUOTA_TOKENS 500 (here 300), QUOTA_ENFORCEMENT soft (here hard)$" "$TMP/daemon.log"
check "host3 too, naming only what differs from its file" grep -q \
    "redis: quotas follow host host1's configuration: QUOTA_WINDOW_DAYS 0.5 (here 1), DEFAULT_DAILY_QUOTA_TOKENS 500 (here 1000)$" "$TMP/daemon.log"
check "host1 says its own apply" grep -q \
    "redis: quotas by this host's configuration: QUOTA_WINDOW_DAYS 0.5, DEFAULT_DAILY_QUOTA_TOKENS 500, QUOTA_ENFORCEMENT soft$" "$TMP/daemon.log"
# (Slots of 240 s start on 60 s ones: what moved cannot be told apart.)
wait_for "the fleet's slots are host1's, half a day's (60 s)" \
    "$RCLI get '$SLOTS' | grep -Eq '^60000 [0-9]+ host1 [0-9]+$'"
sleep 0.5       # every host's batch in the new slots
expect_eq "the usage moved again, not counted twice" 250 "$(fleet)"
expect_eq "llmguardctl quota through host2: 250 of 500" "250 500" \
    "$(quota 2 tokens_used) $(quota 2 tokens_limit)"
expect_eq "400 more on host2, whose file says hard 300: soft, over" \
    "allowed over 650 500" "$(reserve 2 w1 400)"
for n in 1 3; do
    wait_for "llmguardctl quota through host$n: 650 of 500" \
        "test \"\$(quota $n tokens_used) \$(quota $n tokens_limit)\" = '650 500'"
done

# The guard: slots of a newer configuration than host1's, changed just
# now.  host1's writes are refused (its usage stays owed), until the
# guard's seconds have passed: then it takes the slots over.
$RCLI set "$SLOTS" "7000 99999999999999 zz $(redis_ms)" >/dev/null
expect_eq "10 more on host1" "allowed over 660 500" "$(reserve 1 w1 10)"
wait_for "host1 says its window is not the newest" \
    "grep -q \"redis: the fleet's quota slots are 7000 ms, a newer configuration's than this host's (60000 ms): writing once it follows it\" \"$TMP/daemon.log\""
sleep 1.2
expect_eq "refused: Redis still holds 650" 650 "$(fleet)"
expect_match "and the newer slots stay" "^7000 " "$($RCLI get "$SLOTS")"
$RCLI set "$SLOTS" "7000 99999999999999 zz 0" >/dev/null
WAIT=30 wait_for "the guard over, host1 writes again (its retry, every second)" 'test "$(fleet)" = 660'
expect_match "taking the slots over" "^60000 [0-9]+ host1 [0-9]+$" "$($RCLI get "$SLOTS")"

finish
