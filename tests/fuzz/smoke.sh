#!/bin/sh
# smoke.sh SRCDIR SECONDS TARGET - one libFuzzer target's part of
# `make fuzz-smoke`: its crashes/ inputs once (regressions), then SECONDS of
# fuzzing from a temporary copy of its corpus and crashes.  Any crash fails;
# its input and the copy are kept, and the path is printed.  Its own lines
# start with the target's name, so that two targets fuzzing at once
# (FUZZ_JOBS=2) still read apart.
set -u
srcdir=$1 seconds=$2 t=$3
n=$(basename "$t")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/$n.XXXXXX") || exit 1
mkdir "$tmp/corpus" "$tmp/artifacts" || exit 1
cp "$srcdir/tests/fuzz/corpus/$n/"* "$tmp/corpus/" || exit 1
set -- "$srcdir/tests/fuzz/crashes/$n/"*
if [ -f "$1" ]; then
    cp "$@" "$tmp/corpus/" || exit 1
    echo "$n: $# regression inputs"
    if ! "$t" -artifact_prefix="$tmp/artifacts/" "$@" >"$tmp/regress.log" 2>&1; then
        tail -n 40 "$tmp/regress.log"
        echo "FAIL: $n: a crashes/ input fails again; see $tmp"
        exit 1
    fi
fi
echo "$n: fuzzing for $seconds s from $(ls "$tmp/corpus" | wc -l) inputs"
if ! "$t" -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix="$tmp/artifacts/" "$tmp/corpus" >"$tmp/fuzz.log" 2>&1; then
    tail -n 60 "$tmp/fuzz.log"
    echo "FAIL: $n found a crash: $tmp/artifacts"
    echo "  minimise: $t -minimize_crash=1 -runs=10000 FILE"
    echo "  then save it under tests/fuzz/crashes/$n/"
    exit 1
fi
grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units)' \
    "$tmp/fuzz.log" | sed "s|^|$n: |"
rm -rf "$tmp"
