#!/bin/sh
# run.sh - the llmguard benchmark, start to finish, in about two minutes.
#
#   bench/run.sh [-q] [-o RESULTS.jsonl] [LLMGUARDD [LOADGEN]]
#
# Starts private llmguardd daemons on a temporary socket and database with
# an env file written here, runs bench/loadgen against them (throughput,
# accuracy, quota flush 50 vs flush 0 vs plain acquires, memory for 1,000,000
# workflow ids), prints every result line and a summary table, and always
# stops the daemons and removes its temporary files.  Only Unix sockets.
#
# LLMGUARDD defaults to $LLMGUARDD, else _build/default/daemon/llmguardd;
# LOADGEN to $LOADGEN, else bench/loadgen next to that daemon's build tree;
# when that is missing it is compiled into the temporary directory from
# bench/loadgen.c and bench/harness.c against the build tree's
# libclient/.libs/libllmguard.a.
# -q: a quick smoke run (short durations, 100,000 ids).
# -o FILE: also keep the JSON lines (one per measurement) in FILE.

# shellcheck disable=SC2154 # PID_a, PID_b and PID_m are set by eval
set -eu

# usage [STATUS]: the header comment above, to stderr unless STATUS is 0.
usage() {
    if [ "${1:-2}" = 0 ]; then
        sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
    else
        sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2
    fi
    exit "${1:-2}"
}

here=$(cd "$(dirname "$0")" && pwd)
srcdir=$(dirname "$here")
quick=0
results_out=
while getopts qo:h opt; do
    case $opt in
    q) quick=1 ;;
    o) results_out=$OPTARG ;;
    h) usage 0 ;;
    *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -le 2 ] || usage

LLMGUARDD=${1:-${LLMGUARDD:-$srcdir/_build/default/daemon/llmguardd}}
[ -x "$LLMGUARDD" ] || { echo "run.sh: no llmguardd at $LLMGUARDD" >&2; exit 1; }
builddir=$(cd "$(dirname "$LLMGUARDD")/.." && pwd)
LOADGEN=${2:-${LOADGEN:-$builddir/bench/loadgen}}

# Durations (seconds) and sizes.
if [ "$quick" = 1 ]; then
    T_THRU=1; T_PIN=0.5; T_ACC=1; T_Q=0.5; ROUNDS=2; FILL_IDS=100000
    WARM=0.2
else
    T_THRU=5; T_PIN=2; T_ACC=5; T_Q=2; ROUNDS=5; FILL_IDS=1000000
    WARM=0.5
fi
QPROCS=8

TMP_PREFIX=llmguard-bench
. "$here/lib.sh"

if [ ! -x "$LOADGEN" ]; then
    lib=$builddir/libclient/.libs/libllmguard.a
    [ -f "$lib" ] || { echo "run.sh: no loadgen at $LOADGEN and no $lib" \
        "to build one" >&2; exit 1; }
    msgpack_libs=$(pkg-config --libs msgpack-c 2>/dev/null ||
                   pkg-config --libs msgpack)
    # shellcheck disable=SC2086
    ${CC:-cc} -O2 -std=gnu11 -D_GNU_SOURCE -I"$srcdir/libclient" \
        -o "$TMP/loadgen" "$here/loadgen.c" "$here/harness.c" "$lib" \
        $msgpack_libs -lm -lpthread
    LOADGEN=$TMP/loadgen
fi

# start_daemon NAME FLUSH_MS: a daemon on $TMP/NAME.sock and $TMP/NAME.db,
# in an empty environment so the caller's PROVIDER_* or LLMGUARD_* cannot
# leak in.  Sets PID_<NAME> (PID_a, PID_b, PID_m).
start_daemon() {
    name=$1
    cat > "$TMP/$name.env" <<EOF
# written by bench/run.sh
PROVIDER_BENCH_RATE_PER_SEC=100000000
PROVIDER_BENCH_BURST=100000000
PROVIDER_ACC_RATE_PER_SEC=200
PROVIDER_ACC_BURST=10
DEFAULT_DAILY_QUOTA_TOKENS=1000000000000
QUOTA_ENFORCEMENT=soft
LLMGUARD_QUOTA_FLUSH_MS=$2
EOF
    env -i PATH="$PATH" "$LLMGUARDD" --socket "$TMP/$name.sock" \
        --db "$TMP/$name.db" --env-file "$TMP/$name.env" \
        2>>"$TMP/$name.log" &
    pid=$!
    PIDS="$PIDS $pid"
    eval "PID_$name=$pid"
    if ! "$LOADGEN" ping -s "$TMP/$name.sock" --seconds 10; then
        echo "run.sh: daemon $name did not start; its log:" >&2
        cat "$TMP/$name.log" >&2
        exit 1
    fi
}

stop_daemon() {
    eval "pid=\$PID_$1"
    stop_pid "$pid"
    PIDS=$(echo "$PIDS" | sed "s/ $pid\b//")
}

# lg LABEL DAEMON MODE ARGS...: one measurement; prints the text line and
# keeps the JSON line (same numbers) in $TMP/results.jsonl.
lg() {
    label=$1 name=$2 mode=$3
    shift 3
    eval "pid=\$PID_$name"
    "$LOADGEN" "$mode" -s "$TMP/$name.sock" --daemon-pid "$pid" \
        --label "$label" --json "$@" > "$TMP/last.json" || {
        echo "run.sh: loadgen $mode ($label) failed; daemon log:" >&2
        tail -20 "$TMP/$name.log" >&2
        exit 1
    }
    cat "$TMP/last.json" >> "$TMP/results.jsonl"
    echo "  $label: $(summ "$TMP/last.json")"
}

# get FIELD [FILE]: a number or string field of a flat JSON line.
get() {
    sed -n "s/.*\"$1\":\"\{0,1\}\([^,\"}]*\).*/\1/p" "${2:-/dev/stdin}" |
        head -1
}

# summ FILE: a short human form of one JSON result.
summ() {
    case $(get mode "$1") in
    throughput) printf '%s permits/s, p50 %s p99 %s p99.9 %s us' \
        "$(get permits_per_s "$1")" "$(get p50_us "$1")" \
        "$(get p99_us "$1")" "$(get p999_us "$1")" ;;
    accuracy) printf 'granted %s, bound %s, ratio %s' \
        "$(get granted "$1")" "$(get bound "$1")" "$(get ratio "$1")" ;;
    quota) printf '%s reservations/s, p50 %s p99 %s us' \
        "$(get reservations_per_s "$1")" "$(get p50_us "$1")" \
        "$(get p99_us "$1")" ;;
    fill) printf '%s ids in %s s, RSS %s -> %s kB, %s bytes/id' \
        "$(get reserved "$1")" "$(get fill_s "$1")" \
        "$(get rss_before_kb "$1")" "$(get rss_after_kb "$1")" \
        "$(get bytes_per_id "$1")" ;;
    esac
    printf '; daemon CPU %s%%, %s us/op\n' "$(get daemon_cpu_pct "$1")" \
        "$(get daemon_cpu_us_per_op "$1")"
}

# pick LABEL FIELD: FIELD of every result labelled LABEL, one a line.
pick() {
    grep "\"label\":\"$1\"" "$TMP/results.jsonl" | while IFS= read -r l; do
        printf '%s\n' "$l" | get "$2"
    done
}

# run.sh's own range and int (lib.sh's, as its README tables print them).
range() {
    sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 }
        END { printf "%.0f..%.0f\n", lo, hi }'
}

int() {
    awk '{ printf "%.0f\n", $1 }'
}

started=$(date +%s)
echo "llmguard bench: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' \
    /proc/cpuinfo | head -1), kernel $(uname -r)"
echo "daemon $LLMGUARDD; loadgen $LOADGEN; $(date -u +%Y-%m-%dT%H:%M:%SZ)"
# Anything else running skews every number: say how busy the host was.
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
: > "$TMP/results.jsonl"

start_daemon a 50
start_daemon b 0

echo "throughput (provider bench: rate and burst 1e8, acquire timeout 0):"
lg thru-1 a throughput -p bench -P 1 -d "$T_THRU" -w "$WARM"
lg thru-8 a throughput -p bench -P 8 -d "$T_THRU" -w "$WARM"

# One client, one daemon: the same or different CPUs.  Diagnostic: the
# unpinned 1-process figure moves between these two as the scheduler
# places the two processes.
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
    echo "throughput, 1 process pinned (daemon on CPU 0):"
    taskset -pc 0 "$PID_a" >/dev/null
    taskset -c 0 "$LOADGEN" throughput -s "$TMP/a.sock" -P 1 \
        -d "$T_PIN" -w "$WARM" --daemon-pid "$PID_a" --label pin-same \
        --json > "$TMP/last.json"
    cat "$TMP/last.json" >> "$TMP/results.jsonl"
    echo "  pin-same (client CPU 0): $(summ "$TMP/last.json")"
    taskset -c 1 "$LOADGEN" throughput -s "$TMP/a.sock" -P 1 \
        -d "$T_PIN" -w "$WARM" --daemon-pid "$PID_a" --label pin-split \
        --json > "$TMP/last.json"
    cat "$TMP/last.json" >> "$TMP/results.jsonl"
    echo "  pin-split (client CPU 1): $(summ "$TMP/last.json")"
    taskset -pc "0-$(($(nproc) - 1))" "$PID_a" >/dev/null
fi

echo "accuracy (provider acc: rate 200/s, burst 10; untouched bucket):"
lg acc-8 a accuracy -p acc -P 8 -d "$T_ACC"

# Quota: the same load on daemon a (flush 50 ms) and b (flush 0), and plain
# acquires on a, in rotating order, ROUNDS times.
echo "quota vs acquire, $QPROCS processes, ${T_Q} s each, $ROUNDS rounds" \
    "(a workflow id per process, 1 token per reservation):"
r=1
while [ "$r" -le "$ROUNDS" ]; do
    for k in 0 1 2; do
        case $(((r + k) % 3)) in
        0) lg q50 a quota -P "$QPROCS" -d "$T_Q" -w "$WARM" --ids per-proc \
               --prefix "r$r" ;;
        1) lg q0 b quota -P "$QPROCS" -d "$T_Q" -w "$WARM" --ids per-proc \
               --prefix "r$r" ;;
        2) lg acq a throughput -p bench -P "$QPROCS" -d "$T_Q" -w "$WARM" ;;
        esac
    done
    r=$((r + 1))
done
stop_daemon a
stop_daemon b

echo "memory: $FILL_IDS distinct workflow ids, one reservation each, on a" \
    "fresh daemon (flush 50 ms):"
start_daemon m 50
lg fill m fill -P 4 -N "$FILL_IDS" --prefix fill --settle 1
stop_daemon m
db_kb=$(du -k "$TMP/m.db" | awk '{ print $1 }')
echo "  database after shutdown: $db_kb kB"

# ---- summary ---------------------------------------------------------------
echo
echo "summary (latencies in microseconds):"
printf '%-28s %12s %9s %9s %9s\n' "throughput" "permits/s" p50 p99 p99.9
for l in thru-1 thru-8 pin-same pin-split; do
    grep -q "\"label\":\"$l\"" "$TMP/results.jsonl" || continue
    printf '%-28s %12s %9s %9s %9s\n' "$l" "$(pick $l permits_per_s | int)" \
        "$(pick $l p50_us)" "$(pick $l p99_us)" "$(pick $l p999_us)"
done
echo
printf 'accuracy, 8 procs: granted %s, bound %s, granted/bound %s\n' \
    "$(pick acc-8 granted)" "$(pick acc-8 bound)" "$(pick acc-8 ratio)"
echo
printf '%-26s %12s %15s %9s %9s\n' "$QPROCS procs, $ROUNDS rounds" \
    "median ops/s" "range" "med p50" "med p99"
for l in q50 q0 acq; do
    case $l in
    q50) what="quota reserve, flush 50" f=reservations_per_s ;;
    q0) what="quota reserve, flush 0" f=reservations_per_s ;;
    acq) what="plain acquire" f=permits_per_s ;;
    esac
    printf '%-26s %12s %15s %9s %9s\n' "$what" "$(pick $l "$f" | median | int)" \
        "$(pick $l "$f" | range)" "$(pick $l p50_us | median)" \
        "$(pick $l p99_us | median)"
done
# Per-round ratios, then their median.
pick q50 reservations_per_s > "$TMP/q50"
pick q0 reservations_per_s > "$TMP/q0"
pick acq permits_per_s > "$TMP/acq"
ratio() {
    paste "$1" "$2" | awk '{ printf "%.3f\n", $1 / $2 }' | median
}
printf 'ratios (median of per-round): flush50/acquire %s, flush0/acquire %s,' \
    "$(ratio "$TMP/q50" "$TMP/acq")" "$(ratio "$TMP/q0" "$TMP/acq")"
printf ' flush0/flush50 %s\n' "$(ratio "$TMP/q0" "$TMP/q50")"
echo
printf 'memory: %s ids, daemon RSS %s -> %s kB (HWM %s kB), %s bytes/id;' \
    "$(pick fill reserved)" "$(pick fill rss_before_kb)" \
    "$(pick fill rss_after_kb)" "$(pick fill hwm_after_kb)" \
    "$(pick fill bytes_per_id)"
printf ' fill %s ids/s; database %s kB\n' "$(pick fill ids_per_s)" "$db_kb"
echo "total $(($(date +%s) - started)) s; load average after:" \
    "$(cut -d' ' -f1-3 /proc/loadavg)"

[ -z "$results_out" ] || cp "$TMP/results.jsonl" "$results_out"
