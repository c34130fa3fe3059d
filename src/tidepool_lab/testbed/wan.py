"""A user-space WAN emulator: a TCP relay that adds delay and a shared bandwidth limit.

The edge reaches the cloud over a WAN; this kernel has no ``netem`` and the demo must not need root,
so the WAN is a TCP relay run in its own process (``python -m tidepool_lab.testbed.wan``), so that
it never competes for the GIL with the program being measured. :class:`WanRelay` starts and
steers it from Python.

Link model, per direction (up = client -> target, down = target -> client), one link shared by
all connections, like one WAN cable:

* serialization: ``free_at = max(now, free_at) + len / rate``, deliver at ``free_at + rtt / 2``;
* the link buffers about one RTT of serialization over all connections (a router's BDP-sized
  buffer): a source whose read finds more booked stops being read until half of it has drained,
  so a new request queues behind at most ~RTT of other traffic however many streams are busy;
* order is kept per connection; each connection also queues at most the bytes in propagation plus
  ``max(256 KiB, one-way BDP)`` before the relay stops reading its source, so memory stays bounded
  and TCP backpressure reaches the sender; reads are at most 64 KiB;
* EOF (half-close) is delivered after the data queued before it;
* a new connection pays one extra RTT, as a TCP handshake across the WAN would: nothing it sends
  or receives is delivered before ``accept_time + rtt + rtt / 2`` (``--no-handshake`` turns it off).

Link down emulates a cut cable as seen by a client with timeouts, made fast and deterministic:
every open connection is reset (RST, both sides) and new connections are refused (the listening
port stays reserved but stops listening, so ``connect()`` gets ``ECONNREFUSED``). Link up listens
again on the same port.

Control channel: one JSON object per line over TCP on a second 127.0.0.1 port; each request line
gets one JSON reply line. Operations: ``{"op": "stats"}``, ``{"op": "link", "up": false}``,
``{"op": "shape", "rtt_ms": 40, "rate_mbit": 100}``, ``{"op": "stop"}``.

Limits: TCP only; no packet loss, jitter or reordering, and no per-flow fairness (FIFO by arrival);
the delay is applied per chunk (<= 64 KiB) as read from the socket, with about 1 ms timer accuracy
(deliveries are 0-1 ms late, never early); the listening, control and target addresses must be
loopback. ``rate_mbit <= 0`` means unlimited.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypedDict

from tidepool_lab.testbed import json_line_call, log_tail, stop_process_group

__all__ = ["LinkDirection", "RelayStats", "WanRelay", "main"]

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
"""Largest unit the link serializes and delays at once."""
MIN_QUEUE = 256 * 1024
"""Least serialization backlog a connection may queue per direction before reading pauses."""
_EARLY = 0.0005  # deliver chunks due within 0.5 ms now rather than arm another timer
_LOOPBACK = ("127.0.0.1", "localhost", "::1")

Direction = Literal["up", "down"]


class RelayStats(TypedDict):
    """The relay's counters and state, as returned by :meth:`WanRelay.stats`."""

    bytes_up: int
    """Bytes delivered client -> target."""
    bytes_down: int
    """Bytes delivered target -> client."""
    connections_total: int
    connections_active: int
    connections_reset: int
    """Connections the relay reset: cut by a link down, or refused by the target."""
    link_up: bool
    rtt_ms: float
    rate_mbit: float
    queued_bytes: int
    listen: list[Any]
    target: list[Any]


# --------------------------------------------------------------------------------------------
# Pure link model


@dataclass
class LinkDirection:
    """One direction of the WAN link: a FIFO serializer plus a propagation delay. Pure."""

    rtt_s: float
    rate_bps: float
    """Bits per second; ``<= 0`` means unlimited."""
    free_at: float = 0.0

    def reserve(self, now: float, nbytes: int) -> float:
        """Book ``nbytes`` on the link at ``now``; return when they are delivered at the far end."""
        start = max(now, self.free_at)
        if self.rate_bps > 0:
            self.free_at = start + nbytes * 8 / self.rate_bps
        else:
            self.free_at = start
        return self.free_at + self.rtt_s / 2

    def queue_limit(self) -> int:
        """Per-connection queue bound: the bytes in propagation plus a serialization backlog.

        Reading resumes below ``limit - 2 * CHUNK``; the backlog (>= :data:`MIN_QUEUE` or one
        one-way BDP) keeps the link busy across that pause, so one connection can fill it.
        """
        if self.rate_bps <= 0:
            return 4 * MIN_QUEUE
        one_way = int(self.rate_bps / 8 * self.rtt_s / 2)
        return one_way + max(MIN_QUEUE, one_way)

    def backlog(self, now: float) -> float:
        """Seconds of serialization booked but not yet started, over all connections."""
        return max(0.0, self.free_at - now)

    def max_backlog(self) -> float:
        """The router's buffer, in seconds: one RTT (one BDP of bytes), at least 20 ms.

        Sources pause above it and resume when it has drained to half, so the queueing delay
        a new request sees stays bounded however many connections are busy.
        """
        return max(0.020, self.rtt_s)


# --------------------------------------------------------------------------------------------
# The relay (runs inside the relay process)


def _split(data: bytes) -> list[bytes]:
    view = memoryview(data)
    return [bytes(view[i : i + CHUNK]) for i in range(0, len(view), CHUNK)]


def _set_rst_on_close(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class _Side(asyncio.BufferedProtocol):
    """One socket of a relayed connection; feeds what it reads into the half going the other way.

    A buffered protocol, so each read is at most one :data:`CHUNK`: the link's buffer bound is
    checked after every chunk rather than after the transport's default 256 KiB reads.
    """

    def __init__(self, conn: _Connection, name: Direction) -> None:
        self.conn = conn
        self.name = name
        self.buffer = bytearray(CHUNK)
        self.transport: asyncio.Transport | None = None
        self.outgoing: _Half | None = None  # the half that carries what this side reads
        self.incoming: _Half | None = None  # the half that writes into this side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        with contextlib.suppress(OSError):
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.incoming is not None:
            self.incoming.dst_ready()

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self.outgoing is not None:
            self.outgoing.feed(bytes(self.buffer[:nbytes]))

    def eof_received(self) -> bool:
        if self.outgoing is not None:
            self.outgoing.feed_eof()
        return True  # keep the transport open: the other direction may still be sending

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.side_lost(self, exc)

    def pause_writing(self) -> None:
        if self.incoming is not None:
            self.incoming.dst_paused(True)

    def resume_writing(self) -> None:
        if self.incoming is not None:
            self.incoming.dst_paused(False)


class _Half:
    """One direction of one connection: a delay queue from ``src`` to ``dst``."""

    def __init__(
        self, relay: _Relay, link: LinkDirection, direction: Direction, src: _Side, dst: _Side
    ) -> None:
        self.relay = relay
        self.loop = relay.loop
        self.link = link
        self.direction = direction
        self.src = src
        self.dst = dst
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.queued = 0
        self.last_due = 0.0
        self.not_before = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.reading_paused = False
        self.dst_blocked = False
        self.link_blocked = False
        self.eof_sent = False
        src.outgoing = self
        dst.incoming = self

    def feed(self, data: bytes) -> None:
        now = max(self.loop.time(), self.not_before)
        for chunk in [data] if len(data) <= CHUNK else _split(data):
            due = max(self.link.reserve(now, len(chunk)), self.last_due)
            self.last_due = due
            self.queue.append((due, chunk))
            self.queued += len(chunk)
            self.relay.queued += len(chunk)
        if self.link.backlog(now) > self.link.max_backlog():
            self.link_blocked = True
            self.relay.wait_for_link(self)
        self._update_reading()
        self._arm()

    def feed_eof(self) -> None:
        now = max(self.loop.time(), self.not_before)
        due = max(now + self.link.rtt_s / 2, self.last_due)
        self.last_due = due
        self.queue.append((due, None))
        self._arm()

    def _arm(self) -> None:
        if self.timer is None and self.queue and not self.dst_blocked:
            self.timer = self.loop.call_at(self.queue[0][0], self._deliver)

    def _deliver(self) -> None:
        self.timer = None
        transport = self.dst.transport
        if transport is None:  # target not connected yet; dst_ready() re-arms
            return
        horizon = self.loop.time() + _EARLY
        while self.queue and self.queue[0][0] <= horizon and not self.dst_blocked:
            _, chunk = self.queue.popleft()
            if chunk is None:
                self.eof_sent = True
                if not transport.is_closing():
                    with contextlib.suppress(OSError, RuntimeError):
                        transport.write_eof()
                self.src.conn.maybe_finished()
                continue
            self.queued -= len(chunk)
            self.relay.queued -= len(chunk)
            if not transport.is_closing():
                self.relay.count(self.direction, len(chunk))
                transport.write(chunk)
        self._update_reading()
        self._arm()

    def dst_ready(self) -> None:
        self._arm()

    def dst_paused(self, paused: bool) -> None:
        self.dst_blocked = paused
        if paused and self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._update_reading()
        self._arm()

    def _update_reading(self) -> None:
        transport = self.src.transport
        if transport is None or transport.is_closing():
            return
        limit = self.link.queue_limit()
        blocked = self.dst_blocked or self.link_blocked
        if not self.reading_paused and (self.queued > limit or blocked):
            self.reading_paused = True
            transport.pause_reading()
        elif self.reading_paused and self.queued <= limit - 2 * CHUNK and not blocked:
            self.reading_paused = False
            transport.resume_reading()

    def link_drained(self) -> None:
        self.link_blocked = False
        self._update_reading()

    def drop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.relay.waiting[self.direction].discard(self)
        self.relay.queued -= self.queued
        self.queued = 0
        self.queue.clear()


class _Connection:
    def __init__(self, relay: _Relay, accepted: socket.socket) -> None:
        self.relay = relay
        self.client = _Side(self, "up")
        self.server = _Side(self, "down")
        self.up = _Half(relay, relay.up, "up", self.client, self.server)
        self.down = _Half(relay, relay.down, "down", self.server, self.client)
        if relay.handshake:
            not_before = relay.loop.time() + relay.up.rtt_s
            self.up.not_before = self.down.not_before = not_before
        self.closed = False
        self.accepted = accepted
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        loop = self.relay.loop
        try:
            await loop.connect_accepted_socket(lambda: self.client, self.accepted)
        except OSError as exc:
            log.info("accepted connection lost before it started: %s", exc)
            self.reset()
            return
        try:
            await loop.create_connection(lambda: self.server, *self.relay.target)
        except OSError as exc:
            log.info("target %s refused: %s", self.relay.target, exc)
            self.relay.reset_count += 1
            self.reset()

    def maybe_finished(self) -> None:
        if self.up.eof_sent and self.down.eof_sent:
            self.close()

    def side_lost(self, side: _Side, exc: Exception | None) -> None:
        if self.closed:
            return
        if exc is not None:
            self.reset()  # a reset on one side resets the other
        else:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.up.drop()
        self.down.drop()
        for side in (self.client, self.server):
            if side.transport is not None:
                side.transport.close()
        self.relay.forget(self)

    def reset(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.up.drop()
        self.down.drop()
        for side in (self.client, self.server):
            if side.transport is not None:
                _set_rst_on_close(side.transport)
                side.transport.abort()
        if self.client.transport is None:
            with contextlib.suppress(OSError):
                self.accepted.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.accepted.close()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.relay.forget(self)


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # SO_REUSEPORT lets a second, never-listening socket hold the port while the link is down.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


@dataclass
class _Relay:
    loop: asyncio.AbstractEventLoop
    listen: tuple[str, int]
    target: tuple[str, int]
    up: LinkDirection
    down: LinkDirection
    handshake: bool = True
    link_up: bool = True
    bytes_up: int = 0
    bytes_down: int = 0
    connections_total: int = 0
    reset_count: int = 0
    queued: int = 0
    connections: set[_Connection] = field(default_factory=set)
    listener: socket.socket | None = None
    reserve: socket.socket | None = None
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    control_writers: set[asyncio.StreamWriter] = field(default_factory=set)
    waiting: dict[Direction, set[_Half]] = field(
        default_factory=lambda: {"up": set(), "down": set()}
    )
    drain_timers: dict[Direction, asyncio.TimerHandle] = field(default_factory=dict)

    def start(self) -> None:
        self.listener = _bind(*self.listen)
        self.listen = self.listener.getsockname()[:2]
        self.reserve = _bind(*self.listen)
        self.listener.listen(512)
        self.loop.add_reader(self.listener.fileno(), self._accept)

    def _accept(self) -> None:
        assert self.listener is not None
        for _ in range(64):
            try:
                sock, _peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("accept failed: %s", exc)
                return
            sock.setblocking(False)
            conn = _Connection(self, sock)
            self.connections.add(conn)
            self.connections_total += 1
            conn.task = self.loop.create_task(conn.run())

    def wait_for_link(self, half: _Half) -> None:
        """Pause ``half`` until its direction's backlog has drained to half the buffer."""
        direction = half.direction
        self.waiting[direction].add(half)
        if direction not in self.drain_timers:
            link = half.link
            when = link.free_at - link.max_backlog() / 2
            self.drain_timers[direction] = self.loop.call_at(when, self._drained, direction)

    def _drained(self, direction: Direction) -> None:
        del self.drain_timers[direction]
        halves, self.waiting[direction] = self.waiting[direction], set()
        for half in halves:
            half.link_drained()

    def count(self, direction: Direction, nbytes: int) -> None:
        if direction == "up":
            self.bytes_up += nbytes
        else:
            self.bytes_down += nbytes

    def forget(self, conn: _Connection) -> None:
        self.connections.discard(conn)

    def set_link(self, up: bool) -> None:
        if up == self.link_up:
            return
        self.link_up = up
        if not up:
            assert self.listener is not None
            self.loop.remove_reader(self.listener.fileno())
            self.listener.close()  # pending, not yet accepted connections get RST
            self.listener = None
            for conn in list(self.connections):
                self.reset_count += 1
                conn.reset()
            log.info("link down: connections reset, new ones refused")
        else:
            assert self.reserve is not None
            self.listener, self.reserve = self.reserve, _bind(*self.listen)
            self.listener.listen(512)
            self.loop.add_reader(self.listener.fileno(), self._accept)
            log.info("link up")

    def set_shape(self, rtt_ms: float, rate_mbit: float) -> None:
        for direction in (self.up, self.down):
            direction.rtt_s = rtt_ms / 1000
            direction.rate_bps = rate_mbit * 1e6

    def stats(self) -> RelayStats:
        return RelayStats(
            bytes_up=self.bytes_up,
            bytes_down=self.bytes_down,
            connections_total=self.connections_total,
            connections_active=len(self.connections),
            connections_reset=self.reset_count,
            link_up=self.link_up,
            rtt_ms=self.up.rtt_s * 1000,
            rate_mbit=self.up.rate_bps / 1e6,
            queued_bytes=self.queued,
            listen=list(self.listen),
            target=list(self.target),
        )

    def close(self) -> None:
        if self.listener is not None:
            self.loop.remove_reader(self.listener.fileno())
            self.listener.close()
        if self.reserve is not None:
            self.reserve.close()
        for conn in list(self.connections):
            conn.reset()

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "stats":
            pass
        elif op == "link":
            self.set_link(bool(request["up"]))
        elif op == "shape":
            rtt = float(request.get("rtt_ms", self.up.rtt_s * 1000))
            rate = float(request.get("rate_mbit", self.up.rate_bps / 1e6))
            if rtt < 0:
                raise ValueError(f"rtt_ms must be >= 0, got {rtt}")
            self.set_shape(rtt, rate)
        elif op == "stop":
            self.stopped.set()
        else:
            raise ValueError(f"unknown op {op!r}; valid: stats, link, shape, stop")
        return {"ok": True, **self.stats()}


async def _serve_control(
    relay: _Relay, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    relay.control_writers.add(writer)
    try:
        while not relay.stopped.is_set() and (line := await reader.readline()):
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("request must be a JSON object")
                reply = relay.handle(request)
            except (ValueError, KeyError, TypeError) as exc:
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        relay.control_writers.discard(writer)
        writer.close()


async def _watch_parent(parent_pid: int, stopped: asyncio.Event) -> None:
    """Stop when the process that started us is gone (it was killed before it could stop us)."""
    while not stopped.is_set():
        if os.getppid() != parent_pid:
            log.warning("parent %d is gone; stopping", parent_pid)
            stopped.set()
            return
        await asyncio.sleep(1.0)


def _parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"address {text!r} must be in format HOST:PORT")
    return host or "127.0.0.1", int(port)


async def _amain(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    relay = _Relay(
        loop=loop,
        listen=args.listen,
        target=args.target,
        up=LinkDirection(args.rtt_ms / 1000, args.rate_mbit * 1e6),
        down=LinkDirection(args.rtt_ms / 1000, args.rate_mbit * 1e6),
        handshake=args.handshake,
    )
    relay.start()
    control = await asyncio.start_server(
        lambda r, w: _serve_control(relay, r, w), args.control[0], args.control[1]
    )
    control_addr = control.sockets[0].getsockname()[:2]
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, relay.stopped.set)
    ready = {"listen": list(relay.listen), "control": list(control_addr), "pid": os.getpid()}
    if args.ready_file:
        tmp = Path(f"{args.ready_file}.tmp")
        tmp.write_text(json.dumps(ready))
        tmp.replace(args.ready_file)
    print(json.dumps(ready), flush=True)
    log.info(
        "relay %s -> %s rtt=%.1fms rate=%.1fMbit/s control=%s",
        relay.listen,
        relay.target,
        args.rtt_ms,
        args.rate_mbit,
        control_addr,
    )
    watcher = (
        loop.create_task(_watch_parent(args.parent_pid, relay.stopped)) if args.parent_pid else None
    )
    try:
        await relay.stopped.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
        control.close()
        relay.close()
        for writer in list(relay.control_writers):
            writer.close()  # idle control clients: their handlers see EOF and return
        for _ in range(50):
            if not relay.control_writers:
                break
            await asyncio.sleep(0.01)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m tidepool_lab.testbed.wan``."""
    parser = argparse.ArgumentParser(
        prog="python -m tidepool_lab.testbed.wan", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--listen", type=_parse_address, default=("127.0.0.1", 0))
    parser.add_argument("--target", type=_parse_address, required=True)
    parser.add_argument("--rtt-ms", type=float, default=40.0)
    parser.add_argument("--rate-mbit", type=float, default=100.0, help="<= 0: unlimited")
    parser.add_argument(
        "--control", type=_parse_address, default=("127.0.0.1", 0), help="HOST:PORT"
    )
    parser.add_argument("--ready-file", help="write the listening addresses here as JSON")
    parser.add_argument("--no-handshake", dest="handshake", action="store_false")
    parser.add_argument(
        "--parent-pid", type=int, default=0, help="exit when this process is no longer our parent"
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if args.rtt_ms < 0:
        parser.error(f"--rtt-ms must be >= 0, got {args.rtt_ms}")
    for name in ("listen", "control", "target"):
        host = getattr(args, name)[0]
        if host not in _LOOPBACK:
            parser.error(f"--{name} must be a loopback address (127.0.0.1), got {host!r}")
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    asyncio.run(_amain(args))


# --------------------------------------------------------------------------------------------
# The handle (runs in the caller's process)


class WanRelay:
    """Handle on a relay process; build it with :meth:`start`, end it with :meth:`stop`."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        address: tuple[str, int],
        control: tuple[str, int],
        target: tuple[str, int],
        log_path: Path,
        workdir: tempfile.TemporaryDirectory[str] | None,
    ) -> None:
        self._process = process
        self.address = address
        """``(host, port)`` the edge connects to instead of the target."""
        self.control = control
        self.target = target
        self.log_path = log_path
        self._workdir = workdir

    @classmethod
    def start(
        cls,
        target: tuple[str, int],
        rtt_ms: float = 40.0,
        rate_mbit: float = 100.0,
        *,
        handshake: bool = True,
        workdir: Path | None = None,
        timeout: float = 15.0,
    ) -> WanRelay:
        """Start a relay process in front of ``target``; return once it listens."""
        tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            tmp = tempfile.TemporaryDirectory(prefix="tidepool-wan-")
            workdir = Path(tmp.name)
        workdir.mkdir(parents=True, exist_ok=True)
        ready = workdir / f"wan-{os.getpid()}-{time.monotonic_ns()}.json"
        log_path = ready.with_suffix(".log")
        cmd = [
            sys.executable,
            "-m",
            "tidepool_lab.testbed.wan",
            "--listen",
            "127.0.0.1:0",
            "--target",
            f"{target[0]}:{target[1]}",
            "--rtt-ms",
            str(rtt_ms),
            "--rate-mbit",
            str(rate_mbit),
            "--control",
            "127.0.0.1:0",
            "--ready-file",
            str(ready),
            "--parent-pid",
            str(os.getpid()),
        ]
        if not handshake:
            cmd.append("--no-handshake")
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                stop_process_group(process)
                tail = log_tail(log_path)
                if tmp is not None:
                    tmp.cleanup()
                raise RuntimeError(
                    f"WAN relay to {target} did not start (exit code {process.returncode}); "
                    f"log tail:\n{tail}"
                )
            time.sleep(0.02)
        info = json.loads(ready.read_text())
        relay = cls(
            process,
            (info["listen"][0], int(info["listen"][1])),
            (info["control"][0], int(info["control"][1])),
            target,
            log_path,
            tmp,
        )
        log.info("started %r", relay)
        return relay

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` of the relay, to use in place of the target's endpoint."""
        return f"http://{self.address[0]}:{self.address[1]}"

    def _call(self, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        with socket.create_connection(self.control, timeout=timeout) as sock:
            return json_line_call(sock, request, "WAN relay")

    def stats(self) -> RelayStats:
        """Counters (bytes delivered each way, connections) and the current link state."""
        reply = self._call({"op": "stats"})
        reply.pop("ok", None)
        return reply  # type: ignore[return-value]

    def set_link(self, up: bool) -> None:
        """Cut (``False``) or restore (``True``) the link; see the module docstring."""
        self._call({"op": "link", "up": up})

    def set_shape(self, rtt_ms: float, rate_mbit: float) -> None:
        """Change delay and bandwidth for data read from now on."""
        self._call({"op": "shape", "rtt_ms": rtt_ms, "rate_mbit": rate_mbit})

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the relay process (asked nicely, then SIGTERM, then SIGKILL to its group)."""
        if self._process.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self._call({"op": "stop"}, timeout=1.0)
            try:
                self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                stop_process_group(self._process)
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> WanRelay:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._process.poll() is None else "stopped"
        return (
            f"WanRelay({self.endpoint} -> {self.target[0]}:{self.target[1]}, "
            f"pid={self.pid}, {state})"
        )


if __name__ == "__main__":
    # Run the importable copy so loggers are named ``tidepool_lab.testbed.wan``, not ``__main__``.
    from tidepool_lab.testbed.wan import main as _main

    _main()
