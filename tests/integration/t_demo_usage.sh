#!/bin/sh
# ratelimit_demo's command line: --help prints the usage and exits 0; a
# usage error says what was wrong and exits 2 (README, "Quick start"); none
# of them reaches the daemon or a provider.
. "${top_srcdir:-.}/tests/integration/lib.sh"

for h in --help -h; do
    "$DEMO" $h > "$TMP/out" 2>"$TMP/err"
    expect_eq "$h exits 0" 0 $?
    expect_match "$h: the usage on stdout" "^usage: ratelimit_demo \[-s SOCKET\]" "$(head -n 1 "$TMP/out")"
    expect_match "$h: every option listed" "--traceparent TP" "$(cat "$TMP/out")"
    expect_match "$h: the exit statuses" "^Exit: 0 done, 1 the call failed, 2 usage, 3 over a hard quota, 69 no daemon" "$(cat "$TMP/out")"
    expect_eq "$h: nothing on stderr" "" "$(cat "$TMP/err")"
done

# usage ERROR-LINE ARGS...: exit 2, ERROR-LINE first on stderr, then the
# usage; nothing on stdout.
usage() {
    want=$1; shift
    LLMGUARD_SOCKET="$TMP/none.sock" "$DEMO" "$@" > "$TMP/out" 2>"$TMP/err"
    status=$?
    if [ $status = 2 ] && [ "$(head -n 1 "$TMP/err")" = "$want" ] &&
        sed -n 2p "$TMP/err" | grep -q '^usage: ratelimit_demo' &&
        [ ! -s "$TMP/out" ]; then
        ok "ratelimit_demo $*: exit 2, '$want'"
    else
        not_ok "ratelimit_demo $*: exit $status, stderr '$(head -n 2 "$TMP/err")', stdout '$(cat "$TMP/out")'"
    fi
}
usage "ratelimit_demo: no PROMPT"
usage "ratelimit_demo: one PROMPT only" one two
usage "ratelimit_demo: unknown option: -x" -x hello
usage "ratelimit_demo: unknown option: --bogus" --bogus hello
usage "ratelimit_demo: an option needs a value: -w" hello -w
usage "ratelimit_demo: -e: expected a whole number: lots" -e lots hello
usage "ratelimit_demo: -e: expected a whole number: -5" -e -5 hello
usage "ratelimit_demo: -a: expected 0 (3) to 1000: 1001" -a 1001 hello
usage "ratelimit_demo: -T: expected seconds, 0 or more: soon" -T soon hello
usage "ratelimit_demo: -T: expected seconds, 0 or more: -1" --timeout=-1 hello

# The control: good options get past the parser to the daemon, which is
# not there (fail-closed: 69).
LLMGUARD_FAIL_MODE=closed LLMGUARD_SOCKET="$TMP/none.sock" "$DEMO" -e 10 -a 2 -T 0.5 hello >/dev/null 2>&1
expect_eq "good options reach the call: exit 69 without a daemon" 69 $?
finish
