#!/bin/sh
# Durability: SIGKILL after a flush interval keeps what was flushed; with
# LLMGUARD_QUOTA_FLUSH_MS=0 every acknowledged reservation survives SIGKILL;
# SIGTERM loses nothing.
. "${top_srcdir:-.}/tests/integration/lib.sh"
ACQ="$top_builddir/tests/integration/acquirer"


# Flush every 50 ms: after 300 ms everything is on disk.
printf 'LLMGUARD_QUOTA_FLUSH_MS=50\n' > "$TMP/f50.env"
ENVFILE="$TMP/f50.env" start_daemon
for i in 1 2 3 4 5 6 7 8 9 10; do "$ACQ" reserve "$SOCK" k50 - 11 >/dev/null; done
expect_eq "110 used before the kill" 110 "$(used k50)"
sleep 0.3
kill9
ENVFILE="$TMP/f50.env" start_daemon
expect_eq "SIGKILL after a flush interval: 110 after restart" 110 "$(used k50)"
stop_daemon

# Flush 0: kill right after the last acknowledgement.
printf 'LLMGUARD_QUOTA_FLUSH_MS=0\n' > "$TMP/f0.env"
ENVFILE="$TMP/f0.env" start_daemon
out=$("$ACQ" qrace "$SOCK" k0 4 3 25)
expect_eq "flush 0: 100 reservations acknowledged" "allowed 100 refused 0" "$out"
kill9
ENVFILE="$TMP/f0.env" start_daemon
expect_eq "flush 0 + SIGKILL: every acknowledged token is there" 300 "$(used k0)"
stop_daemon

# A long flush interval and SIGTERM: the shutdown flush writes it all.
printf 'LLMGUARD_QUOTA_FLUSH_MS=60000\n' > "$TMP/f60.env"
ENVFILE="$TMP/f60.env" start_daemon
"$ACQ" qrace "$SOCK" kt 4 5 10 >/dev/null
stop_daemon
expect_eq "SIGTERM exits 0" 0 "$STOP_STATUS"
ENVFILE="$TMP/f60.env" start_daemon
expect_eq "SIGTERM loses nothing: 200 after restart" 200 "$(used kt)"
expect_eq "the database is intact" ok "$(sqlite3 "$DB" 'PRAGMA integrity_check')"
expect_eq "schema version 2" 2 "$(sqlite3 "$DB" 'PRAGMA user_version')"
expect_eq "WAL mode" wal "$(sqlite3 "$DB" 'PRAGMA journal_mode')"
finish
