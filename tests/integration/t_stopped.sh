#!/bin/sh
# A stopped daemon (SIGSTOP) never hangs a client: every exchange is
# bounded by the client timeout (LLMGUARD_CLIENT_TIMEOUT_MS, --timeout)
# beyond the request's own wait.  The bounds checked are generous: the
# property is "returns", the exact figures are not timed here.
. "${top_srcdir:-.}/tests/integration/lib.sh"

printf 'PROVIDER_GROQ_RATE_PER_SEC=100\n' > "$TMP/groq.env"
ENVFILE="$TMP/groq.env" start_daemon
STOPPED="$top_builddir/tests/integration/stopped"
trap 'kill -CONT "$DAEMON_PID" 2>/dev/null; cleanup' EXIT

# The library: ping, acquire and execute_with_failover on one handle,
# 0.3 s timeout, each back within 3 s; continued, the handle works.
# (timeout(1) turns a hang, the bug this tests for, into a failure.)
LLMGUARD_CLIENT_TIMEOUT_MS=300 timeout 20 "$STOPPED" "$SOCK" "$DAEMON_PID" groq 3 \
    > "$TMP/stopped.out" 2>&1
status=$?
cat "$TMP/stopped.out"
expect_eq "the library never hangs on a stopped daemon" 0 "$status"

# llmguardctl: exit 69 (unavailable), by the default 2 s and by --timeout.
kill -STOP "$DAEMON_PID"
start=$(date +%s%N)
timeout 20 "$LLMGUARDCTL" -s "$SOCK" ping > /dev/null 2> "$TMP/err"
status=$?
ms=$(( ($(date +%s%N) - start) / 1000000 ))
expect_eq "stopped: llmguardctl ping exits 69" 69 "$status"
check "stopped: after the default 2 s timeout, not hung ($ms ms)" \
    test "$ms" -ge 1900 -a "$ms" -lt 6000
expect_match "and says why" "did not answer ping within 2000 ms" \
    "$(cat "$TMP/err")"
start=$(date +%s%N)
timeout 20 "$LLMGUARDCTL" -s "$SOCK" --timeout 0.5 ping > /dev/null 2>&1
status=$?
ms=$(( ($(date +%s%N) - start) / 1000000 ))
expect_eq "stopped: --timeout 0.5 ping exits 69" 69 "$status"
check "stopped: --timeout 0.5 gives up after about 0.5 s ($ms ms)" \
    test "$ms" -ge 450 -a "$ms" -lt 3000
LLMGUARD_CLIENT_TIMEOUT_MS=400 timeout 20 "$LLMGUARDCTL" -s "$SOCK" ping > /dev/null 2>&1
expect_eq "stopped: LLMGUARD_CLIENT_TIMEOUT_MS=400 ping exits 69" 69 $?
kill -CONT "$DAEMON_PID"
out=$("$LLMGUARDCTL" -s "$SOCK" ping 2>&1)
expect_match "continued: llmguardctl ping works again" "is alive" "$out"

# Bad values are usage errors, not a wait.
"$LLMGUARDCTL" -s "$SOCK" --timeout soon ping > /dev/null 2> "$TMP/err"
expect_eq "--timeout soon: exit 2" 2 $?
expect_match "and says what it expected" "expected seconds" "$(cat "$TMP/err")"
out=$(LLMGUARD_CLIENT_TIMEOUT_MS=-5 "$LIBPING" "$SOCK")
expect_match "LLMGUARD_CLIENT_TIMEOUT_MS=-5: the call says what is wrong" \
    "^error -6 .*LLMGUARD_CLIENT_TIMEOUT_MS=-5: expected milliseconds" "$out"
finish
