#!/bin/sh
# Token buckets across processes: the bound holds and is reached; waiters
# are served in arrival order; a waiter that disconnects consumes nothing.
. "${top_srcdir:-.}/tests/integration/lib.sh"
timing_test
ACQ="$top_builddir/tests/integration/acquirer"

cat > "$TMP/limits.env" <<'ENV'
PROVIDER_FAST_RATE_PER_SEC=200
PROVIDER_FAST_BURST=10
PROVIDER_SLOW_RATE_PER_SEC=0.5
PROVIDER_SLOW_BURST=1
PROVIDER_FIFO_RATE_PER_SEC=4
PROVIDER_FIFO_BURST=3
PROVIDER_TPM_RATE_PER_SEC=100
PROVIDER_TPM_TOKENS_PER_MIN=600
ENV
ENVFILE="$TMP/limits.env" start_daemon

# 8 processes race for 200/s, burst 10, for 3 seconds.
out=$("$ACQ" race "$SOCK" fast 8 3)
grants=${out#grants }; grants=${grants%% *}
elapsed=${out##* }
bound=$(awk -v t="$elapsed" 'BEGIN { printf "%d", 10 + 200 * t }')
low=$(awk 'BEGIN { printf "%d", 0.95 * (10 + 200 * 3) }')
echo "# $out bound $bound low $low"
check "8 processes: grants ($grants) <= burst + rate x elapsed ($bound)" test "$grants" -le "$bound"
check "8 processes: grants ($grants) >= 95% of burst + rate x 3 s ($low)" test "$grants" -ge "$low"

# Bad requests and unknown providers.
out=$("$ACQ" once "$SOCK" fast 11 0)
expect_match "tokens above the burst: EINVAL" "^error -6 bad_request: tokens 11 exceed the burst of fast" "$out"
out=$("$ACQ" once "$SOCK" fast 0 0)
expect_match "zero tokens: EINVAL" "^error -6 bad_request: tokens must be at least 1" "$out"
out=$("$ACQ" once "$SOCK" nosuch 1 0)
expect_match "unknown provider: ENOPROVIDER" "^error -4 unknown_provider: unknown provider 'nosuch' \(configured: fast, fifo, slow, tpm\)" "$out"

# Timeout 0 tries once; a timeout consumes nothing.
"$ACQ" once "$SOCK" slow 1 0 >/dev/null
out=$("$ACQ" once "$SOCK" slow 1 0)
expect_match "empty bucket, timeout 0: ETIMEDOUT at once" "^error -2 timeout: no token from slow now" "$out"
out=$("$ACQ" once "$SOCK" slow 1 0.2)
expect_match "empty bucket, timeout 0.2 s: ETIMEDOUT" "^error -2 timeout: no token from slow within the timeout" "$out"

# wait_waiters PROVIDER N: until N requests are queued (at most 10 s).
wait_waiters() {
    for _ in $(seq 1 200); do
        "$ACQ" status "$SOCK" "$1" | grep -q "waiters $2\$" && return 0
        sleep 0.05
    done
    return 1
}

# FIFO: drain fifo (burst 3, 4/s), then 5 waiters arrive one after the
# other: each starts once the one before is queued (or already served), so
# arrival order is launch order.  The refill serves them in that order.
arrived() {     # queued + served
    q=$("$ACQ" status "$SOCK" fifo | sed 's/.*waiters //')
    echo $((q + $(wc -l < "$TMP/order")))
}
for _ in 1 2 3; do "$ACQ" once "$SOCK" fifo 1 0 >/dev/null; done
: > "$TMP/order"
pids=""
for i in 1 2 3 4 5; do
    ( "$ACQ" once "$SOCK" fifo 1 10 >/dev/null && echo "$i" >> "$TMP/order" ) &
    pids="$pids $!"
    until [ "$(arrived)" -ge "$i" ]; do sleep 0.01; done
done
for p in $pids; do wait "$p"; done
expect_eq "waiters served in arrival order" "1 2 3 4 5" "$(echo $(cat "$TMP/order"))"

# A big waiter at the head is not overtaken by small ones behind it.
for _ in 1 2 3; do "$ACQ" once "$SOCK" fifo 1 0 >/dev/null; done
: > "$TMP/order"
( "$ACQ" once "$SOCK" fifo 3 10 >/dev/null && echo big >> "$TMP/order" ) &
p1=$!
wait_waiters fifo 1
( "$ACQ" once "$SOCK" fifo 1 10 >/dev/null && echo small >> "$TMP/order" ) &
p2=$!
wait $p1 $p2
expect_eq "no overtaking: big (3) before small (1)" "big small" "$(echo $(cat "$TMP/order"))"

# A waiter that disconnects leaves the queue and consumes nothing: slow
# refills one token every 2 s.  A waits and is killed; B, queued behind it,
# gets the very next token (about 2 s after the drain, not 4 s).
"$ACQ" once "$SOCK" slow 1 10 >/dev/null    # drain: the next token in 2 s
t0=$(date +%s.%N)
"$ACQ" once "$SOCK" slow 1 30 >/dev/null &
A=$!
check "A is queued" wait_waiters slow 1
kill -KILL $A; wait $A 2>/dev/null
check "A's death emptied the queue" wait_waiters slow 0
out=$("$ACQ" once "$SOCK" slow 1 30)
t1=$(date +%s.%N)
elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
echo "# B: $out, ${elapsed} s after the drain"
check "B got the token A would have had (${elapsed} s after the drain: 2 s, not 4 s)" \
    awk -v e="$elapsed" 'BEGIN { exit !(e < 3.0) }'

# The TOKENS_PER_MIN bucket: 600 LLM tokens a minute, refilled 10 a second.
out=$("$RAWCLIENT" "$SOCK" req:acquire:1:provider=tpm,llm_tokens=500 \
    req:acquire:2:provider=tpm,llm_tokens=500 \
    req:acquire:3:provider=tpm,llm_tokens=601 | tr '\n' ' ')
expect_match "TPM: 500 granted, 500 more refused, 601 never fits" \
    "^ok 1 err 2 timeout .* err 3 bad_request llm_tokens 601 exceed the tokens_per_min of tpm" "$out"

# Wrong types get a clear error and the connection lives.
out=$("$RAWCLIENT" "$SOCK" req:acquire:4:provider=fast,tokens=-1 \
    req:acquire:5:provider=fast,timeout_ms=soon req:acquire:6:tokens=1 \
    req:acquire:7:provider=fast,timeout_ms=-5 ping:8 | tr '\n' ' ')
expect_eq "wrong types: errors, connection open" \
    "err 4 bad_request field 'tokens': expected a non-negative integer err 5 bad_request field 'timeout_ms': expected a number err 6 bad_request missing field 'provider' err 7 bad_request timeout_ms must not be negative ok 8 open " "$out"

# llmguardctl status shows the buckets, in priority then name order.
out=$("$LLMGUARDCTL" -s "$SOCK" status)
expect_match "status: table header" "PROVIDER +AVAILABLE +RATE/S +MAX +STATE +COOLDOWN +LATENCY_MS +WAITERS +TOKENS/MIN" "$out"
expect_match "status: fast row" "^fast +[0-9.]+ +200 +10 +healthy +- +- +0 +-$" "$out"
expect_match "status: tpm row" "^tpm +[0-9.]+ +100 +100 +healthy +- +- +0 +600$" "$out"
out=$("$LLMGUARDCTL" -s "$SOCK" --json status)
expect_match "status --json" '^\{"enabled": ?true, ?"policy": ?"primary", ?"enforcement": ?"soft", ?"window_days": ?30(\.0)?, ?"providers": ?\[\{"name": ?"fast", ?"available_tokens": ?[0-9.]+, ?"rate_per_sec": ?200(\.0)?, ?"max_tokens": ?10(\.0)?, ?"state": ?"healthy", ?"cooldown_remaining_s": ?0(\.0)?, ?"latency_ewma_ms": ?null, ?"waiters": ?0' "$out"
finish
