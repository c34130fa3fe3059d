"""The WAN emulator: link model (pure), delay, shared bandwidth, byte counts, half-close, link cut.

Timing assertions use generous bounds: they check the emulator, not the machine.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tidepool_lab.testbed.s3server import S3Server
from tidepool_lab.testbed.wan import CHUNK, LinkDirection, WanRelay

from .blobserver import pattern

pytestmark = pytest.mark.integration

MB = 1_000_000


# -- pure link model ------------------------------------------------------------------------


def test_link_serializes_then_delays() -> None:
    link = LinkDirection(rtt_s=0.040, rate_bps=100e6)
    assert link.reserve(10.0, 125_000) == pytest.approx(10.0 + 0.010 + 0.020)
    # A second chunk at the same moment queues behind the first.
    assert link.reserve(10.0, 125_000) == pytest.approx(10.0 + 0.020 + 0.020)
    # After the link went idle, serialization starts at "now" again.
    assert link.reserve(11.0, 0) == pytest.approx(11.0 + 0.020)


def test_link_unlimited_rate_only_delays() -> None:
    link = LinkDirection(rtt_s=0.010, rate_bps=0)
    assert link.reserve(5.0, 10 * MB) == pytest.approx(5.005)


def test_queue_limit_covers_propagation_plus_backlog() -> None:
    link = LinkDirection(rtt_s=0.040, rate_bps=100e6)
    one_way_bytes = 100e6 / 8 * 0.020
    assert link.queue_limit() >= one_way_bytes + 2 * CHUNK


# -- through a relay process ---------------------------------------------------------------


def _connect(relay: WanRelay) -> tuple[socket.socket, io.BufferedReader]:
    sock = socket.create_connection(relay.address, timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock, sock.makefile("rb")


def _ping(sock: socket.socket, reader: io.BufferedReader) -> float:
    start = time.perf_counter()
    sock.sendall(b"PING\n")
    assert reader.readline() == b"PONG\n"
    return time.perf_counter() - start


def _get(sock: socket.socket, reader: io.BufferedReader, n: int) -> tuple[float, bytes]:
    start = time.perf_counter()
    sock.sendall(f"GET {n}\n".encode())
    data = reader.read(n)
    return time.perf_counter() - start, data


def _download(relay: WanRelay, n: int) -> None:
    sock, reader = _connect(relay)
    with sock, reader:
        assert len(_get(sock, reader, n)[1]) == n


def test_round_trip_adds_one_rtt(relay: WanRelay) -> None:
    sock, reader = _connect(relay)
    with sock:
        first = _ping(sock, reader)
        rtts = [_ping(sock, reader) for _ in range(8)]
    # The first request also pays the emulated TCP handshake: one more RTT.
    assert first >= 0.080
    assert min(rtts) >= 0.040
    assert statistics.median(rtts) < 0.060


def test_no_handshake_option(
    start_relay: Callable[..., WanRelay], blob_server: tuple[str, int]
) -> None:
    relay = start_relay(blob_server, 40.0, 100.0, handshake=False)
    sock, reader = _connect(relay)
    with sock:
        assert 0.040 <= _ping(sock, reader) < 0.080  # no extra handshake RTT


def test_bandwidth_and_byte_counts(relay: WanRelay) -> None:
    sock, reader = _connect(relay)
    with sock:
        _ping(sock, reader)
        before = relay.stats()
        elapsed, data = _get(sock, reader, 5 * MB)
        after = relay.stats()
    assert data == pattern(5 * MB)
    # 5 MB at 100 Mbit/s is 0.4 s of serialization, plus one RTT.
    assert 0.35 <= elapsed <= 0.6, elapsed
    assert after["bytes_down"] - before["bytes_down"] == 5 * MB
    assert after["bytes_up"] - before["bytes_up"] == len(f"GET {5 * MB}\n")
    assert after["queued_bytes"] == 0


def test_upload_direction(relay: WanRelay) -> None:
    payload = os.urandom(2 * MB)
    sock, reader = _connect(relay)
    with sock:
        _ping(sock, reader)
        start = time.perf_counter()
        sock.sendall(f"PUT {len(payload)}\n".encode() + payload)
        reply = reader.readline()
        elapsed = time.perf_counter() - start
    assert reply == b"OK " + hashlib.md5(payload).hexdigest().encode() + b"\n"
    assert 0.16 + 0.04 <= elapsed < 0.5, elapsed
    stats = relay.stats()
    assert stats["bytes_up"] == len(b"PING\n") + len(f"PUT {len(payload)}\n") + len(payload)


def test_bandwidth_is_shared_by_all_connections(relay: WanRelay) -> None:
    results: list[float] = []

    def one() -> None:
        sock, reader = _connect(relay)
        with sock:
            _ping(sock, reader)
            elapsed, data = _get(sock, reader, int(2.5 * MB))
            assert len(data) == int(2.5 * MB)
            results.append(elapsed)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 2
    # Together 5 MB on one 100 Mbit/s link: the slower one cannot finish before ~0.4 s.
    assert max(results) >= 0.35


def test_busy_link_queueing_delay_is_bounded(relay: WanRelay) -> None:
    """The link buffers about one RTT of data over all connections, like a router, not more."""
    sock, reader = _connect(relay)
    with sock:
        _ping(sock, reader)
        threads = [threading.Thread(target=_download, args=(relay, 5 * MB)) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.3)
            assert relay.stats()["queued_bytes"] > 0  # the link is busy
            # RTT + ~40 ms of buffer + a chunk per connection; 4 full per-connection queues
            # (4 x ~0.75 MB = 240 ms at 100 Mbit/s) would be far above this.
            assert _ping(sock, reader) < 0.150
        finally:
            for thread in threads:
                thread.join(30)


def test_half_close_arrives_after_data(relay: WanRelay) -> None:
    sock, reader = _connect(relay)
    with sock:
        sock.sendall(f"GET {MB}\n".encode())
        sock.shutdown(socket.SHUT_WR)
        assert reader.read(MB) == pattern(MB)
        assert reader.readline() == b"BYE\n"
        assert reader.read() == b""
    deadline = time.monotonic() + 5
    while relay.stats()["connections_active"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert relay.stats()["connections_active"] == 0


def test_link_down_resets_and_refuses_then_recovers(relay: WanRelay) -> None:
    sock, reader = _connect(relay)
    with sock:
        _ping(sock, reader)
        relay.set_link(False)
        assert relay.stats()["link_up"] is False
        with pytest.raises(ConnectionResetError):
            sock.sendall(b"PING\n")
            reader.readline()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(relay.address, timeout=2).close()
    relay.set_link(True)
    stats = relay.stats()
    assert stats["link_up"] is True
    assert stats["connections_reset"] == 1
    sock, reader = _connect(relay)
    with sock:
        assert _ping(sock, reader) >= 0.040


def test_set_shape_changes_delay(relay: WanRelay) -> None:
    relay.set_shape(rtt_ms=10.0, rate_mbit=1000.0)
    stats = relay.stats()
    assert (stats["rtt_ms"], stats["rate_mbit"]) == (10.0, 1000.0)
    sock, reader = _connect(relay)
    with sock:
        _ping(sock, reader)
        rtts = [_ping(sock, reader) for _ in range(5)]
    assert min(rtts) >= 0.010
    assert statistics.median(rtts) < 0.030
    with pytest.raises(ValueError, match="rtt_ms"):
        relay.set_shape(rtt_ms=-1, rate_mbit=10)


def test_target_refusing_resets_client(start_relay: Callable[..., WanRelay]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]  # bound, never listening: connections are refused
        relay = start_relay(("127.0.0.1", closed_port))
        # the reset may arrive while connecting or on the first exchange: both are the point
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            sock, reader = _connect(relay)
            with sock:
                sock.sendall(b"PING\n")
                if reader.readline() == b"":
                    raise ConnectionResetError("closed")
    assert relay.stats()["connections_reset"] == 1


def test_refuses_non_loopback_target(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="loopback"):
        WanRelay.start(("192.0.2.1", 80), workdir=tmp_path)


def test_stop_ends_the_process(blob_server: tuple[str, int], tmp_path: Path) -> None:
    relay = WanRelay.start(blob_server, workdir=tmp_path)
    pid = relay.pid
    assert "127.0.0.1" in repr(relay)
    relay.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    relay.stop()  # idempotent


def test_cli_prints_addresses(blob_server: tuple[str, int]) -> None:
    cmd = [
        sys.executable,
        "-m",
        "tidepool_lab.testbed.wan",
        "--target",
        f"{blob_server[0]}:{blob_server[1]}",
    ]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert b'"listen": ["127.0.0.1"' in line and b'"control"' in line
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()
    assert process.returncode == 0


def test_s3_through_relay(s3_origin: S3Server, start_relay: Callable[..., WanRelay]) -> None:
    bucket = s3_origin.create_bucket("wan-relay")
    data = os.urandom(MB)
    s3_origin.boto3_client().put_object(Bucket=bucket, Key="blob", Body=data)
    relay = start_relay(("127.0.0.1", s3_origin.port))
    from tidepool_lab.testbed.s3util import boto3_client

    client = boto3_client(relay.endpoint, s3_origin.access_key, s3_origin.secret_key)
    start = time.perf_counter()
    body = client.get_object(Bucket=bucket, Key="blob", Range="bytes=0-99")["Body"].read()
    assert body == data[:100]
    assert time.perf_counter() - start >= 0.080  # handshake RTT + request RTT
    assert client.get_object(Bucket=bucket, Key="blob")["Body"].read() == data
    assert relay.stats()["bytes_down"] >= MB
