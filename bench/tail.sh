#!/bin/sh
# tail.sh - the tail latency of one light client beside heavy loads.
#
#   bench/tail.sh [-q] [-o RESULTS.jsonl] [LLMGUARDD [LOADGEN]]
#
# For LLMGUARD_QUOTA_FLUSH_MS 50 and 0, each on fresh daemons (new
# database): one process of sequential acquires (provider bench, timeout 0)
# runs alone for 5 s, then beside each of two loads for as long as it lasts:
#   fill    4 processes reserving 1,000,000 new workflow ids, once each
#   permit  8 processes of permit+report calls with a quota reservation (a
#           workflow id per process), for 10 s
# Prints the load's throughput and the acquire loop's p50, p99, p99.9 and
# max latency, one line per measurement and a summary table.
#
# LLMGUARDD defaults to $LLMGUARDD, else _build/default/daemon/llmguardd;
# LOADGEN to $LOADGEN, else bench/loadgen next to that daemon.  LOADGEN
# must know --until-file (this tree's does; give it for an older daemon).
# -q: a quick smoke run (100,000 ids, 3 s).
# -o FILE: also keep the JSON lines (one per measurement) in FILE.
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
[ -x "$LLMGUARDD" ] ||
    { echo "tail.sh: no llmguardd at $LLMGUARDD" >&2; exit 1; }
builddir=$(cd "$(dirname "$LLMGUARDD")/.." && pwd)
LOADGEN=${2:-${LOADGEN:-$builddir/bench/loadgen}}
[ -x "$LOADGEN" ] || { echo "tail.sh: no loadgen at $LOADGEN" >&2; exit 1; }
"$LOADGEN" --help | grep -q -- --until-file ||
    { echo "tail.sh: $LOADGEN has no --until-file" >&2; exit 1; }

if [ "$quick" = 1 ]; then
    IDS=100000; T_ALONE=2; T_PERMIT=3
else
    IDS=1000000; T_ALONE=5; T_PERMIT=10
fi

TMP_PREFIX=llmguard-tail
. "$here/lib.sh"
: > "$TMP/results.jsonl"
n=0

# start_daemon FLUSH_MS: a fresh daemon (new socket and database); sets
# SOCK and DPID.
start_daemon() {
    n=$((n + 1))
    cat > "$TMP/d$n.env" <<EOF
# written by bench/tail.sh
PROVIDER_BENCH_RATE_PER_SEC=100000000
PROVIDER_BENCH_BURST=100000000
DEFAULT_DAILY_QUOTA_TOKENS=1000000000000
QUOTA_ENFORCEMENT=soft
LLMGUARD_QUOTA_FLUSH_MS=$1
EOF
    SOCK=$TMP/d$n.sock
    env -i PATH="$PATH" "$LLMGUARDD" --socket "$SOCK" --db "$TMP/d$n.db" \
        --env-file "$TMP/d$n.env" 2>>"$TMP/d$n.log" &
    DPID=$!
    PIDS="$PIDS $DPID"
    if ! "$LOADGEN" ping -s "$SOCK" --seconds 10; then
        echo "tail.sh: the daemon did not start; its log:" >&2
        cat "$TMP/d$n.log" >&2
        exit 1
    fi
}

stop_daemon() {
    stop_pid "$DPID"
    PIDS=$(echo "$PIDS" | sed "s/ $DPID\b//")
}

# get FIELD [FILE]: a number or string field of a flat JSON line.
get() {
    sed -n "s/.*\"$1\":\"\{0,1\}\([^,\"}]*\).*/\1/p" "${2:-/dev/stdin}" |
        head -1
}

keep() {
    cat "$1" >> "$TMP/results.jsonl"
}

acq_line() {
    printf '%s acquires, p50 %s p99 %s p99.9 %s max %s us' \
        "$(get permits "$1")" "$(get p50_us "$1")" "$(get p99_us "$1")" \
        "$(get p999_us "$1")" "$(get max_us "$1")"
}

# beside LABEL LOAD-ARGS...: the load in the background, the acquire loop
# until it ends; both results kept.
beside() {
    label=$1
    shift
    rm -f "$TMP/done"
    ( "$LOADGEN" "$@" -s "$SOCK" --daemon-pid "$DPID" --label "$label" \
          --json > "$TMP/load.json"; echo $? > "$TMP/load.rc"
      touch "$TMP/done" ) &
    lpid=$!
    sleep 0.1
    "$LOADGEN" throughput -s "$SOCK" -p bench -P 1 -d 3600 -w 0.2 \
        --until-file "$TMP/done" --label "acq-$label" --json > "$TMP/acq.json"
    wait "$lpid"
    if [ "$(cat "$TMP/load.rc")" != 0 ]; then
        echo "tail.sh: the $label load failed; daemon log:" >&2
        tail -20 "$TMP/d$n.log" >&2
        exit 1
    fi
    keep "$TMP/load.json"
    keep "$TMP/acq.json"
    case $label in
    fill*) printf '  %s: %s ids/s over %s s' "$label" \
               "$(get ids_per_s "$TMP/load.json")" \
               "$(get fill_s "$TMP/load.json")" ;;
    *) printf '  %s: %s calls/s' "$label" \
           "$(get calls_per_s "$TMP/load.json")" ;;
    esac
    printf '; beside it %s\n' "$(acq_line "$TMP/acq.json")"
}

started=$(date +%s)
echo "llmguard tail: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' \
    /proc/cpuinfo | head -1), kernel $(uname -r)"
echo "daemon $LLMGUARDD; loadgen $LOADGEN; $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

for flush in 50 0; do
    echo "flush $flush ms:"
    start_daemon "$flush"
    "$LOADGEN" throughput -s "$SOCK" -p bench -P 1 -d "$T_ALONE" -w 0.2 \
        --label "acq-alone-$flush" --json > "$TMP/acq.json"
    keep "$TMP/acq.json"
    echo "  alone: $(acq_line "$TMP/acq.json")"
    beside "fill-$flush" fill -P 4 -N "$IDS" --prefix fill --settle 0
    stop_daemon
    start_daemon "$flush"
    beside "permit-$flush" permit -P 8 --ids per-proc -d "$T_PERMIT" -w 0.2
    stop_daemon
done

# pick LABEL FIELD
pick() {
    grep "\"label\":\"$1\"" "$TMP/results.jsonl" | get "$2"
}

echo
echo "summary: 1 process of acquires beside each load (latencies in us)"
printf '%-18s %12s %10s %8s %8s %8s %8s\n' load "load ops/s" acquires \
    p50 p99 p99.9 max
for flush in 50 0; do
    for l in alone fill permit; do
        case $l in
        alone) ops=- ;;
        fill) ops=$(pick "fill-$flush" ids_per_s) ;;
        permit) ops=$(pick "permit-$flush" calls_per_s) ;;
        esac
        a="acq-$l-$flush"
        printf '%-18s %12s %10s %8s %8s %8s %8s\n' "$l, flush $flush" \
            "$ops" "$(pick "$a" permits)" "$(pick "$a" p50_us)" \
            "$(pick "$a" p99_us)" "$(pick "$a" p999_us)" "$(pick "$a" max_us)"
    done
done
echo "total $(($(date +%s) - started)) s; load average after:" \
    "$(cut -d' ' -f1-3 /proc/loadavg)"

[ -z "$results_out" ] || cp "$TMP/results.jsonl" "$results_out"
