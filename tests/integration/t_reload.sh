#!/bin/sh
# Reload: SIGHUP and `llmguardctl reload` re-read the env file; buckets keep
# their fill (clamped), quota usage is kept, an invalid file keeps the old
# configuration and says why.
. "${top_srcdir:-.}/tests/integration/lib.sh"
ACQ="$top_builddir/tests/integration/acquirer"

printf 'PROVIDER_GROQ_RATE_PER_SEC=0.01\nPROVIDER_GROQ_BURST=10\nDEFAULT_DAILY_QUOTA_TOKENS=500\n' > "$TMP/r.env"
ENVFILE="$TMP/r.env" start_daemon
for _ in 1 2 3 4 5 6; do "$ACQ" once "$SOCK" groq 1 0 >/dev/null; done
"$ACQ" reserve "$SOCK" kept - 120 >/dev/null
out=$("$ACQ" status "$SOCK" groq)
expect_match "6 of 10 tokens taken" "^available 4\.[0-9]+ rate 0.01 max 10 " "$out"

# A valid file: burst 10 -> 2 clamps the fill; a new provider appears.
printf 'PROVIDER_GROQ_RATE_PER_SEC=0.01\nPROVIDER_GROQ_BURST=2\nPROVIDER_OPENAI_RATE_PER_SEC=5\nDEFAULT_DAILY_QUOTA_TOKENS=800\n' > "$TMP/r.env"
kill -HUP "$DAEMON_PID"
for _ in $(seq 1 100); do
    grep -q "configuration reloaded" "$TMP/daemon.log" && break
    sleep 0.05
done
out=$("$ACQ" status "$SOCK" groq)
expect_match "SIGHUP: the fill is clamped to the new burst" "^available 2\.[0-9]+ rate 0.01 max 2 " "$out"
out=$("$ACQ" status "$SOCK" openai)
expect_match "SIGHUP: a new provider starts full" "^available 5\.000 rate 5 max 5 " "$out"
out=$("$LLMGUARDCTL" -s "$SOCK" quota kept)
expect_match "SIGHUP: quota usage is kept" "tokens_used +120$" "$out"
expect_match "SIGHUP: the new default limit applies" "tokens_limit +800$" "$out"

# A drained bucket stays drained: a reload is no way to refill.
"$ACQ" once "$SOCK" groq 2 0 >/dev/null
printf 'PROVIDER_GROQ_RATE_PER_SEC=0.01\nPROVIDER_GROQ_BURST=50\nPROVIDER_OPENAI_RATE_PER_SEC=5\n' > "$TMP/r.env"
out=$("$LLMGUARDCTL" -s "$SOCK" reload)
expect_eq "llmguardctl reload" "reloaded $TMP/r.env: 2 provider(s)" "$out"
out=$("$ACQ" status "$SOCK" groq)
expect_match "a bigger burst does not refill" "^available 0\.[0-9]+ rate 0.01 max 50 " "$out"

# An invalid file: the old configuration stays, the reason is given.
printf 'PROVIDER_GROQ_RATE_PER_SEC=fast\n' > "$TMP/r.env"
"$LLMGUARDCTL" -s "$SOCK" reload 2>"$TMP/err"
expect_eq "reload of an invalid file: exit 1" 1 $?
expect_match "it says why" "reload refused, the old configuration stays: PROVIDER_GROQ_RATE_PER_SEC=fast \($TMP/r.env:1\): expected a number" "$(cat "$TMP/err")"
kill -HUP "$DAEMON_PID"
sleep 0.3
expect_match "SIGHUP with an invalid file: logged" "reload refused, the old configuration stays" "$(cat "$TMP/daemon.log")"
out=$("$ACQ" status "$SOCK" groq)
expect_match "the old configuration is still in force" " rate 0.01 max 50 " "$out"
check "and the daemon serves" "$LLMGUARDCTL" -s "$SOCK" ping

# A reload that removes the provider of an open permit: its report is
# still taken (the quota reconciled), the provider reported "removed".
printf 'PROVIDER_GONE_RATE_PER_SEC=10\nPROVIDER_STAYS_RATE_PER_SEC=10\n' > "$TMP/r.env"
"$LLMGUARDCTL" -s "$SOCK" reload >/dev/null
"$RAWCLIENT" "$SOCK" req:permit:1:preferred=gone,workflow_id=w,tokens_estimate=50 wait:1000 \
    req:report:2:permit_id=1,outcome=ok,tokens_used=20,final=true > "$TMP/permit.out" &
RC=$!
sleep 0.4
printf 'PROVIDER_STAYS_RATE_PER_SEC=10\n' > "$TMP/r.env"
"$LLMGUARDCTL" -s "$SOCK" reload >/dev/null
wait $RC
expect_eq "permit before, report after the provider's removal" "ok 1|ok 2|open|" "$(tr '\n' '|' < "$TMP/permit.out")"
out=$("$RAWCLIENT" -n 1 "$SOCK" req:status:3)
check "the daemon lives on" "$LLMGUARDCTL" -s "$SOCK" ping
expect_match "the quota was reconciled to 20" "tokens_used +20$" "$("$LLMGUARDCTL" -s "$SOCK" quota w)"

# Settings that need a restart say so.
printf 'PROVIDER_GROQ_RATE_PER_SEC=1\nLLMGUARD_METRICS_LISTEN=127.0.0.1:1\n' > "$TMP/r.env"
"$LLMGUARDCTL" -s "$SOCK" reload >/dev/null
expect_match "LLMGUARD_METRICS_LISTEN needs a restart" "LLMGUARD_METRICS_LISTEN changed to '127.0.0.1:1': takes effect at the next start" "$(cat "$TMP/daemon.log")"

# reload is an admin op.
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
    stop_daemon
    chmod 0755 "$TMP"
    printf 'LLMGUARD_SOCKET_MODE=0666\n' > "$TMP/r.env"
    ENVFILE="$TMP/r.env" start_daemon
    setpriv --reuid=65534 --regid=65534 --clear-groups "$LLMGUARDCTL" -s "$SOCK" reload 2>"$TMP/err"
    expect_eq "reload from another uid: exit 77" 77 $?
    expect_match "permission_denied" "permission_denied: reload is an admin op" "$(cat "$TMP/err")"
    chmod 0700 "$TMP"
fi
finish
