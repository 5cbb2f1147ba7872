#!/bin/sh
# The attempt's pieces in C, llmguard_permit() and llmguard_report(), with
# a real daemon (tests/integration/attempts.c): a 429 that says to try
# again elsewhere, the next attempt of the same call, refused arguments,
# the LLM-token bucket charged what the report says was used, a model's
# id in the permit and a report's own headers.
. "${top_srcdir:-.}/tests/integration/lib.sh"
ATTEMPTS="$top_builddir/tests/integration/attempts"

cat > "$TMP/a.env" <<'ENV'
PROVIDER_A_RATE_PER_SEC=50
PROVIDER_A_PRIORITY=1
PROVIDER_A_TOKENS_PER_MIN=6000
PROVIDER_B_RATE_PER_SEC=50
PROVIDER_B_PRIORITY=2
PROVIDER_COOLDOWN_SEC=30
DEFAULT_DAILY_QUOTA_TOKENS=100000
MODEL_MB_PROVIDER=b
ENV
ENVFILE="$TMP/a.env" start_daemon
t0=$(date +%s.%N)
"$ATTEMPTS" "$SOCK" > "$TMP/out"
expect_eq "attempts: every check passed" 0 $?
cat "$TMP/out"
avail=$("$LLMGUARDCTL" -s "$SOCK" status |
    sed -n 's/^a: \([0-9.]*\) of 6000 LLM tokens available/\1/p')
elapsed=$(awk "BEGIN { print $(date +%s.%N) - $t0 }")
# The 429 was charged nothing (its estimate given back), the success its
# 3000, not its estimate of 1000; the bucket refills 100 a second.
check "a's bucket is charged the 3000 used ($avail left after $elapsed s)" \
    awk "BEGIN { exit !($avail >= 2999.5 && $avail <= 3000.5 + 100 * $elapsed) }"
expect_eq "the quota: 500 reserved, given back on the 429; 42 for b" 42 "$(used wf)"
finish
