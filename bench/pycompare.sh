#!/bin/sh
# pycompare.sh - the Python package next to libllmguard, on one daemon, in
# one run of about three minutes.
#
#   bench/pycompare.sh [-q] [-r ROUNDS] [-o RESULTS.jsonl] [LLMGUARDD]
#
# Starts a private llmguardd (provider bench: rate and burst 1e8, so every
# acquire is granted at once; quota flush 50 ms; soft quotas of 1e12) in a
# temporary directory, then measures, interleaved in rotating order,
# ROUNDS times (default 3), for 1 and 8 client processes:
#   - acquire (timeout 0) and permit+report (execute_with_failover of a
#     call that answers at once, a workflow id per process: one quota
#     reservation per permit) through bench/loadgen (libllmguard),
#     bench/pyloadgen.py (the blocking client) and pyloadgen.py --aio (one
#     task per process, and 8 pipelined tasks per process);
#   - and, as a control, the same calls made by the Python program through
#     libllmguard by ctypes (pyloadgen.py --libllmguard);
# then, ROUNDS times, for the daemon's CPU per call without the
# scheduler's placement in it, 1 client process of each kind with the daemon pinned to CPU 0 and
# the client on CPU 1 (every request wakes the daemon) and on CPU 0, with
# the daemon's system calls per call counted by perf when perf can, and
# libllmguard by ctypes paced to the Python client's rate (each call spends
# the difference of their times per call), also while reading through
# 8 MiB of memory: the daemon's CPU per call depends on how often it sleeps
# and on the caches it finds, so only clients of one pace compare.
# It prints every measurement, then the tables (Markdown: medians over the
# rounds), and always stops what it started.
#
# LLMGUARDD defaults to $LLMGUARDD, else _build/default/daemon/llmguardd;
# loadgen is bench/loadgen of its build tree; Python is $PYTHON, else
# python3 (it needs msgpack).
# -q: a quick smoke run (0.5 s per measurement, 1 round).
# -o FILE: also keep the JSON lines (one per measurement) in FILE.

set -eu

usage() {
    sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2
    exit "${1:-2}"
}

here=$(cd "$(dirname "$0")" && pwd)
srcdir=$(dirname "$here")
quick=0 rounds= results_out=
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
[ -x "$LLMGUARDD" ] || { echo "pycompare.sh: no llmguardd at $LLMGUARDD" >&2; exit 1; }
builddir=$(cd "$(dirname "$LLMGUARDD")/.." && pwd)
LOADGEN=${LOADGEN:-$builddir/bench/loadgen}
[ -x "$LOADGEN" ] || { echo "pycompare.sh: no loadgen at $LOADGEN" >&2; exit 1; }
PYTHON=${PYTHON:-python3}
PYLOADGEN="$PYTHON $here/pyloadgen.py"
LIBLLMGUARD=$builddir/libclient/.libs/libllmguard.so
if [ "$quick" = 1 ]; then
    T=0.5; WARM=0.2; ROUNDS=${rounds:-1}
else
    T=2; WARM=0.5; ROUNDS=${rounds:-3}
fi

TMP_PREFIX=llmguard-pycompare
export PYTHONDONTWRITEBYTECODE=1    # nothing left in the source tree
. "$here/lib.sh"

cat > "$TMP/d.env" <<EOF
PROVIDER_BENCH_RATE_PER_SEC=100000000
PROVIDER_BENCH_BURST=100000000
DEFAULT_DAILY_QUOTA_TOKENS=1000000000000
QUOTA_ENFORCEMENT=soft
LLMGUARD_QUOTA_FLUSH_MS=50
EOF
env -i PATH="$PATH" "$LLMGUARDD" --socket "$TMP/d.sock" --db "$TMP/d.db" \
    --env-file "$TMP/d.env" 2>>"$TMP/d.log" &
DPID=$!
PIDS="$PIDS $DPID"
"$LOADGEN" ping -s "$TMP/d.sock" --seconds 10 || {
    cat "$TMP/d.log" >&2; exit 1; }
: > "$TMP/results.jsonl"

# one LABEL CLIENT MODE PROCS [ARGS...]: one measurement, its JSON kept.
one() {
    label=$1 client=$2 mode=$3 procs=$4
    shift 4
    case $client in
    c) set -- $PIN "$LOADGEN" "$mode" "$@" ;;
    sync) set -- $PIN $PYLOADGEN "$mode" "$@" ;;
    aio) set -- $PIN $PYLOADGEN "$mode" --aio "$@" ;;
    aio8) set -- $PIN $PYLOADGEN "$mode" --aio --tasks 8 "$@" ;;
    ctypes) set -- $PIN $PYLOADGEN "$mode" --libllmguard "$LIBLLMGUARD" "$@" ;;
    esac
    timeout -k 5 60 "$@" -s "$TMP/d.sock" -P "$procs" -d "$T" -w "$W" \
        --daemon-pid "$DPID" --label "$label" --json > "$TMP/last.json" || {
        echo "pycompare.sh: $label failed; daemon log:" >&2
        tail -20 "$TMP/d.log" >&2
        exit 1
    }
    sed "s/^{/{\"client_kind\":\"$client\",/" "$TMP/last.json" >> \
        "$TMP/results.jsonl"
    printf '  %-22s %s\n' "$label" "$(summ "$TMP/last.json")"
}

get() {
    sed -n "s/.*\"$1\":\"\{0,1\}\([^,\"}]*\).*/\1/p" "${2:-/dev/stdin}" |
        head -1
}

summ() {
    rate=$(get permits_per_s "$1")
    [ -n "$rate" ] || rate=$(get calls_per_s "$1")
    printf '%s/s, p50 %s p99 %s us; daemon %s us/op, clients %s us/op' \
        "$rate" "$(get p50_us "$1")" "$(get p99_us "$1")" \
        "$(get daemon_cpu_us_per_op "$1")" "$(get clients_cpu_us_per_op "$1")"
}

pick() {
    grep "\"label\":\"$1\"" "$TMP/results.jsonl" | while IFS= read -r l; do
        printf '%s\n' "$l" | get "$2"
    done
}

started=$(date +%s)
echo "llmguard pycompare: $(nproc) CPUs, kernel $(uname -r), $($PYTHON -V 2>&1)"
echo "daemon $LLMGUARDD; $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

CLIENTS="c sync aio aio8"
[ -f "$LIBLLMGUARD" ] && CLIENTS="$CLIENTS ctypes"
PIN=
W=$WARM
r=1
while [ "$r" -le "$ROUNDS" ]; do
    echo "round $r of $ROUNDS:"
    order=$(echo "$CLIENTS" | awk -v r="$r" \
        '{ for (i = 0; i < NF; i++) printf "%s ", $((i + r - 1) % NF + 1) }')
    for procs in 1 8; do
        for client in $order; do
            one "acq-$client-$procs" "$client" throughput "$procs"
        done
        for client in $order; do
            one "permit-$client-$procs" "$client" permit "$procs" \
                --ids per-proc
        done
    done
    r=$((r + 1))
done

# Pinned, 1 process: the daemon on CPU 0, the client on CPU 1 (split) or 0
# (same); the daemon's system calls per call from perf when it counts.
# No warm-up here, so that perf's window (the whole run) and the calls
# counted (from the start to the end) are the same but for the connect.
pinned=0
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
    pinned=1
    W=0
    taskset -pc 0 "$DPID" >/dev/null
    r=1
    while [ "$r" -le "$ROUNDS" ]; do
    echo "pinned, round $r of $ROUNDS:"
    for where in 1 0; do
        PIN="taskset -c $where"
        [ "$where" = 1 ] && tag=split || tag=same
        for mode in throughput permit; do
            for client in c sync aio ctypes paced touch; do
                label="pin-$tag-$mode-$client"
                extra=
                case $client in
                ctypes|paced|touch) [ -f "$LIBLLMGUARD" ] || continue ;;
                esac
                if [ "$client" = paced ] || [ "$client" = touch ]; then
                    # libllmguard at the Python client's pace: each call
                    # spends the difference of their times per call.
                    f=permits_per_s
                    [ "$mode" = permit ] && f=calls_per_s
                    extra="--work-us $(awk -v a="$(pick "pin-$tag-$mode-sync" "$f" | tail -1)" \
                        -v b="$(pick "pin-$tag-$mode-ctypes" "$f" | tail -1)" \
                        'BEGIN { w = 1e6 / a - 1e6 / b; printf "%.1f", (w > 0 ? w : 0) }')"
                    [ "$client" = touch ] && extra="$extra --work-touch"
                fi
                if command -v perf >/dev/null 2>&1; then
                    perf stat -x, -o "$TMP/perf.txt" \
                        -e raw_syscalls:sys_enter -p "$DPID" \
                        -- sleep $(awk -v t="$T" 'BEGIN { print t + 1 }') \
                        2>/dev/null &
                    perfpid=$!
                fi
                case $client in
                paced|touch) one "$label" ctypes "$mode" 1 $extra ;;
                *) one "$label" "$client" "$mode" 1 ;;
                esac
                if [ -n "${perfpid:-}" ]; then
                    wait "$perfpid" 2>/dev/null || true
                    n=$(awk -F, '/raw_syscalls/ { print $1 }' "$TMP/perf.txt")
                    ops=$(get permits "$TMP/last.json")
                    [ -n "$ops" ] || ops=$(get calls "$TMP/last.json")
                    # perf's window holds the whole run and a little idle
                    # time: an upper bound, the same for every client.
                    case $n in
                    ''|*[!0-9]*) ;;
                    *) echo "$label $n $ops" >> "$TMP/syscalls" ;;
                    esac
                    perfpid=
                fi
            done
        done
    done
    r=$((r + 1))
    done
    PIN=
    taskset -pc "0-$(($(nproc) - 1))" "$DPID" >/dev/null
fi

echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg); $(($(date +%s) - started)) s"
echo
echo "| $ROUNDS rounds x ${T} s, medians | ops/s | p50 µs | p99 µs | daemon CPU µs/op | client CPU µs/op |"
echo "|---|---:|---:|---:|---:|---:|"
for mode in acq permit; do
    for procs in 1 8; do
        for client in $CLIENTS; do
            l="$mode-$client-$procs"
            case $client in
            c) who="C libllmguard" ;;
            sync) who="Python, blocking" ;;
            aio) who="Python, asyncio" ;;
            aio8) who="Python, asyncio, 8 tasks/proc" ;;
            ctypes) who="Python calling libllmguard (ctypes)" ;;
            esac
            [ "$mode" = acq ] && { f=permits_per_s; what=acquire; } ||
                { f=calls_per_s; what="permit+report"; }
            printf '| %s, %s proc: %s | %s | %s | %s | %s | %s |\n' "$what" \
                "$procs" "$who" "$(pick "$l" "$f" | median | awk '{ printf "%.0f", $1 }')" \
                "$(pick "$l" p50_us | median)" "$(pick "$l" p99_us | median)" \
                "$(pick "$l" daemon_cpu_us_per_op | median)" \
                "$(pick "$l" clients_cpu_us_per_op | median)"
        done
    done
done
if [ "$pinned" = 1 ]; then
    echo
    echo "(paced: libllmguard by ctypes, each call spending the time per call the"
    echo "Python client takes more, so that both clients keep the same pace;"
    echo "touch: the same, reading through 8 MiB of memory meanwhile)"
    echo
    echo "| 1 proc, daemon on CPU 0, $ROUNDS rounds, medians | ops/s | p50 µs | daemon CPU µs/op | daemon syscalls/op (perf) |"
    echo "|---|---:|---:|---:|---:|"
    for tag in split same; do
        for mode in throughput permit; do
            for client in c sync aio ctypes paced touch; do
                l="pin-$tag-$mode-$client"
                grep -q "\"label\":\"$l\"" "$TMP/results.jsonl" || continue
                f=permits_per_s
                [ "$mode" = permit ] && f=calls_per_s
                sc=$(awk -v l="$l" '$1 == l && $3 > 0 { printf "%.2f\n", $2 / $3 }' \
                    "$TMP/syscalls" 2>/dev/null | median)
                printf '| %s, client on CPU %s, %s | %s | %s | %s | %s |\n' \
                    "$mode" "$([ $tag = split ] && echo 1 || echo 0)" "$client" \
                    "$(pick "$l" "$f" | median | awk '{ printf "%.0f", $1 }')" \
                    "$(pick "$l" p50_us | median)" \
                    "$(pick "$l" daemon_cpu_us_per_op | median)" "${sc:--}"
            done
        done
    done
fi
[ -z "$results_out" ] || cp "$TMP/results.jsonl" "$results_out"
