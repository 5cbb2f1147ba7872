#!/bin/sh
# check_function_length.sh - fail when a C function is longer than a limit.
#
#   tests/check_function_length.sh [-n LINES] [DIR|FILE ...]
#
# Measures every function of the .c files given (default: daemon/, proto/,
# libclient/ and cli/ of $top_srcdir, else of the tree the script is in)
# as clang-tidy's readability-function-size does, the lines after its
# opening brace up to its closing one, and prints each that is over LINES
# (80) as "FILE:LINE: NAME: N lines".  Exits 1 if any is, 0 if none, 2 on
# bad usage.
# It relies on the house style (.clang-format): a function's name begins a
# line, and its braces stand alone in the first column.
set -eu

limit=80
if [ "${1:-}" = -n ]; then
    [ $# -ge 2 ] || { echo "usage: $0 [-n LINES] [DIR|FILE ...]" >&2; exit 2; }
    limit=$2
    shift 2
fi
case $limit in
''|*[!0-9]*) echo "$0: -n wants a number, not '$limit'" >&2; exit 2 ;;
esac
if [ $# -eq 0 ]; then
    cd "${top_srcdir:-$(dirname "$0")/..}"
    set -- daemon proto libclient cli
fi

files=$(find "$@" -name '*.c' -type f | LC_ALL=C sort)
[ -n "$files" ] || { echo "$0: no .c files in $*" >&2; exit 2; }

# shellcheck disable=SC2086
awk -v limit="$limit" '
    FNR == 1 { name = ""; start = 0 }
    # The last line that begins with an identifier and a "(" names the
    # function whose lone "{" follows.
    start == 0 && /^[A-Za-z_][A-Za-z0-9_]*[ \t]*\(/ {
        name = $0
        sub(/[ \t]*\(.*/, "", name)
        at = FNR
    }
    start == 0 && /^\{[ \t]*$/ && name != "" { start = FNR; next }
    start > 0 && /^\}/ {
        n = FNR - start
        if (n > limit) {
            printf "%s:%d: %s: %d lines\n", FILENAME, at, name, n
            over++
        }
        start = 0
        name = ""
    }
    END { exit over > 0 }
' $files
