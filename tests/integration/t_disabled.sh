#!/bin/sh
# RATE_LIMIT_ENABLED=false grants everything at once, consuming nothing.
. "${top_srcdir:-.}/tests/integration/lib.sh"
ACQ="$top_builddir/tests/integration/acquirer"

printf 'RATE_LIMIT_ENABLED=false\nPROVIDER_SLOW_RATE_PER_SEC=0.1\n' > "$TMP/off.env"
ENVFILE="$TMP/off.env" start_daemon
n=0
for _ in 1 2 3 4 5; do
    "$ACQ" once "$SOCK" slow 1 0 >/dev/null && n=$((n + 1))
done
expect_eq "disabled: 5 of 5 granted from a bucket of 1 at 0.1/s" 5 "$n"
out=$("$ACQ" status "$SOCK" slow)
expect_match "status says disabled, bucket untouched" "^available 1.000 rate 0.1 max 1 enabled 0 waiters 0$" "$out"
out=$("$ACQ" once "$SOCK" slow 2 0)
expect_match "disabled still refuses tokens above the burst" "^error -6 bad_request" "$out"
out=$("$LLMGUARDCTL" -s "$SOCK" status | head -1)
expect_eq "llmguardctl status: enabled false" "enabled      false" "$out"
finish
