#!/bin/sh
# Traces: one OTLP/HTTP JSON span per logical call, with every llm.*
# attribute, the caller's traceparent as parent; a collector that is down
# costs permits nothing but dropped spans (counted), and export resumes
# when it is back.
. "${top_srcdir:-.}/tests/integration/lib.sh"
ACQ="$top_builddir/tests/integration/acquirer"

start_mock groq
start_mock openai
export LLMGUARD_DEMO_HTTP_TIMEOUT_MS=400
CPORT=$((40000 + $$ % 20000))
start_collector() {
    "$MOCK" --name collector --port "$CPORT" --port-file "$TMP/collector.port" \
        --traces-file "$TMP/traces.jsonl" &
    COLLECTOR=$!
    MOCK_PIDS="$MOCK_PIDS $COLLECTOR"
    for _ in $(seq 1 100); do [ -s "$TMP/collector.port" ] && break; sleep 0.05; done
}
start_collector
cat > "$TMP/t.env" <<ENV
PROVIDER_GROQ_RATE_PER_SEC=1000
PROVIDER_GROQ_PRIORITY=1
PROVIDER_OPENAI_RATE_PER_SEC=1000
PROVIDER_OPENAI_PRIORITY=2
DEFAULT_DAILY_QUOTA_TOKENS=100000
OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$CPORT/
OTEL_SERVICE_NAME=llmguard-test
ENV
ENVFILE="$TMP/t.env" start_daemon

# A call that fails over once (groq 429 -> openai), with a traceparent.
TP=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01
mock_mode groq 429:1
"$DEMO" -s "$SOCK" -w wf-t -t tenant-t -e 120 --traceparent "$TP" hello >/dev/null 2>&1
mock_mode groq ok
for _ in $(seq 1 60); do [ -s "$TMP/traces.jsonl" ] && break; sleep 0.1; done
span=$(jq -c '.resourceSpans[].scopeSpans[].spans[]' "$TMP/traces.jsonl" | head -1)
res=$(jq -c '.resourceSpans[0].resource.attributes' "$TMP/traces.jsonl" | head -1)
echo "# $span"
attr() { echo "$span" | jq -c --arg k "$1" '.attributes[] | select(.key == $k) | .value'; }
expect_eq "service.name" '{"stringValue":"llmguard-test"}' "$(echo "$res" | jq -c '.[] | select(.key == "service.name") | .value')"
expect_eq "the trace id is the caller's" '"0af7651916cd43dd8448eb211c80319c"' "$(echo "$span" | jq -c .traceId)"
expect_eq "the parent span is the caller's" '"b7ad6b7169203331"' "$(echo "$span" | jq -c .parentSpanId)"
expect_match "a span id of its own" '^"[0-9a-f]{16}"$' "$(echo "$span" | jq -c .spanId)"
expect_eq "llm.workflow_id" '{"stringValue":"wf-t"}' "$(attr llm.workflow_id)"
expect_eq "llm.tenant_id" '{"stringValue":"tenant-t"}' "$(attr llm.tenant_id)"
expect_eq "llm.tokens_estimate" '{"intValue":"120"}' "$(attr llm.tokens_estimate)"
expect_eq "llm.ratelimit_acquired" '{"boolValue":true}' "$(attr llm.ratelimit_acquired)"
expect_eq "llm.ratelimit_provider" '{"stringValue":"openai"}' "$(attr llm.ratelimit_provider)"
expect_match "llm.ratelimit_wait_ms" '^\{"doubleValue":0(\.0)?\}$' "$(attr llm.ratelimit_wait_ms)"
expect_eq "llm.quota.allowed" '{"boolValue":true}' "$(attr llm.quota.allowed)"
expect_match "llm.quota.remaining" '^\{"intValue":"99[0-9]{3}"\}$' "$(attr llm.quota.remaining)"
expect_eq "llm.routed_to" '{"stringValue":"openai"}' "$(attr llm.routed_to)"
expect_eq "llm.failover_attempts" '{"intValue":"1"}' "$(attr llm.failover_attempts)"
expect_eq "llm.rate_limited" '{"boolValue":true}' "$(attr llm.rate_limited)"
expect_eq "llm.success" '{"boolValue":true}' "$(attr llm.success)"
expect_eq "status ok" 1 "$(echo "$span" | jq .status.code)"
expect_eq "one span for the two attempts" 1 "$(jq '[.resourceSpans[].scopeSpans[].spans[]] | length' "$TMP/traces.jsonl" | awk '{ s += $1 } END { print s }')"

# A failed call: status error, llm.success false.  (groq is cooling down
# after its 429: openai takes it.)
mock_mode openai 400
"$DEMO" -s "$SOCK" -w wf-t hello >/dev/null 2>&1
mock_mode openai ok
for _ in $(seq 1 60); do [ "$(wc -l < "$TMP/traces.jsonl")" -ge 2 ] && break; sleep 0.1; done
span=$(tail -1 "$TMP/traces.jsonl" | jq -c '.resourceSpans[].scopeSpans[].spans[0]')
expect_eq "a failed call: status error" 2 "$(echo "$span" | jq .status.code)"
expect_eq "a failed call: llm.success false" '{"boolValue":false}' "$(attr llm.success)"

# The collector goes away: 6000 calls still go through, spans are dropped
# (the queue holds 2048) and counted; permits are never held up by it.
kill -TERM "$COLLECTOR"; wait "$COLLECTOR" 2>/dev/null
out=$("$ACQ" calls "$SOCK" 6000)
expect_eq "collector down: every call permitted" "calls 6000 ok 6000" "$out"
dropped=$("$LLMGUARDCTL" -s "$SOCK" metrics --prometheus | awk '/^llmguard_trace_spans_dropped_total/ { print $2 }')
echo "# dropped $dropped"
check "the drop counter rose (${dropped:-0})" test "${dropped:-0}" -gt 0
check "the daemon still answers at once" "$LLMGUARDCTL" -s "$SOCK" ping

# Back again: export resumes (after the exporter's backoff).
lines=$(wc -l < "$TMP/traces.jsonl")
start_collector
"$ACQ" calls "$SOCK" 10 "$TP" >/dev/null
for _ in $(seq 1 400); do [ "$(wc -l < "$TMP/traces.jsonl")" -gt "$lines" ] && break; sleep 0.1; done
check "collector back: spans arrive again" test "$(wc -l < "$TMP/traces.jsonl")" -gt "$lines"
finish
