#!/bin/sh
# profile.sh - where llmguardd spends its time under the acquire load.
#
#   bench/profile.sh [-P PROCS] [-d SECONDS] [-k DIR] [LLMGUARDD]
#
# Starts a private llmguardd (the compare.sh configuration, flush 50 ms),
# runs `loadgen throughput` from PROCS processes (default 8), and while
# it runs, on the daemon only:
#   1. perf stat: system calls per acquire, by kind (tracepoints);
#   2. perf record -e cpu-clock --call-graph dwarf for SECONDS (default 3),
#      then the top entries by self time and by children (inclusive) time.
# cpu-clock is a software event: it works in VMs where the hardware
# counters are not supported (`perf stat -e instructions true` says
# "<not supported>" there).  Prints the commands it ran, the load's line,
# and the two reports; -k DIR keeps perf.data and the full reports there.
# LLMGUARDD and loadgen are found as in compare.sh.

set -eu

here=$(cd "$(dirname "$0")" && pwd)
srcdir=$(dirname "$here")
PROCS=8
SECS=3
keep=
while getopts P:d:k:h opt; do
    case $opt in
    P) PROCS=$OPTARG ;;
    d) SECS=$OPTARG ;;
    k) keep=$OPTARG ;;
    *) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
command -v perf >/dev/null || { echo "profile.sh: no perf (Debian:" \
    "linux-perf)" >&2; exit 1; }
LLMGUARDD=${1:-${LLMGUARDD:-$srcdir/_build/default/daemon/llmguardd}}
[ -x "$LLMGUARDD" ] || { echo "profile.sh: no llmguardd at $LLMGUARDD" >&2; exit 1; }
builddir=$(cd "$(dirname "$LLMGUARDD")/.." && pwd)

TMP=$(mktemp -d /tmp/llmguard-profile.XXXXXX)
PIDS=""
cleanup() {
    for pid in $PIDS; do
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

LOADGEN=${LOADGEN:-$builddir/bench/loadgen}
if ! "$LOADGEN" --help 2>/dev/null | grep -q '^  permit '; then
    lib=$builddir/libclient/.libs/libllmguard.a
    pkg=msgpack-c
    pkg-config --exists $pkg 2>/dev/null || pkg=msgpack
    # shellcheck disable=SC2046
    ${CC:-cc} -O2 -std=gnu11 -D_GNU_SOURCE -I"$srcdir/libclient" \
        -o "$TMP/loadgen" "$here/loadgen.c" "$here/harness.c" "$lib" \
        $(pkg-config --libs $pkg) -lm -lpthread
    LOADGEN=$TMP/loadgen
fi

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
PIDS=$DPID
"$LOADGEN" ping -s "$TMP/d.sock" --seconds 10

# load SECONDS: the acquire load in the background, its line in load.out.
load() {
    "$LOADGEN" throughput -s "$TMP/d.sock" -P "$PROCS" -d "$1" -w 0.5 \
        --daemon-pid "$DPID" > "$TMP/load.out" &
    LPID=$!
    PIDS="$LPID $DPID"
    sleep 1             # the start, the barrier and the warm-up
}

echo "llmguardd $LLMGUARDD, pid $DPID; $PROCS processes of loadgen" \
    "throughput; $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"

# 1. System calls per acquire: perf stat counts the daemon's system calls
# over a whole loadgen run (no warm-up), divided by the acquires it made.
# perf needs a moment to arm the tracepoints: the load starts after it.
ev=
for sc in read readv write writev sendto sendmsg recvfrom recvmsg \
    epoll_wait epoll_pwait epoll_ctl ioctl timerfd_settime pwrite64 \
    pread64 fcntl fdatasync futex; do
    ev="$ev -e syscalls:sys_enter_$sc"
done
# shellcheck disable=SC2086 # a list of -e options
perf stat -x, -e raw_syscalls:sys_enter $ev -p "$DPID" -o "$TMP/stat.csv" &
SPID=$!
PIDS="$SPID $DPID"
sleep 2
"$LOADGEN" throughput -s "$TMP/d.sock" -P "$PROCS" -d 2 -w 0 \
    --daemon-pid "$DPID" > "$TMP/load.out"
kill -INT "$SPID"
wait "$SPID" || true
PIDS=$DPID
echo "load during perf stat: $(cat "$TMP/load.out")"
ops=$(sed -n 's/.*(\([0-9]*\) permits,.*/\1/p' "$TMP/load.out")
echo "system calls of the daemon per acquire (perf stat -e" \
    "'raw_syscalls:sys_enter' -e 'syscalls:sys_enter_*' -p PID, over the run):"
awk -F, -v ops="$ops" '$1 ~ /^[0-9]+$/ && $1 > 0 {
        sub(/^syscalls:sys_enter_/, "", $3)
        sub(/^raw_syscalls:sys_enter/, "all system calls", $3)
        printf "  %8.2f  %s\n", $1 / ops, $3 }' "$TMP/stat.csv" |
    sort -g -r | head -12

# 2. Where the time goes.
load $((SECS + 2))
echo "perf record -e cpu-clock -F 2000 --call-graph dwarf,16384 -p $DPID -- sleep $SECS"
perf record -q -e cpu-clock -F 2000 --call-graph dwarf,16384 -p "$DPID" \
    -o "$TMP/perf.data" -- sleep "$SECS" 2>/dev/null
wait "$LPID"
echo "load during perf record: $(cat "$TMP/load.out")"
perf report -i "$TMP/perf.data" --no-children --sort dso,sym --stdio \
    -g none --percent-limit 0.7 2>/dev/null > "$TMP/self.txt"
perf report -i "$TMP/perf.data" --children --sort sym --stdio \
    -g none --percent-limit 3 2>/dev/null > "$TMP/children.txt"
perf report -i "$TMP/perf.data" --no-children --sort dso --stdio \
    -g none 2>/dev/null > "$TMP/dso.txt"
echo "self time by object (perf report --no-children --sort dso):"
grep -v '^#' "$TMP/dso.txt" | grep -v '^$' | head -8
echo "top entries, self (perf report --no-children --sort dso,sym):"
grep -v '^#' "$TMP/self.txt" | grep -v '^$' | head -25
# Entries without a symbol (bare addresses in stripped libraries) are left
# out: their callers and callees are listed.
echo "top entries, children (perf report --children --sort sym):"
grep -v '^#' "$TMP/children.txt" | grep -v '^$' |
    grep -v ' 0x[0-9a-f]*$' | head -30
echo "user space, children:"
perf report -i "$TMP/perf.data" --children --sort sym --stdio -g none \
    --percent-limit 0.5 2>/dev/null | grep '\[\.\]' |
    grep -v ' 0x[0-9a-f]*$' | head -25
if [ -n "$keep" ]; then
    mkdir -p "$keep"
    cp "$TMP/perf.data" "$TMP/self.txt" "$TMP/children.txt" \
        "$TMP/dso.txt" "$TMP/stat.csv" "$keep/"
    echo "kept in $keep"
fi
