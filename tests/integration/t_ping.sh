#!/bin/sh
# Ping a private daemon through the library and the CLI.
. "${top_srcdir:-.}/tests/integration/lib.sh"

start_daemon

out=$("$LIBPING" "$SOCK")
expect_eq "libllmguard ping" "pong $SOCK" "$out"

out=$(LLMGUARD_SOCKET="$SOCK" "$LIBPING")
expect_eq "llmguard_open(NULL) uses LLMGUARD_SOCKET" "pong $SOCK" "$out"

out=$("$LLMGUARDCTL" -s "$SOCK" ping)
expect_match "llmguardctl ping" "^llmguardd on $SOCK is alive" "$out"

out=$("$LLMGUARDCTL" --socket "$SOCK" --json ping)
expect_match "llmguardctl --json ping" '^\{"ok": ?true, ?"socket": ?"[^"]+", ?"uptime_s": ?[0-9.e-]+\}$' "$out"

out=$(LLMGUARD_SOCKET="$SOCK" "$LLMGUARDCTL" pi)
expect_match "unique prefix of a command" "is alive" "$out"

"$LLMGUARDCTL" -s "$SOCK" frobnicate 2>"$TMP/err"
expect_eq "unknown command exits 2" 2 $?
expect_match "unknown command lists the valid ones" "valid commands: ping" "$(cat "$TMP/err")"

"$LLMGUARDCTL" -s "$SOCK" ping extra 2>/dev/null
expect_eq "extra argument exits 2" 2 $?

out=$("$LLMGUARDCTL" --help)
expect_match "help is generated from the command table" "ping +check that llmguardd answers" "$out"

# A hello with the right and a wrong version.
out=$("$RAWCLIENT" -n 1 "$SOCK" raw:00000017$(printf '83a26f70a568656c6c6fa2696401a776657273696f6e01' ) )
expect_match "hello version 1" "^ok 1" "$out"
out=$("$RAWCLIENT" -n 1 "$SOCK" raw:00000017$(printf '83a26f70a568656c6c6fa2696402a776657273696f6e09'))
expect_match "hello version 9 is refused" "^err 2 version " "$out"

stop_daemon
expect_eq "SIGTERM exits 0" 0 "$STOP_STATUS"
check "socket removed at exit" test ! -e "$SOCK"

out=$("$LIBPING" "$SOCK")
expect_match "no daemon: EUNAVAIL" "^error -1 llmguardd is unreachable" "$out"
"$LLMGUARDCTL" -s "$SOCK" ping 2>"$TMP/err"
expect_eq "no daemon: llmguardctl exits 69" 69 $?
expect_match "no daemon: says so" "no llmguardd on $SOCK" "$(cat "$TMP/err")"

# The library reconnects by itself after a restart: a long-lived handle is
# exercised by the CLI and libping; here a fresh daemon on the same path.
start_daemon
out=$("$LIBPING" "$SOCK")
expect_eq "ping after restart" "pong $SOCK" "$out"
finish
