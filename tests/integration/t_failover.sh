#!/bin/sh
# Failover end to end: examples/ratelimit_demo makes real HTTP calls with
# libcurl to two mock OpenAI-compatible providers through llmguardd.
. "${top_srcdir:-.}/tests/integration/lib.sh"
timing_test

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
demo() { "$DEMO" -s "$SOCK" "$@" 2>>"$TMP/demo.err"; }

out=$(demo -w wf1 hello)
expect_match "healthy: the primary (groq) answers" "^provider=groq success=1 failover_attempts=0 rate_limited=0 quota_allowed=1 .* guarded=1 tokens=42 call_id=[0-9]+-[0-9]+-[0-9a-f]+ permit_id=1$" "$(echo "$out" | head -1)"
expect_eq "the answer is the provider's" groq "$(echo "$out" | tail -1)"
expect_match "the API key went out" '"auth": ?"Bearer gsk-test"' "$(curl -s "http://127.0.0.1:$(cat "$TMP/groq.port")/stats")"

# One failure kind after another: each fails over to openai and degrades groq.
for kind in 429:1 500 hang; do
    mock_mode groq "$kind"
    out=$(demo -w wf1 hello | head -1)
    expect_match "groq $kind: the call succeeds on openai, failover_attempts=1" "^provider=openai success=1 failover_attempts=1 " "$out"
    st=$("$LLMGUARDCTL" -s "$SOCK" status | grep '^groq')
    expect_match "groq $kind: degraded in llmguardctl status" "^groq .* degraded +[0-9.]+s " "$st"
    # While degraded, groq is not tried at all.
    before=$(mock_requests groq)
    out=$(demo -w wf1 hello | head -1)
    expect_match "groq $kind: while degraded, openai answers first" "^provider=openai success=1 failover_attempts=0 " "$out"
    expect_eq "groq $kind: and groq saw no request" "$before" "$(mock_requests groq)"
    mock_mode groq ok
    sleep 2.1
    out=$(demo -w wf1 hello | head -1)
    expect_match "groq $kind: after PROVIDER_COOLDOWN_SEC groq is used again" "^provider=groq success=1 failover_attempts=0 " "$out"
done
expect_match "429 rate_limited is set" "rate_limited=1" "$(mock_mode groq 429:1; demo -w wf1 hi | head -1; mock_mode groq ok)"
sleep 2.1

# Retry-After longer than the cooldown wins: 4 s.
mock_mode groq 429:4
demo -w wf1 hello >/dev/null
mock_mode groq ok
st=$("$LLMGUARDCTL" -s "$SOCK" --json status)
expect_match "Retry-After 4 s beats a 2 s cooldown" '"name": ?"groq",[^}]*"state": ?"degraded", ?"cooldown_remaining_s": ?[34]\.' "$st"
sleep 4.1

# A client error returns at once, with no failover.
mock_mode groq 400
before=$(mock_requests openai)
out=$(demo -w wf1 hello)
rc=$?
expect_eq "400: exit 1" 1 "$rc"
expect_match "400: no failover" "^provider=groq success=0 failover_attempts=0 " "$(echo "$out" | head -1)"
expect_eq "400: openai saw nothing" "$before" "$(mock_requests openai)"
st=$("$LLMGUARDCTL" -s "$SOCK" status | grep '^groq')
expect_match "400: groq stays healthy" "^groq .* healthy " "$st"
mock_mode groq ok

# Every provider failing: all attempts used, the failure said.
mock_mode groq 500; mock_mode openai 500
out=$(demo -w wf1 -a 2 hello | head -1)
expect_match "both fail: success=0 after 2 attempts" "^provider=openai success=0 failover_attempts=1 " "$out"
# Both degraded now: with a timeout shorter than the cooldown (a longer
# one parks, t_parking.sh), the one whose cooldown ends first is used.
mock_mode openai ok
out=$(demo -w wf1 -T 0.5 hello | head -1)
expect_match "all degraded: a call still goes out" "success=1" "$out"
expect_match "all degraded: logged" "every provider is degraded" "$(cat "$TMP/daemon.log")"
mock_mode groq ok
sleep 2.1

# The quota is charged the actual usage.total_tokens, not the estimate.
mock_mode groq ok:77
demo -w charged -e 500 hello >/dev/null
out=$("$LLMGUARDCTL" -s "$SOCK" quota charged)
expect_match "quota charged 77 (usage.total_tokens), not 500" "tokens_used +77$" "$out"
mock_mode groq ok
stop_daemon

# Hard quota: LLMGUARD_EQUOTA before any HTTP request.
printf 'PROVIDER_GROQ_RATE_PER_SEC=50\nQUOTA_ENFORCEMENT=hard\nDEFAULT_DAILY_QUOTA_TOKENS=100\n' > "$TMP/h.env"
ENVFILE="$TMP/h.env" start_daemon
before=$(mock_requests groq)
demo -w capped -e 150 hello >/dev/null
expect_eq "hard quota: exit 3 (EQUOTA)" 3 $?
expect_eq "hard quota: no HTTP request was made" "$before" "$(mock_requests groq)"
out=$("$LLMGUARDCTL" -s "$SOCK" quota capped)
expect_match "hard quota: nothing charged" "tokens_used +0$" "$out"
stop_daemon

# Rate-limit failover inside a permit: groq's bucket is empty, openai has a
# token: the permit moves without waiting.
printf 'PROVIDER_GROQ_RATE_PER_SEC=0.01\nPROVIDER_GROQ_PRIORITY=1\nPROVIDER_OPENAI_RATE_PER_SEC=50\nPROVIDER_OPENAI_PRIORITY=2\n' > "$TMP/r.env"
ENVFILE="$TMP/r.env" start_daemon
out=$(demo -w rl hello | head -1)
expect_match "first call takes groq's only token" "^provider=groq success=1 .*rate_limited=0" "$out"
out=$(demo -w rl hello | head -1)
expect_match "second moves to openai at once, rate_limited=1" "^provider=openai success=1 failover_attempts=0 rate_limited=1 " "$out"
stop_daemon

# RATE_LIMIT_ENABLED=false: a 0.01/s provider answers every call.
printf 'RATE_LIMIT_ENABLED=false\nPROVIDER_GROQ_RATE_PER_SEC=0.01\nQUOTA_ENFORCEMENT=hard\nDEFAULT_DAILY_QUOTA_TOKENS=1\n' > "$TMP/d.env"
ENVFILE="$TMP/d.env" start_daemon
n=0
for _ in 1 2 3 4; do demo -w off -e 50 hi >/dev/null && n=$((n + 1)); done
expect_eq "disabled: 4 of 4 calls through a 0.01/s bucket and a 1-token quota" 4 "$n"
stop_daemon

# No daemon: fail-open calls the provider unguarded, fail-closed refuses.
before=$(mock_requests groq)
out=$(LLMGUARD_FAIL_MODE=open demo -p groq hello | head -1)
expect_match "fail-open: the call is made, guarded=0" "^provider=groq success=1 .* guarded=0 " "$out"
expect_eq "fail-open: groq saw it" $((before + 1)) "$(mock_requests groq)"
LLMGUARD_FAIL_MODE=closed demo -p groq hello >/dev/null
expect_eq "fail-closed: exit 69 (EUNAVAIL)" 69 $?
expect_eq "fail-closed: no request" $((before + 1)) "$(mock_requests groq)"
finish
