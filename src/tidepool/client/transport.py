"""Moving one HTTP request to a worker and back: a blocking and an asyncio implementation.

Both answer ``send(Request) -> Response`` and turn their library's failures into the three
transport errors the read policy (:mod:`tidepool.client.reads`) decides on; neither retries or
fails over by itself — that is the policy's job, written once for both.

* :class:`SyncTransport` — blocking HTTP/1.1 straight from the calling thread, one keep-alive
  connection per thread and worker. Most data loaders call fsspec synchronously; running those
  calls on fsspec's I/O loop costs two thread hand-offs (about 0.4 ms), more than a worker takes
  to answer a warm 100 KiB read (measured: 1.0 ms per read through the loop, 0.6 ms this way).
  Connections live in a thread-local pool, so threads never share one and a forked child
  (a data-loader worker) starts afresh. Its HTTP is the few lines a worker's answers need
  (:class:`_Connection`), not ``http.client``: that one builds each request header by header
  and parses each answer's headers with the ``email`` package, about 0.1 ms of a warm 100 KiB
  read's 0.45 ms (600 reads on loopback: 0.23 s with http.client, 0.16 s with a bare socket).
* :class:`AsyncTransport` — one pooled aiohttp session per process (recreated after ``fork``),
  for the async fsspec methods (``_cat_file``, batch reads, metadata).

Limits: ``https://`` workers are verified against the system's certificate authorities.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict


@dataclass(frozen=True, slots=True)
class Request:
    """One request to one worker: ``base`` (``http://host:port``) and ``target`` (path+query)."""

    base: str
    target: str
    headers: Mapping[str, str] = field(default_factory=dict)
    method: str = "GET"
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str] | Any
    """Case-insensitive (a ``CIMultiDict``, or aiohttp's ``CIMultiDictProxy``)."""
    body: bytes


class Unreachable(ConnectionError):
    """The worker could not be reached (refused, reset, timed out before an answer)."""


class StaleConnection(ConnectionError):
    """A pooled keep-alive connection the worker had closed failed before any answer; a fresh
    connection may well succeed."""


class Truncated(OSError):
    """The worker's answer was cut short (it aborts a stream that failed after its headers)."""


TRANSPORT_ERRORS = (Unreachable, StaleConnection, Truncated)

# a pooled keep-alive connection the worker closed meanwhile fails like this on reuse
_STALE = (BrokenPipeError, ConnectionResetError)

MAX_LINE = 64 * 1024
"""Bytes at most of an answer's status line, one header line or one chunk-size line."""
MAX_HEADERS = 128
"""Header lines at most in one answer."""
READ_BUFFER = 256 * 1024
"""Bytes of a connection's read buffer: a warm 100 KiB answer arrives in one or two reads."""
_BAD_TARGET = re.compile(r"[\x00-\x20\x7f]")
_BAD_FIELD = re.compile(r"[\r\n\x00]")


class _Closed(ConnectionError):
    """The worker closed the connection before the first byte of an answer."""


class _BadAnswer(OSError):
    """An answer that is not HTTP/1.x as a worker writes it."""


class _Short(OSError):
    """The connection ended inside an answer's body."""


class _Connection:
    """One keep-alive HTTP/1.1 connection to a worker: a request written with one ``sendall``,
    its answer read through one buffered reader — status line, headers, then a body of
    ``Content-Length`` bytes, of chunks, or up to the close. Every length is bounded."""

    __slots__ = ("host", "rfile", "sock")

    def __init__(self, sock: socket.socket, host: str) -> None:
        self.sock = sock
        self.host = host
        self.rfile = sock.makefile("rb", buffering=READ_BUFFER)

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()

    def exchange(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None
    ) -> tuple[int, CIMultiDict[str], bytes, bool]:
        """``(status, headers, body, close)``; ``close``: the connection cannot be reused."""
        if _BAD_TARGET.search(target) or _BAD_TARGET.search(method):
            raise ValueError(f"a request target has no spaces or control characters: {target!r}")
        lines = [f"{method} {target} HTTP/1.1\r\nHost: {self.host}\r\n"]
        for name, value in headers.items():
            if _BAD_FIELD.search(name) or _BAD_FIELD.search(value) or ":" in name:
                raise ValueError(f"header {name!r} has a line break or a NUL (value not shown)")
            lines.append(f"{name}: {value}\r\n")
        if body is not None:
            lines.append(f"Content-Length: {len(body)}\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        self.sock.sendall(head + body if body else head)
        status, http11 = self._status_line(first=True)
        while 100 <= status < 200:  # 100 Continue and the like: their headers, then the answer
            self._headers()
            status, http11 = self._status_line(first=False)
        fields = self._headers()
        tokens = fields.get("connection", "").lower()
        close = "close" in tokens or (not http11 and "keep-alive" not in tokens)
        if method == "HEAD" or status in (204, 304):
            return status, fields, b"", close
        if "chunked" in fields.get("transfer-encoding", "").lower():
            return status, fields, self._chunked(), close
        length = fields.get("content-length")
        if length is None:
            rest: bytes = self.rfile.read()
            return status, fields, rest, True  # up to the close
        return status, fields, self._exactly(_length(length)), close

    def _line(self) -> bytes:
        line = self.rfile.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise _BadAnswer(f"a line of the answer is longer than {MAX_LINE} bytes")
        return line

    def _status_line(self, *, first: bool) -> tuple[int, bool]:
        line = self._line()
        if not line:
            if first:
                raise _Closed("the worker closed the connection without an answer")
            raise _BadAnswer("the answer ended after an interim (1xx) answer")
        version, _, rest = line.partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise _BadAnswer(f"not an HTTP/1.x status line: {line[:80]!r}")
        return int(code), version == b"HTTP/1.1"

    def _headers(self) -> CIMultiDict[str]:
        fields: CIMultiDict[str] = CIMultiDict()
        for _ in range(MAX_HEADERS + 1):
            line = self._line()
            if line in (b"\r\n", b"\n"):
                return fields
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise _BadAnswer(f"not a header line: {line[:80]!r}")
            fields.add(name.decode("latin-1"), value.strip().decode("latin-1"))
        raise _BadAnswer(f"more than {MAX_HEADERS} header lines in one answer")

    def _exactly(self, n: int) -> bytes:
        data: bytes = self.rfile.read(n)
        if len(data) != n:
            raise _Short(f"answer cut short after {len(data)} of {n} bytes")
        return data

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_text = self._line().split(b";", 1)[0].strip()
            if not size_text:
                raise _Short("answer cut short before a chunk's size")
            try:
                size = int(size_text, 16) if len(size_text) <= 16 else -1
            except ValueError:
                size = -1
            if size < 0 or not size_text.isalnum():
                raise _BadAnswer(f"not a chunk size: {size_text[:40]!r}")
            if size == 0:
                while self._line() not in (b"\r\n", b"\n", b""):
                    pass  # trailers: none a worker sends that we need
                return b"".join(parts)
            parts.append(self._exactly(size))
            if self._line() not in (b"\r\n", b"\n"):
                raise _BadAnswer("a chunk does not end with a line break")


def _length(text: str) -> int:
    if not text.isdigit() or len(text) > 18:
        raise _BadAnswer(f"not a Content-Length: {text[:40]!r}")
    return int(text)


class SyncTransport:
    def __init__(self, headers: Mapping[str, str], connect_timeout: float, timeout: float) -> None:
        self.headers = dict(headers)
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._local = threading.local()
        self._tls: ssl.SSLContext | None = None

    def _pool(self) -> dict[str, _Connection]:
        pool: dict[str, _Connection] | None = getattr(self._local, "pool", None)
        if pool is None or getattr(self._local, "pid", None) != os.getpid():
            pool = {}
            self._local.pool, self._local.pid = pool, os.getpid()
        return pool

    def _connect(self, base: str) -> _Connection:
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"a worker address is http:// or https://; got {base!r}")
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            sock = socket.create_connection((host, port), timeout=self.connect_timeout)
        except OSError as exc:
            raise Unreachable(f"{base}: {exc}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if parts.scheme == "https":
                if self._tls is None:  # the system's authorities (and SSL_CERT_FILE)
                    self._tls = ssl.create_default_context()
                sock = self._tls.wrap_socket(sock, server_hostname=host)
            sock.settimeout(self.timeout)
        except OSError as exc:
            sock.close()
            raise Unreachable(f"{base}: {exc}") from exc
        return _Connection(sock, parts.netloc.rpartition("@")[2])  # never a user:password@

    def send(self, req: Request) -> Response:
        pool = self._pool()
        conn = pool.get(req.base)
        reused = conn is not None
        if conn is None:
            conn = pool[req.base] = self._connect(req.base)
        try:
            headers = {**self.headers, **req.headers} if req.headers else self.headers
            status, fields, body, close = conn.exchange(req.method, req.target, headers, req.body)
            if close:
                self._drop(req.base, conn)
            return Response(status, fields, body)
        except _Short as exc:
            self._drop(req.base, conn)
            raise Truncated(f"{req.base}: {exc}") from exc
        except (_Closed, *_STALE) as exc:
            self._drop(req.base, conn)
            if reused:
                raise StaleConnection(f"{req.base}: {exc!r}") from exc
            raise Unreachable(f"{req.base}: {exc!r}") from exc
        except OSError as exc:
            self._drop(req.base, conn)
            raise Unreachable(f"{req.base}: {exc!r}") from exc
        except BaseException:
            self._drop(req.base, conn)
            raise

    def _drop(self, base: str, conn: _Connection) -> None:
        conn.close()
        self._pool().pop(base, None)

    def close(self) -> None:
        for conn in self._pool().values():
            conn.close()
        self._pool().clear()


class AsyncTransport:
    def __init__(self, headers: Mapping[str, str], connect_timeout: float, timeout: float) -> None:
        self.headers = dict(headers)
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.session: aiohttp.ClientSession | None = None
        self._pid = 0

    async def open(self) -> aiohttp.ClientSession:
        """The session of this process (a forked child makes its own)."""
        if self.session is None or self._pid != os.getpid() or self.session.closed:
            connector = aiohttp.TCPConnector(limit=64, keepalive_timeout=60)
            self.session = aiohttp.ClientSession(
                connector=connector,
                headers=self.headers,
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.connect_timeout, sock_read=self.timeout
                ),
                auto_decompress=False,
                # large socket reads: with the 64 KiB default a warm 8 MiB block reads at half
                # the speed (measured: ~400 vs ~800 MB/s on loopback)
                read_bufsize=4 << 20,
            )
            self._pid = os.getpid()
        return self.session

    async def send(self, req: Request) -> Response:
        session = await self.open()
        try:
            async with session.request(
                req.method, req.base + req.target, headers=dict(req.headers), data=req.body
            ) as resp:
                body = await resp.read()
                return Response(resp.status, resp.headers, body)
        except aiohttp.ClientPayloadError as exc:
            raise Truncated(f"{req.base}: answer cut short ({exc})") from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise StaleConnection(f"{req.base}: {exc!r}") from exc
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise Unreachable(f"{req.base}: {exc!r}") from exc

    async def close(self) -> None:
        if self.session is not None and not self.session.closed and self._pid == os.getpid():
            await self.session.close()


def header(headers: Mapping[str, str] | Any, name: str) -> str | None:
    """A header value from either transport's header mapping."""
    value = headers.get(name)
    return None if value is None else str(value)
