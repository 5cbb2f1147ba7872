#!/bin/sh
# Parking: with every provider in its cooldown (both mock providers answer
# 429 with a Retry-After, through examples/ratelimit_demo over libcurl), a
# permit whose timeout outlasts the first cooldown waits for it instead of
# calling a degraded provider; one with a shorter timeout is routed by the
# all_degraded rule as before.  Parked permits go in FIFO order, a success
# wakes them at once, and one whose client leaves consumes nothing.
. "${top_srcdir:-.}/tests/integration/lib.sh"
timing_test

WIRE="/usr/bin/python3 $top_srcdir/tests/integration/wire.py"
field() { printf '%s' "$1" | /usr/bin/python3 -c "import json, sys; v = json.load(sys.stdin)$2; print(json.dumps(v) if isinstance(v, (dict, list)) else v)"; }

start_mock groq
start_mock openai
export PROVIDER_GROQ_API_KEY=gsk-test PROVIDER_OPENAI_API_KEY=sk-test
export LLMGUARD_DEMO_HTTP_TIMEOUT_MS=1000
# One token a second and a burst of 1: permits woken together take the
# tokens, and queue for them, in the order they parked.
cat > "$TMP/p.env" <<'ENV'
PROVIDER_GROQ_RATE_PER_SEC=1
PROVIDER_GROQ_BURST=1
PROVIDER_GROQ_PRIORITY=1
PROVIDER_GROQ_RPD=1000
PROVIDER_OPENAI_RATE_PER_SEC=1
PROVIDER_OPENAI_BURST=1
PROVIDER_OPENAI_PRIORITY=2
PROVIDER_COOLDOWN_SEC=1
QUOTA_ENFORCEMENT=soft
ENV
ENVFILE="$TMP/p.env" start_daemon

# cool SECS: both mocks answer 429 with Retry-After SECS to one call of two
# attempts, so both providers are in their cooldown for SECS from now.
cool() {
    mock_mode groq "429:$1"
    mock_mode openai "429:$1"
    "$DEMO" -s "$SOCK" -a 2 -w cooler hello >/dev/null 2>>"$TMP/demo.err"
    mock_mode groq ok
    mock_mode openai ok
    # groq's token, taken by the cooling call, is back by the time it ends.
}
degraded() {
    "$LLMGUARDCTL" -s "$SOCK" --json status | /usr/bin/python3 -c \
        'import json, sys; print(sum(p["state"] == "degraded" for p in json.load(sys.stdin)["providers"]))'
}
daily_used() {
    "$LLMGUARDCTL" -s "$SOCK" --json status | /usr/bin/python3 -c \
        'import json, sys; print([d["used"] for d in json.load(sys.stdin)["daily_limits"] if d["unit"] == "requests"][0])'
}

# ---- a timeout longer than the cooldown: parked, then granted ----
cool 2
expect_eq "both providers are in their cooldown" 2 "$(degraded)"
out=$(echo '{"op":"permit","timeout_ms":6000,"call_id":"long"}' | $WIRE "$SOCK")
expect_eq "parked: granted" True "$(field "$out" '["ok"]')"
expect_eq "not by the all_degraded rule" False "$(field "$out" '["all_degraded"]')"
expect_eq "on groq, whose cooldown ended first" groq "$(field "$out" '["provider"]')"
wait_ms=$(field "$out" '["wait_ms"]')
expect_match "wait_ms about the 2 s cooldown (1.5 to 5 s)" \
    '^(1[5-9][0-9][0-9]|[2-4][0-9][0-9][0-9])(\.[0-9]+)?$' "$wait_ms"
exp=$("$LLMGUARDCTL" -s "$SOCK" --json explain call:long)
expect_match "explain: parked_ms" '"parked_ms": ?(1[5-9][0-9][0-9]|[2-4][0-9][0-9][0-9])' "$exp"

# The same through a real call: the demo's permit parks, then groq answers.
sleep 1.1
cool 2
before=$(mock_requests groq)
start=$(date +%s%N)
out=$("$DEMO" -s "$SOCK" -T 6 -w parked hello 2>>"$TMP/demo.err" | head -1)
ms=$(( ($(date +%s%N) - start) / 1000000 ))
expect_match "the call waits out the cooldown, then groq answers" \
    "^provider=groq success=1 failover_attempts=0 " "$out"
check "it took about the cooldown ($ms ms)" [ "$ms" -ge 1500 ]
expect_eq "groq was called once, after its cooldown" $((before + 1)) "$(mock_requests groq)"

# ---- a timeout shorter than the cooldown: the all_degraded rule ----
sleep 1.1
cool 3
sleep 1.1       # groq's token is back; 2 s of cooldown are left
out=$(echo '{"op":"permit","timeout_ms":300,"call_id":"short"}' | $WIRE "$SOCK")
expect_eq "short timeout: granted at once" True "$(field "$out" '["ok"]')"
expect_eq "by the all_degraded rule, as before" True "$(field "$out" '["all_degraded"]')"
expect_match "without waiting" '^0(\.0+)?$' "$(field "$out" '["wait_ms"]')"
expect_match "explain: not parked" '"all_degraded": ?true' \
    "$("$LLMGUARDCTL" -s "$SOCK" --json explain call:short)"
sleep 2

# ---- FIFO, a client that leaves, and a success that wakes them ----
cat > "$TMP/fifo.py" <<'PY'
import json, socket, sys, time
sys.path.insert(0, sys.argv[2])
from wire import send, recv

path = sys.argv[1]
def conn():
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    return s

# Three parked permits, one after the other, and one whose client
# closes while parked (with a workflow, to see its quota).
socks = {}
for name in ("p1", "gone", "p2", "p3"):
    s = conn()
    req = {"op": "permit", "id": 1, "timeout_ms": 8000, "call_id": name}
    if name == "gone":
        req.update(workflow_id="wgone", tokens_estimate=100)
    send(s, req)
    socks[name] = s
    time.sleep(0.05)
time.sleep(0.2)
socks.pop("gone").close()
replies = {n: recv(s) for n, s in socks.items()}
print(json.dumps(replies))
PY
cool 2
day0=$(daily_used)
/usr/bin/python3 "$TMP/fifo.py" "$SOCK" "$top_srcdir/tests/integration" > "$TMP/fifo.out" &
pid=$!
wait $pid
res=$(cat "$TMP/fifo.out")
ids=$(printf '%s' "$res" | /usr/bin/python3 -c 'import json, sys; r = json.load(sys.stdin); print(" ".join("%s:%s" % (n, r[n]["ok"]) for n in ("p1", "p2", "p3")))')
expect_eq "three parked permits granted" "p1:True p2:True p3:True" "$ids"
order=$(printf '%s' "$res" | /usr/bin/python3 -c 'import json, sys; r = json.load(sys.stdin); i = [r[n]["permit_id"] for n in ("p1", "p2", "p3")]; print("fifo" if i == sorted(i) and len(set(i)) == 3 else "not fifo: %s" % i)')
expect_eq "granted in the order they parked" fifo "$order"
waits=$(printf '%s' "$res" | /usr/bin/python3 -c 'import json, sys; r = json.load(sys.stdin); print(" ".join("%.0f" % r[n]["wait_ms"] for n in ("p1", "p2", "p3")))')
expect_match "the later ones waited for groq's tokens too" '^[0-9]+ [0-9]+ [0-9]+$' "$waits"
p1=$(echo "$waits" | cut -d' ' -f1); p3=$(echo "$waits" | cut -d' ' -f3)
check "p3 waited longer than p1 (one token a second)" [ "$p3" -gt "$p1" ]
expect_eq "the client that left consumed no quota" 0 "$(used wgone)"
expect_match "and its decision says it went unreported" '"outcome": ?"unreported"' \
    "$("$LLMGUARDCTL" -s "$SOCK" --json explain call:gone)"

# groq's day counted the permits granted there, not the one that left.
on_groq=$(printf '%s' "$res" | /usr/bin/python3 -c 'import json, sys; r = json.load(sys.stdin); print(sum(r[n]["provider"] == "groq" for n in ("p1", "p2", "p3")))')
expect_eq "groq's day counts only the permits granted there" "$((day0 + on_groq))" "$(daily_used)"

# A success on the degraded provider wakes the parked at once: x is routed
# by the all_degraded rule, reports ok, and y, parked for a 4 s cooldown,
# goes long before it ends.
sleep 2.1
cat > "$TMP/wake.py" <<'PY'
import json, socket, sys, time
sys.path.insert(0, sys.argv[2])
from wire import send, recv

path = sys.argv[1]
x, y = socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)
x.connect(path)
y.connect(path)
send(x, {"op": "permit", "id": 1, "timeout_ms": 100, "call_id": "x"})
px = recv(x)
send(y, {"op": "permit", "id": 1, "timeout_ms": 9000, "call_id": "y"})
time.sleep(0.5)
send(x, {"op": "report", "id": 2, "permit_id": px["permit_id"],
         "outcome": "ok", "final": True})
recv(x)
print(json.dumps({"x": px, "y": recv(y)}))
PY
cool 4
sleep 1.1       # groq's token is back; 3 s of cooldown are left
res=$(/usr/bin/python3 "$TMP/wake.py" "$SOCK" "$top_srcdir/tests/integration")
expect_eq "x: routed by the all_degraded rule" True \
    "$(field "$res" '["x"]["all_degraded"]')"
expect_eq "y: granted" True "$(field "$res" '["y"]["ok"]')"
y_wait=$(field "$res" '["y"]["wait_ms"]')
check "y: woken by x's success, not after the 4 s cooldown ($y_wait ms)" \
    /usr/bin/python3 -c "import sys; sys.exit(0 if 300 < $y_wait < 3000 else 1)"

# ---- a permit that names a model parks as well ------------------------------
stop_daemon
cat > "$TMP/m.env" <<'ENV'
PROVIDER_GROQ_RATE_PER_SEC=50
PROVIDER_GROQ_PRIORITY=1
PROVIDER_OPENAI_RATE_PER_SEC=50
PROVIDER_OPENAI_PRIORITY=2
PROVIDER_COOLDOWN_SEC=1
MODEL_LL_GROQ_PROVIDER=groq
MODEL_LL_GROQ_NAME=ll-groq
MODEL_LL_GROQ_GROUP=ll
MODEL_LL_OAI_PROVIDER=openai
MODEL_LL_OAI_NAME=ll-oai
MODEL_LL_OAI_GROUP=ll
ENV
ENVFILE="$TMP/m.env" start_daemon
# Both deployments answer 429: ll_groq for 3 s, ll_oai for 1.5 s; then a
# permit that may wait 6 s parks until ll_oai's cooldown ends, and one
# that may wait 0.2 s is routed as before, to the one that ends first.
out=$($WIRE "$SOCK" <<'REQ'
{"op":"permit","model":"ll","call_id":"m1"}
{"op":"report","permit_id":"@1.permit_id","outcome":"rate_limited","retry_after_s":3,"final":true}
{"op":"permit","model":"ll","call_id":"m2"}
{"op":"report","permit_id":"@3.permit_id","outcome":"rate_limited","retry_after_s":1.5,"final":true}
{"op":"permit","model":"ll","call_id":"m3","timeout_ms":200}
{"op":"permit","model":"ll","call_id":"m4","timeout_ms":6000}
REQ
)
l() { echo "$out" | sed -n "${1}p"; }
expect_eq "model: the first goes to ll_groq" ll-groq "$(field "$(l 1)" '["model"]')"
expect_eq "model: the second to ll_oai" ll-oai "$(field "$(l 3)" '["model"]')"
expect_eq "model, timeout 0.2 s: all_degraded, at once" True "$(field "$(l 5)" '["all_degraded"]')"
expect_eq "model, timeout 6 s: parked, then granted" True "$(field "$(l 6)" '["ok"]')"
expect_eq "it went to ll_oai, whose cooldown ended first" ll-oai "$(field "$(l 6)" '["model"]')"
w=$(field "$(l 6)" '["wait_ms"]')
check "it waited about ll_oai's 1.5 s cooldown ($w ms)" \
    /usr/bin/python3 -c "import sys; sys.exit(0 if 1000 < $w < 4000 else 1)"
expect_eq "and not as all_degraded" False "$(field "$(l 6)" '["all_degraded"]')"
finish
