#!/bin/sh
# /healthz tells a load balancer whether the daemon can write its quotas:
# 200 and {"status":"ok"} while it can, 503 and {"status":"failing"} with
# the reason while it cannot (a database it may not write), 200 again
# once it can.  status says the same.  (As root nothing is read-only, so
# the daemon runs as nobody, as in t_faults.sh.)
. "${top_srcdir:-.}/tests/integration/lib.sh"
ACQ="$top_builddir/tests/integration/acquirer"

if [ "$(id -u)" != 0 ] || ! command -v setpriv >/dev/null; then
    echo "needs root and setpriv to run the daemon as nobody: skipped"
    exit 77
fi
chmod 0755 "$TMP"
mkdir "$TMP/ro"
chown 65534:65534 "$TMP/ro"
SOCK="$TMP/ro/s.sock"
PORT=$(free_port)
printf 'LLMGUARD_METRICS_LISTEN=127.0.0.1:%s\n' "$PORT" > "$TMP/h.env"
chmod 0644 "$TMP/h.env"
export DAEMON_WRAP="setpriv --reuid=65534 --regid=65534 --clear-groups"
healthz() { curl -s -w ' %{http_code}' "http://127.0.0.1:$PORT/healthz"; }

ENVFILE="$TMP/h.env" DB_OVERRIDE="$TMP/ro/q.db" start_daemon
"$ACQ" reserve "$SOCK" wf - 5 >/dev/null
sleep 0.3
out=$(healthz)
expect_eq "writable: 200" 200 "${out##* }"
expect_eq "writable: status ok, the store ok, a last flush" "ok ok true" \
    "$(echo "${out% *}" | jq -r '"\(.status) \(.store.state) \(.store.last_flush > 0)"')"
stop_daemon

chmod 0444 "$TMP/ro/q.db"*
ENVFILE="$TMP/h.env" DB_OVERRIDE="$TMP/ro/q.db" start_daemon
out=$(healthz)
expect_eq "read-only: 503" 503 "${out##* }"
expect_eq "read-only: status failing, and why" "failing true" \
    "$(echo "${out% *}" | jq -r '"\(.status) \(.store.error | test("read-only"))"')"
out=$("$LLMGUARDCTL" -s "$SOCK" status)
expect_match "status says so too" "^store +failing: .*read-only" "$out"

chmod 0644 "$TMP/ro/q.db"*
"$ACQ" reserve "$SOCK" wf - 1 >/dev/null
for _ in $(seq 1 60); do
    [ "$(healthz | awk '{ print $NF }')" = 200 ] && break
    sleep 0.1
done
out=$(healthz)
expect_eq "writable again: 200" 200 "${out##* }"
expect_eq "writable again: ok" ok "$(echo "${out% *}" | jq -r .status)"
stop_daemon
unset DAEMON_WRAP
finish
