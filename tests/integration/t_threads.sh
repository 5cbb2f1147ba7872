#!/bin/sh
# One handle shared by threads: each thread reads the message of its own
# last call from llmguard_last_error(), whatever the other one does.
. "${top_srcdir:-.}/tests/integration/lib.sh"
THREADS="$top_builddir/tests/integration/threads"

start_daemon

out=$("$THREADS" "$SOCK" 500)
expect_eq "two threads on one handle: each sees its own last error" \
    "ok 500" "$out"
finish
