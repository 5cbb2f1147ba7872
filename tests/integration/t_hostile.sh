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
# Out of descriptors: with a limit of 40, 100 clients at once.  The daemon
# pauses accepting (it does not spin on EMFILE), serves those it has, and
# accepts again once descriptors are free.
stop_daemon
if command -v prlimit >/dev/null; then
    DAEMON_WRAP="prlimit --nofile=40:40" ENVFILE="$TMP/h.env" start_daemon
    "$CROWD" hold "$SOCK" 100 3 > "$TMP/hold.out" &
    HOLD=$!
    for _ in $(seq 1 100); do grep -q "pausing new connections" "$TMP/daemon.log" && break; sleep 0.05; done
    expect_match "EMFILE: accepting pauses, and says so" "accept: Too many open files with [0-9]+ connections: pausing new connections" "$(cat "$TMP/daemon.log")"
    t0=$(awk '{ print $14 + $15 }' /proc/$DAEMON_PID/stat)
    sleep 1
    t1=$(awk '{ print $14 + $15 }' /proc/$DAEMON_PID/stat)
    echo "# daemon CPU while paused: $((t1 - t0)) ticks in 1 s"
    check "EMFILE: the daemon does not spin (CPU $((t1 - t0)) of 100 ticks)" test $((t1 - t0)) -lt 50
    wait $HOLD
    check "descriptors free again: accepting resumes" "$LLMGUARDCTL" -s "$SOCK" ping
    stop_daemon
fi
finish
