#!/bin/sh
# Model deployments end to end: examples/ratelimit_demo (libllmguard, -m)
# calls two mock providers with libcurl through llmguardd.  A model group
# with deployments on both fails over on a 429; a 429 on one model of a
# provider leaves its other model usable; per-model RPM holds, and a
# permit takes the model's and the provider's tokens both or neither.
. "${top_srcdir:-.}/tests/integration/lib.sh"
timing_test

start_mock groq
start_mock together
export LLMGUARD_DEMO_HTTP_TIMEOUT_MS=400
CPORT=$((40000 + $$ % 20000))
"$MOCK" --name collector --port "$CPORT" --port-file "$TMP/collector.port" \
    --traces-file "$TMP/traces.jsonl" &
MOCK_PIDS="$MOCK_PIDS $!"
for _ in $(seq 1 100); do [ -s "$TMP/collector.port" ] && break; sleep 0.05; done
cat > "$TMP/m.env" <<ENV
OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$CPORT/
PROVIDER_GROQ_RPM=600
PROVIDER_GROQ_PRIORITY=1
PROVIDER_TOGETHER_RPM=600
PROVIDER_TOGETHER_PRIORITY=2
PROVIDER_COOLDOWN_SEC=30
MODEL_LLAMA_GROQ_PROVIDER=groq
MODEL_LLAMA_GROQ_NAME=llama-3.3-70b-versatile
MODEL_LLAMA_GROQ_GROUP=llama
MODEL_LLAMA_TOG_PROVIDER=together
MODEL_LLAMA_TOG_NAME=meta-llama/Llama-3.3-70B-Instruct-Turbo
MODEL_LLAMA_TOG_GROUP=llama
MODEL_GEMMA_PROVIDER=groq
MODEL_GEMMA_NAME=gemma2-9b-it
MODEL_GEMMA_RPM=6
MODEL_DUP_A_PROVIDER=groq
MODEL_DUP_A_NAME=dup-a
MODEL_DUP_A_GROUP=dup
MODEL_DUP_B_PROVIDER=groq
MODEL_DUP_B_NAME=dup-b
MODEL_DUP_B_GROUP=dup
ENV
ENVFILE="$TMP/m.env" start_daemon
demo() { "$DEMO" -s "$SOCK" "$@" 2>>"$TMP/demo.err"; }
mock_model() {
    curl -sf "http://127.0.0.1:$(cat "$TMP/$1.port")/stats" |
        sed 's/.*"model": *"\([^"]*\)".*/\1/'
}
model_line() {  # model_line ALIAS: its row of llmguardctl status
    "$LLMGUARDCTL" -s "$SOCK" status | grep "^$1 "
}

out=$(demo -m llama hello)
expect_match "the group goes to its first deployment, on groq" "^provider=groq success=1 failover_attempts=0 " "$(echo "$out" | head -1)"
expect_eq "the reply names the model id to call" "model=llama-3.3-70b-versatile" "$(echo "$out" | sed -n 2p)"
expect_eq "and the call function asked groq for it" "llama-3.3-70b-versatile" "$(mock_model groq)"

# A 429 on groq's llama: the call fails over to together's deployment.
mock_mode groq 429:1
out=$(demo -m llama hello)
expect_match "429: the group fails over to together" "^provider=together success=1 failover_attempts=1 rate_limited=1 " "$(echo "$out" | head -1)"
expect_eq "429: together's model id" "model=meta-llama/Llama-3.3-70B-Instruct-Turbo" "$(echo "$out" | sed -n 2p)"
expect_eq "429: together was asked for it" "meta-llama/Llama-3.3-70B-Instruct-Turbo" "$(mock_model together)"
cid=$(echo "$out" | head -1 | sed 's/.* call_id=\([^ ]*\) .*/\1/')
ex=$("$LLMGUARDCTL" -s "$SOCK" explain "call:$cid")
expect_match "explain: the first attempt's deployment" "^  model     llama: deployment llama_groq, model id llama-3.3-70b-versatile$" "$ex"
expect_match "explain: the failover's deployment" "^  model     llama: deployment llama_tog, model id meta-llama/Llama-3.3-70B-Instruct-Turbo$" "$ex"
expect_match "explain --json: deployment and model_id" '"model": ?"llama", ?"deployment": ?"llama_tog", ?"model_id": ?"meta-llama/Llama-3.3-70B-Instruct-Turbo"' "$("$LLMGUARDCTL" -s "$SOCK" --json explain "call:$cid")"
expect_match "429: groq's llama deployment is degraded" "^llama_groq +llama-3.3-70b-versatile +groq +llama .* degraded +[0-9.]+s " "$(model_line llama_groq)"
expect_match "429: the provider groq is not" "^groq .* healthy " "$("$LLMGUARDCTL" -s "$SOCK" status | grep '^groq ')"
mock_mode groq ok
json=$("$LLMGUARDCTL" -s "$SOCK" --json metrics)
expect_match "llm_requests_total has the model: groq's 429" \
    '\{"labels":\{"provider":"groq","workflow_id":"","outcome":"rate_limited","model":"llama-3.3-70b-versatile"\},"value":1(\.0)?\}' "$json"
expect_match "llm_rate_limited_total has the model" \
    '"llm_rate_limited_total":\[[^]]*\{"labels":\{"provider":"groq","model":"llama-3.3-70b-versatile"\},"value":1(\.0)?\}' "$json"
span_models() {
    [ -s "$TMP/traces.jsonl" ] || return 0
    jq -r '.resourceSpans[].scopeSpans[].spans[].attributes[] | select(.key == "llm.model") | .value.stringValue' "$TMP/traces.jsonl" | tr '\n' ' '
}
for _ in $(seq 1 60); do [ "$(span_models | wc -w)" -ge 2 ] && break; sleep 0.1; done
models=$(span_models)
expect_eq "spans carry llm.model, the last attempt's" "llama-3.3-70b-versatile meta-llama/Llama-3.3-70B-Instruct-Turbo " "$models"

# The provider's other model is still usable.
before=$(mock_requests groq)
out=$(demo -m gemma2-9b-it hello)
expect_match "gemma (groq) after the 429 on llama: groq answers" "^provider=groq success=1 failover_attempts=0 rate_limited=0 " "$(echo "$out" | head -1)"
expect_eq "gemma: groq saw that model" "gemma2-9b-it" "$(mock_model groq)"
expect_eq "gemma: one request more on groq" $((before + 1)) "$(mock_requests groq)"
# While llama_groq cools down, the group goes straight to together.
before=$(mock_requests groq)
out=$(demo -m llama hello | head -1)
expect_match "llama while groq's deployment cools down: together first" "^provider=together success=1 failover_attempts=0 " "$out"
expect_eq "and groq saw nothing" "$before" "$(mock_requests groq)"

# A group of two models on one provider: the call fails over from one to
# the other on the same provider (the daemon remembers the deployments a
# call tried; the provider is not excluded), then has none left.
mock_mode groq 429:1
before=$(mock_requests groq)
out=$(demo -m dup -a 3 hello)
mock_mode groq ok
expect_match "dup: two attempts, both on groq" "^provider=groq success=0 failover_attempts=1 rate_limited=1 " "$(echo "$out" | head -1)"
expect_eq "dup: the second asked for the other model" "model=dup-b" "$(echo "$out" | sed -n 2p)"
expect_eq "dup: groq saw two requests" $((before + 2)) "$(mock_requests groq)"
cid=$(echo "$out" | head -1 | sed 's/.* call_id=\([^ ]*\) .*/\1/')
ex=$("$LLMGUARDCTL" -s "$SOCK" explain "call:$cid")
expect_match "dup: the third permit found every deployment tried" "every deployment of model 'dup' is excluded" "$ex"
expect_match "dup: the provider stays healthy" "^groq .* healthy " "$("$LLMGUARDCTL" -s "$SOCK" status | grep '^groq ')"

# Provider-wide cooldown: a report for a permit without a model.
mock_mode groq 500
demo -p groq -a 1 hello >/dev/null
mock_mode groq ok
expect_match "a call without a model degrades the provider" "^groq .* degraded " "$("$LLMGUARDCTL" -s "$SOCK" status | grep '^groq ')"
out=$(demo -m gemma2-9b-it hello | head -1)
expect_match "gemma's only deployment is held by its provider: all degraded, still called" "^provider=groq success=1 " "$out"
expect_match "logged as all degraded" "every deployment of model gemma2-9b-it is degraded" "$(cat "$TMP/daemon.log")"

# An unknown model is a bad request (EINVAL: exit 1), nothing called.
before=$(($(mock_requests groq) + $(mock_requests together)))
demo -m gpt-5 hello >/dev/null
expect_eq "unknown model: exit 1" 1 $?
expect_match "unknown model: said" "unknown model 'gpt-5'" "$(cat "$TMP/demo.err")"
expect_eq "unknown model: no request" "$before" $(($(mock_requests groq) + $(mock_requests together)))
out=$("$RAWCLIENT" -n 1 "$SOCK" req:permit:1:model=gpt-5)
expect_match "unknown model on the wire: bad_request" "^err 1 bad_request unknown model 'gpt-5'" "$out"

# Per-model RPM: gemma has 6 a minute (a burst of 6, one every 10 s), of
# which the calls above took 2; of 8 more tries without waiting, 4 pass
# (5 if this test has run for 10 s by then).
n=0
for _ in 1 2 3 4 5 6 7 8; do demo -m gemma2-9b-it -T 0 hi >/dev/null && n=$((n + 1)); done
check "MODEL_GEMMA_RPM=6: 4 (or 5) of 8 more calls go through (got $n)" test "$n" -ge 4 -a "$n" -le 5
expect_match "the refused ones said why" "no token from model gemma" "$(cat "$TMP/demo.err")"
stop_daemon

# Both or neither, through the waiting paths, on one connection.
cat > "$TMP/b.env" <<'ENV'
PROVIDER_GROQ_RPM=60
MODEL_WIDE_PROVIDER=groq
MODEL_WIDE_RPM=120
PROVIDER_TOGETHER_RPM=6000
MODEL_CAPPED_PROVIDER=together
MODEL_CAPPED_RPM=60
ENV
ENVFILE="$TMP/b.env" start_daemon
permits() {     # permits MODEL N TIMEOUT_MS: N pipelined permits; granted
    items=""
    for i in $(seq 1 "$2"); do items="$items req:permit:$i:model=$1,timeout_ms=$3"; done
    # shellcheck disable=SC2086
    "$RAWCLIENT" "$SOCK" $items | grep -c '^ok '
}
model_avail() {     # model_avail ALIAS: its available request tokens
    "$LLMGUARDCTL" -s "$SOCK" --json status |
        sed 's/.*"alias": *"'"$1"'"[^}]*"available_tokens": *\([0-9.]*\).*/\1/'
}
# The provider is the bottleneck (60, 1/s): of 80 permits waiting up to
# 1.5 s, 60 + 1.5 pass.  Each that timed out waiting for the provider held
# a token of the model (120, 2/s) and gave it back: 120 - 61 = 59 or more
# are left, where holding them would leave 40 plus the refill.
g=$(permits wide 80 1500.0)
check "provider RPM 60 holds: 60 to 62 of 80 granted (got $g)" test "$g" -ge 60 -a "$g" -le 62
a=$(model_avail wide)
check "the timed-out permits gave the model's tokens back (available $a)" awk "BEGIN { exit !($a >= 120 - $g && $a <= 120) }"
# The model is the bottleneck (60, 1/s; its provider 6000): of 80 permits
# waiting up to 1.5 s, 60 + 1.5 pass.
g=$(permits capped 80 1500.0)
check "model RPM 60 holds: 60 to 62 of 80 granted (got $g)" test "$g" -ge 60 -a "$g" -le 62
# A reload keeps the model buckets' fill.
a=$(model_avail capped)
"$LLMGUARDCTL" -s "$SOCK" reload >/dev/null
b=$(model_avail capped)
check "reload keeps the model's fill ($a, then $b, not 60)" awk "BEGIN { exit !($b < 10 && $b >= $a) }"
# A reload adds a deployment; a bad one is refused and changes nothing.
out=$("$RAWCLIENT" "$SOCK" req:permit:1:model=bee | head -1)
expect_match "before the reload: model bee is unknown" "^err 1 bad_request unknown model 'bee'" "$out"
printf 'MODEL_B_PROVIDER=groq\nMODEL_B_NAME=bee\n' >> "$TMP/b.env"
"$LLMGUARDCTL" -s "$SOCK" reload >/dev/null
expect_match "after it: granted on groq" "^ok 1$" "$("$RAWCLIENT" "$SOCK" req:permit:1:model=bee | head -1)"
echo 'MODEL_C_PROVIDER=nope' >> "$TMP/b.env"
out=$("$LLMGUARDCTL" -s "$SOCK" reload 2>&1)
expect_match "a deployment on an undeclared provider: reload refused" "MODEL_C_PROVIDER=nope: expected a declared provider" "$out"
expect_match "and bee still routes" "^ok 1$" "$("$RAWCLIENT" "$SOCK" req:permit:1:model=bee | head -1)"
stop_daemon
"$LLMGUARDD" --check-config --env-file "$TMP/b.env" >/dev/null 2>"$TMP/err"
expect_eq "--check-config: exit 78" 78 $?
finish
