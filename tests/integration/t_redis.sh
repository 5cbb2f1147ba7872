#!/bin/sh
# Multi-host mode against a real redis-server of the test's own (a Unix
# socket in $TMP): three daemons standing in for three hosts (each its own
# socket, database and host id) share one bucket within
# burst + rate x (T + lease), fairly; NOSCRIPT after SCRIPT FLUSH; a
# duplicate host id refused; Redis killed: the fallback share, no acquire
# held up; Redis back (empty): global again.
. "${top_srcdir:-.}/tests/integration/lib.sh"
timing_test
ACQ="$top_builddir/tests/integration/acquirer"
command -v redis-server >/dev/null || { echo "not ok - redis-server is not installed (Debian: redis-server)"; exit 1; }

start_redis r
RPID=$REDIS_PID
RCLI="redis-cli -s $TMP/r.sock"

# host_env N [LINES...]: the env file of daemon N.
host_env() {
    n=$1; shift
    {
        echo "PROVIDER_OPENAI_RATE_PER_SEC=100"
        echo "PROVIDER_OPENAI_BURST=5"
        echo "PROVIDER_TPM_RATE_PER_SEC=100"
        echo "PROVIDER_SLOW_RATE_PER_SEC=2"
        echo "PROVIDER_SLOW_BURST=1"
        echo "PROVIDER_TPM_TOKENS_PER_MIN=600"
        echo "REDIS_URL=unix://$TMP/r.sock"
        echo "LLMGUARD_HOST_ID=host$n"
        echo "LLMGUARD_LEASE_MS=200"
        for l in "$@"; do echo "$l"; done
    } > "$TMP/h$n.env"
}

for n in 1 2 3; do
    host_env $n
    SOCK="$TMP/d$n.sock" DB_OVERRIDE="$TMP/d$n.db" ENVFILE="$TMP/h$n.env" \
        start_daemon
    eval "PID$n=\$DAEMON_PID"
done
check "each daemon says it is connected" \
    test "$(grep -c 'redis: connected to unix://.* as host host[123]' "$TMP/daemon.log")" -eq 3
expect_eq "three live hosts in Redis" 3 "$($RCLI hlen 'llmguard:{fleet}:hosts')"
expect_eq "the schema version" 1 "$($RCLI get 'llmguard:{fleet}:schema')"
sleep 1.1     # every daemon's heartbeat has seen the three
st=$("$LLMGUARDCTL" -s "$TMP/d1.sock" --json status)
expect_eq "status --json: the redis block" \
    "unix://$TMP/r.sock connected 3 " \
    "$(echo "$st" | jq -r '.redis | "\(.url) \(.state) \(.hosts) \(.last_error)"')"
expect_match "status: the redis line" "^redis +unix://$TMP/r.sock connected, 3 host\(s\)$" \
    "$("$LLMGUARDCTL" -s "$TMP/d1.sock" status)"
expect_eq "python -m llmguard status says the same" \
    "$("$LLMGUARDCTL" -s "$TMP/d1.sock" status | grep '^redis ')" \
    "$(PYTHONPATH="$top_srcdir/python" ${PYTHON:-/usr/bin/python3} -m llmguard --socket "$TMP/d1.sock" status | grep '^redis ')"
expect_match "llmguard_redis_up 1" '^llmguard_redis_up 1$' \
    "$("$LLMGUARDCTL" -s "$TMP/d1.sock" metrics --prometheus)"

# Accuracy: 3 daemons x 4 processes on one bucket (100/s, burst 5, lease
# 200 ms) for 4 s.  The bucket starts full in Redis: let it refill first.
sleep 0.3
for n in 1 2 3; do
    "$ACQ" span "$TMP/d$n.sock" openai 4 4 > "$TMP/span$n" &
    eval "SPAN$n=\$!"
done
wait $SPAN1 $SPAN2 $SPAN3
cat "$TMP"/span[123] | sed 's/^/# /'
read -r total first last <<EOF2
$(cat "$TMP"/span[123] | awk '{ g += $2; if (NR == 1 || $4 < f) f = $4;
    if ($6 > l) l = $6 } END { printf "%d %.6f %.6f", g, f, l }')
EOF2
bound=$(awk -v f="$first" -v l="$last" 'BEGIN { printf "%d", 5 + 100 * (l - f + 0.2) }')
low=$(awk 'BEGIN { printf "%d", 0.9 * (5 + 100 * 4) }')
echo "# total $total over $(awk -v f="$first" -v l="$last" 'BEGIN { print l - f }') s, bound $bound, low $low"
check "3 daemons: grants ($total) <= burst + rate x (T + lease) ($bound)" test "$total" -le "$bound"
check "3 daemons: grants ($total) >= 90% of burst + rate x 4 s ($low)" test "$total" -ge "$low"
for n in 1 2 3; do
    g=$(awk '{ print $2 }' "$TMP/span$n")
    share=$(awk -v g="$g" -v t="$total" 'BEGIN { printf "%.3f", g / t }')
    check "daemon $n: a fair share ($share of the grants, 1/3 +- 10%)" \
        awk -v s="$share" 'BEGIN { exit !(s >= 0.3 && s <= 0.3667) }'
done

# Busy and quiet hosts: 2, 4 and 6 processes get 1/6, 2/6 and 3/6 of the
# grants (+-10 % of their share of the demand).  After a reload of each
# daemon: its buckets stay global (the bound holds).
for n in 1 2 3; do "$LLMGUARDCTL" -s "$TMP/d$n.sock" reload >/dev/null; done
"$ACQ" span "$TMP/d1.sock" openai 2 3 > "$TMP/w1" &
W1=$!
"$ACQ" span "$TMP/d2.sock" openai 4 3 > "$TMP/w2" &
W2=$!
"$ACQ" span "$TMP/d3.sock" openai 6 3 > "$TMP/w3"
wait $W1 $W2
cat "$TMP"/w[123] | sed 's/^/# /'
read -r total first last <<EOF2
$(cat "$TMP"/w[123] | awk '{ g += $2; if (NR == 1 || $4 < f) f = $4;
    if ($6 > l) l = $6 } END { printf "%d %.6f %.6f", g, f, l }')
EOF2
bound=$(awk -v f="$first" -v l="$last" 'BEGIN { printf "%d", 5 + 100 * (l - f + 0.2) }')
check "after a reload: grants ($total) <= burst + rate x (T + lease) ($bound)" test "$total" -le "$bound"
for n in 1 2 3; do
    g=$(awk '{ print $2 }' "$TMP/w$n")
    share=$(awk -v g="$g" -v t="$total" 'BEGIN { printf "%.3f", g / t }')
    check "daemon $n with $((2 * n)) processes: $share of the grants ($n/6 +- 10%)" \
        awk -v s="$share" -v n="$n" 'BEGIN { exit !(s >= 0.9 * n / 6 && s <= 1.1 * n / 6) }'
done

# A slow bucket (2/s, burst 1): shares smaller than a token are not
# handed out to lapse; the token is leased whole when it is there.
out=$("$ACQ" race "$TMP/d1.sock" slow 1 3)
grants=${out#grants }; grants=${grants%% *}
check "2/s for 3 s through leases of 200 ms: $grants grants (5 to 7)" \
    test "$grants" -ge 5 -a "$grants" -le 7

# The LLM-token bucket is global too: 600 a minute (10 a second) for the
# fleet.  host1 takes 500; host2's 500 cannot come within a second; its
# 80, queued behind, comes from what is left once the 500 gave up.
out=$("$RAWCLIENT" "$TMP/d1.sock" req:acquire:1:provider=tpm,llm_tokens=500,timeout_ms=1000)
expect_match "host1: 500 LLM tokens of 600" '^ok 1' "$out"
out=$("$RAWCLIENT" "$TMP/d2.sock" req:acquire:2:provider=tpm,llm_tokens=500,timeout_ms=800 \
    req:acquire:3:provider=tpm,llm_tokens=80,timeout_ms=2500 | tr '\n' ' ')
expect_match "host2: not another 500 within 0.8 s, but 80" '^err 2 timeout .*ok 3' "$out"

# NOSCRIPT: the script cache flushed, the scripts are loaded again.
$RCLI script flush >/dev/null
out=$("$ACQ" race "$TMP/d1.sock" openai 2 1)
grants=${out#grants }; grants=${grants%% *}
check "after SCRIPT FLUSH the daemon still leases ($grants grants in 1 s)" test "$grants" -ge 60
expect_match "it met NOSCRIPT" '^errorstat_NOSCRIPT:count=[1-9]' "$($RCLI info errorstats | tr -d '\r')"

check "no settings warning while the hosts agree" sh -c "! grep -q 'file differs' '$TMP/daemon.log'"

# Acquires that do not wait (timeout 0): a miss is demand, the next lease
# serves the ones after it (without that, none would be: a host leases
# only for demand it knows).  Typically 28 of 30; on a loaded machine a
# process can take longer than the lease to start, so the bound is low.
granted=0
for i in $(seq 1 60); do
    out=$("$ACQ" once "$TMP/d3.sock" openai 1 0)
    [ "$i" -gt 30 ] && case $out in granted*) granted=$((granted + 1)) ;; esac
    sleep 0.02
done
check "timeout 0, once the demand is known: $granted of the last 30 granted (at least 10)" test "$granted" -ge 10

# Redis paused (CLIENT PAUSE): the exchange in flight times out after
# 250 ms and the daemon goes on in fallback; an acquire that waits is
# granted from the fallback share well within its own timeout, not held
# for the pause (2 s).
sleep 0.3
$RCLI client pause 2000 all >/dev/null
sleep 0.05
t0=$(date +%s%N)
out=$("$ACQ" once "$TMP/d2.sock" openai 1 3)
t1=$(date +%s%N)
ms=$(( (t1 - t0) / 1000000 ))
expect_match "Redis paused: an acquire is granted ($ms ms)" '^granted' "$out"
check "within the exchange timeout + 100 ms and the share's first token ($ms ms <= 450)" test "$ms" -le 450
# The reconnection backs off up to 1 s: connected again within 5 s of
# the pause's end, however loaded the machine.
sleep 2
for _ in $(seq 1 50); do
    state=$("$LLMGUARDCTL" -s "$TMP/d2.sock" --json status | jq -r .redis.state)
    [ "$state" = connected ] && break
    sleep 0.1
done
expect_eq "and connected again after the pause" connected "$state"

# A fourth daemon with host1's id: refused after waiting for it to lapse.
# First host1's entry must be live again after the pause (its heartbeat
# renews it every second for 3 s: at least 1.5 s left, by Redis' clock);
# the fourth is given 15 s to exit.
hkey=$($RCLI --scan --pattern '*{fleet}:hosts' | head -1)
for _ in $(seq 1 100); do
    left=$($RCLI hget "$hkey" host1 | awk -v now="$($RCLI time | tr '\n' ' ')" \
        '{ split(now, t, " "); print $2 - (t[1] * 1000 + t[2] / 1000) }')
    awk -v l="${left:-0}" 'BEGIN { exit !(l > 1500) }' && break
    sleep 0.1
done
host_env 4 "LLMGUARD_HOST_ID=host1"
start=$(date +%s.%N)
"$LLMGUARDD" --socket "$TMP/d4.sock" --db "$TMP/d4.db" --env-file "$TMP/h4.env" \
    2>"$TMP/d4.err" &
DUP=$!
DAEMON_PIDS="$DAEMON_PIDS $DUP"
for _ in $(seq 1 150); do kill -0 "$DUP" 2>/dev/null || break; sleep 0.1; done
kill -KILL "$DUP" 2>/dev/null        # still up: it took the id (fails below)
wait $DUP
rc=$?
took=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
expect_eq "a duplicate host id exits 78" 78 "$rc"
expect_match "saying so" "host id host1 is in use" "$(cat "$TMP/d4.err")"
check "after waiting up to 3 s for it to lapse (${took} s)" \
    awk -v t="$took" 'BEGIN { exit !(t >= 2.5 && t < 6) }'

# Redis killed: no acquire waits on it longer than the exchange timeout
# (250 ms, + 100 ms); once the leases lapse each daemon grants its share
# (rate and burst / 3 live hosts).
lines() { grep -o "$1" "$TMP/daemon.log" | wc -l; }
down0=$(lines 'r.sock unreachable (')
up0=$(lines 'redis: connected to')
kill_redis "$RPID"
slow=0
for i in 1 2 3 4 5 6; do
    t0=$(date +%s%N)
    "$ACQ" once "$TMP/d1.sock" openai 1 0.01 >/dev/null
    t1=$(date +%s%N)
    ms=$(( (t1 - t0) / 1000000 ))
    echo "# acquire (timeout 10 ms) with Redis down: $ms ms"
    [ "$ms" -le 350 ] || slow=$((slow + 1))
done
expect_eq "every acquire answered within 350 ms" 0 "$slow"
check "the outage is logged" grep -q 'redis: unix://.* unreachable' "$TMP/daemon.log"
expect_eq "the live hosts are remembered in the database" 3 \
    "$(sqlite3 "$TMP/d3.db" 'SELECT hosts FROM redis_fleet')"
# A daemon restarted while Redis is down divides by the hosts it remembers.
kill -TERM "$PID3"; wait "$PID3" 2>/dev/null
DAEMON_PIDS=$(echo "$DAEMON_PIDS" | sed "s/ $PID3\b//")
SOCK="$TMP/d3.sock" DB_OVERRIDE="$TMP/d3.db" ENVFILE="$TMP/h3.env" start_daemon
PID3=$DAEMON_PID
expect_eq "restarted with Redis down: unreachable, 3 hosts remembered" "unreachable 3" \
    "$("$LLMGUARDCTL" -s "$TMP/d3.sock" --json status | jq -r '.redis | "\(.state) \(.hosts)"')"
sleep 0.3
for n in 1 2 3; do
    "$ACQ" span "$TMP/d$n.sock" openai 2 2 > "$TMP/fb$n" &
    eval "FB$n=\$!"
done
wait $FB1 $FB2 $FB3
for n in 1 2 3; do
    read -r _ g _ f _ l < "$TMP/fb$n"
    b=$(awk -v f="$f" -v l="$l" 'BEGIN { printf "%d", 5 / 3 + 100 / 3 * (l - f) + 1 }')
    lo=$(awk 'BEGIN { printf "%d", 0.85 * 100 / 3 * 2 }')
    check "daemon $n in fallback share: $g grants <= $b" test "$g" -le "$b"
    check "daemon $n in fallback share: $g grants >= $lo" test "$g" -ge "$lo"
done

st=$("$LLMGUARDCTL" -s "$TMP/d1.sock" --json status)
expect_eq "status --json during the outage: unreachable, 3 hosts last seen" \
    "unreachable 3" "$(echo "$st" | jq -r '.redis | "\(.state) \(.hosts)"')"
check "with the last error" test -n "$(echo "$st" | jq -r .redis.last_error)"
prom=$("$LLMGUARDCTL" -s "$TMP/d1.sock" metrics --prometheus)
expect_match "llmguard_redis_up 0" '^llmguard_redis_up 0$' "$prom"
expect_match "llmguard_redis_errors_total counted" '^llmguard_redis_errors_total [1-9]' "$prom"
expect_match "llmguard_fallback_grants_total counted" \
    '^llmguard_fallback_grants_total\{provider="openai"\} [1-9]' "$prom"
# (Counted with -o: three daemons logging in the same instant to one file
# may share a line.)
expect_eq "the outage logged once by each daemon" 3 \
    "$(( $(lines 'r.sock unreachable (') - down0 ))"

# Redis back, empty: connected again, global buckets again.
start_redis r
for _ in $(seq 1 60); do
    [ "$(( $(lines 'redis: connected to') - up0 ))" -ge 3 ] && break
    sleep 0.1
done
check "all three connected again" test "$(( $(lines 'redis: connected to') - up0 ))" -eq 3
out=$("$ACQ" race "$TMP/d2.sock" openai 2 1)
grants=${out#grants }; grants=${grants%% *}
check "and leasing ($grants grants in 1 s)" test "$grants" -ge 60
check "from Redis" test -n "$($RCLI hget 'llmguard:{bucket:openai}:tokens' ts)"

# AUTH: a Redis with a password (user default); the right one connects,
# a wrong one is a log line and last_error, and the daemon serves in
# fallback.
start_redis auth --requirepass 's3cr3t pw'
for n in 1 2 3; do kill -TERM "$(eval echo \$PID$n)"; done
: > "$TMP/daemon.log"
host_env 5 "REDIS_URL=unix://default:s3cr3t%20pw@$TMP/auth.sock?db=2"
SOCK="$TMP/d5.sock" DB_OVERRIDE="$TMP/d5.db" ENVFILE="$TMP/h5.env" start_daemon
check "AUTH user + password, SELECT 2: connected" \
    grep -q "redis: connected to unix://default:\*\*\*@$TMP/auth.sock?db=2" "$TMP/daemon.log"
expect_eq "its keys in db 2" 1 \
    "$(redis-cli -s "$TMP/auth.sock" -a 's3cr3t pw' -n 2 --no-auth-warning exists 'llmguard:{fleet}:hosts')"
# A host whose provider settings differ from the newest one's says so
# (tests/integration/t_redis_config.sh has the rest).
host_env 10 "REDIS_URL=unix://default:s3cr3t%20pw@$TMP/auth.sock?db=2" \
    "LLMGUARD_HOST_ID=host10" "PROVIDER_OPENAI_RATE_PER_SEC=50"
SOCK="$TMP/d10.sock" DB_OVERRIDE="$TMP/d10.db" ENVFILE="$TMP/h10.env" start_daemon
for _ in $(seq 1 30); do
    grep -q "following host host10's configuration" "$TMP/daemon.log" && break
    sleep 0.1
done
check "settings that differ from the fleet's are logged" \
    grep -q "redis: following host host10's configuration (loaded .*): this host's file differs: provider openai rate_per_sec 50 (here 100)" "$TMP/daemon.log"
host_env 6 "REDIS_URL=unix://:wrong@$TMP/auth.sock"
SOCK="$TMP/d6.sock" DB_OVERRIDE="$TMP/d6.db" ENVFILE="$TMP/h6.env" start_daemon
st=$("$LLMGUARDCTL" -s "$TMP/d6.sock" --json status)
expect_eq "a wrong password: unreachable" unreachable "$(echo "$st" | jq -r .redis.state)"
expect_match "last_error says why" "WRONGPASS|invalid" "$(echo "$st" | jq -r .redis.last_error)"
check "logged, never the password" sh -c "grep -q 'unreachable at start (WRONGPASS' '$TMP/daemon.log' && ! grep -q wrong@ '$TMP/daemon.log'"
out=$("$ACQ" once "$TMP/d6.sock" openai 1 1)
expect_match "and it serves in fallback" '^granted' "$out"

# Fallback closed: nothing granted while Redis is away, and the answer is
# busy, not a timeout.
host_env 9 "REDIS_URL=unix://$TMP/nothing-here.sock" "LLMGUARD_REDIS_FALLBACK=closed"
SOCK="$TMP/d9.sock" DB_OVERRIDE="$TMP/d9.db" ENVFILE="$TMP/h9.env" start_daemon
check "a daemon starts while its Redis is down, saying so" \
    grep -q "nothing-here.sock unreachable at start (.*): serving in fallback closed" "$TMP/daemon.log"
expect_match "fallback closed: acquire answers busy" '^error .*busy' \
    "$("$ACQ" once "$TMP/d9.sock" openai 1 0.2)"

# TLS: rediss:// to a redis-server with a throwaway CA and certificate.
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=test-ca \
    -keyout "$TMP/ca.key" -out "$TMP/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 \
    -keyout "$TMP/srv.key" -out "$TMP/srv.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > "$TMP/san.ext"
openssl x509 -req -in "$TMP/srv.csr" -CA "$TMP/ca.crt" -CAkey "$TMP/ca.key" \
    -CAcreateserial -days 1 -extfile "$TMP/san.ext" -out "$TMP/srv.crt" 2>/dev/null
port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start_redis tls --tls-port "$port" --bind 127.0.0.1 --tls-cert-file "$TMP/srv.crt" \
    --tls-key-file "$TMP/srv.key" --tls-ca-cert-file "$TMP/ca.crt" \
    --tls-auth-clients no
host_env 7 "REDIS_URL=rediss://127.0.0.1:$port" "LLMGUARD_REDIS_CA_FILE=$TMP/ca.crt"
SOCK="$TMP/d7.sock" DB_OVERRIDE="$TMP/d7.db" ENVFILE="$TMP/h7.env" start_daemon
expect_eq "rediss:// with the CA: connected" connected \
    "$("$LLMGUARDCTL" -s "$TMP/d7.sock" --json status | jq -r .redis.state)"
out=$("$ACQ" race "$TMP/d7.sock" openai 2 1)
grants=${out#grants }; grants=${grants%% *}
check "and leasing over TLS ($grants grants in 1 s)" test "$grants" -ge 60
host_env 8 "REDIS_URL=rediss://127.0.0.1:$port" "LLMGUARD_HOST_ID=host8"
SOCK="$TMP/d8.sock" DB_OVERRIDE="$TMP/d8.db" ENVFILE="$TMP/h8.env" start_daemon
expect_match "without it the server is not trusted" "TLS: .*certificate verify failed" \
    "$("$LLMGUARDCTL" -s "$TMP/d8.sock" --json status | jq -r .redis.last_error)"
check "no password in any log line" sh -c "! grep -q 's3cr3t' '$TMP/daemon.log'"
finish
