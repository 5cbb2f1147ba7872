#!/bin/sh
# bench/headers.sh - learned limits against a provider that enforces its
# own, beside the same processes unguarded (bench/README.md, "Header
# feedback").
#
#   bench/headers.sh [-s SECONDS] [-p PROCS] [-S openai|anthropic] [BUILD_DIR]
#
# A mock provider (tests/mockprovider) enforces 60 requests and 6000
# tokens a minute for the model it is asked for, sends OpenAI-style
# rate-limit headers (-S anthropic: Anthropic-style, resets as RFC 3339
# times) and answers 429 past them.  PROCS processes (8) loop
# on examples/ratelimit_demo (one chat completion of 80 tokens each, over
# libcurl) for SECONDS (60) twice: through llmguardd, which is given no
# rate for the provider (PROVIDER_MOCK_RATE_PER_SEC=learn: it learns the
# limits from the headers), then with no daemon (fail-open: unguarded).
# It prints the answers, the 429s and the share of the provider's limit
# reached (its burst plus its refill over the run) for each.
set -eu
secs=60 procs=8 style=openai
while getopts s:p:S: opt; do
    case $opt in
    s) secs=$OPTARG ;;
    p) procs=$OPTARG ;;
    S) style=$OPTARG ;;
    *) echo "usage: bench/headers.sh [-s SECONDS] [-p PROCS]" \
            "[-S openai|anthropic] [BUILD_DIR]" >&2
       exit 2 ;;
    esac
done
shift $((OPTIND - 1))
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$src/_build/default}" && pwd)
TMP_PREFIX=llmguard-headers . "$src/bench/lib.sh"
DEMO="$build/examples/ratelimit_demo"
MOCK="$build/tests/mockprovider"
RPM=60 TPM=6000 TOKENS=80

# mock_start: a fresh mock (full buckets); its port in $TMP/mock.port.
mock_start() {
    rm -f "$TMP/mock.port"
    "$MOCK" --name mock --port-file "$TMP/mock.port" --mode "ok:$TOKENS" \
        --rpm $RPM --tpm $TPM --style "$style" &
    MOCK_PID=$!
    PIDS="$PIDS $MOCK_PID"
    for _ in $(seq 1 100); do
        [ -s "$TMP/mock.port" ] && return 0
        sleep 0.05
    done
    echo "headers.sh: the mock did not start" >&2
    exit 1
}

stat_of() {
    curl -sf "http://127.0.0.1:$(cat "$TMP/mock.port")/stats" |
        sed "s/.*\"$1\": *\([0-9]*\).*/\1/"
}

# run LABEL SOCKET: PROCS loops of calls for secs seconds, then the line.
run() {
    mock_start
    start=$(date +%s.%N)
    end=$(awk -v s="$start" -v d="$secs" 'BEGIN { printf "%.3f", s + d }')
    pids=""
    for i in $(seq 1 "$procs"); do
        (
            while awk -v e="$end" -v n="$(date +%s.%N)" 'BEGIN { exit !(n < e) }'; do
                env -i PATH="$PATH" LLMGUARD_FAIL_MODE=open \
                    PROVIDER_MOCK_BASE_URL="http://127.0.0.1:$(cat "$TMP/mock.port")/v1" \
                    LLMGUARD_DEMO_HTTP_TIMEOUT_MS=5000 \
                    "$DEMO" -s "$2" -p mock -a 1 -e $TOKENS -T 30 \
                    "bench $i" >/dev/null 2>&1 || true
            done
        ) &
        pids="$pids $!"
    done
    for p in $pids; do wait "$p"; done
    ok=$(stat_of ok) limited=$(stat_of rate_limited)
    # What the provider lets through over the run: its burst, then its rate.
    awk -v l="$1" -v p="$procs" -v s="$start" -v n="$(date +%s.%N)" \
        -v ok="$ok" -v lim="$limited" -v rpm=$RPM 'BEGIN {
            e = n - s; cap = rpm + rpm * e / 60
            printf "%-10s procs=%s seconds=%.1f answers=%d 429s=%d limit=%.0f reached=%.1f%%\n",
                l, p, e, ok, lim, cap, 100 * ok / cap }'
    stop_pid "$MOCK_PID"
}

cat > "$TMP/llmguard.env" <<ENV
PROVIDER_MOCK_RATE_PER_SEC=learn
PROVIDER_COOLDOWN_SEC=1
QUOTA_ENFORCEMENT=soft
ENV
env -i PATH="$PATH" "$build/daemon/llmguardd" --socket "$TMP/d.sock" \
    --db "$TMP/d.db" --env-file "$TMP/llmguard.env" 2>"$TMP/daemon.log" &
DPID=$!
PIDS="$PIDS $DPID"
for _ in $(seq 1 100); do
    "$build/cli/llmguardctl" -s "$TMP/d.sock" ping >/dev/null 2>&1 && break
    sleep 0.05
done
echo "# mock: $RPM requests and $TPM tokens a minute, $TOKENS tokens a call, $style headers"
run guarded "$TMP/d.sock"
"$build/cli/llmguardctl" -s "$TMP/d.sock" status | grep '^mock'
stop_pid "$DPID"
run unguarded "$TMP/none.sock"
