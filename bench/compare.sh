#!/bin/sh
# compare.sh - llmguardd side by side with a Redis token bucket and with
# the raw Unix-socket floor, in one run of about three minutes.
#
#   bench/compare.sh [-q] [-r ROUNDS] [-o RESULTS.jsonl] [LLMGUARDD]
#
# Starts, in a temporary directory, a private redis-server (Unix socket
# only: port 0, no RDB, no AOF), two private llmguardd (quota flush 50 ms
# and 0 ms) and the ping-pong echo server, then measures, interleaved:
#   1. acquire throughput and latency for 1, 8 and 32 client processes:
#      llmguard acquire, Redis EVALSHA of a token-bucket script, and the
#      raw ping-pong floor, in rotating order, ROUNDS times (default 3;
#      ROUNDS + 2 for 1 process, whose figure is bimodal on small VMs);
#      then 1 process pinned to the server's CPU and to the other one;
#   2. accuracy, 8 processes at 200/s, burst 10: 8 in-process limiters
#      (loadgen local), 8 processes on llmguardd, 8 on Redis;
#   3. the quota path, 8 processes: plain acquires, quota reservations and
#      permit+report calls with quota (flush 50 and 0) and without quota,
#      rotating, ROUNDS times; and permit+report calls from 1 process.
# It prints every measurement, then the tables (Markdown), and always
# stops what it started (also on Ctrl-C).  Every program run is bounded by
# `timeout`.
#
# LLMGUARDD defaults to $LLMGUARDD, else _build/default/daemon/llmguardd.
# loadgen, redisgen and pingpong are taken from $LOADGEN, $REDISGEN and
# $PINGPONG, else from bench/ of that daemon's build tree when they are
# there and current (they know every mode used here), else compiled into
# the temporary directory from bench/*.c against the build tree's
# libclient/.libs/libllmguard.a and proto/.libs/libproto.a.  Redis needs
# redis-server ($REDIS_SERVER) and hiredis (for redisgen); without them
# the Redis rows are left out, with a note.
# -q: a quick smoke run (0.5 s per measurement, 1 round, ~25 s).
# -o FILE: also keep the JSON lines (one per measurement) in FILE.

# shellcheck disable=SC2154 # spid and PID_* are set by eval
set -eu

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
rounds=
results_out=
while getopts qr:o:h opt; do
    case $opt in
    q) quick=1 ;;
    r) rounds=$OPTARG ;;
    o) results_out=$OPTARG ;;
    h) usage 0 ;;
    *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -le 1 ] || usage

LLMGUARDD=${1:-${LLMGUARDD:-$srcdir/_build/default/daemon/llmguardd}}
[ -x "$LLMGUARDD" ] || { echo "compare.sh: no llmguardd at $LLMGUARDD" >&2; exit 1; }
LLMGUARDD=$(cd "$(dirname "$LLMGUARDD")" && pwd)/$(basename "$LLMGUARDD")
builddir=$(cd "$(dirname "$LLMGUARDD")/.." && pwd)

if [ "$quick" = 1 ]; then
    T=0.5; WARM=0.2; T_ACC=1; ROUNDS=${rounds:-1}
else
    T=2; WARM=0.5; T_ACC=5; ROUNDS=${rounds:-3}
fi
PROCS_LIST="1 8 32"
QPROCS=8
# A measurement that runs this much past its duration is killed.
PIN=
LIMIT=$(awk -v t="$T" -v a="$T_ACC" 'BEGIN { print int((t > a ? t : a) + 30) }')

# shellcheck disable=SC2034 # read by lib.sh
TMP_PREFIX=llmguard-compare
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

LOADGEN=$(tool loadgen '^  permit ')
PINGPONG=$(tool pingpong '^  serve ')
REDISGEN=$(tool redisgen '^  accuracy ')
[ -n "$LOADGEN" ] || { echo "compare.sh: no loadgen, and no" \
    "$builddir/libclient/.libs/libllmguard.a to build one" >&2; exit 1; }
[ -n "$PINGPONG" ] || { echo "compare.sh: no pingpong, and no" \
    "$builddir/proto/.libs/libproto.a to build one" >&2; exit 1; }
REDIS_SERVER=${REDIS_SERVER:-$(command -v redis-server || true)}
redis=1
if [ -z "$REDIS_SERVER" ] || [ -z "$REDISGEN" ]; then
    redis=0
    echo "compare.sh: note: no redis-server or no hiredis (redisgen):" \
        "the Redis rows are left out (Debian: redis-server libhiredis-dev)" >&2
fi

# ---- servers ---------------------------------------------------------------

# start_llmguardd NAME FLUSH_MS: a daemon on $TMP/NAME.sock, from an env
# file written here, in an empty environment (the caller's PROVIDER_* and
# LLMGUARD_* cannot leak in).  Sets PID_<NAME>.
start_llmguardd() {
    cat > "$TMP/$1.env" <<EOF
# written by bench/compare.sh
PROVIDER_BENCH_RATE_PER_SEC=100000000
PROVIDER_BENCH_BURST=100000000
PROVIDER_ACC_RATE_PER_SEC=200
PROVIDER_ACC_BURST=10
DEFAULT_DAILY_QUOTA_TOKENS=1000000000000
QUOTA_ENFORCEMENT=soft
LLMGUARD_QUOTA_FLUSH_MS=$2
EOF
    env -i PATH="$PATH" "$LLMGUARDD" --socket "$TMP/$1.sock" \
        --db "$TMP/$1.db" --env-file "$TMP/$1.env" 2>>"$TMP/$1.log" &
    started_pid "$1" $! "$LOADGEN" ping -s "$TMP/$1.sock" --seconds 10
}

# started_pid NAME PID PROBE...: remember PID, wait until PROBE succeeds.
started_pid() {
    name=$1 pid=$2
    shift 2
    PIDS="$PIDS $pid"
    eval "PID_$name=$pid"
    if ! "$@"; then
        echo "compare.sh: $name did not start; its log:" >&2
        cat "$TMP/$name.log" >&2 2>/dev/null || true
        exit 1
    fi
}

start_llmguardd a 50
start_llmguardd b 0
"$PINGPONG" serve -s "$TMP/pp.sock" 2>>"$TMP/pp.log" &
started_pid pp $! "$PINGPONG" ping -s "$TMP/pp.sock" --seconds 10
if [ "$redis" = 1 ]; then
    "$REDIS_SERVER" --port 0 --unixsocket "$TMP/redis.sock" \
        --unixsocketperm 700 --save '' --appendonly no --dir "$TMP" \
        --logfile "$TMP/redis.log" --daemonize no &
    started_pid redis $! "$REDISGEN" ping -s "$TMP/redis.sock" --seconds 10
fi

# ---- measurements ----------------------------------------------------------

: > "$TMP/results.jsonl"

# get FIELD [FILE]: a number or string field of a flat JSON line.
get() {
    sed -n "s/.*\"$1\":\"\{0,1\}\([^,\"}]*\).*/\1/p" "${2:-/dev/stdin}" |
        head -1
}

# m LABEL SERVER PROGRAM MODE ARGS...: one measurement against SERVER
# (a, b, pp, redis or none); its JSON line is kept, a short form printed.
m() {
    label=$1 server=$2 prog=$3 mode=$4
    shift 4
    set -- "$mode" --label "$label" --json "$@"
    case $server in
    a | b) set -- "$@" -s "$TMP/$server.sock" ;;
    pp) set -- "$@" -s "$TMP/pp.sock" ;;
    redis) set -- "$@" -s "$TMP/redis.sock" ;;
    esac
    if [ "$server" != none ]; then
        eval "pid=\$PID_$server"
        set -- "$@" --daemon-pid "$pid"
    fi
    # shellcheck disable=SC2086 # PIN is a command prefix or nothing
    if ! timeout -k 5 "$LIMIT" $PIN "$prog" "$@" > "$TMP/last.json"; then
        echo "compare.sh: $(basename "$prog") $mode ($label) failed" >&2
        [ "$server" = none ] || tail -5 "$TMP/$server.log" >&2 2>/dev/null || true
        exit 1
    fi
    cat "$TMP/last.json" >> "$TMP/results.jsonl"
    f=$TMP/last.json
    case $mode in
    accuracy | local)
        echo "  $label: granted $(get granted "$f"), bound $(get bound "$f")," \
            "ratio $(get ratio "$f"), per proc" \
            "$(get per_proc_min "$f")..$(get per_proc_max "$f")" ;;
    *)
        echo "  $label: $(ops "$f") ops/s, p50 $(get p50_us "$f")" \
            "p99 $(get p99_us "$f") p99.9 $(get p999_us "$f") us;" \
            "CPU clients $(get clients_cpu_us_per_op "$f")," \
            "server $(get daemon_cpu_us_per_op "$f") us/op" ;;
    esac
}

# ops FILE: the operations per second of a result, whatever its mode.
ops() {
    v=$(get permits_per_s "$1")
    [ -n "$v" ] || v=$(get reservations_per_s "$1")
    [ -n "$v" ] || v=$(get calls_per_s "$1")
    echo "$v"
}

started=$(date +%s)
# The daemon's source: the build tree's srcdir, and its git commit if any.
dsrc=$(sed -n 's/^abs_top_srcdir = //p' "$builddir/Makefile" 2>/dev/null || true)
commit=
if [ -n "$dsrc" ] && git -C "$dsrc" rev-parse --git-dir >/dev/null 2>&1; then
    commit="$dsrc at $(git -C "$dsrc" rev-parse --short HEAD)"
    [ -z "$(git -C "$dsrc" status --porcelain --untracked-files=no \
        2>/dev/null)" ] || commit="$commit + uncommitted changes"
elif [ -n "$dsrc" ]; then
    commit="$dsrc (not a git checkout)"
fi
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
echo "llmguard compare: $(nproc) CPUs ($cpu), kernel $(uname -r)"
echo "llmguardd $LLMGUARDD ($("$LLMGUARDD" --version 2>/dev/null | head -1)${commit:+, source $commit})"
[ "$redis" = 0 ] || echo "redis $("$REDIS_SERVER" --version | sed 's/ sha=.*//')"
echo "request/reply frames: $("$PINGPONG" sizes)"
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ); load average before:" \
    "$(cut -d' ' -f1-3 /proc/loadavg)"

echo "throughput: $T s each (+ $WARM s warm-up), $ROUNDS round(s), rotating:"
for P in $PROCS_LIST; do
    # One process flips between two speeds as the scheduler places it on
    # the daemon's CPU or not (README.md): two more rounds for it.
    n=$ROUNDS
    [ "$P" != 1 ] || [ "$quick" = 1 ] || n=$((ROUNDS + 2))
    r=1
    while [ "$r" -le "$n" ]; do
        for k in 0 1 2; do
            case $(((r + k) % 3)) in
            0) m "lg-$P" a "$LOADGEN" throughput -p bench -P "$P" -d "$T" \
                   -w "$WARM" ;;
            1) [ "$redis" = 0 ] || m "rd-$P" redis "$REDISGEN" throughput \
                   -P "$P" -d "$T" -w "$WARM" ;;
            2) m "pp-$P" pp "$PINGPONG" throughput -P "$P" -d "$T" \
                   -w "$WARM" ;;
            esac
        done
        r=$((r + 1))
    done
done

# One process, pinned: the server to CPU 0, the client to CPU 0 (same) or
# CPU 1 (split).  Diagnostic: the unpinned figure lies between the two,
# wherever the scheduler puts the pair.
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
    echo "1 process pinned (server on CPU 0), $T s each:"
    for servers in "a lg $LOADGEN" "pp pp $PINGPONG" "redis rd $REDISGEN"; do
        # shellcheck disable=SC2086 # three words
        set -- $servers
        [ "$1" != redis ] || [ "$redis" = 1 ] || continue
        eval "spid=\$PID_$1"
        taskset -a -pc 0 "$spid" >/dev/null
        for where in same split; do
            if [ $where = same ]; then PIN="taskset -c 0"; else PIN="taskset -c 1"; fi
            if [ "$1" = a ]; then
                m "$2-$where" a "$3" throughput -p bench -P 1 -d "$T" -w "$WARM"
            else
                m "$2-$where" "$1" "$3" throughput -P 1 -d "$T" -w "$WARM"
            fi
        done
        PIN=
        taskset -a -pc "0-$(($(nproc) - 1))" "$spid" >/dev/null
    done
fi

echo "accuracy: $QPROCS processes, rate 200/s, burst 10, $T_ACC s:"
m acc-local none "$LOADGEN" local -P "$QPROCS" -d "$T_ACC" --rate 200 \
    --burst 10
m acc-lg a "$LOADGEN" accuracy -p acc -P "$QPROCS" -d "$T_ACC"
[ "$redis" = 0 ] || m acc-rd redis "$REDISGEN" accuracy -P "$QPROCS" \
    -d "$T_ACC" --rate 200 --burst 10 --key acc

echo "quota path: $QPROCS processes, a workflow id per process, $T s each," \
    "$ROUNDS round(s), rotating:"
r=1
while [ "$r" -le "$ROUNDS" ]; do
    for k in 0 1 2 3 4 5; do
        case $(((r + k) % 6)) in
        0) m q-acq a "$LOADGEN" throughput -p bench -P "$QPROCS" -d "$T" \
               -w "$WARM" ;;
        1) m q-res50 a "$LOADGEN" quota -P "$QPROCS" -d "$T" -w "$WARM" \
               --prefix "r$r" ;;
        2) m q-res0 b "$LOADGEN" quota -P "$QPROCS" -d "$T" -w "$WARM" \
               --prefix "r$r" ;;
        3) m q-pmt50 a "$LOADGEN" permit -p bench -P "$QPROCS" -d "$T" \
               -w "$WARM" --prefix "r$r" ;;
        4) m q-pmt0 b "$LOADGEN" permit -p bench -P "$QPROCS" -d "$T" \
               -w "$WARM" --prefix "r$r" ;;
        5) m q-pmtnq a "$LOADGEN" permit -p bench -P "$QPROCS" -d "$T" \
               -w "$WARM" --ids none ;;
        esac
    done
    r=$((r + 1))
done
echo "permit+report from 1 process, $ROUNDS round(s):"
r=1
while [ "$r" -le "$ROUNDS" ]; do
    m p1-pmt50 a "$LOADGEN" permit -p bench -P 1 -d "$T" -w "$WARM" \
        --prefix "p$r"
    m p1-pmtnq a "$LOADGEN" permit -p bench -P 1 -d "$T" -w "$WARM" \
        --ids none
    r=$((r + 1))
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- tables ----------------------------------------------------------------

# col LABEL FIELD: FIELD of every result labelled LABEL, one a line, in
# the order measured.
col() {
    grep "\"label\":\"$1\"" "$TMP/results.jsonl" | while IFS= read -r l; do
        printf '%s\n' "$l" > "$TMP/one"
        if [ "$2" = ops ]; then ops "$TMP/one"; else get "$2" "$TMP/one"; fi
    done
}

# ratio LABEL_A LABEL_B: the median of the per-round ratios of ops/s.
ratio() {
    col "$1" ops > "$TMP/ra"
    col "$2" ops > "$TMP/rb"
    if [ ! -s "$TMP/ra" ] || [ ! -s "$TMP/rb" ]; then echo "-"; return; fi
    paste "$TMP/ra" "$TMP/rb" | awk '{ printf "%.3f\n", $1 / $2 }' |
        median | awk '{ printf "%.2f\n", $1 }'
}

# row LABEL WHAT [CELLS...]: a table row of the medians of LABEL.
row() {
    label=$1 what=$2
    shift 2
    grep -q "\"label\":\"$label\"" "$TMP/results.jsonl" || return 0
    printf '| %s | %s | %s | %s | %s | %s |' "$what" \
        "$(col "$label" ops | median | int)" "$(col "$label" ops | range)" \
        "$(col "$label" p50_us | median)" "$(col "$label" p99_us | median)" \
        "$(col "$label" p999_us | median)"
    for c in "$@"; do printf ' %s |' "$c"; done
    printf '\n'
}

echo
echo "## Summary (medians over the rounds; latencies in µs)"
echo
echo "| acquire, timeout 0 | ops/s | range | p50 | p99 | p99.9 | llmguard/Redis | llmguard/floor |"
echo "|---|---:|---|---:|---:|---:|---:|---:|"
for P in $PROCS_LIST; do
    row "lg-$P" "$P proc: llmguard acquire" "**$(ratio "lg-$P" "rd-$P")**" \
        "**$(ratio "lg-$P" "pp-$P")**"
    row "rd-$P" "$P proc: Redis EVALSHA" "" ""
    row "pp-$P" "$P proc: ping-pong floor" "" ""
done
for where in same split; do
    case $where in
    same) w="1 proc, same CPU as the server" ;;
    split) w="1 proc, other CPU than the server" ;;
    esac
    row "lg-$where" "$w: llmguard" "**$(ratio "lg-$where" "rd-$where")**" \
        "**$(ratio "lg-$where" "pp-$where")**"
    row "rd-$where" "$w: Redis" "" ""
    row "pp-$where" "$w: floor" "" ""
done

echo
echo "| accuracy, $QPROCS processes, 200/s, burst 10, $T_ACC s | granted | bound | granted/bound | per process |"
echo "|---|---:|---:|---:|---|"
for l in acc-local acc-lg acc-rd; do
    grep -q "\"label\":\"$l\"" "$TMP/results.jsonl" || continue
    case $l in
    acc-local) what="$QPROCS in-process limiters (each 200/s)" ;;
    acc-lg) what="$QPROCS processes on llmguardd" ;;
    acc-rd) what="$QPROCS processes on Redis" ;;
    esac
    printf '| %s | %s | %s | **%s** | %s–%s |\n' "$what" "$(col $l granted)" \
        "$(col $l bound)" "$(col $l ratio)" "$(col $l per_proc_min)" \
        "$(col $l per_proc_max)"
done

echo
echo "| quota path, $QPROCS processes | ops/s | range | p50 | p99 | p99.9 | vs acquire |"
echo "|---|---:|---|---:|---:|---:|---:|"
row q-acq "plain acquire" "1"
row q-res50 "quota reserve, flush 50 ms" "$(ratio q-res50 q-acq)"
row q-res0 "quota reserve, flush 0" "$(ratio q-res0 q-acq)"
row q-pmt50 "permit+report with quota, flush 50 ms" "$(ratio q-pmt50 q-acq)"
row q-pmt0 "permit+report with quota, flush 0" "$(ratio q-pmt0 q-acq)"
row q-pmtnq "permit+report, no quota" "$(ratio q-pmtnq q-acq)"

echo
echo "| permit+report (calls/s; 2 round trips each) | calls/s | range | p50 | p99 | p99.9 |"
echo "|---|---:|---|---:|---:|---:|"
row p1-pmt50 "1 proc, with quota (flush 50 ms)"
row p1-pmtnq "1 proc, no quota"
row q-pmt50 "$QPROCS procs, with quota (flush 50 ms)"
row q-pmtnq "$QPROCS procs, no quota"

echo
echo "total $(($(date +%s) - started)) s; load average after: $load_after"
[ -z "$results_out" ] || cp "$TMP/results.jsonl" "$results_out"
