"""Resource budgets for Tidepool's HTTP listeners (the worker and the S3 gateway).

aiohttp gives most of what a listener exposed to slow or hostile clients needs, and
:meth:`ServerLimits.server_kwargs` turns it on: request-line and header-field size caps and a
header count cap (answered 400 by the parser), ``keepalive_timeout`` (aiohttp closes a connection
that has not sent a complete request for that long, counted from its start or from the end of the
previous answer), and ``handler_cancellation`` (a client that goes away cancels its handler, so
nothing keeps working for nobody). Three things it does not have are added here, in
:class:`ConnectionBudget`:

* a cap on open connections: a new connection over the cap first closes the oldest connection
  that has no request in progress (idle keep-alive or a request head still arriving); when every
  connection is busy the newcomer gets ``503`` and is closed at once;
* a header timeout shorter than the keep-alive one: once the first byte of a request arrived, its
  head must be complete within ``header_timeout`` (a slowloris client trickling one header byte at
  a time is cut off; idle keep-alive connections, which clients reuse, may stay ``idle_timeout``);
* a stall timeout: an answer whose bytes nobody reads (the send buffer did not shrink for
  ``stall_timeout``) is aborted, so a client that asks and never reads cannot pin a handler.

:class:`BudgetSite` is an aiohttp site that puts each connection's protocol behind a
:class:`_Guard`, which forwards every event to aiohttp's own protocol and keeps the timestamps
that one periodic sweep of the budget checks (no timer per request: the hot path only stores a
number).
Requests are marked in progress by :meth:`ConnectionBudget.middleware` (applications) or
:meth:`ConnectionBudget.wrap` (a bare ``web.Server`` handler).

Limits: a request body is not covered by the header timeout (the routes that read bodies bound
that time themselves); pipelined requests already buffered behind a busy one fall back to the
keep-alive timeout; the memory an answer holds while it waits for a slow reader is bounded by
:class:`~tidepool.serving.memory.MemoryBudget` (sized by ``stream_memory_mib``), which the
application takes around each streamed answer.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, cast

from aiohttp import web

from tidepool.core.inputs import bad_value, parse_int

__all__ = ["BudgetSite", "ConnectionBudget", "ServerLimits", "busy_response"]

log = logging.getLogger(__name__)

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
AppHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_SECONDS = re.compile(r"[0-9]{1,7}(\.[0-9]{1,6})?", re.ASCII)


class _WireLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp logs every request its parser refuses at ERROR with a traceback (after answering
    it 400): a hostile client could fill the log that way. Those go to debug here; the
    handlers log their own failures."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        self.logger.log(logging.DEBUG, msg, *args, **kwargs)


_WIRE_LOG = _WireLog(logging.getLogger(f"{__name__}.wire"), {})


@dataclass(frozen=True)
class ServerLimits:
    """What one listener may spend on its clients. Every field has a default."""

    max_connections: int = 1024
    """Open connections at once (each costs a descriptor and a protocol object)."""
    header_timeout: float = 10.0
    """Seconds from the first byte of a request to the end of its head."""
    idle_timeout: float = 75.0
    """Seconds a connection may wait for its next request (above the clients' 60 s pools)."""
    stall_timeout: float = 60.0
    """Seconds an answer may wait for its reader without any byte being taken."""
    max_line_size: int = 8190
    """Bytes of the request line and of one header line."""
    max_field_size: int = 8190
    """Bytes of one header value."""
    max_headers: int = 100
    """Header lines of one request."""
    stream_memory_mib: int = 512
    """MiB that all streamed answers together may hold (read windows waiting for their readers,
    see :class:`~tidepool.serving.memory.MemoryBudget`); a stream that does not fit waits."""

    def __post_init__(self) -> None:
        for name in (
            "max_connections",
            "max_line_size",
            "max_field_size",
            "max_headers",
            "stream_memory_mib",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"ServerLimits.{name} must be at least 1")
        for name in ("header_timeout", "idle_timeout", "stall_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ServerLimits.{name} must be a positive number of seconds")

    @classmethod
    def from_env(cls, environ: Mapping[str, str], prefix: str = "TIDEPOOL_") -> ServerLimits:
        """Limits with the fields named in ``environ`` (``TIDEPOOL_MAX_CONNECTIONS``,
        ``TIDEPOOL_HEADER_TIMEOUT`` …) overriding the defaults; ``ValueError`` naming a bad one."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f"{prefix}{f.name.upper()}"
            text = environ.get(name)
            if text is None:
                continue
            if f.type == "int" or isinstance(f.default, int):
                values[f.name] = parse_int(text.strip(), name, lo=1, hi=10**7)
            else:
                if not _SECONDS.fullmatch(text.strip()):
                    raise bad_value(name, text, "a number of seconds like 10 or 2.5")
                values[f.name] = float(text)
        return cls(**values)

    def server_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``web.AppRunner``/``web.ServerRunner`` (aiohttp's own caps)."""
        return {
            "keepalive_timeout": self.idle_timeout,
            "max_line_size": self.max_line_size,
            "max_field_size": self.max_field_size,
            "max_headers": self.max_headers,
            "handler_cancellation": True,
            "logger": _WIRE_LOG,
        }


def busy_response(body: bytes, content_type: str) -> bytes:
    """A complete ``503`` answer sent to a connection over the cap before it is closed."""
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Retry-After: 1\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class ConnectionBudget:
    """Counts and polices the connections of one listener (see the module docstring).

    Time limits are enforced by one sweep over the connections every :attr:`tick` seconds (a
    quarter of the shortest limit), which only reads timestamps the guards keep: no timer per
    request. A limit therefore holds to within one tick.
    """

    def __init__(self, limits: ServerLimits, busy_answer: bytes) -> None:
        self.limits = limits
        self.busy_answer = busy_answer
        self.tick = max(0.05, min(limits.header_timeout, limits.stall_timeout) / 4)
        self._guards: dict[_Guard, None] = {}  # insertion order: oldest first
        self._by_transport: dict[asyncio.BaseTransport, _Guard] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self.refused = 0
        """Connections answered 503 because every slot was busy."""
        self.evicted = 0
        """Idle connections closed to make room for a new one."""
        self.head_timeouts = 0
        """Connections closed because a request head did not arrive in time."""
        self.stalled = 0
        """Answers aborted because nobody read them."""

    @property
    def open(self) -> int:
        """Connections open now (admitted ones)."""
        return len(self._guards)

    @property
    def in_progress(self) -> int:
        """Connections with a request in progress."""
        return sum(1 for g in self._guards if g.busy)

    def protocol(self, factory: Callable[[], asyncio.Protocol]) -> asyncio.Protocol:
        return _Guard(self, factory())

    # ---- bookkeeping, called by the guards --------------------------------------------------

    def _admit(self, guard: _Guard) -> bool:
        if len(self._guards) >= self.limits.max_connections:
            idle = next((g for g in self._guards if not g.busy), None)
            if idle is None:
                self.refused += 1
                return False
            self.evicted += 1
            idle.abort("evicted to admit a new connection")
        self._guards[guard] = None
        if guard.transport is not None:
            self._by_transport[guard.transport] = guard
        if self._sweeper is None:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(self.tick, self._sweep)
        return True

    def _forget(self, guard: _Guard) -> None:
        self._guards.pop(guard, None)
        if guard.transport is not None:
            self._by_transport.pop(guard.transport, None)

    def _sweep(self) -> None:
        """Close connections past a time limit; runs every ``tick`` while any is open."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        limits = self.limits
        for guard in list(self._guards):
            if guard.busy:
                transport = guard.transport
                pending = transport.get_write_buffer_size() if transport is not None else 0
                if pending == 0 or pending != guard.stall_size:
                    guard.stall_size, guard.stall_since = pending, now
                elif now - guard.stall_since > limits.stall_timeout:
                    self.stalled += 1
                    guard.abort(f"nobody read the answer for {limits.stall_timeout:g} s")
            elif guard.head_since is not None and now - guard.head_since > limits.header_timeout:
                self.head_timeouts += 1
                guard.abort("the request head did not arrive in time")
        if self._guards:
            self._sweeper = loop.call_later(self.tick, self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    # ---- request marks -----------------------------------------------------------------------

    def _guard_of(self, request: web.BaseRequest) -> _Guard | None:
        transport = request.transport
        return self._by_transport.get(transport) if transport is not None else None

    @web.middleware
    async def middleware(self, request: web.Request, handler: AppHandler) -> web.StreamResponse:
        """Marks a request in progress for the length of its handler (an application's)."""
        guard = self._guard_of(request)
        if guard is None:
            return await handler(request)
        guard.begin()
        try:
            return await handler(request)
        finally:
            guard.end()

    def wrap(self, handler: Handler) -> Handler:
        """The same for a bare ``web.Server`` handler."""

        async def tracked(request: web.BaseRequest) -> web.StreamResponse:
            guard = self._guard_of(request)
            if guard is None:
                return await handler(request)
            guard.begin()
            try:
                return await handler(request)
            finally:
                guard.end()

        return tracked


class _Guard(asyncio.Protocol):
    """Sits between the transport and aiohttp's protocol: forwards everything, keeps the
    timestamps the budget's sweep reads, and the connection count."""

    def __init__(self, budget: ConnectionBudget, inner: asyncio.Protocol) -> None:
        self.budget = budget
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.admitted = False
        self.busy = 0
        self.head_since: float | None = None
        """When the first byte of a request head arrived on an idle connection."""
        self.stall_size = 0
        self.stall_since = 0.0
        """The send buffer's size, and since when it has not changed (busy connections)."""

    # ---- transport events --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check
        self.transport = tcp = cast(asyncio.Transport, transport)
        if not self.budget._admit(self):
            log.debug("connection refused: %d connections busy", self.budget.open)
            tcp.write(self.budget.busy_answer)
            tcp.close()
            return
        self.admitted = True
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self.admitted:
            return
        if not self.busy and self.head_since is None:
            self.head_since = asyncio.get_running_loop().time()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if not self.admitted:
            return None
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.budget._forget(self)
        if self.admitted:
            self.admitted = False
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()

    # ---- requests ------------------------------------------------------------------------------

    def begin(self) -> None:
        self.busy += 1
        self.head_since = None
        self.stall_size = 0

    def end(self) -> None:
        self.busy = max(0, self.busy - 1)

    def abort(self, why: str) -> None:
        log.debug("closing a connection: %s", why)
        self.budget._forget(self)  # no longer counted, nor chosen for eviction again
        if self.transport is not None:
            self.transport.abort()


class BudgetSite(web.BaseSite):
    """A TCP site whose connections are policed by ``budget``."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        budget: ConnectionBudget,
        *,
        backlog: int = 128,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, backlog=backlog, ssl_context=ssl_context)
        self._host, self._port = host, port
        self.budget = budget
        self.bound_port: int | None = None

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self.bound_port or self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: self.budget.protocol(server),
            self._host,
            self._port,
            backlog=self._backlog,
            ssl=self._ssl_context,
        )
        sockets = self._server.sockets
        self.bound_port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        await super().stop()
        self.budget.close()
