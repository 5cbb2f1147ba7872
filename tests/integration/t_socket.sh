#!/bin/sh
# Socket rules of llmguardd(8), "The socket": live vs stale, default
# directory checks.
. "${top_srcdir:-.}/tests/integration/lib.sh"

start_daemon
FIRST=$DAEMON_PID
mode=$(stat -c %a "$SOCK")
expect_eq "socket mode 0600 by default" 600 "$mode"

: > "$TMP/empty.env"
"$LLMGUARDD" --socket "$SOCK" --db "$TMP/b.db" --env-file "$TMP/empty.env" 2>"$TMP/second.log"
expect_eq "a second daemon on a live socket exits 1" 1 $?
expect_match "it says another is running" "already running on $SOCK" "$(cat "$TMP/second.log")"
check "the first daemon still answers" "$LLMGUARDCTL" -s "$SOCK" ping

# A stale socket: the daemon died without removing it.
kill -KILL "$FIRST"
wait "$FIRST" 2>/dev/null
DAEMON_PIDS=""
check "stale socket left behind" test -S "$SOCK"
start_daemon
check "a new daemon replaced the stale socket" "$LLMGUARDCTL" -s "$SOCK" ping
expect_match "and said so" "removing stale socket" "$(cat "$TMP/daemon.log")"
stop_daemon

# A regular file where the socket should be is never deleted.
echo keep > "$SOCK"
"$LLMGUARDD" --socket "$SOCK" --db "$DB" --env-file "$TMP/empty.env" 2>"$TMP/file.log"
expect_eq "a file in the way: exit 78" 78 $?
expect_eq "the file is kept" keep "$(cat "$SOCK")"
rm -f "$SOCK"

# Default path: per-user directory under XDG_RUNTIME_DIR, created 0700.
mkdir -p "$TMP/xdg"
XDG_RUNTIME_DIR="$TMP/xdg" "$LLMGUARDD" --db "$DB" --env-file "$TMP/empty.env" 2>>"$TMP/daemon.log" &
DAEMON_PID=$!
DAEMON_PIDS="$DAEMON_PIDS $DAEMON_PID"
for _ in $(seq 1 100); do
    [ -S "$TMP/xdg/llmguard/llmguardd.sock" ] && break
    sleep 0.05
done
check "default socket in \$XDG_RUNTIME_DIR/llmguard" test -S "$TMP/xdg/llmguard/llmguardd.sock"
expect_eq "its directory is 0700" 700 "$(stat -c %a "$TMP/xdg/llmguard")"
out=$(XDG_RUNTIME_DIR="$TMP/xdg" "$LIBPING")
expect_eq "the library finds the default path" "pong $TMP/xdg/llmguard/llmguardd.sock" "$out"
stop_daemon

# A default directory that others can write is refused.
mkdir -p "$TMP/bad/llmguard"
chmod 0777 "$TMP/bad/llmguard"
XDG_RUNTIME_DIR="$TMP/bad" "$LLMGUARDD" --db "$DB" --env-file "$TMP/empty.env" 2>"$TMP/bad.log"
expect_eq "world-writable socket directory: exit 78" 78 $?
expect_match "says why" "writable by others" "$(cat "$TMP/bad.log")"

# A socket shared with a group: LLMGUARD_SOCKET_MODE and _GROUP.
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null && getent group nogroup >/dev/null; then
    chmod 0755 "$TMP"
    printf 'LLMGUARD_SOCKET_MODE=0660\nLLMGUARD_SOCKET_GROUP=nogroup\n' > "$TMP/shared.env"
    ENVFILE="$TMP/shared.env" start_daemon
    expect_eq "LLMGUARD_SOCKET_MODE=0660 and _GROUP=nogroup applied" "660 nogroup" "$(stat -c '%a %G' "$SOCK")"
    out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$LLMGUARDCTL" -s "$SOCK" ping)
    expect_match "a member of the group may connect" "is alive" "$out"
    setpriv --reuid=65533 --regid=65533 --clear-groups "$LLMGUARDCTL" -s "$SOCK" ping 2>"$TMP/err"
    expect_eq "anyone else: EACCES, exit 77" 77 $?
    expect_match "and says so" "Permission denied" "$(cat "$TMP/err")"
    out=$(setpriv --reuid=65533 --regid=65533 --clear-groups "$LIBPING" "$SOCK")
    expect_match "the library says EPERM" "^error -5 permission denied" "$out"
    stop_daemon
    chmod 0700 "$TMP"
fi

# One owned by someone else is refused too (needs root to chown).
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$TMP/other/llmguard"
    chmod 0700 "$TMP/other/llmguard"
    chown 65534 "$TMP/other/llmguard"
    XDG_RUNTIME_DIR="$TMP/other" "$LLMGUARDD" --db "$DB" --env-file "$TMP/empty.env" 2>"$TMP/other.log"
    expect_eq "socket directory owned by another uid: exit 78" 78 $?
    expect_match "says who owns it" "owned by uid 65534" "$(cat "$TMP/other.log")"
fi
finish
