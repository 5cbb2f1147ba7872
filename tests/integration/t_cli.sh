#!/bin/sh
# llmguardctl's command line: --json errors are one JSON object on stdout,
# admin commands only by their full name, missing words are usage errors,
# "--" before an id that begins with -, global options after the command.
. "${top_srcdir:-.}/tests/integration/lib.sh"

printf 'PROVIDER_GROQ_RATE_PER_SEC=5\n' > "$TMP/c.env"
ENVFILE="$TMP/c.env" start_daemon
CTL="$LLMGUARDCTL -s $SOCK"

# json_error DESC STATUS CODE ARGS...: exactly one line on stdout, a JSON
# object {"error": {"code": CODE, "message": "..."}}, and exit STATUS.
json_error() {
    desc=$1 want_status=$2 want_code=$3; shift 3
    "$@" > "$TMP/out" 2>"$TMP/err"
    status=$?
    lines=$(wc -l < "$TMP/out")
    code=$(jq -r '.error.code' < "$TMP/out" 2>/dev/null)
    msg=$(jq -r '.error.message | select(type == "string" and length > 0)' < "$TMP/out" 2>/dev/null)
    if [ "$status" = "$want_status" ] && [ "$lines" = 1 ] &&
        [ "$code" = "$want_code" ] && [ -n "$msg" ] &&
        jq -e 'keys == ["error"] and (.error | keys) == ["code", "message"]' \
            < "$TMP/out" >/dev/null 2>&1; then
        ok "$desc: exit $status, $code: $msg"
    else
        not_ok "$desc: exit $status (want $want_status), code '$code' (want $want_code), stdout: $(cat "$TMP/out")"
    fi
}

json_error "--json, no command" 2 usage $LLMGUARDCTL --json
json_error "--json, unknown command" 2 usage $CTL --json frobnicate
json_error "--json, unknown option" 2 usage $CTL --json --frob ping
json_error "--json, unknown option after the command" 2 usage $CTL ping --frob --json
json_error "--json, an option without its value" 2 usage $CTL --json ping -s
json_error "--json, a bad --timeout" 2 usage $CTL --json --timeout soon ping
json_error "--json, too many words" 2 usage $CTL --json ping extra
json_error "--json, quota without an id" 2 usage $CTL --json quota
json_error "--json, quota set without TOKENS" 2 usage $CTL --json quota set wf
json_error "--json, quota set with bad TOKENS" 2 usage $CTL --json quota set wf lots
json_error "--json, an admin command by a prefix" 2 usage $CTL --json rel
json_error "--json, no daemon" 69 unavailable $LLMGUARDCTL -s "$TMP/none.sock" --json ping
json_error "--json, the daemon's bad_request" 1 bad_request $CTL --json quota "$(printf 'a\tb')"
json_error "--json, the daemon's bad_request for bytes that are not UTF-8" 1 bad_request $CTL --json quota "$(printf 'a\377b')"
json_error "--json, status with no daemon" 69 unavailable $LLMGUARDCTL --json -s "$TMP/none.sock" status
# Without --json the same errors stay off stdout.
$CTL frobnicate > "$TMP/out" 2>"$TMP/err"
expect_eq "text mode: usage error exits 2" 2 $?
expect_eq "text mode: nothing on stdout" "" "$(cat "$TMP/out")"
expect_match "text mode: the reason on stderr" "^llmguardctl: unknown command: frobnicate; valid commands: " "$(cat "$TMP/err")"

# Admin commands run only by their full name; a prefix changes nothing.
for abbrev in r re rel relo reloa; do
    out=$($CTL "$abbrev" 2>&1)
    expect_eq "'$abbrev' is refused with exit 2" 2 $?
    expect_eq "'$abbrev': saying so" "llmguardctl: $abbrev: an admin command runs only by its full name: reload" "$out"
done
expect_eq "no reload happened" "" "$(grep 'asked for a reload' "$TMP/daemon.log")"
out=$($CTL reload)
expect_match "'reload' in full reloads" "^reloaded $TMP/c.env: 1 provider" "$out"
$CTL quota set wf 777 >/dev/null
out=$($CTL quota se wf 5 2>&1)
expect_eq "'quota se' is refused with exit 2" 2 $?
expect_eq "'quota se': saying so" "llmguardctl: quota se: an admin command runs only by its full name: quota set" "$out"
out=$($CTL quota res wf 2>&1)
expect_eq "'quota res' is refused with exit 2" 2 $?
expect_match "'quota res': saying so" "quota res: an admin command runs only by its full name: quota reset" "$out"
expect_match "the limit is untouched" "^tokens_limit +777$" "$($CTL quota wf)"
out=$($CTL pi)
expect_match "a read-only command by a prefix still works" "is alive" "$out"

# Missing words are usage errors, not an id.
for words in "quota" "quota show" "quota set" "quota set wf" "quota reset"; do
    $CTL $words >/dev/null 2>"$TMP/err"
    expect_eq "'$words': exit 2" 2 $?
    expect_match "'$words': the usage" "^usage: llmguardctl quota" "$(cat "$TMP/err")"
done
expect_match "a workflow named like a subcommand: quota show NAME" "^subject +workflow:reset$" "$($CTL quota show reset)"

# "--" before an id that begins with -.
$CTL quota -dash >/dev/null 2>"$TMP/err"
expect_eq "an id that begins with - without --: exit 2" 2 $?
expect_match "saying to write --" "unknown option -dash \(write -- before a word that begins with -\)" "$(cat "$TMP/err")"
out=$($CTL quota set -- -dash 500)
expect_eq "quota set -- -dash 500" "workflow:-dash: limit set to 500 tokens" "$out"
expect_match "quota -- -dash" "^tokens_limit +500$" "$($CTL quota -- -dash)"
expect_match "quota --tenant -- -t (a tenant named -t)" "^subject +tenant:-t$" "$($CTL quota --tenant -- -t)"
expect_match "after --, --json is a word too" "^usage: " "$($CTL quota -- x --json 2>&1)"

# Global options after the command, and between its words.
out=$("$LLMGUARDCTL" status -s "$SOCK" --json)
expect_eq "status -s SOCK --json" groq "$(echo "$out" | jq -r '.providers[0].name')"
out=$("$LLMGUARDCTL" quota --socket="$SOCK" wf --timeout 5 --json)
expect_eq "quota --socket=SOCK wf --timeout 5 --json" 777 "$(echo "$out" | jq '.tokens_limit')"
out=$("$LLMGUARDCTL" quota wf -t -s "$SOCK")
expect_match "after quota, -t is --tenant" "^subject +tenant:wf$" "$out"
out=$("$LLMGUARDCTL" metrics -s "$SOCK" -p)
expect_match "metrics -s SOCK -p" "^# TYPE llm_requests_total counter" "$out"
out=$("$LLMGUARDCTL" ping -j -s"$SOCK" -T0.5)
expect_eq "ping -j -sSOCK -T0.5" true "$(echo "$out" | jq '.ok')"
"$LLMGUARDCTL" ping --timeout 0.5 -s "$SOCK" >/dev/null
expect_eq "ping --timeout after the command" 0 $?
out=$("$LLMGUARDCTL" ping --help)
expect_match "--help after the command" "^usage: llmguardctl " "$out"
finish
