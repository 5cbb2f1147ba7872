#!/bin/sh
# llmguardctl explain: a call that failed over (both providers and why the
# first was left), a provider in its cooldown, a rate-limit move, a wait
# for a token and a refusal for want of one, a call
# refused by a hard quota (its subject and limit), in text and --json; ids
# not in the ring (unknown, evicted, decisions off); the caller's own
# call_id; and the rate-limited log of refusals.
. "${top_srcdir:-.}/tests/integration/lib.sh"
timing_test
ACQ="$top_builddir/tests/integration/acquirer"
ctl() { "$LLMGUARDCTL" -s "$SOCK" "$@"; }
demo() { "$DEMO" -s "$SOCK" "$@" 2>>"$TMP/demo.err" | head -1; }
field() { echo "$2" | sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }

start_mock groq
start_mock openai
export PROVIDER_GROQ_API_KEY=gsk-test PROVIDER_OPENAI_API_KEY=sk-test
export LLMGUARD_DEMO_HTTP_TIMEOUT_MS=400
cat > "$TMP/f.env" <<'ENV'
PROVIDER_GROQ_RATE_PER_SEC=50
PROVIDER_GROQ_PRIORITY=1
PROVIDER_OPENAI_RATE_PER_SEC=20
PROVIDER_OPENAI_PRIORITY=2
PROVIDER_COOLDOWN_SEC=2
QUOTA_ENFORCEMENT=soft
DEFAULT_DAILY_QUOTA_TOKENS=100000
ENV
ENVFILE="$TMP/f.env" start_daemon

# A 429 from groq (Retry-After 5 s): the call fails over to openai.
mock_mode groq 429:5
line=$(demo -w wf1 -t acme hello)
mock_mode groq ok
expect_match "the demo's result line names the call and its permit" \
    "^provider=openai success=1 failover_attempts=1 .* call_id=[0-9]+-[0-9]+-[0-9a-f]+ permit_id=[0-9]+$" "$line"
cid=$(field call_id "$line")
pid=$(field permit_id "$line")
out=$(ctl explain "$cid")
expect_eq "explain CALL-ID: exit 0" 0 $?
expect_match "two decisions for the call" "^$cid: 2 decision\(s\)$" "$out"
attempt1=$(echo "$out" | sed -n '/^attempt 1:/,/^attempt 2:/p')
attempt2=$(echo "$out" | sed -n '/^attempt 2:/,$p')
expect_match "attempt 1: the quota per subject" \
    "^  quota     workflow:wf1: 100 of 100000 tokens used: ok$" "$attempt1"
expect_match "attempt 1: the tenant's too" \
    "^  quota     tenant:acme: 100 of 100000 tokens used: ok$" "$attempt1"
expect_match "attempt 1: groq chosen" "^  provider  groq: chosen$" "$attempt1"
expect_match "attempt 1: openai passed over by the policy" \
    "^  provider  openai: not chosen by the policy$" "$attempt1"
expect_match "attempt 1: the wait" "^  wait      [0-9.]+ ms$" "$attempt1"
expect_match "attempt 1: its 429, and the Retry-After it reported" \
    "^  outcome   rate_limited, Retry-After 5 s, 0 tokens used" "$attempt1"
expect_match "attempt 2: groq excluded, in its cooldown by the 429" \
    "^  provider  groq: excluded \(already tried by this call\); in its cooldown until [0-9T:.-]+Z, cause rate_limited, Retry-After 5 s$" \
    "$attempt2"
expect_match "attempt 2: openai chosen" "^  provider  openai: chosen$" "$attempt2"
expect_match "attempt 2: ok, 42 tokens used" "^  outcome   ok, 42 tokens used" \
    "$attempt2"
expect_match "attempt 2 is the permit the demo printed" \
    "^attempt 2: permit $pid at " "$attempt2"

# The same call as one JSON object.
json=$(ctl explain "$cid" --json)
expect_eq "--json: valid JSON, two decisions" 2 \
    "$(echo "$json" | jq '.decisions | length')"
expect_eq "--json: attempt 1 went to groq and met a 429" \
    "groq chosen openai not_chosen rate_limited 5" \
    "$(echo "$json" | jq -r '.decisions[0] | "\(.providers[0].name) \(.providers[0].why) \(.providers[1].name) \(.providers[1].why) \(.outcome) \(.retry_after_s)"')"
expect_eq "--json: attempt 2 left groq (excluded, cooldown by rate_limited)" \
    "groq excluded rate_limited openai chosen ok" \
    "$(echo "$json" | jq -r '.decisions[1] | "\(.providers[0].name) \(.providers[0].why) \(.providers[0].cooldown_cause) \(.providers[1].name) \(.providers[1].why) \(.outcome)"')"
expect_eq "--json: the quota of both subjects" \
    "workflow:wf1 100 100000 ok tenant:acme 100 100000 ok" \
    "$(echo "$json" | jq -r '[.decisions[0].quota[] | "\(.subject) \(.tokens_used) \(.tokens_limit) \(.verdict)"] | join(" ")')"
expect_eq "--json: ids, permit ids and the ring" \
    "$cid wf1 acme $pid true 10000" \
    "$(echo "$json" | jq -r '"\(.decisions[0].call_id) \(.decisions[0].workflow_id) \(.decisions[0].tenant_id) \(.decisions[1].permit_id) \(.decisions[1].seq == .decisions[0].seq + 1) \(.capacity)"')"
expect_eq "global --json works as well" "$json" "$(ctl --json explain "$cid")"

# By permit id (a number is a permit id first), and said explicitly.
out=$(ctl explain "$pid")
expect_match "explain PERMIT-ID: that attempt only" "^$pid: 1 decision\(s\)$" "$out"
expect_match "explain PERMIT-ID: names the provider left and why" \
    "provider  groq: excluded" "$out"
expect_eq "permit:N is the same" "$(echo "$out" | tail -n +2)" \
    "$(ctl explain "permit:$pid" | tail -n +2)"
expect_eq "call:ID is the same as ID" "$(ctl explain "$cid" | tail -n +2)" \
    "$(ctl explain "call:$cid" | tail -n +2)"

# While groq is in its cooldown, a new call skips it and says so.
out=$(ctl explain "$(field call_id "$(demo -w wf1 hello)")")
expect_match "in cooldown: groq skipped, until when and why" \
    "^  provider  groq: skipped: in its cooldown until [0-9T:.-]+Z, cause rate_limited, Retry-After 5 s$" "$out"
expect_match "in cooldown: openai chosen" "^  provider  openai: chosen$" "$out"

# Ids it does not hold: exit 1, said clearly; --json still valid JSON.
ctl explain permit:99999 > "$TMP/out" 2> "$TMP/err"
expect_eq "an unknown permit id: exit 1" 1 $?
expect_match "and says so" \
    "explain permit:99999: not among the [0-9]+ decisions llmguardd holds \(the last 10000 are kept\)" \
    "$(cat "$TMP/err")"
expect_eq "and prints nothing on stdout" "" "$(cat "$TMP/out")"
json=$(ctl --json explain call:no-such-call 2>/dev/null)
expect_eq "an unknown call id with --json: exit 1" 1 $?
expect_eq "an unknown call id with --json: valid JSON, no decision" 0 \
    "$(echo "$json" | jq '.decisions | length')"
ctl explain > /dev/null 2>&1
expect_eq "no id: a usage error" 2 $?
ctl explain permit:abc > /dev/null 2>&1
expect_eq "permit:abc: a usage error" 2 $?
ctl explain call: > /dev/null 2>&1
expect_eq "call: with no id: a usage error" 2 $?

# The caller's own call_id comes back in the result and names the call.
out=$("$ACQ" named "$SOCK" my-call-17)
expect_match "req.call_id is the result's call_id" \
    "^rc 0 call_id my-call-17 permit_id [0-9]+$" "$out"
expect_match "and explain knows it" "^  call      my-call-17, workflow named" \
    "$(ctl explain my-call-17)"
out=$("$ACQ" named "$SOCK" "")
expect_match "an empty req.call_id: LLMGUARD_EINVAL (-6)" "^rc -6 " "$out"
stop_daemon

# A rate-limit move: groq's bucket is empty, openai takes the attempt.
printf 'PROVIDER_GROQ_RATE_PER_SEC=0.01\nPROVIDER_GROQ_PRIORITY=1\nPROVIDER_OPENAI_RATE_PER_SEC=50\nPROVIDER_OPENAI_PRIORITY=2\n' > "$TMP/r.env"
ENVFILE="$TMP/r.env" start_daemon
demo -w rl hello > /dev/null
out=$(ctl explain "$(field call_id "$(demo -w rl hello)")")
expect_match "no token: groq named, moved to another" \
    "^  provider  groq: no token \(its bucket was empty: moved to another\)$" "$out"
expect_match "no token: openai chosen" "^  provider  openai: chosen$" "$out"
stop_daemon

# One provider, a token every 2 s: a second call waits for it; with no
# wait allowed (-T 0) a third is refused for want of a token.
printf 'PROVIDER_GROQ_RATE_PER_SEC=0.5\nPROVIDER_GROQ_BURST=1\n' > "$TMP/w.env"
ENVFILE="$TMP/w.env" start_daemon
demo -w w hello > /dev/null
out=$(ctl explain "$(field call_id "$(demo -w w -T 5 hello)")")
expect_match "waited: the wait for the token" "^  wait      [1-9][0-9]{2,3}\.[0-9] ms$" "$out"
expect_match "waited: groq chosen" "^  provider  groq: chosen$" "$out"
out=$(ctl explain "$(field call_id "$(demo -w w -T 0 hello)")")
expect_match "no wait allowed: groq had no token" \
    "^  provider  groq: no token \(its bucket was empty\)$" "$out"
expect_match "no wait allowed: refused with timeout" \
    "^  outcome   refused: timeout: no token from groq now$" "$out"
stop_daemon

# A hard quota refuses before any permit: the subject and its limit.
printf 'PROVIDER_GROQ_RATE_PER_SEC=50\nQUOTA_ENFORCEMENT=hard\nDEFAULT_DAILY_QUOTA_TOKENS=100\n' > "$TMP/h.env"
: > "$TMP/daemon.log"
ENVFILE="$TMP/h.env" start_daemon
line=$(demo -w capped -e 150 hello)
expect_match "refused: the result names the call, permit 0" \
    " call_id=[0-9]+-[0-9]+-[0-9a-f]+ permit_id=0$" "$line"
cid=$(field call_id "$line")
out=$(ctl explain "$cid")
expect_eq "refused: explain exit 0" 0 $?
expect_match "refused: no permit" "^attempt 1: refused, no permit at " "$out"
expect_match "refused: the subject, its use and limit, the verdict" \
    "^  quota     workflow:capped: 0 of 100 tokens used, 150 more asked: refused \(hard quota\)$" "$out"
expect_match "refused: no provider considered" \
    "^  provider  none considered: refused before routing$" "$out"
expect_match "refused: the error" \
    "^  outcome   refused: quota_exceeded: workflow:capped would exceed its quota" "$out"
json=$(ctl explain "$cid" --json)
expect_eq "refused --json: subject, limit, verdict, error code" \
    "workflow:capped 100 refused quota_exceeded 0 false" \
    "$(echo "$json" | jq -r '.decisions[0] | "\(.quota[0].subject) \(.quota[0].tokens_limit) \(.quota[0].verdict) \(.error.code) \(.permit_id) \(.routed)"')"

# Refusals are logged, at most one line a second per reason, with a count
# of the ones left out: 200 refusals in a burst, one more a second later.
"$ACQ" reserve "$SOCK" traced - 100 > /dev/null
sleep 1.1       # the refusal of capped above is a second old
"$ACQ" calls "$SOCK" 200 > /dev/null
sleep 1.1
"$ACQ" calls "$SOCK" 1 > /dev/null
refused=$(grep -c 'permit refused (quota_exceeded): workflow:traced would exceed' "$TMP/daemon.log")
expect_match "the burst took a few lines, not 201" "^[2-9]$" "$refused"
left_out=$(sed -n 's/.*workflow:traced.*(and \([0-9]*\) more since the last such line, not logged)$/\1/p' "$TMP/daemon.log" | awk '{ n += $1 } END { print n + 0 }')
expect_eq "logged + left out = the 201 refusals" 201 $((refused + left_out))
stop_daemon

# A small ring evicts the oldest; LLMGUARD_DECISIONS=0 keeps none.
printf 'PROVIDER_GROQ_RATE_PER_SEC=50\nLLMGUARD_DECISIONS=2\n' > "$TMP/s.env"
ENVFILE="$TMP/s.env" start_daemon
first=$(field call_id "$(demo -w e hello)")
demo -w e hello > /dev/null
last=$(field call_id "$(demo -w e hello)")
ctl explain "$first" > /dev/null 2> "$TMP/err"
expect_eq "evicted: exit 1" 1 $?
expect_match "evicted: says the ring holds the last 2" \
    "not among the 2 decisions llmguardd holds \(the last 2 are kept\)" \
    "$(cat "$TMP/err")"
ctl explain "$last" > /dev/null
expect_eq "the newest is still held" 0 $?
stop_daemon
printf 'PROVIDER_GROQ_RATE_PER_SEC=50\nLLMGUARD_DECISIONS=0\n' > "$TMP/z.env"
ENVFILE="$TMP/z.env" start_daemon
cid=$(field call_id "$(demo -w z hello)")
ctl explain "$cid" > /dev/null 2> "$TMP/err"
expect_eq "LLMGUARD_DECISIONS=0: exit 1" 1 $?
expect_match "and says decisions are off" \
    "llmguardd keeps no decisions \(LLMGUARD_DECISIONS=0\)" "$(cat "$TMP/err")"
stop_daemon

# Any peer may explain; an admin op refused to one is logged with its
# reason, like the refusals of permits.
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
    chmod 0755 "$TMP"
    printf 'PROVIDER_GROQ_RATE_PER_SEC=50\nLLMGUARD_SOCKET_MODE=0666\n' > "$TMP/p.env"
    ENVFILE="$TMP/p.env" start_daemon
    as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
    cid=$(field call_id "$(demo -w shared hello)")
    out=$(as_nobody "$LLMGUARDCTL" -s "$SOCK" explain "$cid")
    expect_match "another uid may explain" "^  provider  groq: chosen$" "$out"
    as_nobody "$LLMGUARDCTL" -s "$SOCK" quota set x 5 2>/dev/null
    as_nobody "$LLMGUARDCTL" -s "$SOCK" reload 2>/dev/null
    expect_match "a refused admin op is logged, with its reason" \
        "warn: refused \(permission_denied\): quota_set is an admin op: uid 65534 may not use it" \
        "$(cat "$TMP/daemon.log")"
    stop_daemon
    chmod 0700 "$TMP"
fi
finish
