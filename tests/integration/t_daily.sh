#!/bin/sh
# Daily limits (PROVIDER_<NAME>_RPD, _TPD) through the real path: permits
# and acquires over the socket, the counters in the SQLite file across a
# SIGKILL, the TPD reconciled by a report, reload, status and metrics.
. "${top_srcdir:-.}/tests/integration/lib.sh"
timing_test

WIRE="/usr/bin/python3 $top_srcdir/tests/integration/wire.py"
wire() { $WIRE "$SOCK"; }
# field JSON PATH: one field of a reply (PATH as in python: ["err"]["code"]).
field() { printf '%s' "$1" | /usr/bin/python3 -c "import json, sys; v = json.load(sys.stdin)$2; print(json.dumps(v) if isinstance(v, (dict, list)) else v)"; }

# ---- configuration: validated, printed ----
printf 'PROVIDER_GROQ_RATE_PER_SEC=10\nPROVIDER_GROQ_RPD=-1\n' > "$TMP/bad.env"
out=$("$LLMGUARDD" --env-file "$TMP/bad.env" --check-config 2>&1)
expect_eq "RPD -1: exit 78" 78 "$?"
expect_match "RPD -1: the variable is named" "PROVIDER_GROQ_RPD.*-1" "$out"
printf 'PROVIDER_GROQ_RATE_PER_SEC=10\nPROVIDER_GROQ_TPD=lots\n' > "$TMP/bad.env"
"$LLMGUARDD" --env-file "$TMP/bad.env" --check-config >/dev/null 2>&1
expect_eq "TPD lots: exit 78" 78 "$?"
printf 'PROVIDER_GROQ_RPD=5\n' > "$TMP/bad.env"
out=$("$LLMGUARDD" --env-file "$TMP/bad.env" --check-config 2>&1)
expect_eq "RPD without a provider: exit 78" 78 "$?"
printf 'PROVIDER_GROQ_RATE_PER_SEC=10\nPROVIDER_GROQ_RPD=3\nPROVIDER_GROQ_TPD=1000\n' > "$TMP/ok.env"
out=$("$LLMGUARDD" --env-file "$TMP/ok.env" --check-config 2>&1)
expect_match "--check-config prints RPD" "^PROVIDER_GROQ_RPD=3$" "$out"
expect_match "--check-config prints TPD" "^PROVIDER_GROQ_TPD=1000$" "$out"

# ---- RPD 3: three grants, then the refusal with a retry_after ----
# A flush interval of 0: a grant is on disk before its reply.
cat > "$TMP/d.env" <<'ENV'
PROVIDER_GROQ_RATE_PER_SEC=100
PROVIDER_GROQ_RPD=3
PROVIDER_GROQ_TPD=1000
LLMGUARD_QUOTA_FLUSH_MS=0
ENV
ENVFILE="$TMP/d.env" start_daemon
out=$(printf '{"op":"permit","tokens_estimate":10,"call_id":"c%s"}\n' 1 2 3 4 | wire)
expect_eq "RPD 3: three permits granted" "True True True" \
    "$(echo "$out" | head -3 | while read -r l; do field "$l" '["ok"]'; done | tr '\n' ' ' | sed 's/ $//')"
last=$(echo "$out" | tail -1)
expect_eq "the 4th is refused: timeout" timeout "$(field "$last" '["err"]["code"]')"
expect_match "the refusal says daily_limit and the limit" \
    "^daily_limit: .*provider/groq has used 3 of its 3 requests a day" \
    "$(field "$last" '["err"]["msg"]')"
expect_eq "its subject is the limit's name" provider/groq \
    "$(field "$last" '["err"]["subject"]')"
ra=$(field "$last" '["err"]["retry_after_s"]')
# The first grant's slot (2 minutes) leaves the day 24 h after its end.
check "retry_after_s: 24 h to 24 h + a slot ($ra)" \
    /usr/bin/python3 -c "import sys; sys.exit(0 if 86390 < $ra <= 86520 else 1)"

# explain: the refused decision says why groq was left.
exp=$("$LLMGUARDCTL" -s "$SOCK" --json explain call:c4)
expect_match "explain: why daily_limit" '"why": ?"daily_limit"' "$exp"

# acquire counts on the same limit: refused too.
out=$(echo '{"op":"acquire","provider":"groq"}' | wire)
expect_match "acquire: refused by the daily limit" '"code": "timeout", "msg": "daily_limit' "$out"

# status and metrics.
json=$("$LLMGUARDCTL" -s "$SOCK" --json status)
expect_match "status --json: requests 3 of 3 used" \
    '"name": ?"provider/groq", ?"unit": ?"requests", ?"limit": ?3, ?"used": ?3, ?"remaining": ?0, ?"frees_at": ?[0-9.]+' "$json"
expect_match "status --json: tokens 30 of 1000" \
    '"unit": ?"tokens", ?"limit": ?1000, ?"used": ?30, ?"remaining": ?970' "$json"
expect_match "status: a line per daily limit" \
    "^provider/groq: 3 of 3 requests a day used, frees 20[0-9T:Z-]+$" \
    "$("$LLMGUARDCTL" -s "$SOCK" status)"
expect_match "metrics: what the day has left" \
    'llmguard_daily_limit_remaining\{limit="provider/groq",unit="requests"\} 0' \
    "$("$LLMGUARDCTL" -s "$SOCK" metrics --prometheus)"

# ---- SIGKILL and restart: the same database still refuses ----
kill9
ENVFILE="$TMP/d.env" start_daemon
out=$(echo '{"op":"permit","tokens_estimate":10}' | wire)
expect_match "after SIGKILL: still refused, no fresh day" '"msg": "daily_limit: ' "$out"
expect_eq "the rows are in their own table" 3 \
    "$(sqlite3 "$DB" "SELECT count FROM daily_usage WHERE unit = 'requests'")"
expect_eq "apart from the quota rows" 0 \
    "$(sqlite3 "$DB" "SELECT count(*) FROM quota_usage")"

# ---- reload keeps the usage: RPD 3 -> 5 gives exactly two more ----
sed -i 's/RPD=3/RPD=5/' "$TMP/d.env"
"$LLMGUARDCTL" -s "$SOCK" reload >/dev/null
out=$(printf '{"op":"permit","tokens_estimate":10}\n%.0s' 1 2 3 | wire)
expect_eq "after reload to RPD 5: two granted, the third refused" "True True False" \
    "$(echo "$out" | while read -r l; do field "$l" '["ok"]'; done | tr '\n' ' ' | sed 's/ $//')"
stop_daemon

# ---- TPD: the estimate counts at the grant, the report reconciles ----
rm -f "$DB" "$DB-wal" "$DB-shm"
cat > "$TMP/t.env" <<'ENV'
PROVIDER_GROQ_RATE_PER_SEC=100
PROVIDER_GROQ_TPD=1000
ENV
ENVFILE="$TMP/t.env" start_daemon
out=$(wire <<'REQ'
{"op":"permit","tokens_estimate":600}
{"op":"permit","tokens_estimate":600}
{"op":"report","permit_id":"@1.permit_id","outcome":"ok","tokens_used":100,"final":true}
{"op":"permit","tokens_estimate":600}
{"op":"permit","tokens_estimate":600}
REQ
)
l() { echo "$out" | sed -n "${1}p"; }
expect_eq "TPD 1000: 600 granted" True "$(field "$(l 1)" '["ok"]')"
expect_match "TPD: another 600 is refused on tokens" \
    "daily_limit: .*600 of its 1000 tokens a day" "$(field "$(l 2)" '["err"]["msg"]')"
expect_eq "the report is taken" True "$(field "$(l 3)" '["ok"]')"
expect_eq "after the report said 100: 600 more fit" True "$(field "$(l 4)" '["ok"]')"
expect_match "and then 700 used: 600 more do not" "700 of its 1000 tokens" \
    "$(field "$(l 5)" '["err"]["msg"]')"

# ---- two providers: the one out of its day is passed over ----
stop_daemon
# (The counters of the last part count groq's requests too: a new file.)
rm -f "$DB" "$DB-wal" "$DB-shm"
cat > "$TMP/two.env" <<'ENV'
PROVIDER_GROQ_RATE_PER_SEC=100
PROVIDER_GROQ_PRIORITY=1
PROVIDER_GROQ_RPD=1
PROVIDER_OPENAI_RATE_PER_SEC=100
PROVIDER_OPENAI_PRIORITY=2
ENV
ENVFILE="$TMP/two.env" start_daemon
out=$(printf '{"op":"permit","call_id":"two%s"}\n' 1 2 | wire)
expect_eq "RPD 1 on groq: the first goes to groq" groq "$(field "$(echo "$out" | head -1)" '["provider"]')"
expect_eq "the second to openai" openai "$(field "$(echo "$out" | tail -1)" '["provider"]')"
exp=$("$LLMGUARDCTL" -s "$SOCK" --json explain call:two2)
expect_match "explain: groq left by daily_limit, openai chosen" \
    '"name": ?"groq", ?"why": ?"daily_limit".*"name": ?"openai", ?"why": ?"chosen"' \
    "$(echo "$exp" | tr -d '\n')"

# ---- acquire counts on the day as a permit does ----
stop_daemon
rm -f "$DB" "$DB-wal" "$DB-shm"
printf 'PROVIDER_GROQ_RATE_PER_SEC=100\nPROVIDER_GROQ_RPD=2\n' > "$TMP/a.env"
ENVFILE="$TMP/a.env" start_daemon
out=$(wire <<'REQ'
{"op":"acquire","provider":"groq"}
{"op":"acquire","provider":"groq","tokens":0}
{"op":"permit"}
{"op":"permit"}
REQ
)
expect_eq "RPD 2: an acquire is granted and counted" True "$(field "$(echo "$out" | sed -n 1p)" '["ok"]')"
expect_eq "one refused as a bad request counts nothing" bad_request \
    "$(field "$(echo "$out" | sed -n 2p)" '["err"]["code"]')"
expect_eq "then a permit" True "$(field "$(echo "$out" | sed -n 3p)" '["ok"]')"
expect_match "and the day is used up" '"msg": "daily_limit: ' "$(echo "$out" | sed -n 4p)"
# ---- a model's own RPD: counted beside its provider's, across a restart ----
stop_daemon
rm -f "$DB" "$DB-wal" "$DB-shm"
cat > "$TMP/m.env" <<'ENV'
PROVIDER_GROQ_RATE_PER_SEC=100
PROVIDER_GROQ_PRIORITY=1
PROVIDER_OPENAI_RATE_PER_SEC=100
PROVIDER_OPENAI_PRIORITY=2
MODEL_LLAMA_GROQ_PROVIDER=groq
MODEL_LLAMA_GROQ_NAME=llama-3.3-70b-versatile
MODEL_LLAMA_GROQ_GROUP=llama
MODEL_LLAMA_GROQ_RPD=2
MODEL_LLAMA_OAI_PROVIDER=openai
MODEL_LLAMA_OAI_NAME=llama-oai
MODEL_LLAMA_OAI_GROUP=llama
MODEL_LLAMA_OAI_RPD=1
MODEL_MINI_PROVIDER=groq
LLMGUARD_QUOTA_FLUSH_MS=0
ENV
ENVFILE="$TMP/m.env" start_daemon
out=$(printf '{"op":"permit","model":"llama","call_id":"m%s"}\n' 1 2 3 4 | wire)
expect_eq "model RPD: two go to llama_groq, the third to llama_oai" \
    "llama-3.3-70b-versatile llama-3.3-70b-versatile llama-oai" \
    "$(echo "$out" | head -3 | while read -r l; do field "$l" '["model"]'; done | tr '\n' ' ' | sed 's/ $//')"
last=$(echo "$out" | tail -1)
expect_match "the 4th: every deployment at its daily limit" \
    "^daily_limit: every deployment of the model left is at its daily limit; model/llama_(groq|oai) has used" \
    "$(field "$last" '["err"]["msg"]')"
expect_eq "a model out of its day leaves its provider's other models" True \
    "$(field "$(echo '{"op":"permit","model":"mini"}' | wire)" '["ok"]')"
expect_match "status --json: the model's own counter" \
    '"name": ?"model/llama_groq", ?"unit": ?"requests", ?"limit": ?2, ?"used": ?2' \
    "$("$LLMGUARDCTL" -s "$SOCK" --json status)"
kill9
ENVFILE="$TMP/m.env" start_daemon
out=$(echo '{"op":"permit","model":"llama"}' | wire)
expect_match "after SIGKILL: the model's day holds" '"msg": "daily_limit: ' "$out"
expect_eq "a permit without a model still goes to groq" groq \
    "$(field "$(echo '{"op":"permit"}' | wire)" '["provider"]')"
finish
