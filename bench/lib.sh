# lib.sh - sourced by bench/run.sh and bench/compare.sh: a temporary
# directory and the processes a script starts, stopped and removed however
# it ends.  Set TMP_PREFIX before sourcing; add pids to PIDS.

TMP=$(mktemp -d "/tmp/${TMP_PREFIX:-llmguard-bench}.XXXXXX")
PIDS=""

# stop_pid PID: SIGTERM, up to 5 s to go, then SIGKILL.
stop_pid() {
    kill -TERM "$1" 2>/dev/null || return 0
    for _ in $(seq 1 50); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

cleanup() {
    for pid in $PIDS; do stop_pid "$pid"; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
