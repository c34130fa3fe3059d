"""A tiny line-protocol TCP server, run as its own process, that the WAN relay tests talk through.

It runs outside the test process so that its sends do not compete for the GIL with the timed
client. Protocol, one command per line: ``PING`` -> ``PONG``; ``GET n`` -> n bytes of a fixed
pattern; ``PUT n`` + n bytes -> ``OK <md5>``. When the client half-closes, it answers ``BYE`` and
closes. It prints its port on stdout, listens on 127.0.0.1 only and exits when stdin closes.
"""

from __future__ import annotations

import hashlib
import socket
import sys
import threading

PATTERN = bytes(range(256)) * 4096  # 1 MiB
BLOB = PATTERN * 24  # made once, so a GET costs no Python work before the first byte


def pattern(n: int) -> bytes:
    if n <= len(BLOB):
        return BLOB[:n]
    return (PATTERN * (n // len(PATTERN) + 1))[:n]


def handle(conn: socket.socket) -> None:
    with conn:
        reader = conn.makefile("rb")
        try:
            while line := reader.readline():
                cmd, _, arg = line.strip().partition(b" ")
                if cmd == b"PING":
                    conn.sendall(b"PONG\n")
                elif cmd == b"GET":
                    n = int(arg)
                    conn.sendall(memoryview(BLOB)[:n] if n <= len(BLOB) else pattern(n))
                elif cmd == b"PUT":
                    data = reader.read(int(arg))
                    conn.sendall(b"OK " + hashlib.md5(data).hexdigest().encode() + b"\n")
            conn.sendall(b"BYE\n")
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def main() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    print(srv.getsockname()[1], flush=True)

    def serve() -> None:
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    sys.stdin.read()  # the test closes our stdin to stop us


if __name__ == "__main__":
    main()
