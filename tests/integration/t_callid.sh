#!/bin/sh
# Two attempts of one call_id on one connection at once: while one waits
# (for groq's token, parked while groq cools down, for a deployment's
# token, or for the fleet's quota script in Redis) the other is refused.
# The call ends with its last attempt, not with the refusal: one span,
# which counts the waiting attempt, its decisions filed under the call,
# and a client that leaves mid-wait is charged nothing.  And a permit
# parked across a reload that reorders the providers keeps its exclude.
. "${top_srcdir:-.}/tests/integration/lib.sh"
PY=/usr/bin/python3
CALLS="$PY $top_srcdir/tests/integration/calls.py"
export PYTHONPATH="$top_srcdir/tests/integration"

CPORT=$((40000 + $$ % 20000))
"$MOCK" --name collector --port "$CPORT" --port-file "$TMP/collector.port" \
    --traces-file "$TMP/traces.jsonl" &
MOCK_PIDS="$MOCK_PIDS $!"
for _ in $(seq 1 100); do [ -s "$TMP/collector.port" ] && break; sleep 0.05; done

TRACE=0af7651916cd43dd8448eb211c8031
# spans TAG: the spans of the call whose waiting attempt carried TAG.
spans() {
    jq -c --arg t "$TRACE$1" '.resourceSpans[].scopeSpans[].spans[] |
        select(.traceId == $t)' "$TMP/traces.jsonl" 2>/dev/null
}
# attr TAG KEY: that attribute of the call's (first) span.
attr() {
    spans "$1" | head -1 | jq -c --arg k "$2" '.attributes[] |
        select(.key == $k) | .value'
}
# settle TAG: a marker call; once its span is in, so is every earlier one.
settle() {
    $CALLS "$SOCK" marker "$1" >/dev/null
    for _ in $(seq 1 100); do [ -n "$(spans "$1")" ] && return 0; sleep 0.1; done
    not_ok "the marker span $1 did not arrive"
}
field() { printf '%s' "$1" | $PY -c "import json, sys; v = json.load(sys.stdin)$2; print(json.dumps(v) if isinstance(v, (dict, list)) else v)"; }
alive() { check "$1: the daemon still serves" "$LLMGUARDCTL" -s "$SOCK" ping; }
# one_span TAG WHAT ACQUIRED: exactly one span, acquired or not.
one_span() {
    expect_eq "$2: the call has one span" 1 "$(spans "$1" | wc -l)"
    expect_eq "$2: llm.ratelimit_acquired" "{\"boolValue\":$3}" \
        "$(attr "$1" llm.ratelimit_acquired)"
}

cat > "$TMP/c.env" <<ENV
PROVIDER_GROQ_RATE_PER_SEC=1
PROVIDER_GROQ_BURST=1
PROVIDER_COOLDOWN_SEC=1
MODEL_M1_PROVIDER=groq
MODEL_M1_NAME=m1
MODEL_M1_RPM=1
DEFAULT_DAILY_QUOTA_TOKENS=1000
QUOTA_ENFORCEMENT=hard
OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$CPORT/
OTEL_SERVICE_NAME=llmguard-callid
ENV
ENVFILE="$TMP/c.env" start_daemon

# ---- waiting for a token ---------------------------------------------------
out=$($CALLS "$SOCK" bucket 01 stay)
expect_eq "bucket: the second attempt is refused" timeout "$(field "$out" '["4"]["err"]["code"]')"
expect_eq "bucket: the waiting one is granted" True "$(field "$out" '["3"]["ok"]')"
expect_eq "bucket: and its final report taken" True "$(field "$out" '["5"]["ok"]')"
alive bucket
exp=$("$LLMGUARDCTL" -s "$SOCK" --json explain call:c01)
expect_eq "bucket: explain files both attempts under the call, reported" \
    '["refused","ok"]' "$(printf '%s' "$exp" | jq -c '[.decisions[].outcome]' 2>/dev/null)"

# ---- parked while every provider cools down ----------------------------------
out=$($CALLS "$SOCK" parked 02 stay)
expect_eq "parked: the second attempt is refused" quota_exceeded "$(field "$out" '["4"]["err"]["code"]')"
expect_eq "parked: the parked one is granted" True "$(field "$out" '["3"]["ok"]')"
expect_eq "parked: and its final report taken" True "$(field "$out" '["5"]["ok"]')"
alive parked

# ---- the client leaves while one attempt waits -------------------------------
out=$($CALLS "$SOCK" bucket 03 leave)
expect_eq "bucket, left: the second attempt is refused" timeout "$(field "$out" '["4"]["err"]["code"]')"
out=$($CALLS "$SOCK" parked 04 leave)
expect_eq "parked, left: the second attempt is refused" no_provider "$(field "$out" '["4"]["err"]["code"]')"
sleep 0.3
alive "left"
expect_eq "bucket, left: the waiting attempt is charged nothing" 0 "$(used w03)"
expect_eq "parked, left: the parked attempt is charged nothing" 0 "$(used w04)"

# ---- a deployment's token that never comes ---------------------------------
out=$($CALLS "$SOCK" model 05 stay)
expect_eq "model: the second attempt is refused" timeout "$(field "$out" '["4"]["err"]["code"]')"
expect_match "model: the waiting one times out" "no token from m1 within the timeout" \
    "$(field "$out" '["3"]["err"]["msg"]')"
alive model
out=$($CALLS "$SOCK" model 06 leave)
expect_eq "model, left: the second attempt is refused" timeout "$(field "$out" '["4"]["err"]["code"]')"
sleep 0.3
alive "model, left"

# ---- a report marked final while another attempt waits ---------------------
out=$($CALLS "$SOCK" over 07 08)
expect_eq "final, then the waiting attempt: granted" True "$(field "$out" '["3"]["ok"]')"
expect_eq "and reported" True "$(field "$out" '["4"]["ok"]')"
expect_eq "a permit after it: granted" True "$(field "$out" '["5"]["ok"]')"
alive final

settle f1
one_span 01 bucket true
expect_eq "bucket: one attempt permitted, no failover" '{"intValue":"0"}' "$(attr 01 llm.failover_attempts)"
expect_eq "bucket: the call succeeded" '{"boolValue":true}' "$(attr 01 llm.success)"
expect_eq "bucket: it met the rate limit" '{"boolValue":true}' "$(attr 01 llm.rate_limited)"
expect_eq "bucket: its provider" '{"stringValue":"groq"}' "$(attr 01 llm.routed_to)"
w=$(attr 01 llm.ratelimit_wait_ms | jq '.doubleValue // 0')
check "bucket: the span counts the wait for the token (${w} ms)" \
    $PY -c "import sys; sys.exit(0 if 300 < float('$w') < 5000 else 1)"
expect_eq "bucket: the trace is the waiting attempt's" '"b7ad6b7169203331"' \
    "$(spans 01 | head -1 | jq -c .parentSpanId)"
one_span 02 parked true
expect_eq "parked: the call succeeded" '{"boolValue":true}' "$(attr 02 llm.success)"
one_span 03 "bucket, left" false
one_span 04 "parked, left" false
one_span 05 model false
expect_eq "model: it met the rate limit" '{"boolValue":true}' "$(attr 05 llm.rate_limited)"
one_span 06 "model, left" false
one_span 07 final true
expect_eq "final: the call ended with the waiting attempt, its second" \
    '{"intValue":"1"}' "$(attr 07 llm.failover_attempts)"
expect_eq "final: whose ok is the call's" '{"boolValue":true}' "$(attr 07 llm.success)"
one_span 08 "final: the permit after it, a new call," true
expect_eq "final: the new call has its one attempt" '{"intValue":"0"}' "$(attr 08 llm.failover_attempts)"
stop_daemon
expect_eq "the daemon stops cleanly (nothing freed twice, nothing leaked)" 0 "$STOP_STATUS"

# ---- a reload that reorders the providers under a parked permit --------------
cat > "$TMP/r.env" <<'ENV'
PROVIDER_GROQ_RATE_PER_SEC=10
PROVIDER_GROQ_PRIORITY=1
PROVIDER_OPENAI_RATE_PER_SEC=10
PROVIDER_OPENAI_PRIORITY=2
PROVIDER_COOLDOWN_SEC=1
ENV
ENVFILE="$TMP/r.env" start_daemon
out=$($CALLS "$SOCK" reload "$TMP/r.env" "$LLMGUARDCTL")
expect_eq "reload: the parked permit is granted" True "$(field "$out" '["3"]["ok"]')"
expect_eq "reload: on openai, not on groq, which it excluded" openai "$(field "$out" '["3"]["provider"]')"
stop_daemon
expect_eq "reload: the daemon stops cleanly" 0 "$STOP_STATUS"

# ---- waiting for the fleet's quota script ------------------------------------
if command -v redis-server >/dev/null; then
    start_redis r
    RCLI="redis-cli -s $TMP/r.sock"
    cat >> "$TMP/c.env" <<ENV
REDIS_URL=unix://$TMP/r.sock
LLMGUARD_REDIS_TIMEOUT_MS=3000
ENV
    ENVFILE="$TMP/c.env" start_daemon
    for _ in $(seq 1 50); do
        [ "$("$LLMGUARDCTL" -s "$SOCK" --json status | jq -r .redis.state)" = connected ] && break
        sleep 0.1
    done
    out=$($CALLS "$SOCK" quota 0a stay "$RCLI")
    expect_eq "quota: the second attempt is refused" no_provider "$(field "$out" '["4"]["err"]["code"]')"
    expect_eq "quota: the one that waited for Redis is granted" True "$(field "$out" '["3"]["ok"]')"
    out=$($CALLS "$SOCK" quota 0b leave "$RCLI")
    expect_eq "quota, left: the second attempt is refused" no_provider "$(field "$out" '["4"]["err"]["code"]')"
    sleep 1
    alive quota
    settle f2
    one_span 0a quota true
    one_span 0b "quota, left" false
    stop_daemon
    expect_eq "quota: the daemon stops cleanly" 0 "$STOP_STATUS"
else
    echo "ok - # SKIP redis-server is not installed: no quota script case"
fi
finish
