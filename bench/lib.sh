# shellcheck shell=sh
# lib.sh - sourced by the bench scripts: a temporary directory and the
# processes a script starts, stopped and removed however it ends (set
# TMP_PREFIX before sourcing; add pids to PIDS), and the bench programs.

TMP=$(mktemp -d "/tmp/${TMP_PREFIX:-llmguard-bench}.XXXXXX")
PIDS=""

# stop_pid PID: SIGTERM, up to 5 s to go, then SIGKILL.
stop_pid() {
    kill -TERM "$1" 2>/dev/null || return 0
    for _ in $(seq 1 50); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

cleanup() {
    for pid in $PIDS; do stop_pid "$pid"; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

msgpack_pkg() {
    if pkg-config --exists msgpack-c 2>/dev/null; then echo msgpack-c
    else echo msgpack; fi
}

# tool NAME [--] PATTERN: the path of bench program NAME, one whose --help
# matches PATTERN (a mode or an option it must know); compiled into $TMP
# when the build tree has none (or an older one).  $builddir, $srcdir and
# $here (bench/) are the caller's.  Prints nothing when it cannot be had.
# shellcheck disable=SC2154 # builddir, srcdir: the caller's
tool() {
    name=$1; shift
    [ "$1" = -- ] && shift
    pattern=$1
    eval "given=\${$(echo "$name" | tr '[:lower:]' '[:upper:]'):-}"
    if [ -n "$given" ]; then echo "$given"; return; fi
    if [ -x "$builddir/bench/$name" ] &&
        "$builddir/bench/$name" --help 2>/dev/null | grep -q -- "$pattern"; then
        echo "$builddir/bench/$name"
        return
    fi
    cc=${CC:-cc}
    flags="-O2 -g -std=gnu11 -D_GNU_SOURCE"
    out=$TMP/$name
    # Flags from pkg-config are word lists: split on purpose.
    # shellcheck disable=SC2086,SC2046
    case $name in
    loadgen)
        lib=$builddir/libclient/.libs/libllmguard.a
        [ -f "$lib" ] || return 0
        $cc $flags -I"$srcdir/libclient" -o "$out" "$here/loadgen.c" \
            "$here/harness.c" "$lib" $(pkg-config --libs "$(msgpack_pkg)") \
            -lm -lpthread ;;
    pingpong)
        lib=$builddir/proto/.libs/libproto.a
        [ -f "$lib" ] || return 0
        $cc $flags -I"$srcdir/proto" $(pkg-config --cflags "$(msgpack_pkg)") \
            -o "$out" "$here/pingpong.c" "$here/harness.c" "$lib" \
            $(pkg-config --libs "$(msgpack_pkg)") -lm ;;
    redisgen)
        pkg-config --exists hiredis 2>/dev/null || return 0
        $cc $flags $(pkg-config --cflags hiredis) -o "$out" \
            "$here/redisgen.c" "$here/harness.c" \
            $(pkg-config --libs hiredis) -lm ;;
    esac
    [ -x "$out" ] && echo "$out"
}

# median, range, int: a column of numbers on stdin summed up in one line:
# its median, "lo–hi", each rounded ("-" for none).
median() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-";
        else if (NR % 2) print v[(NR + 1) / 2];
        else printf "%.6g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

range() {
    sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 }
        END { if (NR == 0) print "-"; else if (NR == 1) printf "%.0f\n", lo;
              else printf "%.0f–%.0f\n", lo, hi }'
}

int() {
    awk '{ if ($1 == "-") print "-"; else printf "%.0f\n", $1 }'
}
