#!/bin/sh
# Header feedback end to end: examples/ratelimit_demo calls mock providers
# that enforce limits of their own and send OpenAI- or Anthropic-style
# rate-limit headers; libllmguard passes them on in the report, and
# llmguardd fits its buckets to them and learns the limits it was not
# given.  Bad headers are counted and the daemon keeps serving.
. "${top_srcdir:-.}/tests/integration/lib.sh"
timing_test

PY=/usr/bin/python3
export PYTHONPATH="$top_srcdir/python"
export LLMGUARD_DEMO_HTTP_TIMEOUT_MS=2000
demo() { "$DEMO" -s "$SOCK" -e 10 "$@" 2>>"$TMP/demo.err"; }
field() { printf '%s\n' "$2" | head -1 | tr ' ' '\n' | sed -n "s/^$1=//p"; }
stats() { curl -sf "http://127.0.0.1:$(cat "$TMP/$1.port")/stats"; }

# start_limited NAME ARGS...: a mock with limits of its own.
start_limited() {
    n=$1; shift
    rm -f "$TMP/$n.port"
    "$MOCK" --name "$n" --port-file "$TMP/$n.port" "$@" &
    MOCK_PIDS="$MOCK_PIDS $!"
    for _ in $(seq 1 100); do
        [ -s "$TMP/$n.port" ] && break
        sleep 0.05
    done
    up=$(echo "$n" | tr a-z A-Z)
    eval "export PROVIDER_${up}_BASE_URL=http://127.0.0.1:$(cat "$TMP/$n.port")/v1"
}

# ---- remaining 0, reset 2s: no permit for about 2 s ------------------------
# One request per 2 s: after a call the mock says
# x-ratelimit-remaining-requests: 0 and x-ratelimit-reset-requests: 2s.
start_limited groq --rpm 1 --window 2
cat > "$TMP/a.env" <<'ENV'
PROVIDER_GROQ_RATE_PER_SEC=50
PROVIDER_GROQ_PRIORITY=1
ENV
ENVFILE="$TMP/a.env" start_daemon
out=$(demo -p groq -a 1 hello)
expect_match "a first call goes through at once" "^provider=groq success=1 .*rate_limited=0 " "$out"
expect_match "the mock said none remains for 2s" "x-ratelimit-reset-requests: 2s" \
    "$(curl -s -i -X POST -d '{"model":"other"}' "http://127.0.0.1:$(cat "$TMP/groq.port")/v1/chat/completions")"
out=$(demo -p groq -a 1 -T 10 hello)
wait_ms=$(field wait_ms "$out")
expect_match "the next call waited for its token" "^provider=groq success=1 .*rate_limited=1 " "$out"
check "it waited about 2 s for it (waited $wait_ms ms)" \
    awk -v w="$wait_ms" 'BEGIN { exit !(w >= 1700 && w <= 4000) }'
expect_match "and the mock answered it: no 429" '"rate_limited": ?0,' "$(stats groq)"
stop_daemon

# ---- ... or it moves to another provider ----------------------------------
start_mock openai
cat > "$TMP/b.env" <<'ENV'
PROVIDER_GROQ_RATE_PER_SEC=50
PROVIDER_GROQ_PRIORITY=1
PROVIDER_OPENAI_RATE_PER_SEC=50
PROVIDER_OPENAI_PRIORITY=2
ENV
sleep 2.1                   # the mock's own request is back
ENVFILE="$TMP/b.env" start_daemon
out=$(demo -a 1 hello)
expect_match "groq answers first" "^provider=groq success=1 " "$out"
before=$(mock_requests groq)
out=$(demo -a 1 hello)
expect_match "then the call moves to openai, rate-limited" "^provider=openai success=1 .*rate_limited=1 " "$out"
expect_eq "and groq saw no request" "$before" "$(mock_requests groq)"
stop_daemon

# ---- learned limits ---------------------------------------------------------
start_limited learn --rpm 120 --tpm 6000
start_limited claude --rpm 50 --style anthropic
cat > "$TMP/c.env" <<'ENV'
PROVIDER_LEARN_RATE_PER_SEC=learn
PROVIDER_LEARN_PRIORITY=1
PROVIDER_CLAUDE_RATE_PER_SEC=learn
PROVIDER_CLAUDE_PRIORITY=2
PROVIDER_CLAUDE_TOKENS_PER_MIN=0
PROVIDER_FAST_RATE_PER_SEC=50
PROVIDER_FAST_BURST=50
PROVIDER_FAST_PRIORITY=3
ENV
ENVFILE="$TMP/c.env" start_daemon
st=$("$LLMGUARDCTL" -s "$SOCK" status)
expect_match "before any answer: no limit yet" "^learn: rate none, tokens_per_min none$" "$st"
expect_match "before any answer: nothing AVAILABLE to show, no rate, no MAX" "^learn +- +0 +0 " "$st"
demo -p learn -a 1 hello >/dev/null
demo -p claude -a 1 hello >/dev/null
st=$("$LLMGUARDCTL" -s "$SOCK" status)
expect_match "learn: both limits learned" "^learn: rate learned, tokens_per_min learned$" "$st"
expect_match "claude: a configured TPM of 0 stays, the rate is learned" "^claude: rate learned, tokens_per_min configured$" "$st"
js=$("$LLMGUARDCTL" -s "$SOCK" --json status)
learn=$(printf '%s' "$js" | $PY -c 'import json,sys; p={q["name"]: q for q in json.load(sys.stdin)["providers"]}; l=p["learn"]; c=p["claude"]; print(l["rate_per_sec"], l["max_tokens"], l["tokens_per_min"], l["rate_source"], round(c["rate_per_sec"] * 60), c["max_tokens"], c["tokens_per_min_source"])')
expect_eq "status --json: 120/min learned (2/s, burst 120, 6000 TPM); claude 50/min from Anthropic's headers" \
    "2.0 120.0 6000.0 learned 50 50.0 configured" "$learn"
m=$("$LLMGUARDCTL" -s "$SOCK" metrics --prometheus)
expect_match "metrics show the learned limits" \
    'llmguard_provider_limit\{provider="learn",limit="requests_per_min",source="learned"\} 120' "$m"
expect_match "metrics: learned TPM" \
    'llmguard_provider_limit\{provider="learn",limit="tokens_per_min",source="learned"\} 6000' "$m"
# A reload keeps what was learned while nothing is configured instead;
# a limit configured then replaces it.
sed -i 's/^PROVIDER_CLAUDE_RATE_PER_SEC=learn$/PROVIDER_CLAUDE_RATE_PER_SEC=3/' "$TMP/c.env"
"$LLMGUARDCTL" -s "$SOCK" reload >/dev/null
st=$("$LLMGUARDCTL" -s "$SOCK" status)
expect_match "after a reload: still learned" "^learn: rate learned, tokens_per_min learned$" "$st"
expect_match "after a reload: a configured rate wins" "^claude .* 3 " "$st"
expect_match "and says so" "^claude: rate configured, tokens_per_min configured$" "$st"

# ---- exactly remaining 0 and reset 2s, no limit header ---------------------
res=$($PY - "$SOCK" <<'PYEOF'
import sys, time
import llmguard
c = llmguard.Client(sys.argv[1])
def permit(timeout_ms):
    return c.call("permit", {"preferred": "fast", "exclude": ["learn", "claude"],
                             "timeout_ms": timeout_ms, "tokens_estimate": 1})
pid = permit(0)["permit_id"]
c.call("report", {"permit_id": pid, "outcome": "ok", "headers": {
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "2s"}})
try:
    permit(0)
    print("granted at once")
except llmguard.LlmguardError as e:
    print("at once:", e.code)
t0 = time.monotonic()
rep = permit(10000)
print("waited %.0f %.0f" % (rep["wait_ms"], (time.monotonic() - t0) * 1e3))
c.call("report", {"permit_id": rep["permit_id"], "outcome": "ok"})
PYEOF
)
expect_match "remaining 0, reset 2s: no token at once (of 50 a second)" "^at once: timeout$" "$res"
w=$(echo "$res" | sed -n 's/^waited \([0-9]*\) .*/\1/p')
check "the next permit waited about 2 s ($w ms)" \
    awk -v w="$w" 'BEGIN { exit !(w >= 1700 && w <= 4000) }'

# ---- a longer window (Groq's requests per day): applied all the same ------
res=$($PY - "$SOCK" <<'PYEOF'
import sys, time
import llmguard
c = llmguard.Client(sys.argv[1])
def permit(timeout_ms):
    return c.call("permit", {"preferred": "fast", "exclude": ["learn", "claude"],
                             "timeout_ms": timeout_ms, "tokens_estimate": 1})
def exhausted(headers):
    c.call("report", {"permit_id": permit(5000)["permit_id"], "outcome": "ok",
                      "headers": headers})
    t0 = time.monotonic()
    try:
        rep = permit(1500)
        c.call("report", {"permit_id": rep["permit_id"], "outcome": "ok"})
        return "waited %.0f" % ((time.monotonic() - t0) * 1e3)
    except llmguard.LlmguardError as e:
        return "refused %s after %.0f" % (e.code, (time.monotonic() - t0) * 1e3)
# 600 a window refilled by its reset 2 minutes away: one token 200 ms on.
print("linear", exhausted({"x-ratelimit-limit-requests": "600",
                           "x-ratelimit-remaining-requests": "0",
                           "x-ratelimit-reset-requests": "2m0s"}))
# No limit header: nothing before the reset, 5 minutes away (the last use
# of this provider here).
print("none", exhausted({"x-ratelimit-remaining-requests": "0",
                         "x-ratelimit-reset-requests": "5m0s"}))
PYEOF
)
expect_match "remaining 0 of a 5-minute reset: nothing within 1.5 s" "^none refused timeout after 1[45][0-9][0-9]$" "$res"
w=$(echo "$res" | sed -n 's/^linear waited \([0-9]*\)$/\1/p')
check "600 by a reset 2 min away: the next token about 200 ms on ($w ms)" \
    awk -v w="$w" 'BEGIN { exit !(w >= 120 && w <= 1000) }'

# ---- bad headers: counted, logged once, the daemon keeps serving -----------
res=$($PY - "$SOCK" <<'PYEOF'
import sys
import llmguard
from llmguard.errors import LlmguardError
c = llmguard.Client(sys.argv[1])
def permit():
    return c.call("permit", {"preferred": "learn", "timeout_ms": 5000,
                             "tokens_estimate": 1})["permit_id"]
bad = {"x-ratelimit-remaining-requests": "lots",
       "x-ratelimit-reset-requests": "soon", "server": "mock"}
for _ in range(3):
    c.call("report", {"permit_id": permit(), "outcome": "ok",
                      "headers": bad})
for headers in ({f"x-h-{i}": "1" for i in range(33)},
                {"retry-after": 5}):
    pid = permit()
    try:
        c.call("report", {"permit_id": pid, "outcome": "ok",
                          "headers": headers})
        print("accepted")
    except LlmguardError as e:
        print(e.code, e)
    c.call("report", {"permit_id": pid, "outcome": "ok"})
print("ping", "uptime_s" in c.call("ping"))
PYEOF
)
expect_match "33 headers: a clear bad_request" "^bad_request .*headers: 33 of them, at most 32" "$res"
expect_match "a value not a string: a clear bad_request" "^bad_request .*field 'headers': expected a map of strings to strings" "$res"
expect_match "the permit stayed open: its report went through after" "^ping True$" "$res"
m=$("$LLMGUARDCTL" -s "$SOCK" metrics --prometheus)
expect_match "6 unreadable values counted" \
    'llmguard_provider_headers_malformed_total\{provider="learn"\} 6' "$m"
expect_eq "logged once (the rest throttled)" 1 \
    "$(grep -c "header x-ratelimit-.*cannot read" "$TMP/daemon.log")"
out=$(demo -p learn -a 1 hello)
expect_match "and the daemon keeps serving" "^provider=learn success=1 " "$out"

# ---- a permit that named a model: its headers speak of the model -----------
stop_daemon
cat > "$TMP/m.env" <<'ENV'
PROVIDER_FAST_RATE_PER_SEC=50
MODEL_ONE_PROVIDER=fast
MODEL_TWO_PROVIDER=fast
ENV
ENVFILE="$TMP/m.env" start_daemon
res=$(PYTHONPATH="$top_srcdir/python" $PY - "$SOCK" <<'PYEOF'
import sys, time
import llmguard
c = llmguard.Client(sys.argv[1])
def permit(timeout_ms, model=None):
    req = {"timeout_ms": timeout_ms, "tokens_estimate": 1}
    if model:
        req["model"] = model
    return c.call("permit", req)
def at_once(model=None):
    try:
        c.call("report", {"permit_id": permit(0, model)["permit_id"],
                          "outcome": "ok"})
        return "ok"
    except llmguard.LlmguardError as e:
        return e.code
pid = permit(0, "one")["permit_id"]
c.call("report", {"permit_id": pid, "outcome": "ok", "headers": {
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "2s"}})
print("one:", at_once("one"))
print("two:", at_once("two"))
print("none:", at_once())
t0 = time.monotonic()
rep = permit(10000, "one")
print("waited %.0f" % rep["wait_ms"])
PYEOF
)
expect_match "model one answered remaining 0: no token for it at once" "^one: timeout$" "$res"
expect_match "its provider's other model is not held" "^two: ok$" "$res"
expect_match "nor a permit without a model" "^none: ok$" "$res"
w=$(echo "$res" | sed -n 's/^waited \([0-9]*\)$/\1/p')
check "model one's next permit waited about 2 s ($w ms)" \
    awk -v w="$w" 'BEGIN { exit !(w >= 1700 && w <= 4000) }'
finish
