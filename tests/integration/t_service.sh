#!/bin/sh
# Under a service manager: the socket of llmguardd.socket handed over by
# sd_listen_fds (socket activation, with systemd-socket-activate standing
# in for systemd), and a descriptor that is not a listening socket.
. "${top_srcdir:-.}/tests/integration/lib.sh"

if ! command -v systemd-socket-activate >/dev/null; then
    echo "systemd-socket-activate not found (Debian: systemd): skipped"
    exit 77
fi
if ! grep -q "define HAVE_LIBSYSTEMD 1" "$top_builddir/config.h"; then
    echo "built without libsystemd: no socket activation; skipped"
    exit 77
fi
ACT="$TMP/activated.sock"

# The manager listens first; the daemon starts with the first connection
# and serves it on the socket it was given.
systemd-socket-activate -l "$ACT" "$LLMGUARDD" --db "$DB" \
    --env-file "$TMP/empty.env" 2>>"$TMP/daemon.log" &
DAEMON_PID=$!
DAEMON_PIDS="$DAEMON_PIDS $DAEMON_PID"
for _ in $(seq 1 100); do [ -S "$ACT" ] && break; sleep 0.05; done
out=$("$LLMGUARDCTL" -s "$ACT" ping 2>&1)
expect_match "the first connection starts the daemon, which answers it" \
    "is alive" "$out"
expect_match "it took the socket it was passed" \
    "listening on $ACT \(passed by the service manager\)" \
    "$(cat "$TMP/daemon.log")"
out=$("$LLMGUARDCTL" -s "$ACT" status 2>&1)
expect_match "later connections are served too" "^enforcement +soft" "$out"
stop_daemon
expect_eq "SIGTERM stops it cleanly" 0 "$STOP_STATUS"
check "the socket stays the manager's: not removed at exit" test -S "$ACT"

# A descriptor that is not a listening Unix socket: refused, exit 78.
out=$(sh -c 'exec env LISTEN_PID=$$ LISTEN_FDS=1 "$0" --db "$1" --env-file "$2" 3</dev/null' \
    "$LLMGUARDD" "$TMP/other.db" "$TMP/empty.env" 2>&1)
status=$?
expect_eq "a passed descriptor that is not a socket: exit 78" 78 "$status"
expect_match "and says why" "expected one listening Unix stream socket" "$out"
finish
