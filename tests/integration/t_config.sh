#!/bin/sh
# --check-config: golden pairs (conf/NAME.in -> conf/NAME.ok), exit 78 on a
# bad value naming it, warnings for likely typos, precedence of the sources.
. "${top_srcdir:-.}/tests/integration/lib.sh"
CONF="$top_srcdir/tests/integration/conf"

for name in seed full; do
    env -i PATH="$PATH" HOME=/nonexistent "$LLMGUARDD" --check-config \
        --env-file "$CONF/$name.in" 2>"$TMP/$name.err" |
        sed "s|$CONF/||" > "$TMP/$name.out"
    if diff -u "$CONF/$name.ok" "$TMP/$name.out"; then
        ok "golden config $name"
    else
        not_ok "golden config $name"
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

REDIS_URL=redis://localhost:6379 "$LLMGUARDD" --check-config --env-file "$TMP/empty.env" >/dev/null 2>"$TMP/err"
expect_eq "REDIS_URL exits 78" 78 $?
expect_match "saying multi-host mode is not here yet" "REDIS_URL=redis://localhost:6379 \(environment\): expected unset: multi-host mode" "$(cat "$TMP/err")"

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
expect_match "warns about LLMGUARD_SOKET" "warn: unknown variable LLMGUARD_SOKET" "$(cat "$TMP/err")"
expect_match "warns about PROVIDER_GROQ_BRUST" "warn: unknown variable PROVIDER_GROQ_BRUST" "$(cat "$TMP/err")"

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
