"""Bytes from a pool peer are checked against the origin's checksum before they are kept.

Two real workers with r = 2 (each keeps every file and asks the other first) against the real S3
origin. Worker ``w1`` is reached through a relay that flips one byte of every file answer: a
member holding the peer credential that serves wrong bytes under the right version. ``w0`` must
notice, serve and keep the origin's bytes, and say so in its status and metrics.
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.pool.poolkit import PEER_TOKEN, per_worker, static_members

from tidepool.core.ring import Member
from tidepool.worker.placement import PeerError
from tidepool_lab.testbed.s3server import free_port

pytestmark = pytest.mark.integration

MiB = 1 << 20
SMALL = {f"s{i}.bin": os.urandom(30_000 + i) for i in range(4)}
BIG = os.urandom(3 * MiB + 5)


class FlippingRelay:
    """Forwards every request to a real worker; flips the first byte of file answers."""

    def __init__(self, target_port: int) -> None:
        self.flipped = 0
        relay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._forward("GET")

            def do_POST(self) -> None:
                self._forward("POST")

            def do_HEAD(self) -> None:
                self._forward("HEAD")

            def _forward(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection("127.0.0.1", target_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                try:
                    conn.request(method, self.path, body=body, headers=headers)
                    r = conn.getresponse()
                    data = r.read()
                except OSError:  # the worker behind is gone (the test is ending)
                    self.send_error(502)
                    return
                finally:
                    conn.close()
                if "/files/" in self.path and r.status in (200, 206) and data:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                    relay.flipped += 1
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pool(make_dataset: Any, start_worker: Any, tmp_path: Path) -> Iterator[tuple[Any, Any, Any]]:
    files = {**SMALL, "big.bin": BIG}
    cfg = make_dataset(files, page_size=MiB)
    p0, p1 = free_port(), free_port()
    relay = FlippingRelay(p1)
    members = [
        Member("w0", f"http://127.0.0.1:{p0}", "pool-a"),
        Member("w1", f"http://127.0.0.1:{relay.port}", "pool-a"),
    ]
    workers = [
        start_worker(
            [per_worker(cfg, tmp_path, m.name, data_replicas=2)],
            port=port,
            nodepool="pool-a",
            node_name=m.name,
            members=static_members(members),
            state_dir=tmp_path / f"state-{m.name}",
            peer_token=PEER_TOKEN,
            rebalance_rate=0,  # reads only here; a rebalance copy is called by its own test
        )
        for m, port in zip(members, (p0, p1), strict=True)
    ]
    try:
        yield workers[0], workers[1], relay
    finally:
        relay.close()


def read(worker: Any, name: str) -> bytes:
    with urllib.request.urlopen(f"{worker.endpoint}/v1/datasets/ds/files/{name}", timeout=30) as r:
        return r.read()


def status(worker: Any) -> dict[str, Any]:
    with urllib.request.urlopen(f"{worker.endpoint}/v1/datasets/ds/status", timeout=30) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def metric(worker: Any, name: str) -> float:
    with urllib.request.urlopen(f"{worker.endpoint}/metrics", timeout=30) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(f'{name}{{dataset="ds"}}'):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def origin_gets(worker: Any) -> int:
    return int(worker.worker.services["ds"].origins[0].stats.calls.get("read", 0))


def cached_pages(worker: Any, name: str) -> list[bytes | None]:
    svc = worker.worker.services["ds"]
    worker.call(svc.flush_writes())
    info = svc.metadata.known(name)[0]
    n = -(-info["size"] // MiB)
    out = []
    for i in range(n):
        page = svc.store.get(svc.reader.key(info, i))
        out.append(bytes(page) if page is not None else None)
    return out


def test_wrong_bytes_from_a_peer_are_refused_and_the_origins_are_kept(pool: Any) -> None:
    w0, _w1, relay = pool
    check0 = status(w0)["raw"]["peer_check"]
    assert list(check0["modes"].values()) == ["unknown"]
    for name, data in SMALL.items():
        assert read(w0, name) == data, name  # never the peer's flipped bytes
        assert cached_pages(w0, name) == [data]  # and what is kept is the origin's
    assert relay.flipped >= len(SMALL)
    check0 = status(w0)["raw"]["peer_check"]
    assert check0["rejected"] == len(SMALL) and check0["verified"] == 0
    assert list(check0["modes"].values()) == ["md5"]  # calibrated on the origin's own bytes
    assert metric(w0, "tidepool_peer_rejected_total") == len(SMALL)
    # the calibration survives in the state directory, owner-only
    kept = w0.worker.services["ds"].peer_check.path
    assert kept is not None and kept.name == "peer-verify.json"
    assert oct(kept.stat().st_mode & 0o777) == "0o600"
    assert list(json.loads(kept.read_text())["origins"].values()) == ["md5"]


def test_honest_peer_bytes_are_verified(pool: Any) -> None:
    _w0, w1, _relay = pool
    # w1 reads through w0 (no relay in that direction): honest answers, checked and counted
    for name, data in SMALL.items():
        assert read(w1, name) == data
    check1 = status(w1)["raw"]["peer_check"]
    assert check1["verified"] == len(SMALL) and check1["rejected"] == 0
    assert metric(w1, "tidepool_peer_verified_total") == len(SMALL)


def test_a_multi_page_file_is_checked_when_complete_and_dropped(pool: Any) -> None:
    w0, _w1, _relay = pool
    read(w0, "s0.bin")  # calibrates: this origin's ETags are MD5s
    read(w0, "big.bin")  # pages from the lying peer: kept, then checked as a whole
    svc = w0.worker.services["ds"]
    deadline = time.monotonic() + 60
    while status(w0)["raw"]["peer_check"]["rejected"] < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status(w0)["raw"]["peer_check"]["rejected"] == 2
    assert all(p is None for p in cached_pages(w0, "big.bin"))  # every page dropped
    before = origin_gets(w0)
    assert read(w0, "big.bin") == BIG  # from the origin now, never the peer again
    assert origin_gets(w0) > before
    assert b"".join(p or b"" for p in cached_pages(w0, "big.bin")) == BIG
    assert hashlib.md5(BIG).hexdigest() == svc.metadata.known("big.bin")[0]["version"]


def test_a_rebalance_copy_from_a_lying_peer_is_refused_before_a_page_is_kept(pool: Any) -> None:
    """A copy after a join (:mod:`tidepool.worker.rebalance`) of a multi-page file is checked
    whole against the origin's MD5 before any page is kept: from the lying member it is refused
    and counted, so no reader can be served a page of it meanwhile; the file is then never
    copied from a peer again, and a read takes the origin's bytes."""
    w0, w1, _relay = pool
    read(w0, "s0.bin")  # calibrates: this origin's ETags are MD5s
    assert read(w1, "big.bin") == BIG  # w1 holds it (w0 is reached directly: honest bytes)
    svc0 = w0.worker.services["ds"]
    info = w1.worker.services["ds"].metadata.known("big.bin")[0]
    liar = next(m for m in w0.worker.placement.members() if m.name == "w1")
    rejected = status(w0)["raw"]["peer_check"]["rejected"]
    held_before = cached_pages(w1, "big.bin")
    with pytest.raises(PeerError, match="fail their checksum"):
        w0.call(svc0.copy_from_peer(liar, info))
    assert status(w0)["raw"]["peer_check"]["rejected"] == rejected + 1
    w0.call(svc0.flush_writes())
    for i in range(-(-len(BIG) // MiB)):  # nothing of the copy was kept: any page w0 holds is right
        page = svc0.store.get(svc0.reader.key(info, i))
        assert page is None or bytes(page) == BIG[i * MiB : (i + 1) * MiB], i
    with pytest.raises(PeerError, match="never copied from a peer"):
        w0.call(svc0.copy_from_peer(liar, info))
    assert read(w0, "big.bin") == BIG
    assert held_before == cached_pages(w1, "big.bin")
