"""The TUN relay's packet helpers, with plain bytes (no namespaces, no root)."""

from __future__ import annotations

import socket
import struct

from tidepool_lab.testbed.wanlink import (
    SequenceTracker,
    checksum,
    parse_packet,
    tcp_reset_for,
    tcp_segment,
)

SRC, DST = "192.0.2.11", "198.51.100.10"


def _tcp(flags: int, seq: int, ack: int, payload: bytes = b"") -> bytes:
    src, dst = socket.inet_aton(SRC), socket.inet_aton(DST)
    tcp = struct.pack("!HHIIBBHHH", 40000, 9000, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return ip + tcp


def test_checksum_of_a_valid_header_is_zero() -> None:
    packet = _tcp(0x18, 1000, 2000, b"hello")
    assert checksum(packet[:20]) == 0
    pseudo = packet[12:20] + struct.pack("!BBH", 0, 6, len(packet) - 20)
    assert checksum(pseudo + packet[20:]) == 0


def test_parse_packet_counts_tcp_payload() -> None:
    info = parse_packet(_tcp(0x18, 1, 1, b"x" * 100))
    assert info is not None
    assert (info["proto"], info["payload"], info["header_len"]) == (6, 100, 20)
    assert socket.inet_ntoa(info["dst"]) == DST
    assert parse_packet(b"\x60" + b"\0" * 39) is None  # IPv6
    assert parse_packet(b"\x45\0") is None


def test_syn_is_refused_with_rst_ack() -> None:
    reset = tcp_reset_for(_tcp(0x02, 5000, 0))
    assert reset is not None
    info = parse_packet(reset)
    assert info is not None
    assert socket.inet_ntoa(info["src"]) == DST and socket.inet_ntoa(info["dst"]) == SRC
    sport, dport, seq, ack = struct.unpack_from("!HHII", reset, 20)
    assert (sport, dport, seq, ack, reset[33]) == (9000, 40000, 0, 5001, 0x14)
    assert checksum(reset[:20]) == 0
    assert checksum(reset[12:20] + struct.pack("!BBH", 0, 6, 20) + reset[20:]) == 0


def test_established_segment_is_reset_at_its_ack() -> None:
    reset = tcp_reset_for(_tcp(0x18, 1000, 777_777, b"data"))
    assert reset is not None
    _, _, seq, ack = struct.unpack_from("!HHII", reset, 20)
    assert (seq, ack, reset[33]) == (777_777, 0, 0x04)


def test_rst_and_non_tcp_get_no_reset() -> None:
    assert tcp_reset_for(_tcp(0x04, 1, 1)) is None
    udp = bytearray(_tcp(0x18, 1, 1))
    udp[9] = 17
    assert tcp_reset_for(bytes(udp)) is None


def test_sequence_tracker_counts_only_new_bytes() -> None:
    t = SequenceTracker(max_flows=2)
    flow = (b"a", b"b", b"ports")
    assert t.new_bytes(flow, 1000, 1448) == 1448
    assert t.new_bytes(flow, 2448, 1448) == 1448
    assert t.new_bytes(flow, 2448, 1448) == 0  # the tail resent (a tail-loss probe)
    assert t.new_bytes(flow, 3000, 1448) == 1448 - (3896 - 3000)  # partly new
    assert t.new_bytes(flow, (1 << 32) - 10, 20) == 0  # far behind: old, not a wrap
    wrap = (b"c", b"d", b"p")
    assert t.new_bytes(wrap, (1 << 32) - 10, 10) == 10
    assert t.new_bytes(wrap, 0, 100) == 100  # across the 2**32 wrap
    t.new_bytes((b"x", b"y", b"z"), 0, 1)  # a third flow evicts the oldest
    assert t.new_bytes(flow, 2448, 10) == 10  # forgotten: counted as new again


def test_tcp_segment_reads_flow_and_sequence() -> None:
    info = tcp_segment(_tcp(0x18, 12345, 1, b"x" * 10))
    assert info is not None and info[1] == 12345 and info[2] == 10
