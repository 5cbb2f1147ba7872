#!/bin/sh
# Who is burning quota: quota list (top users, --tenant, --top, --json),
# quota unset (drop an override; admin), and an id that was never seen.
. "${top_srcdir:-.}/tests/integration/lib.sh"
ACQ="$top_builddir/tests/integration/acquirer"

printf 'DEFAULT_DAILY_QUOTA_TOKENS=1000\n' > "$TMP/q.env"
ENVFILE="$TMP/q.env" start_daemon
"$ACQ" reserve "$SOCK" small acme 10 > /dev/null
"$ACQ" reserve "$SOCK" big acme 300 > /dev/null
"$ACQ" reserve "$SOCK" mid globex 50 > /dev/null
"$ACQ" reserve "$SOCK" big - 200 > /dev/null

out=$("$LLMGUARDCTL" -s "$SOCK" quota list)
expect_match "quota list: the header" "^SUBJECT +USED +LIMIT +REMAINING$" "$out"
expect_eq "quota list: most used first" \
    "workflow:big workflow:mid workflow:small" \
    "$(echo "$out" | awk '/^workflow:/ { printf "%s%s", s, $1; s = " " }')"
expect_match "quota list: used, limit, remaining" \
    "^workflow:big +500 +1000  +500$" "$out"
expect_match "quota list: how many of how many" "^3 of 3 workflows$" "$out"
out=$("$LLMGUARDCTL" -s "$SOCK" quota list --top 2)
expect_match "--top 2: two, and says there are more" \
    "^2 of 3 workflows \(--top N for more\)$" "$out"
out=$("$LLMGUARDCTL" -s "$SOCK" quota list --tenant)
expect_eq "--tenant: the tenants, most used first" "tenant:acme tenant:globex" \
    "$(echo "$out" | awk '/^tenant:/ { printf "%s%s", s, $1; s = " " }')"
out=$("$LLMGUARDCTL" -s "$SOCK" --json quota list --top 1)
expect_eq "--json: the subjects and the total" \
    '{"subjects":[{"subject":"workflow:big","tokens_used":500,"tokens_limit":1000,"tokens_remaining":500,"override":false}],"total":3}' \
    "$(echo "$out" | jq -c .)"
"$LLMGUARDCTL" -s "$SOCK" quota list --top 0 > /dev/null 2> "$TMP/err"
expect_eq "--top 0: refused by the daemon (exit 1)" 1 $?
expect_match "and says why" "top must be 1 to 100" "$(cat "$TMP/err")"
"$LLMGUARDCTL" -s "$SOCK" quota list --top many > /dev/null 2>&1
expect_eq "--top many: a usage error" 2 $?

# An override, shown with a star, then dropped.
"$LLMGUARDCTL" -s "$SOCK" quota set small 20 > /dev/null
out=$("$LLMGUARDCTL" -s "$SOCK" quota list)
expect_match "an override is starred" "^workflow:small +10 +20\* +10$" "$out"
out=$("$LLMGUARDCTL" -s "$SOCK" quota unset small)
expect_eq "quota unset: back to the default" \
    "workflow:small: override dropped, the default of 1000 tokens applies" "$out"
out=$("$LLMGUARDCTL" -s "$SOCK" --json quota small)
expect_match "the default applies again" '"tokens_limit": ?1000,' "$out"
out=$("$LLMGUARDCTL" -s "$SOCK" --json quota unset globex --tenant)
expect_eq "quota unset --tenant --json" \
    '{"subject":"tenant:globex","tokens_limit":1000}' "$(echo "$out" | jq -c .)"
stop_daemon
ENVFILE="$TMP/q.env" start_daemon
out=$("$LLMGUARDCTL" -s "$SOCK" --json quota small)
expect_match "the unset survives a restart" '"tokens_limit": ?1000,' "$out"

# An id never seen: said, still exit 0, used 0.
"$LLMGUARDCTL" -s "$SOCK" quota nobody > "$TMP/out" 2> "$TMP/err"
expect_eq "a never-seen id: exit 0" 0 $?
expect_match "and says so" "workflow:nobody: never seen" "$(cat "$TMP/err")"
expect_match "used 0" "^tokens_used +0$" "$(cat "$TMP/out")"
out=$("$LLMGUARDCTL" -s "$SOCK" --json quota nobody)
expect_match "--json: known false" '"known": ?false' "$out"
out=$("$LLMGUARDCTL" -s "$SOCK" --json quota big)
expect_match "a seen one: known true" '"known": ?true' "$out"
out=$("$LLMGUARDCTL" -s "$SOCK" quota show list)
expect_match "an id spelled like a command: quota show ID" \
    "^subject +workflow:list$" "$out"

# quota unset is an admin op: refused to another user.
if [ "$(id -u)" = 0 ] && id nobody > /dev/null 2>&1; then
    chmod 0777 "$TMP" && chmod 0666 "$SOCK"
    su -s /bin/sh nobody -c "'$LLMGUARDCTL' -s '$SOCK' quota unset big" \
        > /dev/null 2>&1
    expect_eq "quota unset by another uid: exit 77" 77 $?
fi
finish
