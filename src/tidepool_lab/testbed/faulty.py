"""A fault-injecting HTTP proxy to put in front of the S3 origin: throttling, 5xx, resets, delays.

The WAN relay (:mod:`tidepool_lab.testbed.wan`) models a link: delay, bandwidth, a cut cable. It
sees bytes, not requests. Origin *trouble* is per request — S3 answers ``503 SlowDown`` to one GET
and serves the next, a load balancer resets one connection, a request sits unanswered — so this
proxy speaks just enough HTTP/1.1 to find request boundaries, and decides per request whether to
pass it on or to inject a fault. It also counts the requests it saw, which is how tests prove that
many readers of one cold file cause exactly one origin GET per page.

Faults (:class:`Fault`) are tried in the order they were added; the first that matches a
request and still applies to it wins:

* ``slowdown`` — ``503`` with S3's ``SlowDown`` XML error body (throttling);
* ``internal`` — ``500`` with S3's ``InternalError`` XML error body;
* ``reset`` — the client connection is reset (RST) without an answer;
* ``delay`` — the request is passed on after ``delay`` seconds (a slow origin);
* ``hang`` — no answer at all until the client gives up (a black-holed link: the connection
  stays open, nothing comes back);
* ``hold`` — like ``hang`` but released by :meth:`FaultyProxy.release`, then passed on (lets a
  test act at a precise point of a multi-request read).

A fault applies to ``times`` matching requests (``-1``: all), after letting the first ``skip``
pass, and to every ``every``-th match only (``every=2``: one request in two is faulted).

The proxy runs an asyncio loop on a thread of its own, so tests drive it from synchronous code.
Limits: HTTP/1.1 only, no TLS, no ``Expect: 100-continue``; one upstream connection per client
connection; listens on 127.0.0.1 and forwards to a loopback target only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

__all__ = ["Fault", "FaultyProxy", "RequestRecord"]

log = logging.getLogger(__name__)

FaultKind = Literal["slowdown", "internal", "reset", "delay", "hang", "hold"]
_HEAD_LIMIT = 1 << 16
_CHUNK = 1 << 16
_LOOPBACK = ("127.0.0.1", "localhost", "::1")

_ERRORS: dict[str, tuple[int, str, str, str]] = {
    "slowdown": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
    "internal": (
        500,
        "Internal Server Error",
        "InternalError",
        "We encountered an internal error.",
    ),
}


@dataclass
class Fault:
    """One injected fault and the requests it applies to."""

    kind: FaultKind
    """What happens to a matching request (see the module docstring)."""
    times: int = 1
    """How many matching requests get the fault; -1: every one."""
    skip: int = 0
    """Matching requests let through before the fault starts."""
    every: int = 1
    """Fault only every ``every``-th matching request (after ``skip``)."""
    delay: float = 0.0
    """Seconds of delay for ``delay``."""
    method: str | None = None
    """Only requests with this method (``GET``, ``HEAD`` …)."""
    path_contains: str | None = None
    """Only requests whose target contains this string."""
    ranged: bool | None = None
    """Only requests with (True) or without (False) a ``Range`` header."""
    seen: int = 0
    """Matching requests so far."""
    applied: int = 0
    """Requests that got the fault so far."""

    def matches(self, method: str, target: str, ranged: bool) -> bool:
        if self.method is not None and method != self.method:
            return False
        if self.path_contains is not None and self.path_contains not in target:
            return False
        return self.ranged is None or self.ranged == ranged

    def take(self) -> bool:
        """Count one matching request; True when this one gets the fault."""
        self.seen += 1
        if self.times >= 0 and self.applied >= self.times:
            return False
        n = self.seen - self.skip
        if n <= 0 or (n - 1) % max(1, self.every):
            return False
        self.applied += 1
        return True


@dataclass
class RequestRecord:
    """One request the proxy saw."""

    method: str
    target: str
    range: str | None
    fault: FaultKind | None
    status: int | None = None
    """Status the client got (None: no answer, e.g. reset or hang)."""


@dataclass
class _State:
    faults: list[Fault] = field(default_factory=list)
    records: list[RequestRecord] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _error_response(kind: str, method: str, target: str) -> bytes:
    status, reason, code, message = _ERRORS[kind]
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{target.split('?', 1)[0]}</Resource>"
        "<RequestId>tidepool-faulty</RequestId></Error>"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/xml\r\n"
        f"Content-Length: {len(xml)}\r\n"
        "x-amz-request-id: tidepool-faulty\r\n"
        "\r\n"
    ).encode()
    return head if method == "HEAD" else head + xml


def _headers(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    out: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, _, v = line.partition(":")
            out[k.strip().lower()] = v.strip()
    return lines[0], out


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _copy_body(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    headers: dict[str, str],
    *,
    until_eof: bool,
) -> None:
    """Relay one message body framed by Content-Length or chunked encoding (or EOF)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            line = await reader.readuntil(b"\r\n")
            writer.write(line)
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the blank line
                    trailer = await reader.readuntil(b"\r\n")
                    writer.write(trailer)
                    if trailer == b"\r\n":
                        return
            writer.write(await reader.readexactly(size + 2))
            await writer.drain()
    length = headers.get("content-length")
    if length is not None:
        left = int(length)
        while left > 0:
            data = await reader.read(min(_CHUNK, left))
            if not data:
                raise ConnectionError("peer closed in the middle of a body")
            writer.write(data)
            left -= len(data)
            await writer.drain()
        return
    if until_eof:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()


class FaultyProxy:
    """The proxy, started with :meth:`start` and stopped with :meth:`stop` (or ``with``)."""

    def __init__(self, target: tuple[str, int]) -> None:
        if target[0] not in _LOOPBACK:
            raise ValueError(f"the faulty proxy forwards to loopback only, not {target[0]!r}")
        self.target = target
        self.address: tuple[str, int] = ("127.0.0.1", 0)
        self._state = _State()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tidepool-faulty", daemon=True
        )
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._release = asyncio.Event()

    # ---- control (any thread) ----------------------------------------------------------------

    @classmethod
    def start(cls, target: tuple[str, int]) -> FaultyProxy:
        proxy = cls(target)
        proxy._thread.start()
        asyncio.run_coroutine_threadsafe(proxy._listen(), proxy._loop).result(10)
        return proxy

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``, to use in place of the origin's endpoint."""
        return f"http://{self.address[0]}:{self.address[1]}"

    def inject(self, *faults: Fault) -> None:
        """Add faults; they apply to requests that arrive from now on."""
        with self._state.lock:
            self._state.faults.extend(faults)

    def clear(self) -> None:
        """Remove every fault (held requests are released)."""
        with self._state.lock:
            self._state.faults.clear()
        self.release()

    def release(self) -> None:
        """Let every ``hold``-ed request (and later ones) through."""
        self._loop.call_soon_threadsafe(self._release.set)

    def records(self) -> list[RequestRecord]:
        """A copy of every request seen so far."""
        with self._state.lock:
            return list(self._state.records)

    def reset_records(self) -> None:
        with self._state.lock:
            self._state.records.clear()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> FaultyProxy:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- the loop ----------------------------------------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", 0, backlog=512)
        self.address = self._server.sockets[0].getsockname()[:2]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._release.set()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                line, headers = _headers(head)
                method, _, rest = line.partition(" ")
                target = rest.rsplit(" ", 1)[0]
                record = RequestRecord(method, target, headers.get("range"), None)
                fault = self._choose(record)
                with self._state.lock:
                    self._state.records.append(record)
                body = bytearray()
                if int(headers.get("content-length", "0") or 0) or "transfer-encoding" in headers:
                    sink = _Sink(body)
                    await _copy_body(reader, sink, headers, until_eof=False)  # type: ignore[arg-type]
                if fault is not None:
                    kind = fault.kind
                    if kind in _ERRORS:
                        writer.write(_error_response(kind, method, target))
                        await writer.drain()
                        record.status = _ERRORS[kind][0]
                        continue
                    if kind == "reset":
                        _reset(writer)
                        return
                    if kind == "hang":
                        await reader.read()  # until the client closes (or the proxy stops)
                        return
                    if kind == "hold":
                        await self._release.wait()
                    if kind == "delay":
                        await asyncio.sleep(fault.delay)
                if upstream is None:
                    upstream = await asyncio.open_connection(*self.target)
                up_reader, up_writer = upstream
                up_writer.write(head + bytes(body))
                await up_writer.drain()
                resp_head = await up_reader.readuntil(b"\r\n\r\n")
                status_line, resp_headers = _headers(resp_head)
                record.status = int(status_line.split(" ", 2)[1])
                writer.write(resp_head)
                no_body = method == "HEAD" or record.status in (204, 304) or record.status < 200
                closing = resp_headers.get("connection", "").lower() == "close"
                if not no_body:
                    await _copy_body(up_reader, writer, resp_headers, until_eof=True)
                await writer.drain()
                if closing or (
                    not no_body
                    and "content-length" not in resp_headers
                    and "transfer-encoding" not in resp_headers
                ):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            log.debug("faulty proxy connection ended: %s", exc)
        except asyncio.CancelledError:
            pass
        finally:
            self._conns.discard(task)
            if upstream is not None:
                upstream[1].close()
            if not writer.is_closing():
                writer.close()

    def _choose(self, record: RequestRecord) -> Fault | None:
        with self._state.lock:
            for fault in self._state.faults:
                if fault.matches(record.method, record.target, record.range is not None) and (
                    fault.take()
                ):
                    record.fault = fault.kind
                    return fault
        return None


class _Sink:
    """A write-only stand-in for a StreamWriter that collects a request body."""

    def __init__(self, buf: bytearray) -> None:
        self.buf = buf

    def write(self, data: bytes) -> None:
        self.buf += data

    async def drain(self) -> None:
        return None
