"""A packet-level WAN emulator between network namespaces: a TUN relay that delays IP packets.

Why not :class:`~tidepool_lab.testbed.wan.WanRelay`? That relay is a TCP proxy whose addresses must
be loopback, so clients would connect to the relay instead of the origin, the delay would not
apply to a TCP handshake, to ICMP or to UDP, and TCP would not see the real RTT. Between
namespaces the kernel can route every packet through user space instead: the ``wan`` namespace
sends all it forwards into a TUN device (policy routing: ``iif`` a WAN-facing veth -> a table whose
default route is the TUN device), this process reads each packet, holds it for ``rtt / 2`` and
writes it back, and the kernel forwards it on (packets re-entering from the TUN device use the main
table). Bandwidth is the kernel's job: ``tc tbf`` on the two egress veths of the ``wan`` namespace
(see :mod:`tidepool_lab.testbed.netns`). The one-way delay line reuses
:class:`~tidepool_lab.testbed.wan.LinkDirection` with an unlimited rate.

Link down emulates a cut cable as seen by a client with timeouts, made fast and deterministic like
``WanRelay``: in-flight packets are lost, a TCP segment that reaches the cut is answered with a RST
(a new ``connect()`` gets ``ECONNREFUSED``, an open connection is reset the next time either side
sends), everything else is dropped. ``mode="drop"`` makes the cut silent instead (a black hole:
clients wait for their own timeouts).

Control channel: one JSON object per line over a Unix socket (path sockets are not confined to a
network namespace, so the test process in the root namespace reaches a relay running inside the
``wan`` namespace); each request gets one JSON reply line. Operations: ``{"op": "stats"}``,
``{"op": "link", "up": false, "mode": "reset"}``, ``{"op": "shape", "rtt_ms": 40}``,
``{"op": "stop"}``.

Limits: IPv4 only (other packets are dropped); no loss, jitter or reordering; about 1 ms timer
accuracy (deliveries are 0-1 ms late, never early); one Python process moves every packet, which
is plenty for 100 Mbit/s at MTU 1500 (~9k packets/s each way) but not for multi-gigabit links.
Byte counters count IP packets delivered (headers included) and, separately, TCP/UDP payload.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypedDict

from tidepool_lab.testbed import json_line_call, log_tail, stop_process_group
from tidepool_lab.testbed.wan import LinkDirection

__all__ = [
    "CutMode",
    "PacketInfo",
    "TunRelayStats",
    "WanLink",
    "checksum",
    "main",
    "parse_packet",
    "tcp_reset_for",
]

log = logging.getLogger(__name__)

CutMode = Literal["reset", "drop"]

_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
_TCP, _UDP = 6, 17
_FIN, _SYN, _RST, _ACK = 0x01, 0x02, 0x04, 0x10
_MAX_PACKET = 65535
_READ_BURST = 256  # packets read per wake-up before delivering what is due


class TunRelayStats(TypedDict):
    """Counters and state of the relay, as returned by :meth:`WanLink.stats`."""

    bytes_up: int
    """IP bytes (headers included) delivered edge -> cloud."""
    bytes_down: int
    """IP bytes delivered cloud -> edge."""
    payload_up: int
    """TCP/UDP payload bytes delivered edge -> cloud."""
    payload_down: int
    """TCP/UDP payload bytes delivered cloud -> edge."""
    resent_up: int
    """Of ``payload_up``: TCP payload a sender sent again (sequence numbers already delivered)."""
    resent_down: int
    """Of ``payload_down``: TCP payload sent again. A retransmission is not a new byte crossing
    the link: TCP may resend the tail of a transfer (tail-loss probe) a little after the reader
    had every byte, so ``payload_down - resent_down`` is what a test should count as new."""
    packets_up: int
    packets_down: int
    dropped: int
    """Packets lost to a cut link (in flight or arriving while down) or not IPv4."""
    resets: int
    """RST segments the relay sent because the link was down."""
    link_up: bool
    rtt_ms: float
    queued_packets: int


class PacketInfo(TypedDict):
    """What the relay needs to know about one IPv4 packet."""

    src: bytes
    dst: bytes
    proto: int
    header_len: int
    """IP header length in bytes."""
    payload: int
    """TCP/UDP payload bytes (0 for other protocols and non-first fragments)."""


# --------------------------------------------------------------------------------------------
# Pure packet helpers


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def parse_packet(packet: bytes) -> PacketInfo | None:
    """Addresses, protocol and payload size of an IPv4 packet; ``None`` if it is not IPv4."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    total = struct.unpack_from("!H", packet, 2)[0]
    proto = packet[9]
    first_fragment = struct.unpack_from("!H", packet, 6)[0] & 0x1FFF == 0
    payload = 0
    if first_fragment and proto == _TCP and len(packet) >= ihl + 20:
        payload = max(0, total - ihl - (packet[ihl + 12] >> 4) * 4)
    elif first_fragment and proto == _UDP:
        payload = max(0, total - ihl - 8)
    return PacketInfo(
        src=packet[12:16], dst=packet[16:20], proto=proto, header_len=ihl, payload=payload
    )


def tcp_segment(packet: bytes) -> tuple[tuple[bytes, ...], int, int] | None:
    """``(flow, seq, payload)`` of a TCP segment (``flow`` names the connection and direction),
    or None for anything else."""
    info = parse_packet(packet)
    if info is None or info["proto"] != _TCP:
        return None
    ihl = info["header_len"]
    ports = packet[ihl : ihl + 4]
    seq = struct.unpack_from("!I", packet, ihl + 4)[0]
    return (info["src"], info["dst"], ports), seq, info["payload"]


class SequenceTracker:
    """How much of each TCP segment's payload is new: per flow, the highest sequence number
    delivered so far (serial-number arithmetic, RFC 1982). Pure; bounded to ``max_flows``."""

    def __init__(self, max_flows: int = 4096) -> None:
        self.max_flows = max_flows
        self._ends: collections.OrderedDict[tuple[bytes, ...], int] = collections.OrderedDict()

    def new_bytes(self, flow: tuple[bytes, ...], seq: int, payload: int) -> int:
        end = (seq + payload) % (1 << 32)
        last = self._ends.get(flow)
        if last is None:
            fresh = payload
        else:
            ahead = (end - last) % (1 << 32)
            fresh = min(payload, ahead) if ahead < (1 << 31) else 0
        if last is None or fresh:
            self._ends[flow] = end
        self._ends.move_to_end(flow)
        while len(self._ends) > self.max_flows:
            self._ends.popitem(last=False)
        return fresh


def tcp_reset_for(packet: bytes) -> bytes | None:
    """The RST the far end would answer ``packet`` with (RFC 9293 3.10.7.1), or ``None``.

    ``None`` for anything but a first-fragment TCP segment that is not itself a RST. With ACK set
    the RST carries ``seq = SEG.ACK`` (exactly what the sender expects, so Linux accepts it in any
    synchronized state); without (a SYN) it is RST+ACK acknowledging the segment, which makes
    ``connect()`` fail with ``ECONNREFUSED``.
    """
    info = parse_packet(packet)
    if info is None or info["proto"] != _TCP:
        return None
    ihl = info["header_len"]
    if struct.unpack_from("!H", packet, 6)[0] & 0x1FFF or len(packet) < ihl + 20:
        return None
    sport, dport, seq, ack = struct.unpack_from("!HHII", packet, ihl)
    flags = packet[ihl + 13]
    if flags & _RST:
        return None
    if flags & _ACK:
        rseq, rack, rflags = ack, 0, _RST
    else:
        length = info["payload"] + bool(flags & _SYN) + bool(flags & _FIN)
        rseq, rack, rflags = 0, (seq + length) & 0xFFFFFFFF, _RST | _ACK
    src, dst = info["dst"], info["src"]  # the reply goes back to the sender
    tcp = struct.pack("!HHIIBBHHH", dport, sport, rseq, rack, 5 << 4, rflags, 0, 0, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, _TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, _TCP, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return ip + tcp


# --------------------------------------------------------------------------------------------
# The relay (runs inside the ``wan`` namespace)


def open_tun(name: str) -> int:
    """Create (or attach to) TUN device ``name`` without packet info; return its fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TUN | _IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


class _Relay:
    def __init__(self, tun_fd: int, cloud: ipaddress.IPv4Network, rtt_ms: float) -> None:
        self.fd = tun_fd
        self.cloud = cloud
        self.line = LinkDirection(rtt_s=rtt_ms / 1000, rate_bps=0)
        self.queue: collections.deque[tuple[float, bytes, bool, int]] = collections.deque()
        self.last_due = 0.0
        self.link_up = True
        self.sequences = SequenceTracker()
        self.mode: CutMode = "reset"
        self.stopped = False
        self.counters = dict.fromkeys(
            (
                "bytes_up",
                "bytes_down",
                "payload_up",
                "payload_down",
                "resent_up",
                "resent_down",
                "packets_up",
                "packets_down",
                "dropped",
                "resets",
            ),
            0,
        )

    def _is_up(self, dst: bytes) -> bool:
        return ipaddress.IPv4Address(dst) in self.cloud

    def read_packets(self) -> None:
        for _ in range(_READ_BURST):
            try:
                packet = os.read(self.fd, _MAX_PACKET)
            except BlockingIOError:
                return
            info = parse_packet(packet)
            if info is None:
                self.counters["dropped"] += 1
                continue
            if not self.link_up:
                self.counters["dropped"] += 1
                reset = tcp_reset_for(packet) if self.mode == "reset" else None
                if reset is not None:
                    self._write(reset)
                    self.counters["resets"] += 1
                continue
            # A constant delay keeps FIFO order; max() keeps it across a shape change too.
            due = max(self.line.reserve(time.monotonic(), len(packet)), self.last_due)
            self.last_due = due
            self.queue.append((due, packet, self._is_up(info["dst"]), info["payload"]))

    def deliver_due(self) -> None:
        # never early: a packet due in 0.3 ms waits those 0.3 ms (a slack here once made a
        # 40 ms link answer a handshake in 39.998 ms)
        now = time.monotonic()
        while self.queue and self.queue[0][0] <= now:
            _, packet, up, payload = self.queue.popleft()
            side = "up" if up else "down"
            self.counters[f"bytes_{side}"] += len(packet)
            self.counters[f"payload_{side}"] += payload
            self.counters[f"packets_{side}"] += 1
            segment = tcp_segment(packet) if payload else None
            if segment is not None:
                fresh = self.sequences.new_bytes(*segment)
                self.counters[f"resent_{side}"] += payload - fresh
            self._write(packet)

    def _write(self, packet: bytes) -> None:
        try:
            os.write(self.fd, packet)
        except OSError as exc:  # e.g. the kernel refused a malformed packet
            log.debug("tun write of %d bytes failed: %s", len(packet), exc)
            self.counters["dropped"] += 1

    def timeout(self) -> float:
        if not self.queue:
            return 0.5
        return max(0.0, self.queue[0][0] - time.monotonic())

    def stats(self) -> TunRelayStats:
        c = self.counters
        return TunRelayStats(
            bytes_up=c["bytes_up"],
            bytes_down=c["bytes_down"],
            payload_up=c["payload_up"],
            payload_down=c["payload_down"],
            resent_up=c["resent_up"],
            resent_down=c["resent_down"],
            packets_up=c["packets_up"],
            packets_down=c["packets_down"],
            dropped=c["dropped"],
            resets=c["resets"],
            link_up=self.link_up,
            rtt_ms=self.line.rtt_s * 1000,
            queued_packets=len(self.queue),
        )

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "stats":
            pass
        elif op == "link":
            up = bool(request["up"])
            mode = request.get("mode", "reset")
            if mode not in ("reset", "drop"):
                raise ValueError(f"mode must be 'reset' or 'drop', got {mode!r}")
            self.mode = mode
            if self.link_up and not up:
                self.counters["dropped"] += len(self.queue)
                self.queue.clear()
            self.link_up = up
            log.info("link %s (%s)", "up" if up else "down", mode)
        elif op == "shape":
            rtt = float(request["rtt_ms"])
            if rtt < 0:
                raise ValueError(f"rtt_ms must be >= 0, got {rtt}")
            self.line.rtt_s = rtt / 1000
        elif op == "stop":
            self.stopped = True
        else:
            raise ValueError(f"unknown op {op!r}; valid: stats, link, shape, stop")
        return {"ok": True, **self.stats()}


def _serve(relay: _Relay, control: socket.socket, parent_pid: int) -> None:
    sel = selectors.DefaultSelector()
    sel.register(relay.fd, selectors.EVENT_READ, "tun")
    sel.register(control, selectors.EVENT_READ, "accept")
    buffers: dict[socket.socket, bytes] = {}
    next_parent_check = time.monotonic() + 1.0
    while not relay.stopped:
        for key, _ in sel.select(relay.timeout()):
            if key.data == "tun":
                relay.read_packets()
            elif key.data == "accept":
                conn, _ = control.accept()
                conn.setblocking(True)
                conn.settimeout(5.0)
                buffers[conn] = b""
                sel.register(conn, selectors.EVENT_READ, "client")
            else:
                conn = key.fileobj  # type: ignore[assignment]
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(conn)
                    buffers.pop(conn, None)
                    conn.close()
                    continue
                buffers[conn] += data
                while b"\n" in buffers[conn]:
                    line, buffers[conn] = buffers[conn].split(b"\n", 1)
                    try:
                        request = json.loads(line)
                        if not isinstance(request, dict):
                            raise ValueError("request must be a JSON object")
                        reply = relay.handle(request)
                    except (ValueError, KeyError, TypeError) as exc:
                        reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                    with contextlib.suppress(OSError):
                        conn.sendall(json.dumps(reply).encode() + b"\n")
        relay.deliver_due()
        now = time.monotonic()
        if parent_pid and now > next_parent_check:
            next_parent_check = now + 1.0
            if os.getppid() != parent_pid:
                log.warning("parent %d is gone; stopping", parent_pid)
                relay.stopped = True
    for conn in buffers:
        conn.close()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m tidepool_lab.testbed.wanlink`` (run it inside the namespace)."""
    parser = argparse.ArgumentParser(
        prog="python -m tidepool_lab.testbed.wanlink", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--tun", default="tun0", help="TUN device to create in this namespace")
    parser.add_argument(
        "--cloud", type=ipaddress.IPv4Network, required=True, help="cloud side network (CIDR)"
    )
    parser.add_argument("--rtt-ms", type=float, default=40.0)
    parser.add_argument("--control", type=Path, required=True, help="Unix socket path")
    parser.add_argument("--ready-file", type=Path, help="written once the TUN device exists")
    parser.add_argument("--parent-pid", type=int, default=0, help="exit when no longer our parent")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if args.rtt_ms < 0:
        parser.error(f"--rtt-ms must be >= 0, got {args.rtt_ms}")
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    fd = open_tun(args.tun)
    args.control.unlink(missing_ok=True)
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    control.bind(str(args.control))
    control.listen(16)
    control.setblocking(False)
    relay = _Relay(fd, args.cloud, args.rtt_ms)

    def _stop(signum: int, frame: Any) -> None:
        relay.stopped = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if args.ready_file:
        tmp = args.ready_file.with_name(args.ready_file.name + ".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "tun": args.tun}))
        tmp.replace(args.ready_file)
    log.info("relay on %s, cloud %s, rtt %.1f ms", args.tun, args.cloud, args.rtt_ms)
    try:
        _serve(relay, control, args.parent_pid)
    finally:
        control.close()
        args.control.unlink(missing_ok=True)
        os.close(fd)


# --------------------------------------------------------------------------------------------
# The handle (runs in the caller's process)


class WanLink:
    """Handle on a TUN relay process running in a namespace; see the module docstring.

    :meth:`start` only starts the process and waits for its TUN device; routing the namespace's
    traffic through it (and shaping with ``tc tbf``) is the caller's job.
    """

    def __init__(
        self, process: subprocess.Popen[bytes], control: Path, log_path: Path, netns: str
    ) -> None:
        self._process = process
        self.control = control
        self.log_path = log_path
        self.netns = netns

    @classmethod
    def start(
        cls,
        netns: str,
        cloud: str,
        workdir: Path,
        *,
        rtt_ms: float = 40.0,
        tun: str = "tun0",
        timeout: float = 15.0,
    ) -> WanLink:
        """Run the relay in namespace ``netns``; return once its TUN device ``tun`` exists."""
        workdir.mkdir(parents=True, exist_ok=True)
        ready = workdir / "wanlink.ready"
        control = workdir / "wanlink.sock"
        log_path = workdir / "wanlink.log"
        ready.unlink(missing_ok=True)
        cmd = [
            "ip",
            "netns",
            "exec",
            netns,
            sys.executable,
            "-m",
            "tidepool_lab.testbed.wanlink",
            "--tun",
            tun,
            "--cloud",
            cloud,
            "--rtt-ms",
            str(rtt_ms),
            "--control",
            str(control),
            "--ready-file",
            str(ready),
            "--parent-pid",
            str(os.getpid()),
        ]
        with open(log_path, "ab") as log_file:
            # ``ip netns exec`` execs the command, so the PID is the relay's own.
            process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                stop_process_group(process)
                raise RuntimeError(
                    f"WAN link relay in {netns} did not start (exit code {process.returncode}); "
                    f"log tail:\n{log_tail(log_path)}"
                )
            time.sleep(0.02)
        return cls(process, control, log_path, netns)

    @property
    def pid(self) -> int:
        return self._process.pid

    def _call(self, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.control))
            return json_line_call(sock, request, "WAN link relay")

    def stats(self) -> TunRelayStats:
        """Counters (bytes and packets delivered each way, drops, resets) and link state."""
        reply = self._call({"op": "stats"})
        reply.pop("ok", None)
        return reply  # type: ignore[return-value]

    def set_link(self, up: bool, mode: CutMode = "reset") -> None:
        """Cut (``False``) or restore (``True``) the link; see the module docstring."""
        self._call({"op": "link", "up": up, "mode": mode})

    def set_delay(self, rtt_ms: float) -> None:
        """Change the round-trip delay for packets read from now on."""
        self._call({"op": "shape", "rtt_ms": rtt_ms})

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the relay (asked nicely, then SIGTERM/SIGKILL to its process group)."""
        if self._process.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self._call({"op": "stop"}, timeout=1.0)
            try:
                self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                stop_process_group(self._process)

    def __enter__(self) -> WanLink:
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
        return f"WanLink(netns={self.netns!r}, pid={self.pid}, {state})"


if __name__ == "__main__":
    from tidepool_lab.testbed.wanlink import main as _main

    _main()
