# lib.sh - shared by the integration tests: a private daemon on a temporary
# socket and database, always stopped and removed, even when a test fails.
# Sourced by each t_*.sh; top_builddir and top_srcdir come from make check.

set -u
: "${top_builddir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${top_srcdir:=$top_builddir}"
LLMGUARDD="$top_builddir/daemon/llmguardd"
LLMGUARDCTL="$top_builddir/cli/llmguardctl"
RAWCLIENT="$top_builddir/tests/integration/rawclient"
LIBPING="$top_builddir/tests/integration/libping"

TMP=$(mktemp -d /tmp/llmguard-test.XXXXXX)
SOCK="$TMP/llmguardd.sock"
DB="$TMP/llmguard.db"
DAEMON_PIDS=""
: > "$TMP/empty.env"
FAILS=0
# Keep the developer's own settings out of the tests.
unset LLMGUARD_SOCKET LLMGUARD_DB REDIS_URL XDG_RUNTIME_DIR
for v in $(env | sed -n 's/^\(PROVIDER_[A-Z0-9_]*\)=.*/\1/p'); do unset "$v"; done

cleanup() {
    for pid in $DAEMON_PIDS; do
        kill -TERM "$pid" 2>/dev/null
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# start_daemon [ARGS...]: start llmguardd on $SOCK, wait until it answers.
# Its stderr goes to $TMP/daemon.log; env from ENVFILE (default: empty).
start_daemon() {
    : > "$TMP/empty.env"
    "$LLMGUARDD" --socket "$SOCK" --db "${DB_OVERRIDE:-$DB}" \
        --env-file "${ENVFILE:-$TMP/empty.env}" "$@" 2>>"$TMP/daemon.log" &
    DAEMON_PID=$!
    DAEMON_PIDS="$DAEMON_PIDS $DAEMON_PID"
    for _ in $(seq 1 100); do
        if "$LLMGUARDCTL" -s "$SOCK" ping >/dev/null 2>&1; then
            return 0
        fi
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "daemon did not start; its log:" >&2
    cat "$TMP/daemon.log" >&2
    exit 1
}

stop_daemon() {
    kill -TERM "$DAEMON_PID"
    wait "$DAEMON_PID"
    STOP_STATUS=$?
    DAEMON_PIDS=$(echo "$DAEMON_PIDS" | sed "s/ $DAEMON_PID\b//")
}

ok() { echo "ok - $*"; }
not_ok() { echo "not ok - $*"; FAILS=$((FAILS + 1)); }

# check DESCRIPTION COMMAND...: the command must succeed.
check() {
    desc=$1; shift
    if "$@"; then ok "$desc"; else not_ok "$desc"; fi
}

# expect_eq DESCRIPTION EXPECTED ACTUAL
expect_eq() {
    if [ "$2" = "$3" ]; then
        ok "$1"
    else
        not_ok "$1: expected '$2', got '$3'"
    fi
}

# expect_match DESCRIPTION PATTERN TEXT (grep -E)
expect_match() {
    if printf '%s\n' "$3" | grep -Eq -- "$2"; then
        ok "$1"
    else
        not_ok "$1: '$3' does not match /$2/"
    fi
}

finish() {
    if [ "$FAILS" -ne 0 ]; then
        echo "$FAILS check(s) failed; daemon log:"
        cat "$TMP/daemon.log" 2>/dev/null
        exit 1
    fi
    exit 0
}
