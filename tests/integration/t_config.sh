#!/bin/sh
# --check-config: golden pairs (conf/NAME.in -> conf/NAME.ok), exit 78 on a
# bad value naming it, warnings for likely typos, precedence of the sources.
. "${top_srcdir:-.}/tests/integration/lib.sh"
CONF="$top_srcdir/tests/integration/conf"

# NAME.warn, when there is one, holds the warnings expected on stderr
# (without their time stamps).
for name in seed full warnings; do
    env -i PATH="$PATH" HOME=/nonexistent LLMGUARD_HOST_ID=test-host \
        "$LLMGUARDD" --check-config \
        --env-file "$CONF/$name.in" 2>"$TMP/$name.err" |
        sed "s|$CONF/||" > "$TMP/$name.out"
    if diff -u "$CONF/$name.ok" "$TMP/$name.out"; then
        ok "golden config $name"
    else
        not_ok "golden config $name"
    fi
    [ -f "$CONF/$name.warn" ] || continue
    sed "s|^[0-9T:.-]*Z ||; s|$CONF/||g" "$TMP/$name.err" > "$TMP/$name.warn"
    if diff -u "$CONF/$name.warn" "$TMP/$name.warn"; then
        ok "golden warnings $name"
    else
        not_ok "golden warnings $name"
    fi
done

# A bad value: exit 78, one line naming the variable, value and expectation.
printf 'PROVIDER_GROQ_RATE_PER_SEC=50\nQUOTA_ENFORCEMENT=medium\n' > "$TMP/bad.env"
"$LLMGUARDD" --check-config --env-file "$TMP/bad.env" >/dev/null 2>"$TMP/err"
expect_eq "bad value exits 78" 78 $?
expect_eq "one line naming it" \
    "llmguardd: QUOTA_ENFORCEMENT=medium ($TMP/bad.env:2): expected soft or hard" \
    "$(cat "$TMP/err")"

QUOTA_WINDOW_DAYS=-3 "$LLMGUARDD" --check-config --env-file "$TMP/empty.env" >/dev/null 2>"$TMP/err"
expect_eq "bad value from the environment exits 78" 78 $?
expect_match "and names the environment" "QUOTA_WINDOW_DAYS=-3 \(environment\): expected a number greater than 0" "$(cat "$TMP/err")"

REDIS_URL=memcached://u:s3cret@localhost:6379 "$LLMGUARDD" --check-config --env-file "$TMP/empty.env" >/dev/null 2>"$TMP/err"
expect_eq "REDIS_URL of another scheme exits 78" 78 $?
expect_match "saying which schemes" "REDIS_URL=memcached://u:\*\*\*@localhost:6379 \(environment\): expected redis://, rediss:// or unix://" "$(cat "$TMP/err")"
expect_eq "without the password" "" "$(grep s3cret "$TMP/err")"
# --check-config does not connect (nothing listens there) and masks it.
REDIS_URL='rediss://app:p%40ss@127.0.0.1:1/2' "$LLMGUARDD" --check-config --env-file "$TMP/empty.env" >"$TMP/out" 2>"$TMP/err"
expect_eq "a good REDIS_URL checks out without connecting" 0 $?
expect_eq "printed with the password masked" "REDIS_URL=rediss://app:***@127.0.0.1:1/2" "$(grep '^REDIS_URL=' "$TMP/out")"

# The daemon itself refuses to start half-configured.
LLMGUARD_QUOTA_FLUSH_MS=fast "$LLMGUARDD" --socket "$SOCK" --env-file "$TMP/empty.env" 2>"$TMP/err"
expect_eq "daemon with a bad value exits 78" 78 $?
check "and leaves no socket" test ! -e "$SOCK"

"$LLMGUARDD" --check-config --env-file "$TMP/missing.env" >/dev/null 2>"$TMP/err"
expect_eq "missing --env-file exits 78" 78 $?
expect_match "naming it" "env file $TMP/missing.env: No such file" "$(cat "$TMP/err")"

# Likely typos warn but do not stop.
printf 'LLMGUARD_SOKET=/x\nPROVIDER_GROQ_RATE_PER_SEC=1\nPROVIDER_GROQ_BRUST=5\n' > "$TMP/typo.env"
"$LLMGUARDD" --check-config --env-file "$TMP/typo.env" >/dev/null 2>"$TMP/err"
expect_eq "unknown keys: still exit 0" 0 $?
expect_match "warns about LLMGUARD_SOKET" "warn: unknown variable LLMGUARD_SOKET \($TMP/typo.env:1\) ignored: did you mean LLMGUARD_SOCKET\?$" "$(cat "$TMP/err")"
expect_match "warns about PROVIDER_GROQ_BRUST" "warn: unknown variable PROVIDER_GROQ_BRUST \($TMP/typo.env:3\) ignored: did you mean PROVIDER_GROQ_BURST\?$" "$(cat "$TMP/err")"

# A near miss in the environment warns too; other programs' names do not.
QUOTA_ENFORCMENT=hard EDITOR=vi "$LLMGUARDD" --check-config --env-file "$TMP/typo.env" >/dev/null 2>"$TMP/err"
expect_match "a typo in the environment: did you mean" "warn: unknown variable QUOTA_ENFORCMENT \(environment\) ignored: did you mean QUOTA_ENFORCEMENT\?$" "$(cat "$TMP/err")"
expect_eq "and EDITOR is nobody's business" "" "$(grep EDITOR "$TMP/err")"

# No provider: a warning, and the daemon still starts and answers.
start_daemon
expect_match "a daemon without providers warns" "warn: no provider is configured \(set PROVIDER_<NAME>_RATE_PER_SEC\)" "$(cat "$TMP/daemon.log")"
check "and answers" "$LLMGUARDCTL" -s "$SOCK" ping
expect_eq "with providers, no such warning" "" \
    "$("$LLMGUARDD" --check-config --env-file "$TMP/bad.env" 2>&1 >/dev/null | grep 'no provider'; printf 'PROVIDER_A_RATE_PER_SEC=1\n' > "$TMP/one.env"; "$LLMGUARDD" --check-config --env-file "$TMP/one.env" 2>&1 >/dev/null)"

# ./.env is read when no --env-file is given; flags beat everything.
mkdir "$TMP/cwd"
printf 'ROUTING_POLICY=latency_weighted\nLLMGUARD_DB=/from/file.db\n' > "$TMP/cwd/.env"
out=$(cd "$TMP/cwd" && LLMGUARD_DB=/from/env.db "$LLMGUARDD" --check-config --db /from/flag.db)
expect_match "./.env is read" "^ROUTING_POLICY=latency_weighted$" "$out"
expect_match "--db beats the environment and the file" "^LLMGUARD_DB=/from/flag.db$" "$out"

"$LLMGUARDD" --bogus 2>/dev/null
expect_eq "unknown flag exits 2" 2 $?
out=$("$LLMGUARDD" --version)
expect_match "--version" "^llmguardd [0-9]+\.[0-9]+\.[0-9]+ \(protocol 1\)$" "$out"
finish
