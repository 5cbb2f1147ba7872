#!/bin/sh
# What status and the metrics tell an operator: the daemon's version, env
# file, database, uptime, connections, open permits and last flush; why a
# provider is degraded (cause, since when, its Retry-After); the LLM-token
# bucket's level; the gauges llmguard_provider_degraded and
# provider_available_llm_tokens (through promtool).
. "${top_srcdir:-.}/tests/integration/lib.sh"

start_mock groq
start_mock openai
cat > "$TMP/s.env" <<'ENV'
PROVIDER_GROQ_RATE_PER_SEC=50
PROVIDER_GROQ_PRIORITY=1
PROVIDER_OPENAI_RATE_PER_SEC=20
PROVIDER_OPENAI_PRIORITY=2
PROVIDER_OPENAI_TOKENS_PER_MIN=6000
PROVIDER_COOLDOWN_SEC=5
LLMGUARD_METRICS_LISTEN=127.0.0.1:0
ENV
# Port 0 is refused: take a free one.
PORT=$(free_port)
sed -i "s/127.0.0.1:0/127.0.0.1:$PORT/" "$TMP/s.env"
ENVFILE="$TMP/s.env" start_daemon

out=$("$LLMGUARDCTL" -s "$SOCK" status)
expect_match "status: the version" "^version +[0-9]+\.[0-9]+\.[0-9]+$" "$out"
expect_match "status: the env file" "^env_file +$TMP/s.env$" "$out"
expect_match "status: the database" "^database +$DB$" "$out"
expect_match "status: the uptime" "^uptime +[0-9]+ s$" "$out"
expect_match "status: connections (this one at least)" "^connections +[1-9][0-9]*$" "$out"
expect_match "status: open permits" "^permits +0 open$" "$out"
expect_match "status: the store" "^store +ok$" "$out"

# A 429 with Retry-After 30 on groq: the call fails over, groq is degraded
# by rate_limited, and status says since when and the Retry-After.
mock_mode groq 429:30
start=$(date +%s)
"$DEMO" -s "$SOCK" -w wf -e 100 hello > /dev/null 2>>"$TMP/demo.err"
out=$("$LLMGUARDCTL" -s "$SOCK" status)
expect_match "status: why groq is degraded" \
    "^groq: degraded by rate_limited since [0-9T:Z-]+, Retry-After 30 s$" "$out"
expect_match "status: the LLM tokens of openai's bucket" \
    "^openai: [0-9]+ of 6000 LLM tokens available$" "$out"
expect_match "status: the last flush" "^last_flush +20[0-9T:Z-]+$" "$out"
json=$("$LLMGUARDCTL" -s "$SOCK" --json status)
expect_eq "--json: cooldown_cause" rate_limited \
    "$(echo "$json" | jq -r '.providers[] | select(.name == "groq") | .cooldown_cause')"
expect_eq "--json: retry_after_s" 30 \
    "$(echo "$json" | jq -r '.providers[] | select(.name == "groq") | .retry_after_s')"
since=$(echo "$json" | jq -r '.providers[] | select(.name == "groq") | .cooldown_since | floor')
check "--json: cooldown_since is when it happened ($since, started $start)" \
    test "$since" -ge "$((start - 1))" -a "$since" -le "$(($(date +%s) + 1))"
expect_eq "--json: a healthy provider has no cause" null \
    "$(echo "$json" | jq -r '.providers[] | select(.name == "openai") | .cooldown_cause')"
expect_eq "--json: openai's available_llm_tokens" true \
    "$(echo "$json" | jq -r '.providers[] | select(.name == "openai") | .available_llm_tokens > 0')"
expect_eq "--json: none for groq (no TOKENS_PER_MIN)" null \
    "$(echo "$json" | jq -r '.providers[] | select(.name == "groq") | .available_llm_tokens')"
expect_eq "--json: the daemon's fields" "ok true 0" \
    "$(echo "$json" | jq -r '"\(.store) \(.uptime_s >= 0) \(.open_permits)"')"

# The gauges, over HTTP, through the Prometheus parser.
curl -sf "http://127.0.0.1:$PORT/metrics" > "$TMP/metrics.txt"
# The one lint accepted is the seed's _ms unit (as in t_metrics.sh).
promtool check metrics < "$TMP/metrics.txt" 2>&1 |
    grep -v '^llm_request_latency_ms metric names should not contain abbreviated units$' \
    > "$TMP/promtool.out"
expect_eq "promtool accepts the metrics" "" "$(cat "$TMP/promtool.out")"
expect_match "llmguard_provider_degraded: groq 1" \
    '^llmguard_provider_degraded\{provider="groq"\} 1$' "$(cat "$TMP/metrics.txt")"
expect_match "llmguard_provider_degraded: openai 0" \
    '^llmguard_provider_degraded\{provider="openai"\} 0$' "$(cat "$TMP/metrics.txt")"
expect_match "provider_available_llm_tokens: openai's" \
    '^provider_available_llm_tokens\{provider="openai"\} [0-9.e+]+$' "$(cat "$TMP/metrics.txt")"
expect_eq "provider_available_llm_tokens: none for groq (no TOKENS_PER_MIN)" 0 \
    "$(grep -c 'provider_available_llm_tokens{provider="groq"}' "$TMP/metrics.txt")"
finish
