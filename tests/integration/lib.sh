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
MOCK="$top_builddir/tests/mockprovider"
DEMO="$top_builddir/examples/ratelimit_demo"

TMP=$(mktemp -d /tmp/llmguard-test.XXXXXX)
SOCK="$TMP/llmguardd.sock"
DB="$TMP/llmguard.db"
DAEMON_PIDS=""
MOCK_PIDS=""
REDIS_PIDS=""
: > "$TMP/empty.env"
FAILS=0
# Keep the developer's own settings out of the tests.
unset LLMGUARD_SOCKET LLMGUARD_DB REDIS_URL XDG_RUNTIME_DIR
for v in $(env | sed -n 's/^\(PROVIDER_[A-Z0-9_]*\)=.*/\1/p'); do unset "$v"; done

# free_port: a TCP port of 127.0.0.1 that nothing listens on now, picked
# by the kernel (a guess from the pid may be a port some connection on the
# machine holds).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Tests that measure rates, shares or waits call timing_test first, and
# the pytest suite takes the same lock: `make -j2 check` then never runs
# two of them side by side, where on a 2-vCPU machine one would take the
# CPU the other's clients and daemons need.  The lock is the build tree's
# (CLEANFILES), held until cleanup lets it go (the daemons and mocks a
# test starts inherit it; unlocking frees it for them all), waited for
# at most 10 minutes.
timing_test() {
    exec 9>"$top_builddir/tests/timing.lock"
    flock -w 600 9
}

cleanup() {
    for pid in $MOCK_PIDS $REDIS_PIDS; do kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
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
    flock -u 9 2>/dev/null || :
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# start_daemon [ARGS...]: start llmguardd on $SOCK, wait until it answers.
# Its stderr goes to $TMP/daemon.log; env from ENVFILE (default: empty).
start_daemon() {
    : > "$TMP/empty.env"
    ${DAEMON_WRAP:-} "$LLMGUARDD" --socket "$SOCK" --db "${DB_OVERRIDE:-$DB}" \
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

# start_mock NAME [MODE]: a mock provider; its base URL goes to
# PROVIDER_<NAME>_BASE_URL in the environment, for ratelimit_demo.
start_mock() {
    rm -f "$TMP/$1.port"
    "$MOCK" --name "$1" --port-file "$TMP/$1.port" --mode "${2:-ok}" &
    MOCK_PIDS="$MOCK_PIDS $!"
    for _ in $(seq 1 100); do
        [ -s "$TMP/$1.port" ] && break
        sleep 0.05
    done
    upper=$(echo "$1" | tr a-z A-Z)
    eval "PROVIDER_${upper}_BASE_URL=http://127.0.0.1:$(cat "$TMP/$1.port")/v1"
    eval "export PROVIDER_${upper}_BASE_URL"
}

# mock_mode NAME MODE, mock_requests NAME
mock_mode() {
    curl -sf -X POST "http://127.0.0.1:$(cat "$TMP/$1.port")/control?mode=$2" >/dev/null
}
mock_requests() {
    curl -sf "http://127.0.0.1:$(cat "$TMP/$1.port")/stats" |
        sed 's/.*"requests": *\([0-9]*\).*/\1/'
}

# start_redis NAME [ARGS...]: a redis-server of the test's own on the Unix
# socket $TMP/NAME.sock (no TCP unless ARGS say --port/--tls-port), no
# persistence; waits until it answers.  REDIS_PID is its pid.
start_redis() {
    rname=$1; shift
    redis-server --port 0 --unixsocket "$TMP/$rname.sock" --save '' \
        --appendonly no --dir "$TMP" --logfile "$TMP/$rname.log" "$@" &
    REDIS_PID=$!
    REDIS_PIDS="$REDIS_PIDS $REDIS_PID"
    for _ in $(seq 1 100); do
        [ -S "$TMP/$rname.sock" ] && return 0
        sleep 0.05
    done
    echo "redis-server did not start; its log:" >&2
    cat "$TMP/$rname.log" >&2
    exit 1
}

# kill_redis PID: SIGKILL it (and forget it).
kill_redis() {
    kill -KILL "$1"; wait "$1" 2>/dev/null
    REDIS_PIDS=$(echo "$REDIS_PIDS" | sed "s/ $1\b//")
}

stop_daemon() {
    kill -TERM "$DAEMON_PID"
    wait "$DAEMON_PID"
    STOP_STATUS=$?
    DAEMON_PIDS=$(echo "$DAEMON_PIDS" | sed "s/ $DAEMON_PID\b//")
}

# kill9: SIGKILL the daemon (it leaves its socket and its last changes).
kill9() {
    kill -KILL "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null
    DAEMON_PIDS=$(echo "$DAEMON_PIDS" | sed "s/ $DAEMON_PID\b//")
}

# used WORKFLOW: its tokens_used, through llmguardctl.
used() { "$LLMGUARDCTL" -s "$SOCK" quota "$1" | awk '/^tokens_used/ { print $2 }'; }

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
