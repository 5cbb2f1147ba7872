#!/bin/sh
# Quotas end to end: hard rejection and rolling admission, atomicity across
# processes, durability across SIGKILL and SIGTERM, the CLI, admin rights.
. "${top_srcdir:-.}/tests/integration/lib.sh"
ACQ="$top_builddir/tests/integration/acquirer"

# A 4.32 s window (1 s slots), hard, 100 tokens.
cat > "$TMP/q.env" <<'ENV'
QUOTA_WINDOW_DAYS=0.00005
QUOTA_ENFORCEMENT=hard
DEFAULT_DAILY_QUOTA_TOKENS=100
ENV
ENVFILE="$TMP/q.env" start_daemon

out=$("$ACQ" reserve "$SOCK" wf - 60)
expect_match "60 of 100: allowed" "^allowed over 0 subject workflow:wf used 60 limit 100 remaining 40 " "$out"
out=$("$ACQ" reserve "$SOCK" wf - 60)
expect_match "60 more: EQUOTA with the details" "^error -3 quota exceeded subject workflow:wf used 60 limit 100 reset_at [0-9]+" "$out"
reset_at=$(echo "$out" | awk '{ print $NF }')
out=$("$ACQ" reserve "$SOCK" wf tn 50)
expect_match "the tenant would fit but the workflow not: refused" "^error -3 .* subject workflow:wf used 60" "$out"
out=$("$LLMGUARDCTL" -s "$SOCK" --json quota tn --tenant)
expect_match "a hard rejection reserved nothing on the tenant" '"tokens_used": ?0,' "$out"
expect_match "and its reset_at is null" '"reset_at": ?null' "$out"

# Wait for the usage to roll out of the window, then it admits again.
now=$(date +%s.%N)
sleep "$(awk -v r="$reset_at" -v n="$now" 'BEGIN { d = r - n + 0.2; print (d > 0 ? d : 0) }')"
out=$("$ACQ" reserve "$SOCK" wf - 60)
expect_match "after reset_at the same request is admitted" "^allowed over 0 subject workflow:wf used 60 " "$out"
stop_daemon

# N processes reserving in parallel never overshoot a hard limit:
# 8 x 40 tries of 7 tokens against 1000: exactly 142 fit (994 tokens).
printf 'QUOTA_ENFORCEMENT=hard\nDEFAULT_DAILY_QUOTA_TOKENS=1000\n' > "$TMP/h.env"
ENVFILE="$TMP/h.env" start_daemon
out=$("$ACQ" qrace "$SOCK" race 8 7 40)
expect_eq "8 processes: exactly 142 reservations of 7 fit in 1000" "allowed 142 refused 178" "$out"
out=$("$LLMGUARDCTL" -s "$SOCK" quota race)
expect_match "and 994 are used" "tokens_used +994$" "$out"

# Soft mode allows and flags.
stop_daemon
printf 'QUOTA_ENFORCEMENT=soft\nDEFAULT_DAILY_QUOTA_TOKENS=100\n' > "$TMP/s.env"
ENVFILE="$TMP/s.env" start_daemon
"$ACQ" reserve "$SOCK" soft - 80 >/dev/null
out=$("$ACQ" reserve "$SOCK" soft - 80)
expect_match "soft: over the limit is allowed, flagged, remaining 0" "^allowed over 1 subject workflow:soft used 160 limit 100 remaining 0 " "$out"
expect_match "and logged" "workflow:soft went over its quota \(soft\)" "$(cat "$TMP/daemon.log")"

# Reconciliation: a reservation of 80 that really used 30, one of 10 that
# used 25.
out=$("$ACQ" reserve "$SOCK" - rec 80)
res=$(echo "$out" | awk '{ print $NF }')
out=$("$RAWCLIENT" -n 1 "$SOCK" req:quota_commit:1:tenant_id=rec,reservation=$res,estimate=80,actual=30)
expect_match "commit down" "^ok 1" "$out"
out=$("$LLMGUARDCTL" -s "$SOCK" quota rec --tenant)
expect_match "80 reserved, 30 used: 30 counted" "tokens_used +30$" "$out"
out=$("$RAWCLIENT" -n 1 "$SOCK" req:quota_commit:2:tenant_id=rec,reservation=$res,estimate=10,actual=25)
out=$("$LLMGUARDCTL" -s "$SOCK" quota show rec --tenant)
expect_match "10 reserved, 25 used: 15 more" "tokens_used +45$" "$out"

# A reservation handle from the future (it would never leave the window)
# or off the slot grid is refused.
out=$("$RAWCLIENT" -n 2 "$SOCK" req:quota_commit:3:tenant_id=rec,reservation=32503680000000,estimate=0,actual=1000 \
    req:quota_commit:4:tenant_id=rec,reservation=1001,estimate=0,actual=1000 | tr '\n' '|')
expect_match "forged reservations are refused" "^err 3 bad_request reservation 32503680000000 is not one quota_reserve gave\|err 4 bad_request reservation 1001 is not one" "$out"
out=$("$LLMGUARDCTL" -s "$SOCK" quota show rec --tenant)
expect_match "and charged nothing" "tokens_used +45$" "$out"

# Bad ids and missing subjects get clear errors; the connection lives.
out=$("$RAWCLIENT" "$SOCK" req:quota_reserve:1:tokens=5 \
    "req:quota_reserve:2:workflow_id=,tokens=5" \
    req:quota_status:3:workflow_id=a,tenant_id=b \
    req:quota_reserve:4:workflow_id=x | tr '\n' '|')
expect_eq "quota bad requests" "err 1 bad_request give workflow_id, tenant_id or both|err 2 bad_request workflow_id must be 1 to 256 bytes, not 0|err 3 bad_request give workflow_id or tenant_id, not both|err 4 bad_request missing field 'tokens'|open|" "$out"
long=$(head -c 257 /dev/zero | tr '\0' a)
out=$("$ACQ" reserve "$SOCK" "$long" - 1)
expect_match "a 257-byte id is refused" "^error -6 bad_request: workflow_id must be 1 to 256 bytes, not 257" "$out"
out=$("$ACQ" reserve "$SOCK" "$(printf 'a\tb')" - 1)
expect_match "an id with a control character is refused" "^error -6 bad_request: workflow_id holds a control character" "$out"

# The CLI: an unseen id is used 0 with the default limit, not an error.
out=$("$LLMGUARDCTL" -s "$SOCK" quota never-seen)
expect_match "unseen id: used 0" "tokens_used +0$" "$out"
expect_match "unseen id: default limit" "tokens_limit +100$" "$out"
expect_match "unseen id: reset_at -" "reset_at +-$" "$out"
expect_match "ISO-8601 times" "window_end +[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$" "$out"
out=$("$LLMGUARDCTL" -s "$SOCK" quota set soft 500)
expect_eq "quota set" "workflow:soft: limit set to 500 tokens" "$out"
out=$("$LLMGUARDCTL" -s "$SOCK" --json quota soft)
expect_match "the override applies" '"tokens_remaining": ?340, ?"tokens_limit": ?500' "$out"
out=$("$LLMGUARDCTL" -s "$SOCK" quota reset soft)
expect_eq "quota reset" "workflow:soft: usage reset" "$out"
out=$("$LLMGUARDCTL" -s "$SOCK" --json quota soft)
expect_match "reset clears the usage, keeps the override" '"tokens_used": ?0, ?"tokens_remaining": ?500, ?"tokens_limit": ?500' "$out"
"$LLMGUARDCTL" -s "$SOCK" quota set soft lots 2>/dev/null
expect_eq "quota set with a bad number exits 2" 2 $?
"$LLMGUARDCTL" -s "$SOCK" quota set soft "" 2>/dev/null
expect_eq "quota set with an empty number exits 2" 2 $?

# Admin ops from another uid: permission_denied, exit 77.
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
    stop_daemon
    chmod 0755 "$TMP"
    printf 'LLMGUARD_SOCKET_MODE=0666\n' > "$TMP/shared.env"
    ENVFILE="$TMP/shared.env" start_daemon
    as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
    out=$(as_nobody "$LLMGUARDCTL" -s "$SOCK" quota x)
    expect_match "another uid may read a quota" "tokens_used +0$" "$out"
    as_nobody "$LLMGUARDCTL" -s "$SOCK" quota set x 5 2>"$TMP/err"
    expect_eq "another uid may not set one: exit 77" 77 $?
    expect_match "permission_denied" "permission_denied: quota_set is an admin op: uid 65534" "$(cat "$TMP/err")"
    as_nobody "$LLMGUARDCTL" -s "$SOCK" quota reset x 2>/dev/null
    expect_eq "nor reset one: exit 77" 77 $?
    check "root may" "$LLMGUARDCTL" -s "$SOCK" quota set x 5
    chmod 0700 "$TMP"
fi
finish
