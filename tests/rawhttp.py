"""Raw HTTP/1.1 over a plain socket, for the hostile-client tests: the requests a well-behaved
client library refuses to send (non-ASCII header values, half-sent heads, duplicate headers,
bodies that lie about their length), and a parser for the answer."""

from __future__ import annotations

import contextlib
import json
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    """Lower-case names; repeated headers joined with ", "."""
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def connect(url: str, timeout: float = 30.0) -> socket.socket:
    sock = socket.create_connection(address(url), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def request_bytes(
    method: str,
    target: str,
    headers: list[tuple[str, str | bytes]] | None = None,
    body: bytes = b"",
    *,
    host: str = "127.0.0.1",
) -> bytes:
    """A complete request; header values may be ``bytes`` (sent as they are)."""
    lines = [f"{method} {target} HTTP/1.1".encode(), f"Host: {host}".encode()]
    names = {n.lower() for n, _ in headers or []}
    for name, value in headers or []:
        raw = value if isinstance(value, bytes) else value.encode("utf-8")
        lines.append(name.encode() + b": " + raw)
    if body and "content-length" not in names:
        lines.append(f"Content-Length: {len(body)}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def read_answer(sock: socket.socket, *, head_only: bool = False) -> Answer:
    """Read one answer from ``sock`` (Content-Length or read-to-close bodies)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a complete answer head: {buf[:200]!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    if head_only:
        return Answer(status, headers, b"")
    if "content-length" in headers:
        want = int(headers["content-length"])
        while len(rest) < want:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return Answer(status, headers, rest[:want])
    while chunk := sock.recv(65536):
        rest += chunk
    return Answer(status, headers, rest)


def exchange(url: str, data: bytes, timeout: float = 30.0) -> Answer:
    """Send ``data`` on a fresh connection and read one answer."""
    with contextlib.closing(connect(url, timeout)) as sock:
        sock.sendall(data)
        return read_answer(sock)


def closed_by_peer(sock: socket.socket) -> bool:
    """Block until the server closes ``sock`` (True) or the socket timeout passes (False)."""
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True  # reset
    return True
