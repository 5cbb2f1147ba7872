#!/bin/sh
# llmguardctl top in a real terminal: a private tmux server with an 80x24
# window runs it; the view shows the providers, then a workflow once it has
# traffic, fits the window, and q quits.  Without a terminal it prints
# plain blocks, one per refresh, and -n N stops after N.
. "${top_srcdir:-.}/tests/integration/lib.sh"
ACQ="$top_builddir/tests/integration/acquirer"

if ! command -v tmux >/dev/null 2>&1; then
    echo "tmux is not installed (scripts/quickstart installs it)"
    exit 77
fi
TMUX_SERVER="llmguard-top-$$"
# The server's socket under $TMP, removed with it.
TMUX_TMPDIR="$TMP"
export TMUX_TMPDIR
unset TMUX
export TERM="${TERM:-xterm}"
# Always stop the private tmux server, then the daemons.
trap 'tmux -L "$TMUX_SERVER" kill-server 2>/dev/null; cleanup' EXIT

cat > "$TMP/t.env" <<'ENV'
PROVIDER_GROQ_RATE_PER_SEC=50
PROVIDER_OPENAI_RATE_PER_SEC=20
ENV
ENVFILE="$TMP/t.env" start_daemon

# run_top WINDOW SOCKET: top in a new 80x24 window; its exit status goes to
# $TMP/WINDOW.rc when it ends.
run_top() {
    if tmux -L "$TMUX_SERVER" has-session 2>/dev/null; then
        tmux -L "$TMUX_SERVER" new-window -d -n "$1" \
            "'$LLMGUARDCTL' -s '$2' top; echo \$? > '$TMP/$1.rc'; sleep 600"
    else
        tmux -L "$TMUX_SERVER" -f /dev/null new-session -d -s top -n "$1" \
            -x 80 -y 24 \
            "'$LLMGUARDCTL' -s '$2' top; echo \$? > '$TMP/$1.rc'; sleep 600"
    fi
}
screen() { tmux -L "$TMUX_SERVER" capture-pane -p -t "top:$1"; }
# wait_screen WINDOW REGEX: up to 10 s for the window to show it.
wait_screen() {
    for _ in $(seq 1 100); do
        screen "$1" | grep -Eq -- "$2" && return 0
        sleep 0.1
    done
    return 1
}

run_top main "$SOCK"
check "the view shows the provider groq" wait_screen main '^groq +healthy +\[#+\.*\] +100%'
check "and openai" wait_screen main '^openai +healthy '
check "and its table head" wait_screen main '^PROVIDER +STATE +FILL +RATE/S +PERMITS/S +WAITERS +COOLDOWN'
check "no workflow before any traffic" wait_screen main '^\(no permits reported yet\)$'
check "and how to quit" wait_screen main '^q: quit$'

# Traffic: calls of the workflow "traced", spread over a few seconds so
# that a refresh sees them arrive.
( for _ in 1 2 3 4 5; do "$ACQ" calls "$SOCK" 10 >/dev/null; sleep 0.4; done ) &
traffic=$!
check "after traffic the view names the workflow" wait_screen main '^traced +[0-9.]+ +[0-9]+ +[0-9]+ +100000$'
check "and counts its permits per second" wait_screen main 'permits/s [1-9][0-9.]*'
check "groq's permits per second too" wait_screen main '^groq +healthy +\[[#.]+\] +[0-9]+% +50 +[1-9][0-9.]* '
wait "$traffic"
check "all 50 permits are counted" wait_screen main '^traced +[0-9.]+ +50 +'
screen main > "$TMP/screen"
expect_eq "the view fits 80 columns" "" "$(awk 'length > 80' "$TMP/screen")"

tmux -L "$TMUX_SERVER" send-keys -t top:main x
sleep 1.2
check "another key does not quit" test ! -e "$TMP/main.rc"
tmux -L "$TMUX_SERVER" send-keys -t top:main q
for _ in $(seq 1 50); do [ -s "$TMP/main.rc" ] && break; sleep 0.1; done
expect_eq "q quits, exit 0" 0 "$(cat "$TMP/main.rc" 2>/dev/null)"
# Back on the normal screen, the view is gone.
gone=no
for _ in $(seq 1 50); do
    screen main | grep -q '^PROVIDER' || { gone=yes; break; }
    sleep 0.1
done
expect_eq "and leaves the alternate screen" yes "$gone"

# A daemon with more providers than the window has rows: the view still
# fits in 24 lines, ends with its keys line and says what it left out.
SOCK2="$TMP/many.sock"
for i in $(seq 1 30); do echo "PROVIDER_P$i""_RATE_PER_SEC=5"; done > "$TMP/many.env"
"$LLMGUARDD" --socket "$SOCK2" --db :memory: --env-file "$TMP/many.env" 2>>"$TMP/daemon.log" &
PID2=$!
DAEMON_PIDS="$DAEMON_PIDS $PID2"
for _ in $(seq 1 100); do "$LLMGUARDCTL" -s "$SOCK2" ping >/dev/null 2>&1 && break; sleep 0.05; done
run_top many "$SOCK2"
check "30 providers: the view says how many it left out" wait_screen many '^\.\.\. and [0-9]+ more$'
check "and still ends with the keys line" wait_screen many '^q: quit$'
expect_eq "on the 24 rows of the window" 24 "$(screen many | wc -l)"
tmux -L "$TMUX_SERVER" send-keys -t top:many q
for _ in $(seq 1 50); do [ -s "$TMP/many.rc" ] && break; sleep 0.1; done
expect_eq "q quits there too" 0 "$(cat "$TMP/many.rc" 2>/dev/null)"

# A tenant that used quota, without ever going over it: among the
# tenants, with its use (quota_list).
"$ACQ" reserve "$SOCK" topwf acme 123 > /dev/null
out=$("$LLMGUARDCTL" -s "$SOCK" top -n 1)
expect_match "a tenant using quota is shown, with its use" \
    "^acme +(-|[0-9.]+) +0 +123 +[0-9]+$" "$out"

# Not a terminal: -n 3 prints three plain blocks about a second apart.
start=$(date +%s.%N)
"$LLMGUARDCTL" -s "$SOCK" top -n 3 > "$TMP/plain" 2>"$TMP/err"
expect_eq "top -n 3 exits 0" 0 $?
elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { print e - s }')
check "in about two seconds (1.5 to 15)" awk -v e="$elapsed" 'BEGIN { exit !(e >= 1.5 && e < 15) }'
expect_eq "three blocks" 3 "$(grep -c '^llmguardd on ' "$TMP/plain")"
expect_eq "each with groq" 3 "$(grep -c '^groq ' "$TMP/plain")"
expect_eq "and the workflow" 3 "$(grep -c '^traced ' "$TMP/plain")"
expect_eq "no escape sequences" 0 "$(grep -c "$(printf '\033')" "$TMP/plain")"
expect_eq "no keys line without a terminal" 0 "$(grep -c '^q: quit' "$TMP/plain")"
expect_eq "nothing on stderr" "" "$(cat "$TMP/err")"

# A daemon that goes away after the first refresh: the view says so and
# keeps trying, and shows the daemon again once it is back.
"$LLMGUARDCTL" -s "$SOCK2" top -n 12 -d 0.5 > "$TMP/away" 2>&1 &
top_pid=$!
sleep 0.7
kill -TERM "$PID2"; wait "$PID2"
sleep 1.3
"$LLMGUARDD" --socket "$SOCK2" --db :memory: --env-file "$TMP/many.env" 2>>"$TMP/daemon.log" &
DAEMON_PIDS="$DAEMON_PIDS $!"
wait "$top_pid"
expect_eq "top outlives a daemon that goes away: exit 0" 0 $?
expect_match "the view says it is not answering" "^llmguardd is not answering: " "$(cat "$TMP/away")"
back=$(awk '/^llmguardd is not answering/ { away = 1 } away && /^PROVIDER / { n++ } END { print n + 0 }' "$TMP/away")
check "and shows it again once it is back ($back blocks)" test "$back" -ge 1

"$LLMGUARDCTL" -s "$SOCK" top -n 0 >/dev/null 2>&1
expect_eq "top -n 0: usage error" 2 $?
"$LLMGUARDCTL" -s "$SOCK" top -n >/dev/null 2>&1
expect_eq "top -n without N: usage error" 2 $?
"$LLMGUARDCTL" -s "$SOCK" top -d 0.01 -n 1 >/dev/null 2>&1
expect_eq "top -d 0.01: usage error" 2 $?
out=$("$LLMGUARDCTL" -s "$SOCK" --json top -n 1)
expect_eq "top --json: a JSON usage error" usage "$(echo "$out" | jq -r .error.code)"
"$LLMGUARDCTL" -s "$TMP/none.sock" top -n 1 >/dev/null 2>&1
expect_eq "no daemon: exit 69" 69 $?
finish
