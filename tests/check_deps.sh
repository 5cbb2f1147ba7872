#!/bin/sh
# check_deps.sh - no two files of daemon/ depend on each other in a circle.
#
# Reads the daemon's object files: file A depends on file B when A uses a
# symbol that B defines (nm).  tsort(1) then finds any circle.  Prints the
# dependencies file by file, and exits 1 naming the files of a circle.
set -u
: "${top_builddir:=$(cd "$(dirname "$0")/.." && pwd)}"
objs=$(ls "$top_builddir"/daemon/llmguardd-*.o 2>/dev/null)
if [ -z "$objs" ]; then
    echo "check_deps: no daemon object files under $top_builddir/daemon" >&2
    exit 1
fi
tmp=$(mktemp -d /tmp/llmguard-deps.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

name() { basename "$1" .o | sed 's/^llmguardd-//'; }

for o in $objs; do
    n=$(name "$o")
    nm -g --defined-only "$o" | awk -v f="$n" 'NF == 3 { print $3, f }'
done | sort -u > "$tmp/defs"
for o in $objs; do
    n=$(name "$o")
    nm -u "$o" | awk -v f="$n" '{ print $NF, f }'
done | sort -u > "$tmp/uses"
# "user definer" for every symbol a file takes from another.
join "$tmp/uses" "$tmp/defs" | awk '$2 != $3 { print $2, $3 }' |
    sort -u > "$tmp/edges"

awk '{ d[$1] = d[$1] " " $2 } END { for (f in d) print f ":" d[f] }' \
    "$tmp/edges" | sort
if ! tsort "$tmp/edges" > /dev/null 2> "$tmp/loop"; then
    echo "check_deps: daemon/ has a circle of dependencies:" >&2
    awk '/input contains a loop/ { printf "%s  circle:", n++ ? "\n" : ""; next }
         { sub(/^tsort: /, ""); printf " %s", $0 } END { print "" }' \
        "$tmp/loop" >&2
    exit 1
fi
echo "check_deps: $(wc -l < "$tmp/edges") dependencies between" \
    "$(echo "$objs" | wc -w) files of daemon/, no circle"
