#!/bin/sh
# Multi-host mode: the fleet's configuration is the newest host's, against
# a real redis-server of the test's own.  Two daemons with different rates:
# the newer one's rate governs both (grants within burst + its rate x
# (T + lease)), and its deployments' RPM; the other says in its log and
# status that its file differs, and which settings; a provider the fleet
# lacks keeps its own.
# A reload of one daemon with a new rate: both follow within ~1 s.  A
# reload that changes nothing fleet-relevant publishes nothing; a daemon
# restarted with an older file wins (its load is newest).  Redis gone:
# each daemon keeps the newest configuration it knows of (the fleet's
# last read, or its own reloaded since) and shares it; Redis back empty:
# the newest load is the fleet's again.
. "${top_srcdir:-.}/tests/integration/lib.sh"
timing_test
ACQ="$top_builddir/tests/integration/acquirer"
command -v redis-server >/dev/null || { echo "not ok - redis-server is not installed (Debian: redis-server)"; exit 1; }

start_redis r
RPID=$REDIS_PID
RCLI="redis-cli -s $TMP/r.sock"
KEY='llmguard:{fleet}:config'
PY="${PYTHON:-/usr/bin/python3}"

# host_env N RATE [LINES...]: the env file of daemon N, openai at RATE/s.
host_env() {
    n=$1 rate=$2; shift 2
    {
        echo "PROVIDER_OPENAI_RATE_PER_SEC=$rate"
        echo "PROVIDER_OPENAI_BURST=2"
        echo "MODEL_GPT_PROVIDER=openai"
        echo "MODEL_GPT_NAME=gpt-4o"
        echo "REDIS_URL=unix://$TMP/r.sock"
        echo "LLMGUARD_HOST_ID=host$n"
        echo "LLMGUARD_LEASE_MS=200"
        # A loaded machine is not an outage here (Redis killed closes the
        # socket at once).
        echo "LLMGUARD_REDIS_TIMEOUT_MS=2000"
        for l in "$@"; do echo "$l"; done
    } > "$TMP/h$n.env"
}
# rate N PROVIDER: the rate daemon N's bucket goes by; mrate N ALIAS: a
# deployment's.
rate() { "$ACQ" status "$TMP/d$1.sock" "$2" | awk '{ print $4 }'; }
mrate() { "$LLMGUARDCTL" -s "$TMP/d$1.sock" --json status | jq ".models[] | select(.alias == \"$2\") | .rate_per_sec"; }
# cfg N FIELD: a field of daemon N's redis.config in status --json.
cfg() { "$LLMGUARDCTL" -s "$TMP/d$1.sock" --json status | jq -r ".redis.config.$2"; }
# wait_for WHAT CODE: up to 3 s (WAIT tenths) for the shell code CODE to
# succeed.
wait_for() {
    for _ in $(seq 1 "${WAIT:-30}"); do eval "$2" && break; sleep 0.1; done
    check "$1" eval "$2"
}
# grants_within RATE: both daemons race for 2 s, 2 processes each; checks
# the grants against burst 2 + RATE x (T + lease) and 70 % of RATE x T
# (T: from the first grant to the last, on either daemon).
grants_within() {
    for n in 1 2; do
        "$ACQ" span "$TMP/d$n.sock" openai 2 2 > "$TMP/span$n" &
        eval "SPAN$n=\$!"
    done
    wait $SPAN1 $SPAN2
    cat "$TMP"/span[12] | sed 's/^/# /'
    read -r total first last <<EOF2
$(cat "$TMP"/span[12] | awk '{ g += $2; if (NR == 1 || $4 < f) f = $4;
    if ($6 > l) l = $6 } END { printf "%d %.6f %.6f", g, f, l }')
EOF2
    bound=$(awk -v r="$1" -v f="$first" -v l="$last" 'BEGIN { printf "%d", 2 + r * (l - f + 0.2) }')
    # Of the interval measured: a loaded machine may start them late.
    low=$(awk -v r="$1" -v f="$first" -v l="$last" 'BEGIN { printf "%d", 0.7 * r * (l - f) }')
    check "rate $1 governs both: grants ($total) <= burst + rate x (T + lease) ($bound)" test "$total" -le "$bound"
    check "rate $1: grants ($total) >= 70% of rate x T ($low)" test "$total" -ge "$low"
    for n in 1 2; do
        check "daemon $n was granted some" test "$(awk '{ print $2 }' "$TMP/span$n")" -gt 0
    done
}

# host1 loads first (openai at 40/s, a provider of its own, GPT at 600
# RPM, soft quotas); host2 later (10/s, GPT 120 RPM, hard): host2's wins.
host_env 1 40 "PROVIDER_LOCAL_RATE_PER_SEC=7" "MODEL_GPT_RPM=600"
SOCK="$TMP/d1.sock" DB_OVERRIDE="$TMP/d1.db" ENVFILE="$TMP/h1.env" start_daemon
PID1=$DAEMON_PID
expect_eq "alone, host1's configuration is the fleet's" host1 "$($RCLI hget "$KEY" host)"
expect_eq "and it leases at its own rate" 40 "$(rate 1 openai)"
sleep 0.05      # a later load, by the wall clock's milliseconds
host_env 2 10 "MODEL_GPT_RPM=120" "QUOTA_ENFORCEMENT=hard"
SOCK="$TMP/d2.sock" DB_OVERRIDE="$TMP/d2.db" ENVFILE="$TMP/h2.env" start_daemon
PID2=$DAEMON_PID
expect_eq "the newer load wins: host2's is the fleet's" host2 "$($RCLI hget "$KEY" host)"
check "host2 says it sets the fleet's configuration" \
    grep -q "redis: the fleet follows this host's configuration (loaded " "$TMP/daemon.log"
wait_for "host1 follows host2's rate within a heartbeat" 'test "$(rate 1 openai)" = 10'
check "host1's log says its file differs, and in what" grep -q \
    "redis: following host host2's configuration (loaded .*): this host's file differs: provider local not in the fleet's (its own settings kept), provider openai rate_per_sec 10 (here 40), model gpt rpm 120 (here 600), QUOTA_ENFORCEMENT hard (here soft)" \
    "$TMP/daemon.log"
expect_eq "a provider the fleet lacks keeps host1's own settings" 7 "$(rate 1 local)"
expect_eq "host1's deployment follows host2's RPM (120 a minute)" 2 "$(mrate 1 gpt)"
expect_eq "host1's status: the fleet's configuration, host2's, differs" \
    "host2 true $($RCLI hget "$KEY" hash)" \
    "$(cfg 1 host) $(cfg 1 differs) $(cfg 1 hash)"
expect_eq "host2's status: the same as its file" "host2 false" "$(cfg 2 host) $(cfg 2 differs)"
expect_eq "host2's own hash is the fleet's" "$(cfg 2 hash)" "$(cfg 2 own_hash)"
expect_match "status: the fleet_config line" \
    "^fleet_config host host2's, loaded [0-9T:-]+Z, hash [0-9a-f]{12}; this host's file differs \(hash [0-9a-f]{12}\)$" \
    "$("$LLMGUARDCTL" -s "$TMP/d1.sock" status | grep '^fleet_config ')"
expect_eq "python -m llmguard status says the same" \
    "$("$LLMGUARDCTL" -s "$TMP/d1.sock" status | grep '^redis \|^fleet_config ')" \
    "$(PYTHONPATH="$top_srcdir/python" "$PY" -m llmguard --socket "$TMP/d1.sock" status | grep '^redis \|^fleet_config ')"
expect_eq "and the same JSON" \
    "$("$LLMGUARDCTL" -s "$TMP/d1.sock" --json status | jq -cS .redis)" \
    "$(PYTHONPATH="$top_srcdir/python" "$PY" -m llmguard --socket "$TMP/d1.sock" --json status | jq -cS .redis)"
grants_within 10

# A reload of host1 with a new rate: published at once, followed by host2
# within its next heartbeat.
host_env 1 5 "PROVIDER_LOCAL_RATE_PER_SEC=7" "MODEL_GPT_RPM=600"
"$LLMGUARDCTL" -s "$TMP/d1.sock" reload >/dev/null
wait_for "host1's reload is the fleet's at once" 'test "$($RCLI hget "$KEY" host)" = host1'
wait_for "host2 follows host1's new rate within ~1 s" 'test "$(rate 2 openai)" = 5'
wait_for "and so does host1" 'test "$(rate 1 openai)" = 5'
expect_eq "host2's deployment follows host1's RPM (600 a minute)" 10 "$(mrate 2 gpt)"
expect_eq "host2's status: host1's configuration, which differs" "host1 true" "$(cfg 2 host) $(cfg 2 differs)"
expect_eq "host1's status: its own" "host1 false" "$(cfg 1 host) $(cfg 1 differs)"
check "host2's log says it follows host1 now, and what differs" grep -q \
    "redis: following host host1's configuration (loaded .*): this host's file differs: provider openai rate_per_sec 5 (here 10), provider local only in the fleet's (not configured here), model gpt rpm 600 (here 120), QUOTA_ENFORCEMENT soft (here hard)" \
    "$TMP/daemon.log"
grants_within 5

# A reload of host2 that changes nothing the fleet shares (the routing
# policy is each host's): nothing new is published.
at=$($RCLI hget "$KEY" loaded_at)
host_env 2 10 "MODEL_GPT_RPM=120" "QUOTA_ENFORCEMENT=hard" "ROUTING_POLICY=cost_weighted"
"$LLMGUARDCTL" -s "$TMP/d2.sock" reload >/dev/null
sleep 1.2
expect_eq "a reload that changes nothing shared publishes nothing" \
    "host1 $at" "$($RCLI hget "$KEY" host) $($RCLI hget "$KEY" loaded_at)"
expect_eq "host2 still follows host1" 5 "$(rate 2 openai)"

# host2 restarted with its older file: its load is the newest, it wins.
kill -TERM "$PID2"; wait "$PID2" 2>/dev/null
DAEMON_PIDS=$(echo "$DAEMON_PIDS" | sed "s/ $PID2\b//")
SOCK="$TMP/d2.sock" DB_OVERRIDE="$TMP/d2.db" ENVFILE="$TMP/h2.env" start_daemon
PID2=$DAEMON_PID
expect_eq "a restart with an older file wins" host2 "$($RCLI hget "$KEY" host)"
wait_for "host1 follows it within a heartbeat" 'test "$(rate 1 openai)" = 10'
check "and says it follows host2 again" test \
    "$(grep -c "redis: following host host2's configuration" "$TMP/daemon.log")" -eq 2

# Redis gone: each daemon by the newest configuration it knows of,
# divided among the 2 hosts (the share fallback): the fleet's last read...
kill_redis "$RPID"
wait_for "unreachable: host1 shares the fleet's last rate (10 / 2)" \
    'test "$(rate 1 openai)" = 5'
expect_eq "and so does host2 (10 / 2)" 5 "$(rate 2 openai)"
# ...or its own, loaded since: host1 reloaded during the outage.
host_env 1 8 "PROVIDER_LOCAL_RATE_PER_SEC=7" "MODEL_GPT_RPM=600"
"$LLMGUARDCTL" -s "$TMP/d1.sock" reload >/dev/null
expect_eq "a reload during the outage: host1 shares its new rate (8 / 2)" 4 "$(rate 1 openai)"
expect_eq "host2 cannot know of it" 5 "$(rate 2 openai)"
# Redis back, empty: host1's load is the newest, both follow it.
start_redis r
WAIT=60 wait_for "Redis back: host1's reload is the fleet's" 'test "$($RCLI hget "$KEY" host)" = host1'
wait_for "and host2 follows it" 'test "$(rate 2 openai)" = 8'
expect_eq "and host1" 8 "$(rate 1 openai)"

finish
