#!/bin/sh
# Hostile input and load: wrong types for every field, huge strings, random
# bytes; 5000 concurrent waiting clients served in order; a client that
# pipelines without reading is bounded and dropped; the daemon serves on.
. "${top_srcdir:-.}/tests/integration/lib.sh"
HOSTILE="$top_builddir/tests/integration/hostile"
CROWD="$top_builddir/tests/integration/crowd"

printf 'PROVIDER_GROQ_RATE_PER_SEC=1000\nPROVIDER_GROQ_BURST=1\n' > "$TMP/h.env"
ENVFILE="$TMP/h.env" start_daemon

"$HOSTILE" "$SOCK" groq
expect_eq "hostile requests all answered as expected" 0 $?
check "the daemon still answers" "$LLMGUARDCTL" -s "$SOCK" ping

# 5000 clients each holding a waiting acquire, granted at 1000/s in order.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
out=$("$CROWD" waiters "$SOCK" groq 5000 "$DAEMON_PID")
rc=$?
echo "$out" | sed 's/^/# /'
expect_eq "5000 waiting clients: all served, in arrival order" 0 "$rc"
check "the daemon still answers" "$LLMGUARDCTL" -s "$SOCK" ping

# A client that writes 200000 pings and reads nothing: the daemon stops
# reading it at 1 MiB of unread replies and drops it after 10 s, while its
# memory stays bounded and others are served.
rss0=$(awk '/^VmRSS/ { print $2 }' /proc/$DAEMON_PID/status)
"$CROWD" flood "$SOCK" 200000 > "$TMP/flood.out" &
FLOOD=$!
sleep 2
rss1=$(awk '/^VmRSS/ { print $2 }' /proc/$DAEMON_PID/status)
check "while flooded, others are served" "$LLMGUARDCTL" -s "$SOCK" ping
echo "# RSS ${rss0} KiB -> ${rss1} KiB during the flood"
check "memory grew by less than 16 MiB ($rss0 -> $rss1 KiB)" test $((rss1 - rss0)) -lt 16384
wait $FLOOD
echo "$(cat "$TMP/flood.out")" | sed 's/^/# /'
expect_match "the flooding client is dropped" "^dropped after" "$(tail -1 "$TMP/flood.out")"
expect_match "and the daemon says why" "read none of its [0-9]+ bytes of replies for 10 s" "$(cat "$TMP/daemon.log")"
check "the daemon still answers" "$LLMGUARDCTL" -s "$SOCK" ping
finish
