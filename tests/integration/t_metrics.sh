#!/bin/sh
# Metrics: exact counts after known traffic, the Prometheus text (CLI and
# HTTP) through promtool, the label cap, /healthz and 404.
. "${top_srcdir:-.}/tests/integration/lib.sh"
timing_test
ACQ="$top_builddir/tests/integration/acquirer"

start_mock groq
start_mock openai
export LLMGUARD_DEMO_HTTP_TIMEOUT_MS=400
PORT=$(free_port)
cat > "$TMP/m.env" <<ENV
PROVIDER_GROQ_RATE_PER_SEC=50
PROVIDER_GROQ_PRIORITY=1
PROVIDER_OPENAI_RATE_PER_SEC=50
PROVIDER_OPENAI_PRIORITY=2
PROVIDER_COOLDOWN_SEC=1
QUOTA_ENFORCEMENT=soft
DEFAULT_DAILY_QUOTA_TOKENS=1000
LLMGUARD_METRICS_LISTEN=127.0.0.1:$PORT
ENV
ENVFILE="$TMP/m.env" start_daemon
demo() { "$DEMO" -s "$SOCK" "$@" >/dev/null 2>>"$TMP/demo.err"; }

# Traffic: 3 calls on groq; one 429 that fails over to openai; a soft
# excess; after a reload to hard, a hard excess.
demo -w wa -e 10 hi; demo -w wa -e 10 hi; demo -w wb -e 10 hi
mock_mode groq 429:1
demo -w wa -e 10 hi
mock_mode groq ok
mock_mode openai ok:1500                       # groq cools down: openai
demo -w big -t acme -e 1500 hi                 # soft: allowed, over
mock_mode openai ok
sed -i 's/QUOTA_ENFORCEMENT=soft/QUOTA_ENFORCEMENT=hard/' "$TMP/m.env"
out=$("$LLMGUARDCTL" -s "$SOCK" reload)
expect_match "llmguardctl reload" "^reloaded $TMP/m.env: 2 provider\(s\)$" "$out"
demo -w big -t acme -e 10 hi                   # hard: refused

json=$("$LLMGUARDCTL" -s "$SOCK" --json metrics)
echo "$json" > "$TMP/metrics.json"
jq_like() { echo "$json" | grep -o "$1" | head -1; }
expect_match "llm_requests_total{groq,wa,ok} = 2" \
    '"llm_requests_total":\[[^]]*\{"labels":\{"provider":"groq","workflow_id":"wa","outcome":"ok","model":""\},"value":2(\.0)?\}' "$json"
expect_match "llm_requests_total{groq,wa,rate_limited} = 1 (the 429)" \
    '\{"labels":\{"provider":"groq","workflow_id":"wa","outcome":"rate_limited","model":""\},"value":1(\.0)?\}' "$json"
expect_match "llm_requests_total{openai,wa,ok} = 1" \
    '\{"labels":\{"provider":"openai","workflow_id":"wa","outcome":"ok","model":""\},"value":1(\.0)?\}' "$json"
expect_match "llm_requests_total{groq,wb,ok} = 1" \
    '\{"labels":\{"provider":"groq","workflow_id":"wb","outcome":"ok","model":""\},"value":1(\.0)?\}' "$json"
expect_match "llm_rate_limited_total{groq} = 1" \
    '"llm_rate_limited_total":\[\{"labels":\{"provider":"groq","model":""\},"value":1(\.0)?\}\]' "$json"
expect_match "llm_failovers_total{groq->openai} = 1" \
    '"llm_failovers_total":\[\{"labels":\{"from_provider":"groq","to_provider":"openai"\},"value":1(\.0)?\}\]' "$json"
expect_match "llm_quota_exceeded_total{big,acme} = 2 (soft + hard)" \
    '"llm_quota_exceeded_total":\[\{"labels":\{"workflow_id":"big","tenant_id":"acme"\},"value":2(\.0)?\}\]' "$json"
# wa: 42 + 42 (ok), 0 (the 429 attempt used none), 42 (openai).
expect_match "workflow_quota_remaining_tokens{wa} = 1000 - 126" \
    '\{"labels":\{"workflow_id":"wa"\},"value":874(\.0)?\}' "$json"
expect_match "provider_available_tokens{groq}" \
    '"provider_available_tokens":\[\{"labels":\{"provider":"groq"\},"value":[0-9.]+\}' "$json"
expect_match "llm_request_latency_ms{groq}: count 4, buckets, +Inf" \
    '"llm_request_latency_ms":\[\{"labels":\{"provider":"groq"\},"count":4,"sum":[0-9.e+-]+,"buckets":\[\{"le":5(\.0)?,"count":[0-4]\},.*\{"le":"\+Inf","count":4\}\]\}' "$json"

# promtool: the one accepted lint is the seed's _ms unit.
promcheck() {
    promtool check metrics < "$1" > "$TMP/promtool.out" 2>&1
    rc=$?
    grep -v '^llm_request_latency_ms metric names should not contain abbreviated units$' "$TMP/promtool.out" > "$TMP/promtool.rest"
    if [ $rc -le 3 ] && [ ! -s "$TMP/promtool.rest" ]; then return 0; fi
    cat "$TMP/promtool.out"; return 1
}
"$LLMGUARDCTL" -s "$SOCK" metrics --prometheus > "$TMP/cli.prom"
check "llmguardctl metrics --prometheus passes promtool check metrics" promcheck "$TMP/cli.prom"
expect_match "the text has the counter" '^llm_requests_total\{provider="groq",workflow_id="wa",outcome="ok",model=""\} 2$' "$(cat "$TMP/cli.prom")"
curl -sf "http://127.0.0.1:$PORT/metrics" > "$TMP/http.prom"
check "GET /metrics passes promtool check metrics" promcheck "$TMP/http.prom"
expect_match "GET /metrics: same counter" '^llm_failovers_total\{from_provider="groq",to_provider="openai"\} 1$' "$(cat "$TMP/http.prom")"
expect_eq "GET /healthz: 200, the store ok" "ok ok" \
    "$(curl -sf "http://127.0.0.1:$PORT/healthz" | jq -r '"\(.status) \(.store.state)"')"
expect_eq "any other path: 404" 404 "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/other")"
expect_eq "POST /metrics: 405" 405 "$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$PORT/metrics")"
out=$("$LLMGUARDCTL" -s "$SOCK" metrics)
expect_match "table output" "^llm_failovers_total +from_provider=groq,to_provider=openai +1$" "$out"

# The label cap: 20000 distinct workflows, 10000 series + __other__.
out=$("$ACQ" fill "$SOCK" cap- 20000)
expect_eq "20000 distinct workflows reserved" "filled 20000" "$out"
"$LLMGUARDCTL" -s "$SOCK" --json metrics > "$TMP/cap.json"
n=$(grep -o '"workflow_id":"cap-[0-9]*"},"value"' "$TMP/cap.json" | wc -l)
other=$(grep -o '"workflow_id":"__other__"},"value":[0-9.]*' "$TMP/cap.json")
tot=$(grep -o '\{"labels":{"workflow_id":"[^"]*"},"value"' "$TMP/cap.json" | wc -l)
expect_eq "workflow_quota_remaining_tokens holds 10000 series + __other__" 10001 "$tot"
check "__other__ is there" test -n "$other"
"$LLMGUARDCTL" -s "$SOCK" metrics --prometheus > "$TMP/cap.prom"
check "the capped registry still passes promtool (paged through the socket)" promcheck "$TMP/cap.prom"
echo "# $n cap-* series"
finish
