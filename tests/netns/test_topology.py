"""The lab's topology: edge -> origin only through the WAN (delay, rate, counters, cut), LANs.

Measured values are attached to the test report (``record_property``) and printed; bounds are
generous: they check the harness, not the machine.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from tidepool_lab.testbed.netns import Host, Lab

from .conftest import RATE_MBIT, RTT_MS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUCKET = "topology"
BIG = 12 * 2**20


@pytest.fixture(scope="module")
def objects(lab: Lab) -> dict[str, bytes]:
    data = {"small.txt": b"hello from the cloud\n", "big.bin": os.urandom(BIG)}
    lab.origin.create_bucket(BUCKET)
    lab.origin.upload(BUCKET, data)
    return data


def _connect_time(host: Host, address: tuple[str, int]) -> float:
    def connect() -> float:
        start = time.monotonic()
        with socket.create_connection(address, timeout=5):
            return time.monotonic() - start

    return host.call(connect)


def _get(lab: Lab, host: Host, key: str) -> tuple[bytes, float]:
    """GET ``key`` from ``host``; return the body and the seconds from first to last byte."""
    client = lab.origin.boto3_client()

    def get() -> tuple[bytes, float]:
        body = client.get_object(Bucket=BUCKET, Key=key)["Body"]
        first = body.read(64 * 1024)
        start = time.monotonic()
        rest = body.read()
        return first + rest, time.monotonic() - start

    return host.call(get)


def test_s3_get_from_edge_crosses_the_shaped_wan(
    lab: Lab, objects: dict[str, bytes], record_property: Callable[[str, Any], None]
) -> None:
    host = lab.hosts["pool-a"][0]
    origin = (lab.origin.address, lab.origin.port)
    rtts = [_connect_time(host, origin) for _ in range(5)]
    # A TCP handshake is one round trip; the relay never delivers a packet early.
    assert min(rtts) >= RTT_MS / 1000
    assert min(rtts) < RTT_MS / 1000 + 0.050

    before = lab.wan.stats()
    body, _ = _get(lab, host, "small.txt")
    assert body == objects["small.txt"]
    rates = []
    for _ in range(2):
        body, seconds = _get(lab, host, "big.bin")
        assert hashlib.md5(body).digest() == hashlib.md5(objects["big.bin"]).digest()
        rates.append((len(body) - 64 * 1024) * 8 / seconds / 1e6)
    after = lab.wan.stats()
    down = after["payload_down"] - before["payload_down"]
    assert 2 * BIG <= down < 2 * BIG * 1.25  # both copies crossed, plus headers/retransmits
    assert after["payload_up"] > before["payload_up"]  # the requests went up
    # Goodput is bounded by tbf (IP bytes incl. headers: at most ~96.5 % of the rate) and,
    # on this noisy 2-core machine, stays well above half of it.
    assert 0.5 * RATE_MBIT < max(rates) < 1.02 * RATE_MBIT
    record_property("wan_rtt_ms", round(min(rtts) * 1000, 1))
    record_property("wan_goodput_mbit", [round(r, 1) for r in rates])
    print(f"WAN RTT {min(rtts) * 1000:.1f} ms, goodput {rates} Mbit/s, down {down} B")


def test_link_cut_fails_fast_and_restore_recovers(lab: Lab, objects: dict[str, bytes]) -> None:
    host = lab.hosts["pool-b"][0]
    origin = (lab.origin.address, lab.origin.port)
    url = f"{lab.origin.endpoint}/minio/health/live"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def health() -> int:
        try:
            with opener.open(url, timeout=5) as reply:
                return int(reply.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    assert host.call(health) == 200
    open_conn = host.call(socket.create_connection, origin, 5)
    try:
        lab.wan.set_link(False)
        start = time.monotonic()
        with pytest.raises(ConnectionRefusedError):
            host.call(socket.create_connection, origin, 5)
        with pytest.raises(urllib.error.URLError):
            host.call(health)
        # A connection opened before the cut is reset the next time it is used.
        open_conn.settimeout(5)
        open_conn.sendall(b"GET /minio/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            open_conn.recv(1024)
        assert time.monotonic() - start < 1.0
        assert lab.wan.stats()["resets"] >= 3
    finally:
        open_conn.close()
        lab.wan.set_link(True)
    start = time.monotonic()
    assert host.call(health) == 200
    assert time.monotonic() - start < 1.0
    body, _ = _get(lab, host, "small.txt")
    assert body == objects["small.txt"]


def test_hosts_of_a_pool_talk_over_the_unshaped_lan(
    lab: Lab, record_property: Callable[[str, Any], None]
) -> None:
    server_host, client_host = lab.hosts["pool-a"][0], lab.hosts["pool-a"][1]
    listener = server_host.call(socket.create_server, (server_host.address, 0))
    port = listener.getsockname()[1]
    before = lab.wan.stats()
    try:
        rtts = [_connect_time(client_host, (server_host.address, port)) for _ in range(5)]
        conn = client_host.call(socket.create_connection, (server_host.address, port), 5)
        while True:  # skip the connections of the RTT probes, still in the backlog
            peer, peer_addr = listener.accept()
            if peer_addr == conn.getsockname():
                break
            peer.close()
        with conn, peer, concurrent.futures.ThreadPoolExecutor(1) as pool:
            assert peer_addr[0] == client_host.address  # no NAT: the LAN address itself
            payload = os.urandom(4 * 2**20)
            reading = pool.submit(lambda: b"".join(iter(lambda: peer.recv(1 << 16), b"")))
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            received = reading.result(timeout=10)
        assert received == payload
    finally:
        listener.close()
    after = lab.wan.stats()
    assert max(rtts) < 0.005
    assert after["payload_up"] == before["payload_up"]
    assert after["payload_down"] == before["payload_down"]
    record_property("lan_rtt_ms", round(min(rtts) * 1000, 3))
    print(f"LAN RTT {min(rtts) * 1000:.3f} ms")


def test_pools_are_isolated_until_connected(lab: Lab) -> None:
    a, b = lab.hosts["pool-a"][0], lab.hosts["pool-b"][1]
    listener = b.call(socket.create_server, (b.address, 0))
    target = (b.address, listener.getsockname()[1])
    try:
        start = time.monotonic()
        with pytest.raises(OSError) as refused:
            a.call(socket.create_connection, target, 5)
        assert refused.value.errno is not None  # EHOSTUNREACH at once, not a timeout
        assert time.monotonic() - start < 1.0
        lab.connect_pools(True)
        try:
            assert _connect_time(a, target) < 0.005
        finally:
            lab.connect_pools(False)
        with pytest.raises(OSError):
            a.call(socket.create_connection, target, 5)
    finally:
        listener.close()


def test_reset_connections_ends_what_a_pulled_cable_left_half_open(lab: Lab) -> None:
    """An edge process gone while the cable is pulled leaves the cloud side holding a connection
    with unacknowledged data; once the link is back the cloud resends it (new bytes on the WAN,
    seconds later, inside another test's counts) until the edge answers with a reset.
    ``Origin.reset_connections`` ends such connections at once: nothing crosses afterwards."""
    host = lab.hosts["pool-b"][1]
    server = lab.origin.call(socket.create_server, (lab.origin.address, 0))
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []

    def serve() -> None:
        conn, _ = server.accept()
        accepted.append(conn)
        with contextlib.suppress(OSError):
            conn.sendall(b"x" * (8 << 20))  # more than the link carries in the second below

    sender = threading.Thread(target=serve, daemon=True)
    sender.start()
    client = host.call(socket.create_connection, (lab.origin.address, port), 5)
    try:
        assert client.recv(65536)  # the transfer is under way
        lab.wan.set_link(False, mode="drop")
        client.close()  # the edge process is gone; its FIN is lost with the link
        time.sleep(1.0)  # the cloud's resends back off (next one about 1.4 s after the cut)
        assert lab.origin.connections_to(host.address)  # half-open on the cloud side
        lab.wan.set_link(True)
        lab.origin.reset_connections(host.address)
        assert not lab.origin.connections_to(host.address)
        before = lab.wan.new_bytes_down()
        time.sleep(1.5)
        assert lab.wan.new_bytes_down() == before
    finally:
        lab.wan.set_link(True)
        client.close()
        for conn in accepted:
            conn.close()
        server.close()
        sender.join(5)
