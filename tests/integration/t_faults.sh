#!/bin/sh
# Faults: SIGKILL under load, SIGTERM under load, a full and a read-only
# file system under the database, a client that dies, clients that
# reconnect by themselves, a stuck HTTP scraper.  The disk tests run as
# root in a private mount namespace (unshare -m) on a small tmpfs.
if [ "$(id -u)" = 0 ] && [ -z "${IN_MOUNT_NS:-}" ] &&
   command -v unshare >/dev/null && unshare -m true 2>/dev/null; then
    IN_MOUNT_NS=1 exec unshare -m sh "$0" "$@"
fi
. "${top_srcdir:-.}/tests/integration/lib.sh"
ACQ="$top_builddir/tests/integration/acquirer"

# SIGKILL under load (flush 50 ms): what comes back is what was
# acknowledged, less at most about one flush interval of it.
printf 'LLMGUARD_QUOTA_FLUSH_MS=50\nDEFAULT_DAILY_QUOTA_TOKENS=1000000000\n' > "$TMP/k.env"
ENVFILE="$TMP/k.env" start_daemon
"$ACQ" reconnect "$SOCK" 4 > "$TMP/reconnect.out" &
RECON=$!
"$ACQ" qload "$SOCK" load 4 1 30 > "$TMP/load.out" &
LOAD=$!
sleep 1.5
kill9
wait $LOAD
acked=$(awk '{ print $2 }' "$TMP/load.out")
sleep 0.5           # the long-lived handle sees the daemon gone
ENVFILE="$TMP/k.env" start_daemon
back=$(used load)
rate=$(awk -v a="$acked" 'BEGIN { printf "%d", a / 1.5 }')
echo "# acknowledged $acked tokens in ~1.5 s ($rate/s), $back after the restart"
check "SIGKILL: nothing comes back that was not acknowledged ($back <= $acked)" test "$back" -le "$acked"
check "SIGKILL: at most ~3 flush intervals lost ($((acked - back)) <= $((rate * 15 / 100 + 10)))" \
    test $((acked - back)) -le $((rate * 15 / 100 + 10))
expect_eq "SIGKILL: the database passes PRAGMA integrity_check" ok "$(sqlite3 "$DB" 'PRAGMA integrity_check')"
wait $RECON
expect_match "a long-lived handle failed while the daemon was down and recovered by itself" \
    "^ok [0-9]+ failed [1-9][0-9]* last ok$" "$(cat "$TMP/reconnect.out")"

# SIGTERM under load (flush 60 s: only the shutdown flush writes): it
# drains, flushes, and nothing acknowledged is lost.
stop_daemon
printf 'LLMGUARD_QUOTA_FLUSH_MS=60000\nDEFAULT_DAILY_QUOTA_TOKENS=1000000000\n' > "$TMP/t.env"
ENVFILE="$TMP/t.env" start_daemon
"$ACQ" qload "$SOCK" term 4 1 30 > "$TMP/load.out" &
LOAD=$!
sleep 1
stop_daemon
wait $LOAD
acked=$(awk '{ print $2 }' "$TMP/load.out")
expect_eq "SIGTERM under load: exit 0" 0 "$STOP_STATUS"
ENVFILE="$TMP/t.env" start_daemon
back=$(used term)
echo "# acknowledged $acked, $back after the restart"
check "SIGTERM: every acknowledged token is back ($acked <= $back <= $acked + 4)" \
    sh -c "[ $back -ge $acked ] && [ $back -le $((acked + 4)) ]"
stop_daemon

# A client that dies while waiting frees its place (see also t_limiter.sh).
printf 'PROVIDER_SLOW_RATE_PER_SEC=0.2\n' > "$TMP/w.env"
ENVFILE="$TMP/w.env" start_daemon
"$ACQ" once "$SOCK" slow 1 0 >/dev/null
"$ACQ" once "$SOCK" slow 1 60 >/dev/null &
W=$!
for _ in $(seq 1 100); do "$ACQ" status "$SOCK" slow | grep -q "waiters 1$" && break; sleep 0.05; done
kill -KILL $W; wait $W 2>/dev/null
for _ in $(seq 1 100); do "$ACQ" status "$SOCK" slow | grep -q "waiters 0$" && break; sleep 0.05; done
expect_match "a waiter that died left the queue" "waiters 0$" "$("$ACQ" status "$SOCK" slow)"

# A stuck HTTP scraper does not slow permits down.
stop_daemon
PORT=$(free_port)
printf 'PROVIDER_FAST_RATE_PER_SEC=100000\nLLMGUARD_METRICS_LISTEN=127.0.0.1:%s\n' "$PORT" > "$TMP/h.env"
ENVFILE="$TMP/h.env" start_daemon
"$ACQ" tcp-idle 127.0.0.1 "$PORT" 200 3 > "$TMP/idle.out" &
IDLE=$!
sleep 0.5
out=$("$ACQ" race "$SOCK" fast 2 1)
expect_match "200 stuck HTTP connections: permits still flow" "^grants [0-9]{3,} " "$out"
wait $IDLE
expect_match "the scrapers were connected" "^holding 200 connections" "$(cat "$TMP/idle.out")"
expect_eq "and /healthz answers afterwards" ok \
    "$(curl -sf "http://127.0.0.1:$PORT/healthz" | jq -r .status)"
stop_daemon

# A database file the daemon may not write (as root nothing is read-only,
# so the daemon runs as nobody): it loads it, serves from memory, says so,
# and writes everything once the file is writable again.
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
    chmod 0755 "$TMP"
    mkdir "$TMP/ro"
    chown 65534:65534 "$TMP/ro"
    OLDSOCK=$SOCK
    SOCK="$TMP/ro/s.sock"
    export DAEMON_WRAP="setpriv --reuid=65534 --regid=65534 --clear-groups"
    chmod 0644 "$TMP/empty.env"
    DB_OVERRIDE="$TMP/ro/q.db" start_daemon
    "$ACQ" reserve "$SOCK" rofile - 5 >/dev/null
    stop_daemon
    chmod 0444 "$TMP/ro/q.db"*
    DB_OVERRIDE="$TMP/ro/q.db" start_daemon
    expect_match "read-only file: a clear error at start" \
        "database $TMP/ro/q.db: open: the file is read-only: serving from memory" "$(cat "$TMP/daemon.log")"
    out=$("$ACQ" reserve "$SOCK" rofile - 7)
    expect_match "read-only file: the daemon serves, usage loaded (5 + 7)" "^allowed over 0 subject workflow:rofile used 12 " "$out"
    sleep 0.3
    check "read-only file: the daemon still answers" "$LLMGUARDCTL" -s "$SOCK" ping
    # The database and its -wal/-shm files (SQLite gives them the database's
    # mode) become writable again.
    chmod 0644 "$TMP/ro/q.db"*
    "$ACQ" reserve "$SOCK" rofile - 1 >/dev/null
    for _ in $(seq 1 60); do grep -q "ro/q.db works again" "$TMP/daemon.log" && break; sleep 0.1; done
    expect_match "writable again: writes resume by themselves" "ro/q.db works again" "$(cat "$TMP/daemon.log")"
    stop_daemon
    DB_OVERRIDE="$TMP/ro/q.db" start_daemon
    expect_eq "writable again: nothing was lost" 13 "$(used rofile)"
    stop_daemon
    unset DAEMON_WRAP
    SOCK=$OLDSOCK
    chmod 0700 "$TMP"
fi

if [ -z "${IN_MOUNT_NS:-}" ]; then
    echo "# not root or no mount namespace: full/read-only disk tests skipped"
    finish
fi

# A full file system: a 2 MiB tmpfs, filled.
mkdir "$TMP/disk"
mount -t tmpfs -o size=2m tmpfs "$TMP/disk"
printf 'LLMGUARD_QUOTA_FLUSH_MS=20\nDEFAULT_DAILY_QUOTA_TOKENS=1000000\n' > "$TMP/d.env"
DB_OVERRIDE="$TMP/disk/q.db" ENVFILE="$TMP/d.env" start_daemon
"$ACQ" reserve "$SOCK" before-full - 5 >/dev/null
sleep 0.2
dd if=/dev/zero of="$TMP/disk/filler" bs=4k 2>/dev/null
out=$("$ACQ" fill "$SOCK" full- 20000)
expect_eq "disk full: reservations keep being answered" "filled 20000" "$out"
sleep 0.5
expect_match "disk full: the write failure is logged" "writing quotas to $TMP/disk/q.db failed, will retry: .*(full|disk)" "$(cat "$TMP/daemon.log")"
errs=$("$LLMGUARDCTL" -s "$SOCK" metrics --prometheus | awk '/^llmguard_store_write_errors_total/ { print $2 }')
check "disk full: llmguard_store_write_errors_total counts it (${errs:-0})" test "${errs:-0}" -gt 0
check "disk full: the daemon answers" "$LLMGUARDCTL" -s "$SOCK" ping
rm -f "$TMP/disk/filler"
for _ in $(seq 1 60); do grep -q "disk/q.db works again" "$TMP/daemon.log" && break; sleep 0.1; done
expect_match "space back: writes resume by themselves" "writing quotas to $TMP/disk/q.db works again" "$(cat "$TMP/daemon.log")"
stop_daemon
DB_OVERRIDE="$TMP/disk/q.db" ENVFILE="$TMP/d.env" start_daemon
expect_eq "after a restart, usage from the full-disk period is there" 1 "$(used full-19999)"
expect_eq "and from before" 5 "$(used before-full)"
stop_daemon

# The same with LLMGUARD_QUOTA_FLUSH_MS=0: a reply waits for its commit,
# and a failed commit lets it go at once; while writes fail, replies do not
# wait for the retry (they took 1 s each, the retry interval).
rm -f "$TMP/disk/q.db"*
printf 'LLMGUARD_QUOTA_FLUSH_MS=0\nDEFAULT_DAILY_QUOTA_TOKENS=1000000\n' > "$TMP/d0.env"
DB_OVERRIDE="$TMP/disk/q0.db" ENVFILE="$TMP/d0.env" start_daemon
"$ACQ" reserve "$SOCK" before-full0 - 5 >/dev/null
"$ACQ" reserve "$SOCK" before-full0 - 2 >/dev/null
dd if=/dev/zero of="$TMP/disk/filler" bs=4k 2>/dev/null
out=$("$ACQ" reserves "$SOCK" full0 20 1)
echo "# flush 0, disk full: $out"
max_ms=$(echo "$out" | awk '{ print $4 }')
expect_match "flush 0, disk full: 20 reservations answered" "^reserved 20 " "$out"
expect_match "flush 0, disk full: the commits failed" "writing quotas to $TMP/disk/q0.db failed, will retry: .*(full|disk)" "$(cat "$TMP/daemon.log")"
check "flush 0, disk full: each answered within a few ms (max ${max_ms:-?} ms < 200)" \
    awk -v m="${max_ms:-1e9}" 'BEGIN { exit !(m < 200) }'
rm -f "$TMP/disk/filler"
for _ in $(seq 1 60); do grep -q "disk/q0.db works again" "$TMP/daemon.log" && break; sleep 0.1; done
expect_match "flush 0, space back: writes resume by themselves" "writing quotas to $TMP/disk/q0.db works again" "$(cat "$TMP/daemon.log")"
kill9
DB_OVERRIDE="$TMP/disk/q0.db" ENVFILE="$TMP/d0.env" start_daemon
expect_eq "flush 0: what was acknowledged before the disk filled is there" 7 "$(used before-full0)"
expect_eq "flush 0: and what was answered while it was full, once written" 20 "$(used full0)"
stop_daemon

umount "$TMP/disk"

finish
