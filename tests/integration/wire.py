#!/usr/bin/python3
"""wire.py SOCKET: requests on stdin, one JSON map a line, to llmguardd over
one connection; each reply printed as one JSON line, in order.

A request without "id" gets its line number.  A string value "@N.field"
is replaced by that field of the reply to line N (1-based), so a report
can name the permit_id a permit got.  Used by the integration tests to
see every field of a reply (llmguardctl shows a chosen few).
"""
import json
import socket
import struct
import sys

import msgpack


def send(s, msg):
    b = msgpack.packb(msg)
    s.sendall(struct.pack(">I", len(b)) + b)


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        chunk = s.recv(n - len(b))
        if not chunk:
            raise EOFError("llmguardd closed the connection")
        b += chunk
    return b


def recv(s):
    n = struct.unpack(">I", recv_exact(s, 4))[0]
    return msgpack.unpackb(recv_exact(s, n), raw=False)


def resolve(value, replies):
    if isinstance(value, str) and value.startswith("@"):
        line, field = value[1:].split(".", 1)
        return replies[int(line) - 1][field]
    return value


def main():
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    replies = []
    for i, line in enumerate(sys.stdin):
        msg = {k: resolve(v, replies) for k, v in json.loads(line).items()}
        msg.setdefault("id", i + 1)
        send(s, msg)
        rep = recv(s)
        replies.append(rep)
        print(json.dumps(rep), flush=True)


if __name__ == "__main__":
    main()
