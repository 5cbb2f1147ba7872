#!/bin/sh
# Hostile bytes get an error reply and a closed connection; everyone else
# is still served.
. "${top_srcdir:-.}/tests/integration/lib.sh"

start_daemon

out=$("$RAWCLIENT" "$SOCK" raw:ffffffff)
expect_eq "4 GiB length prefix: frame_too_large, closed" \
    "err 0 frame_too_large frame length 4294967295 exceeds the limit of 65536 bytes
closed" "$out"

out=$("$RAWCLIENT" "$SOCK" raw:00010001)
expect_match "65537 length prefix: frame_too_large" "^err 0 frame_too_large" "$out"

out=$("$RAWCLIENT" "$SOCK" raw:00000000)
expect_eq "zero length prefix: bad_request, closed" \
    "err 0 bad_request frame length 0: a frame holds one msgpack map
closed" "$out"

out=$("$RAWCLIENT" "$SOCK" raw:00000004c1c1c1c1)
expect_eq "bytes that are not msgpack: bad_request, closed" \
    "err 0 bad_request frame is not valid msgpack (or nested too deeply)
closed" "$out"

out=$("$RAWCLIENT" "$SOCK" raw:474554202f20485454502f312e310d0a0d0a)
expect_match "an HTTP request: error, closed" "^err 0 frame_too_large.*closed$" "$(echo $out)"

# Deep nesting: 40 nested arrays exceed msgpack-c's stack: not msgpack.
deep=$(printf '91%.0s' $(seq 1 40))c0
out=$("$RAWCLIENT" "$SOCK" raw:00000029$deep)
expect_match "40-deep nesting: bad_request, closed" "^err 0 bad_request.*closed$" "$(echo $out)"

# Well-formed but wrong requests: an error each, the connection lives.
out=$("$RAWCLIENT" "$SOCK" req:frobnicate:5 raw:0000000180 raw:0000000190 ping:6)
expect_eq "wrong requests: errors, connection still open" \
    "err 5 unknown_op unknown op 'frobnicate'
err 0 bad_request missing field 'op'
err 0 bad_request a request must be a msgpack map
ok 6
open" "$out"

# Pipelined pings in one write, answered in order.
out=$("$RAWCLIENT" "$SOCK" ping:1 ping:2 ping:3 | tr '\n' ' ')
expect_eq "pipelined pings" "ok 1 ok 2 ok 3 open " "$out"

# A frame split across writes is handled by the same decoder (unit tests);
# a truncated frame followed by a hang-up must not hurt the daemon.
"$RAWCLIENT" "$SOCK" raw:00000010a2 >/dev/null

check "after all that, the daemon answers the next client" "$LLMGUARDCTL" -s "$SOCK" ping
check "and the library" "$LIBPING" "$SOCK"
finish
