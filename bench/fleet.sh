#!/bin/sh
# fleet.sh - multi-host mode (REDIS_URL) beside single-host mode and beside
# one EVALSHA per acquire, in one run of about three minutes.
#
#   bench/fleet.sh [-q] [-r ROUNDS] [-l LEASE_MS] [-o RESULTS.jsonl] [LLMGUARDD]
#
# Starts, in a temporary directory, a private redis-server (Unix socket
# only: port 0, no RDB, no AOF) and five private llmguardd, each with its
# own socket and database:
#   s         single-host mode (no REDIS_URL);
#   r1        Redis mode, a fleet of one (its own key prefix, fleet1:);
#   h1 h2 h3  Redis mode, a fleet of three (host ids h1..h3, prefix fleet3:),
#             standing in for three hosts;
# all with LLMGUARD_LEASE_MS=LEASE_MS (default 200).  Then it measures,
# interleaved:
#   1. acquire (timeout 0) throughput and p50/p99 from 1 and 8 client
#      processes: (a) single-host, (b) Redis mode with 1 daemon, (c) Redis
#      mode with 3 daemons (client w on daemon w mod 3), (d) the per-call
#      approach: redisgen, one EVALSHA of a token-bucket script per acquire
#      through the same Redis; and (e) the ping-pong floor (bench/pingpong:
#      an echo server, what any daemon could reach with these clients on
#      this machine if its own work cost nothing); rotating order, ROUNDS
#      times (default 3; 1 process, whose figure is bimodal: ROUNDS + 2);
#   2. permit+report (no workflow id) the same way for (a), (b) and (c);
#   3. accuracy: 3 daemons x 8 processes on one bucket, each acquire
#      waiting in its daemon, against burst + rate x (T + lease): a bucket
#      the leases must share (2000/s, burst 50) and a fast one (20000/s,
#      burst 500) that 24 processes still exhaust;
# and prints every measurement, then the tables (Markdown).  It always
# stops what it started (also on Ctrl-C); every program run is bounded by
# `timeout`.  Alongside each measurement it gives the share of calls
# refused at once (timeout 0, no token held), the daemon's CPU per call
# (for the three daemons: from /proc over the whole program run), and
# redis-server's CPU over the whole program run, % of one core.
#
# LLMGUARDD defaults to $LLMGUARDD, else _build/default/daemon/llmguardd.
# loadgen, redisgen and pingpong are taken from $LOADGEN, $REDISGEN and
# $PINGPONG, else from bench/ of that daemon's build tree when they know
# the options used here, else compiled into the temporary directory (as
# bench/compare.sh does).
# Needs redis-server ($REDIS_SERVER) and hiredis.
# -q: a quick smoke run (0.5 s per measurement, 1 round, ~20 s).
# -o FILE: also keep the JSON lines (one per measurement) in FILE.

# shellcheck disable=SC2154 # PID_* are set by eval
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
LEASE_MS=200
while getopts qr:l:o:h opt; do
    case $opt in
    q) quick=1 ;;
    r) rounds=$OPTARG ;;
    l) LEASE_MS=$OPTARG ;;
    o) results_out=$OPTARG ;;
    h) usage 0 ;;
    *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -le 1 ] || usage
LLMGUARDD=${1:-${LLMGUARDD:-$srcdir/_build/default/daemon/llmguardd}}
[ -x "$LLMGUARDD" ] || { echo "fleet.sh: no llmguardd at $LLMGUARDD" >&2; exit 1; }
LLMGUARDD=$(cd "$(dirname "$LLMGUARDD")" && pwd)/$(basename "$LLMGUARDD")
builddir=$(cd "$(dirname "$LLMGUARDD")/.." && pwd)

if [ "$quick" = 1 ]; then
    T=0.5; WARM=0.2; T_ACC=1; ROUNDS=${rounds:-1}
else
    T=2; WARM=0.5; T_ACC=4; ROUNDS=${rounds:-3}
fi
case $LEASE_MS in
'' | *[!0-9]*) echo "fleet.sh: -l wants milliseconds, not '$LEASE_MS'" >&2
    exit 2 ;;
esac
LIMIT=$(awk -v t="$T" -v a="$T_ACC" 'BEGIN { print int((t > a ? t : a) + 30) }')

# shellcheck disable=SC2034 # read by lib.sh
TMP_PREFIX=llmguard-fleet
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

LOADGEN=$(tool loadgen -- --lease-ms)
REDISGEN=$(tool redisgen -- --daemon-pid)
PINGPONG=$(tool pingpong -- --daemon-pid)
REDIS_SERVER=${REDIS_SERVER:-$(command -v redis-server || true)}
[ -n "$LOADGEN" ] || { echo "fleet.sh: no loadgen, and no" \
    "$builddir/libclient/.libs/libllmguard.a to build one" >&2; exit 1; }
[ -n "$PINGPONG" ] || { echo "fleet.sh: no pingpong, and no" \
    "$builddir/proto/.libs/libproto.a to build one" >&2; exit 1; }
if [ -z "$REDIS_SERVER" ] || [ -z "$REDISGEN" ]; then
    echo "fleet.sh: needs redis-server and hiredis (Debian: redis-server" \
        "libhiredis-dev)" >&2
    exit 1
fi

# ---- servers ---------------------------------------------------------------

# started_pid NAME PID PROBE...: remember PID, wait until PROBE succeeds.
started_pid() {
    name=$1 pid=$2
    shift 2
    PIDS="$PIDS $pid"
    eval "PID_$name=$pid"
    if ! "$@"; then
        echo "fleet.sh: $name did not start; its log:" >&2
        cat "$TMP/$name.log" >&2 2>/dev/null || true
        exit 1
    fi
}

# start_llmguardd NAME [ENV LINES...]: a daemon on $TMP/NAME.sock, from an
# env file written here, in an empty environment (the caller's PROVIDER_*
# and LLMGUARD_* cannot leak in).  Sets PID_<NAME>.
start_llmguardd() {
    name=$1
    shift
    {
        echo "# written by bench/fleet.sh"
        echo "PROVIDER_BENCH_RATE_PER_SEC=100000000"
        echo "PROVIDER_BENCH_BURST=100000000"
        echo "PROVIDER_SHARE_RATE_PER_SEC=2000"
        echo "PROVIDER_SHARE_BURST=50"
        echo "PROVIDER_FAST_RATE_PER_SEC=20000"
        echo "PROVIDER_FAST_BURST=500"
        echo "DEFAULT_DAILY_QUOTA_TOKENS=1000000000000"
        echo "QUOTA_ENFORCEMENT=soft"
        echo "LLMGUARD_QUOTA_FLUSH_MS=50"
        echo "LLMGUARD_LEASE_MS=$LEASE_MS"
        for l in "$@"; do echo "$l"; done
    } > "$TMP/$name.env"
    env -i PATH="$PATH" "$LLMGUARDD" --socket "$TMP/$name.sock" \
        --db "$TMP/$name.db" --env-file "$TMP/$name.env" \
        2>>"$TMP/$name.log" &
    started_pid "$name" $! "$LOADGEN" ping -s "$TMP/$name.sock" --seconds 10
}

"$REDIS_SERVER" --port 0 --unixsocket "$TMP/redis.sock" \
    --unixsocketperm 700 --save '' --appendonly no --dir "$TMP" \
    --logfile "$TMP/redis.log" --daemonize no &
started_pid redis $! "$REDISGEN" ping -s "$TMP/redis.sock" --seconds 10
"$PINGPONG" serve -s "$TMP/pp.sock" 2>>"$TMP/pp.log" &
started_pid pp $! "$PINGPONG" ping -s "$TMP/pp.sock" --seconds 10
RURL=unix://$TMP/redis.sock
start_llmguardd s
start_llmguardd r1 "REDIS_URL=$RURL" LLMGUARD_HOST_ID=r1 \
    LLMGUARD_REDIS_PREFIX=fleet1:
for n in 1 2 3; do
    start_llmguardd "h$n" "REDIS_URL=$RURL" "LLMGUARD_HOST_ID=h$n" \
        LLMGUARD_REDIS_PREFIX=fleet3:
done
FLEET="-s $TMP/h1.sock -s $TMP/h2.sock -s $TMP/h3.sock"
# Every heartbeat (one a second) has seen the whole fleet.
sleep 1.2

# ---- measurements ----------------------------------------------------------

: > "$TMP/results.jsonl"

# get FIELD [FILE]: a number or string field of a flat JSON line.
get() {
    sed -n "s/.*\"$1\":\"\{0,1\}\([^,\"}]*\).*/\1/p" "${2:-/dev/stdin}" |
        head -1
}

# cpu_ticks PID: user + system time of PID, in clock ticks.
cpu_ticks() {
    sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

HZ=$(getconf CLK_TCK)

# fleet_ticks: the CPU ticks of h1, h2 and h3 together.
fleet_ticks() {
    echo $(($(cpu_ticks "$PID_h1") + $(cpu_ticks "$PID_h2") + \
        $(cpu_ticks "$PID_h3")))
}

# m LABEL SERVER PROGRAM MODE ARGS...: one measurement against SERVER (s,
# r1, fleet, redis or pp); its JSON line is kept with redis-server's CPU over
# the run added, and a short form printed.
m() {
    label=$1 server=$2 prog=$3 mode=$4
    shift 4
    set -- "$mode" --label "$label" --json "$@"
    # shellcheck disable=SC2086 # FLEET is three options
    case $server in
    fleet) set -- "$@" $FLEET ;;
    *) eval "pid=\$PID_$server"
       set -- "$@" -s "$TMP/$server.sock" --daemon-pid "$pid" ;;
    esac
    r0=$(cpu_ticks "$PID_redis")
    f0=$(fleet_ticks)
    w0=$(date +%s.%N)
    if ! timeout -k 5 "$LIMIT" "$prog" "$@" > "$TMP/last.json"; then
        echo "fleet.sh: $(basename "$prog") $mode ($label) failed" >&2
        cat "$TMP/last.json" >&2
        for l in "$TMP"/*.log; do tail -3 "$l" >&2; done
        exit 1
    fi
    rcpu=$(awk -v a="$r0" -v b="$(cpu_ticks "$PID_redis")" -v hz="$HZ" \
        -v w0="$w0" -v w1="$(date +%s.%N)" \
        'BEGIN { printf "%.1f", 100 * (b - a) / hz / (w1 - w0) }')
    extra=",\"redis_cpu_pct\":$rcpu"
    if [ "$server" = fleet ] && [ "$mode" != accuracy ]; then
        # The three daemons' CPU over the whole run, over the calls made
        # in warm-up and window (at the window's rate): close to, and a
        # little under, what --daemon-pid gives one daemon.
        us=$(awk -v a="$f0" -v b="$(fleet_ticks)" -v hz="$HZ" \
            -v r="$(ops "$TMP/last.json")" -v t="$T" -v w="$WARM" \
            'BEGIN { printf "%.2f", (b - a) / hz * 1e6 / (r * (t + w)) }')
        extra="$extra,\"daemon_cpu_us_per_op\":$us"
    fi
    sed "s/}\$/$extra}/" "$TMP/last.json" > "$TMP/last2.json"
    f=$TMP/last2.json
    cat "$f" >> "$TMP/results.jsonl"
    case $mode in
    accuracy)
        echo "  $label: granted $(get granted "$f"), bound $(get bound "$f")," \
            "ratio $(get ratio "$f"), elapsed $(get elapsed_s "$f") s," \
            "per proc $(get per_proc_min "$f")..$(get per_proc_max "$f")," \
            "per daemon $(get per_socket "$f"), redis CPU $rcpu%" ;;
    *)
        echo "  $label: $(ops "$f") ops/s, p50 $(get p50_us "$f")" \
            "p99 $(get p99_us "$f") us; CPU clients" \
            "$(get clients_cpu_us_per_op "$f") us/op, daemon" \
            "$(get daemon_cpu_us_per_op "$f") us/op, redis $rcpu%;" \
            "refused $(refused "$f")%" ;;
    esac
}

# refused FILE: the calls refused at once (timeout 0: no token there), in
# % of the calls made in the window.
refused() {
    n=$(get permits "$1")
    [ -n "$n" ] || n=$(get calls "$1")
    awk -v n="$n" -v d="$(get denied "$1")" \
        'BEGIN { printf "%.2f\n", (n + d > 0) ? 100 * d / (n + d) : 0 }'
}

# ops FILE: the operations per second of a result, whatever its mode.
ops() {
    v=$(get permits_per_s "$1")
    [ -n "$v" ] || v=$(get calls_per_s "$1")
    echo "$v"
}

started=$(date +%s)
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
echo "llmguard fleet: $(nproc) CPUs ($cpu), kernel $(uname -r)"
echo "llmguardd $LLMGUARDD ($("$LLMGUARDD" --version 2>/dev/null | head -1))"
echo "redis $("$REDIS_SERVER" --version | sed 's/ sha=.*//'); lease $LEASE_MS ms"
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ); load average before:" \
    "$(cut -d' ' -f1-3 /proc/loadavg)"

# One load of the rotation: K picks which.
acquire_load() {
    case $1 in
    0) m "a-s-$P" s "$LOADGEN" throughput -P "$P" -d "$T" -w "$WARM" ;;
    1) m "a-r1-$P" r1 "$LOADGEN" throughput -P "$P" -d "$T" -w "$WARM" ;;
    2) m "a-r3-$P" fleet "$LOADGEN" throughput -P "$P" -d "$T" -w "$WARM" ;;
    3) m "a-rd-$P" redis "$REDISGEN" throughput -P "$P" -d "$T" -w "$WARM" ;;
    4) m "a-pp-$P" pp "$PINGPONG" throughput -P "$P" -d "$T" -w "$WARM" ;;
    esac
}
permit_load() {
    case $1 in
    0) m "p-s-$P" s "$LOADGEN" permit --ids none -P "$P" -d "$T" -w "$WARM" ;;
    1) m "p-r1-$P" r1 "$LOADGEN" permit --ids none -P "$P" -d "$T" -w "$WARM" ;;
    2) m "p-r3-$P" fleet "$LOADGEN" permit --ids none -P "$P" -d "$T" \
           -w "$WARM" ;;
    esac
}

echo "acquire, timeout 0: $T s each (+ $WARM s warm-up), $ROUNDS round(s)" \
    "(1 process: 2 more), rotating:"
for P in 1 8; do
    # One process flips between two speeds as the scheduler places it on
    # the daemon's CPU or not (README.md): two more rounds for it.
    n=$ROUNDS
    [ "$P" != 1 ] || [ "$quick" = 1 ] || n=$((ROUNDS + 2))
    r=1
    while [ "$r" -le "$n" ]; do
        for k in 0 1 2 3 4; do acquire_load $(((r + k) % 5)); done
        r=$((r + 1))
    done
done
echo "permit+report, no workflow id: $T s each, $ROUNDS round(s), rotating:"
for P in 1 8; do
    r=1
    while [ "$r" -le "$ROUNDS" ]; do
        for k in 0 1 2; do permit_load $(((r + k) % 3)); done
        r=$((r + 1))
    done
done

echo "accuracy: 3 daemons x 8 processes on one bucket, $T_ACC s, lease $LEASE_MS ms:"
# The buckets have not been touched: full in Redis, as the bound assumes.
m acc-share fleet "$LOADGEN" accuracy -p share -P 24 -d "$T_ACC" \
    --lease-ms "$LEASE_MS"
m acc-fast fleet "$LOADGEN" accuracy -p fast -P 24 -d "$T_ACC" \
    --lease-ms "$LEASE_MS"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- tables ----------------------------------------------------------------

# col LABEL FIELD: FIELD of every result labelled LABEL, one a line.
col() {
    grep "\"label\":\"$1\"" "$TMP/results.jsonl" | while IFS= read -r l; do
        printf '%s\n' "$l" > "$TMP/one"
        case $2 in
        ops) ops "$TMP/one" ;;
        refused) refused "$TMP/one" ;;
        *) get "$2" "$TMP/one" ;;
        esac
    done
}

# ratio LABEL_A LABEL_B [FIELD]: the median of the per-round ratios of
# FIELD (default ops/s).
ratio() {
    col "$1" "${3:-ops}" > "$TMP/ra"
    col "$2" "${3:-ops}" > "$TMP/rb"
    if [ ! -s "$TMP/ra" ] || [ ! -s "$TMP/rb" ]; then echo "-"; return; fi
    paste "$TMP/ra" "$TMP/rb" | awk '{ printf "%.3f\n", $1 / $2 }' |
        median | awk '{ printf "%.2f\n", $1 }'
}

# row LABEL WHAT [CELLS...]: a table row of the medians of LABEL.
row() {
    label=$1 what=$2
    shift 2
    grep -q "\"label\":\"$label\"" "$TMP/results.jsonl" || return 0
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |' "$what" \
        "$(col "$label" ops | median | int)" "$(col "$label" ops | range)" \
        "$(col "$label" refused | median)" \
        "$(col "$label" p50_us | median)" "$(col "$label" p99_us | median)" \
        "$(col "$label" daemon_cpu_us_per_op | median)" \
        "$(col "$label" redis_cpu_pct | median)"
    for c in "$@"; do printf ' %s |' "$c"; done
    printf '\n'
}

echo
echo "## Summary (medians over the rounds; latencies in µs)"
echo
echo "| acquire, timeout 0 | ops/s | range | refused % | p50 | p99 | daemon µs/op | Redis CPU % | vs single-host | vs EVALSHA | p50 vs single-host |"
echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for P in 1 8; do
    row "a-s-$P" "$P proc: (a) single-host" "1" "**$(ratio "a-s-$P" "a-rd-$P")**" "1"
    for d in r1 r3; do
        case $d in
        r1) w="(b) Redis mode, 1 daemon" ;;
        r3) w="(c) Redis mode, 3 daemons" ;;
        esac
        row "a-$d-$P" "$P proc: $w" "**$(ratio "a-$d-$P" "a-s-$P")**" \
            "**$(ratio "a-$d-$P" "a-rd-$P")**" \
            "**$(ratio "a-$d-$P" "a-s-$P" p50_us)**"
    done
    row "a-rd-$P" "$P proc: (d) EVALSHA per acquire" \
        "$(ratio "a-rd-$P" "a-s-$P")" "1" "$(ratio "a-rd-$P" "a-s-$P" p50_us)"
    row "a-pp-$P" "$P proc: (e) ping-pong floor" \
        "$(ratio "a-pp-$P" "a-s-$P")" "$(ratio "a-pp-$P" "a-rd-$P")" \
        "$(ratio "a-pp-$P" "a-s-$P" p50_us)"
done

echo
echo "| permit+report, no workflow | calls/s | range | refused % | p50 | p99 | daemon µs/call | Redis CPU % | vs single-host | p50 vs single-host |"
echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"
for P in 1 8; do
    row "p-s-$P" "$P proc: (a) single-host" "1" "1"
    row "p-r1-$P" "$P proc: (b) Redis mode, 1 daemon" \
        "**$(ratio "p-r1-$P" "p-s-$P")**" "$(ratio "p-r1-$P" "p-s-$P" p50_us)"
    row "p-r3-$P" "$P proc: (c) Redis mode, 3 daemons" \
        "**$(ratio "p-r3-$P" "p-s-$P")**" "$(ratio "p-r3-$P" "p-s-$P" p50_us)"
done

echo
echo "| accuracy, 3 daemons x 8 processes, lease $LEASE_MS ms, $T_ACC s | granted | elapsed s | bound burst + rate × (T + lease) | granted/bound | 90 % of burst + rate × T | per daemon | per process |"
echo "|---|---:|---:|---:|---:|---:|---|---|"
for l in acc-share acc-fast; do
    f=$TMP/acc.json
    grep "\"label\":\"$l\"" "$TMP/results.jsonl" > "$f" || continue
    low=$(awk -v b="$(get burst "$f")" -v r="$(get rate_per_sec "$f")" \
        -v t="$T_ACC" 'BEGIN { printf "%.0f", 0.9 * (b + r * t) }')
    printf '| %s/s, burst %s | %s | %s | %s | **%s** | %s | %s | %s–%s |\n' \
        "$(get rate_per_sec "$f")" "$(get burst "$f")" "$(get granted "$f")" \
        "$(get elapsed_s "$f")" "$(get bound "$f")" "$(get ratio "$f")" \
        "$low" "$(get per_socket "$f" | sed 's/ / · /g')" \
        "$(get per_proc_min "$f")" "$(get per_proc_max "$f")"
done

echo
echo "total $(($(date +%s) - started)) s; load average after: $load_after"
[ -z "$results_out" ] || cp "$TMP/results.jsonl" "$results_out"
