"""Moving one HTTP request to a worker and back: a blocking and an asyncio implementation.

Both answer ``send(Request) -> Response`` and turn their library's failures into the three
transport errors the read policy (:mod:`tidepool.client.reads`) decides on; neither retries or
fails over by itself — that is the policy's job, written once for both.

* :class:`SyncTransport` — ``http.client`` straight from the calling thread, one keep-alive
  connection per thread and worker. Most data loaders call fsspec synchronously; running those
  calls on fsspec's I/O loop costs two thread hand-offs (about 0.4 ms), more than a worker takes
  to answer a warm 100 KiB read (measured: 1.0 ms per read through the loop, 0.6 ms this way).
  Connections live in a thread-local pool, so threads never share one and a forked child
  (a data-loader worker) starts afresh.
* :class:`AsyncTransport` — one pooled aiohttp session per process (recreated after ``fork``),
  for the async fsspec methods (``_cat_file``, batch reads, metadata).

Limits: ``https://`` workers are verified against the system's certificate authorities.
"""

from __future__ import annotations

import http.client
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp


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
    """Case-insensitive (``http.client.HTTPMessage`` or aiohttp's ``CIMultiDictProxy``)."""
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
_STALE = (
    http.client.RemoteDisconnected,
    BrokenPipeError,
    ConnectionResetError,
    http.client.CannotSendRequest,
    http.client.BadStatusLine,
)


class SyncTransport:
    def __init__(self, headers: Mapping[str, str], connect_timeout: float, timeout: float) -> None:
        self.headers = dict(headers)
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._local = threading.local()

    def _pool(self) -> dict[str, http.client.HTTPConnection]:
        pool: dict[str, http.client.HTTPConnection] | None = getattr(self._local, "pool", None)
        if pool is None or getattr(self._local, "pid", None) != os.getpid():
            pool = {}
            self._local.pool, self._local.pid = pool, os.getpid()
        return pool

    def _connect(self, base: str) -> http.client.HTTPConnection:
        parts = urlsplit(base)
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(
                parts.hostname or "127.0.0.1", parts.port or 443, timeout=self.connect_timeout
            )
        elif parts.scheme == "http":
            conn = http.client.HTTPConnection(
                parts.hostname or "127.0.0.1", parts.port or 80, timeout=self.connect_timeout
            )
        else:
            raise ValueError(f"a worker address is http:// or https://; got {base!r}")
        try:
            conn.connect()
        except OSError as exc:
            raise Unreachable(f"{base}: {exc}") from exc
        assert conn.sock is not None
        conn.sock.settimeout(self.timeout)
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def send(self, req: Request) -> Response:
        pool = self._pool()
        conn = pool.get(req.base)
        reused = conn is not None
        if conn is None:
            conn = pool[req.base] = self._connect(req.base)
        try:
            conn.request(req.method, req.target, req.body, headers={**self.headers, **req.headers})
            resp = conn.getresponse()
            body = resp.read()
            if resp.will_close:
                conn.close()
                pool.pop(req.base, None)
            return Response(resp.status, resp.headers, body)
        except http.client.IncompleteRead as exc:
            self._drop(req.base, conn)
            raise Truncated(f"{req.base}: answer cut short after {len(exc.partial)} bytes") from exc
        except _STALE as exc:
            self._drop(req.base, conn)
            if reused:
                raise StaleConnection(f"{req.base}: {exc!r}") from exc
            raise Unreachable(f"{req.base}: {exc!r}") from exc
        except (OSError, http.client.HTTPException) as exc:
            self._drop(req.base, conn)
            raise Unreachable(f"{req.base}: {exc!r}") from exc
        except BaseException:
            self._drop(req.base, conn)
            raise

    def _drop(self, base: str, conn: http.client.HTTPConnection) -> None:
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
