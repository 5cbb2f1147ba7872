#!/bin/sh
# Streaming through the non-blocking API: examples/stream_chat runs 50
# streaming chat completions at once from one thread (libcurl multi, with
# llmguard's descriptor in the same poll) against the mock provider, which
# streams server-sent events.  Each stream reports the usage of its last
# chunk, so the LLM-token bucket, llm_tokens_total and the quota are
# charged the real usage, not the estimates.  Then the non-blocking API's failures with a real
# daemon: killed mid-flight, stopped (the client timeout), none at all.
. "${top_srcdir:-.}/tests/integration/lib.sh"
STREAM="$top_builddir/examples/stream_chat"

# streams NAME: a field of the mock's /streams.
streams() {
    curl -sf "http://127.0.0.1:$(cat "$TMP/$1.port")/streams" |
        sed "s/.*\"$2\": *\([0-9]*\).*/\1/"
}
# llm_available PROVIDER: the LLM tokens llmguardctl status says are left.
llm_available() {
    "$LLMGUARDCTL" -s "$SOCK" status |
        sed -n "s/^$1: \([0-9.]*\) of [0-9]* LLM tokens available/\1/p"
}
now() { date +%s.%N; }
# holds EXPRESSION: awk's verdict on a comparison of numbers.
holds() { awk "BEGIN { exit !($1) }"; }

start_mock mock
cat > "$TMP/s.env" <<'ENV'
PROVIDER_MOCK_RATE_PER_SEC=100
PROVIDER_MOCK_BURST=100
PROVIDER_MOCK_TOKENS_PER_MIN=6000
DEFAULT_DAILY_QUOTA_TOKENS=1000000
ENV
ENVFILE="$TMP/s.env" start_daemon
t0=$(now)
"$STREAM" -s "$SOCK" -w streams -e 100 "tell me a story" >"$TMP/out" 2>"$TMP/err"
expect_eq "50 streams: exit 0" 0 $?
t1=$(now)
avail=$(llm_available mock)
elapsed=$(awk "BEGIN { print $(now) - $t0 }")
expect_eq "nothing on stderr" "" "$(cat "$TMP/err")"
expect_match "the summary" "^streams=50 ok=50 failed=0 tokens=[0-9]+$" "$(tail -n 1 "$TMP/out")"
expect_eq "a line per stream, each once" 50 "$(sed -n 's/^stream=\([0-9]*\) .*outcome=ok .*/\1/p' "$TMP/out" | sort -un | wc -l)"
expect_eq "every stream read its chunks to [DONE]" 50 "$(streams mock completed)"
most=$(streams mock most_open)
check "the streams ran at once ($most open together)" [ "$most" -ge 10 ]
sum=$(tail -n 1 "$TMP/out" | sed 's/.*tokens=//')
expect_eq "the usage read is what the mock sent" "$(streams mock tokens)" "$sum"
check "the usage differs from the estimate (sum $sum)" [ "$sum" -ne 5000 ]
expect_eq "the quota is charged exactly the real usage" "$sum" "$(used streams)"
# The bucket refills at 100 LLM tokens a second; it holds what the streams
# really used less that refill, never what the estimates (50 x 100) took.
charged=$(awk "BEGIN { print 6000 - $avail }")
check "the LLM-token bucket is charged the real usage: $charged of $sum, $elapsed s" \
    holds "$charged <= $sum + 0.5 && $charged >= $sum - 100 * $elapsed - 1"
"$LLMGUARDCTL" -s "$SOCK" metrics > "$TMP/metrics"
gap=$(awk "BEGIN { print $(now) - $t1 }")
expect_eq "llm_tokens_total counts exactly the real usage" "$sum" \
    "$(awk '/^llm_tokens_total .*provider=mock/ { print $3 }' "$TMP/metrics")"
gauge=$(awk '/^provider_available_llm_tokens .*provider=mock/ { print $3 }' "$TMP/metrics")
check "the metrics show the same bucket ($gauge, $gap s after $avail)" \
    holds "$gauge >= $avail - 0.5 && $gauge <= $avail + 100 * $gap + 1"

# A provider that answers 429 is left for another: the report says to try
# again, and the 429 is not charged.
start_mock limited 429:0
cat > "$TMP/f.env" <<'ENV'
PROVIDER_LIMITED_RATE_PER_SEC=100
PROVIDER_LIMITED_BURST=100
PROVIDER_LIMITED_TOKENS_PER_MIN=6000
PROVIDER_LIMITED_PRIORITY=1
PROVIDER_MOCK_RATE_PER_SEC=100
PROVIDER_MOCK_BURST=100
PROVIDER_MOCK_PRIORITY=2
PROVIDER_COOLDOWN_SEC=30
ENV
stop_daemon
ENVFILE="$TMP/f.env" start_daemon
"$STREAM" -s "$SOCK" -n 20 -e 100 "again" >"$TMP/out" 2>"$TMP/err"
expect_eq "failover: exit 0" 0 $?
expect_match "failover: all 20 done" "^streams=20 ok=20 failed=0" "$(tail -n 1 "$TMP/out")"
check "failover: a stream met the 429 and moved" grep -q "provider=mock attempts=2 outcome=ok" "$TMP/out"
check "failover: none ended on the 429 provider" sh -c "! grep -q provider=limited '$TMP/out'"
lim=$(llm_available limited)
check "failover: the 429s were not charged ($lim of 6000)" holds "$lim > 5999"

# Killed mid-flight: one permit granted, four waiting for a token; every
# waiting callback hears EUNAVAIL once, and the run says the daemon is gone.
printf 'PROVIDER_MOCK_RATE_PER_SEC=0.2\nPROVIDER_MOCK_BURST=1\n' > "$TMP/slow.env"
stop_daemon
ENVFILE="$TMP/slow.env" start_daemon
"$STREAM" -s "$SOCK" -n 5 -T 30 "slow" >"$TMP/out" 2>"$TMP/err" &
client=$!
for _ in $(seq 1 100); do
    grep -q '^stream=' "$TMP/out" && break
    sleep 0.05
done
sleep 0.2
kill9
wait $client
expect_eq "killed: exit 69" 69 $?
expect_eq "killed: the granted stream finished" 1 "$(grep -c 'outcome=ok' "$TMP/out")"
expect_eq "killed: every waiting permit failed once" 4 "$(grep -c 'outcome=llmguardd is unreachable' "$TMP/out")"
expect_eq "killed: no stream told twice" 5 "$(sed -n 's/^stream=\([0-9]*\) .*/\1/p' "$TMP/out" | sort -u | wc -l)"
expect_match "killed: why" "closed the connection" "$(cat "$TMP/err")"

# Stopped: the client timeout bounds every request, nothing hangs.
ENVFILE="$TMP/s.env" start_daemon
kill -STOP "$DAEMON_PID"
LLMGUARD_CLIENT_TIMEOUT_MS=300 "$STREAM" -s "$SOCK" -n 3 -T 0 "stopped" >"$TMP/out" 2>"$TMP/err"
status=$?
kill -CONT "$DAEMON_PID"
expect_eq "stopped: exit 69" 69 "$status"
expect_eq "stopped: each permit timed out once" 3 "$(grep -c 'outcome=llmguardd is unreachable' "$TMP/out")"
expect_match "stopped: why" "did not answer permit within 300 ms" "$(head -n 1 "$TMP/err")"

# No daemon: the submit itself fails, at once.
"$STREAM" -s "$TMP/none.sock" -n 2 "none" >"$TMP/out" 2>"$TMP/err"
expect_eq "no daemon: exit 69" 69 $?
expect_match "no daemon: why" "no llmguardd on $TMP/none.sock" "$(head -n 1 "$TMP/err")"
finish
