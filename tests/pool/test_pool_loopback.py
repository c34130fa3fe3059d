"""Several workers of one node pool on loopback: shared cache, routing, failover, replication.

These run real workers (threads with their own event loops) with static membership against the
real S3 origin; the network-namespace harness runs the same scenarios across an emulated WAN.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.pool import poolkit
from tests.pool.poolkit import PEER_TOKEN, free_ports, per_worker, static_members

from tidepool.client import TidepoolFileSystem
from tidepool.core.ring import Member, file_key, owners

pytestmark = pytest.mark.integration

FILES = {f"d{i % 4}/f{i:03d}.bin": os.urandom(40_000 + i) for i in range(40)}
FILES["big.bin"] = os.urandom(3 * (1 << 20) + 5)


def start_pool(
    make_dataset: Any, start_worker: Any, tmp: Path, n: int = 3, replicas: int = 1
) -> tuple[list[Any], list[Member]]:
    return poolkit.start_pool(make_dataset, start_worker, tmp, FILES, n=n, replicas=replicas)


def origin_reads(workers: list[Any]) -> int:
    return sum(w.worker.services["ds"].origins[0].stats.calls.get("read", 0) for w in workers)


def flush(workers: list[Any]) -> None:
    for w in workers:
        w.call(w.worker.services["ds"].flush_writes())


def read_all(fs: TidepoolFileSystem) -> None:
    for name, data in FILES.items():
        assert fs.cat_file(f"ds/{name}") == data, name


def test_second_node_reads_what_the_first_fetched(
    make_dataset: Any, start_worker: Any, tmp_path: Path
) -> None:
    workers, members = start_pool(make_dataset, start_worker, tmp_path)
    a = TidepoolFileSystem(workers[0].endpoint, local_reads=False, skip_instance_cache=True)
    read_all(a)
    flush(workers)
    after_a = origin_reads(workers)
    assert after_a == len(FILES) - 1 + 4  # one GET per page: 40 small files + 4 pages of big
    b = TidepoolFileSystem(workers[1].endpoint, local_reads=False, skip_instance_cache=True)
    read_all(b)
    assert origin_reads(workers) == after_a
    # every file is cached on its owner and only there
    want = {m.name: 0 for m in members}
    for name, data in FILES.items():
        want[owners(file_key("ds", name), members)[0].name] += len(data)
    have = {
        m.name: w.worker.stores["ds"].dataset_bytes("ds")
        for w, m in zip(workers, members, strict=True)
    }
    assert have == want


async def test_non_owner_serves_from_owner_without_caching(
    make_dataset: Any, start_worker: Any, tmp_path: Path
) -> None:
    workers, members = start_pool(make_dataset, start_worker, tmp_path)
    name = "d1/f001.bin"
    owner = owners(file_key("ds", name), members)[0]
    other = next(i for i, m in enumerate(members) if m != owner)
    owner_i = members.index(owner)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{owner.address}/v1/datasets/ds/files/{name}") as r:
            assert await r.read() == FILES[name]
        flush(workers)
        before = origin_reads(workers)
        async with s.get(f"{members[other].address}/v1/datasets/ds/files/{name}") as r:
            assert r.status == 200
            assert await r.read() == FILES[name]
    assert origin_reads(workers) == before  # came from the owner over the "LAN"
    flush(workers)
    assert workers[other].worker.stores["ds"].dataset_bytes("ds") == 0
    assert workers[owner_i].worker.stores["ds"].dataset_bytes("ds") == len(FILES[name])
    # Fluid's ratios: a remote hit on the non-owner; the owner does not count the peer's read
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{members[other].address}/v1/datasets/ds/status?refresh=0") as r:
            body = await r.json()
            states, raw = body["cacheStates"], body["raw"]
        async with s.get(f"{owner.address}/v1/datasets/ds/status?refresh=0") as r:
            owner_raw = (await r.json())["raw"]
    assert (raw["page_hits"], raw["page_misses"], raw["peer_hits"]) == (0, 1, 1)
    assert states["remoteHitRatio"] == "100.0%" and states["localHitRatio"] == "0.0%"
    assert (owner_raw["page_hits"], owner_raw["page_misses"], owner_raw["peer_hits"]) == (0, 1, 0)


def test_reads_fail_over_when_the_owner_stops(
    make_dataset: Any, start_worker: Any, tmp_path: Path
) -> None:
    workers, members = start_pool(make_dataset, start_worker, tmp_path)
    fs = TidepoolFileSystem(workers[0].endpoint, local_reads=False, skip_instance_cache=True)
    read_all(fs)
    victim = next(
        i for i in (1, 2) if any(owners(file_key("ds", n), members)[0] == members[i] for n in FILES)
    )
    workers[victim].stop()
    read_all(fs)  # the victim's files come from the next worker on the ring (origin last)


def test_replica_serves_after_the_primary_is_gone(
    make_dataset: Any, start_worker: Any, tmp_path: Path
) -> None:
    workers, members = start_pool(make_dataset, start_worker, tmp_path, replicas=2)
    fs = TidepoolFileSystem(workers[0].endpoint, local_reads=False, skip_instance_cache=True)
    read_all(fs)
    deadline = time.monotonic() + 20
    want = {m.name: 0 for m in members}
    for name, data in FILES.items():
        for m in owners(file_key("ds", name), members, 2):
            want[m.name] += len(data)
    while time.monotonic() < deadline:
        flush(workers)
        have = {
            m.name: w.worker.stores["ds"].dataset_bytes("ds")
            for w, m in zip(workers, members, strict=True)
        }
        if have == want:
            break
        time.sleep(0.1)
    assert have == want  # every file on exactly its two owners
    workers[0].stop()
    survivors = workers[1:]
    before = origin_reads(survivors)
    fs2 = TidepoolFileSystem(workers[1].endpoint, local_reads=False, skip_instance_cache=True)
    read_all(fs2)
    assert origin_reads(survivors) == before  # the surviving replica had everything


def test_status_shows_the_pool(make_dataset: Any, start_worker: Any, tmp_path: Path) -> None:
    import subprocess
    import sys

    workers, _members = start_pool(make_dataset, start_worker, tmp_path)
    fs = TidepoolFileSystem(workers[0].endpoint, local_reads=False, skip_instance_cache=True)
    read_all(fs)
    flush(workers)
    pool = fs.pool_status(["ds"])
    assert pool["nodepool"] == "pool-a"
    assert [m["name"] for m in pool["members"]] == ["w0", "w1", "w2"]
    assert all(m["state"] == "up" for m in pool["members"])
    assert sum(m["files_owned"] for m in pool["members"]) == len(FILES)
    assert sum(m["cached_bytes"] for m in pool["members"]) == sum(map(len, FILES.values()))
    workers[2].stop()
    r = subprocess.run(
        [sys.executable, "-m", "tidepool.cli", "status", "--endpoint", workers[0].endpoint],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "node pool pool-a" in r.stdout and "down" in r.stdout and "w1" in r.stdout


def test_fast_path_finds_the_worker_on_its_own_node(
    make_dataset: Any, start_worker: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kubernetes: the pool's Service may send a fuse Pod to a worker on another node; the client
    still reads its own node's worker's pages from disk (found by member name, the node's name)
    and reports those reads to that worker."""
    cfg = make_dataset(FILES, page_size=1 << 20)
    ports = free_ports(3)
    members = [Member(f"w{i}", f"http://127.0.0.1:{p}", "pool-a") for i, p in enumerate(ports)]
    static = static_members(members)
    workers = []
    for i, m in enumerate(members):
        monkeypatch.setenv("TIDEPOOL_HOST_ID", m.name)  # each "Pod" on a node of its own
        workers.append(
            start_worker(
                [per_worker(cfg, tmp_path, m.name)],
                port=ports[i],
                nodepool="pool-a",
                node_name=m.name,
                members=static,
                state_dir=tmp_path / f"state-{m.name}",
                peer_token=PEER_TOKEN,
            )
        )
    warm = TidepoolFileSystem(workers[0].endpoint, local_reads=False, skip_instance_cache=True)
    read_all(warm)
    flush(workers)

    monkeypatch.setenv("TIDEPOOL_HOST_ID", "w1")  # the fuse Pod on w1's node, sent to w0
    fs = TidepoolFileSystem(workers[0].endpoint, local_reads=True, skip_instance_cache=True)
    ours = [n for n in FILES if owners(file_key("ds", n), members)[0].name == "w1"]
    assert ours
    svc = workers[1].worker.services["ds"]
    before = svc.hits
    for name in ours:
        fs.info(f"ds/{name}")
        assert fs.cat_file(f"ds/{name}") == FILES[name], name
    assert fs._local is not None and fs._local_endpoint == members[1].address
    assert svc.hits == before, "w1's pages were read over HTTP, not from disk"
    pages = sum(-(-len(FILES[n]) // (1 << 20)) for n in ours)
    assert fs._hit_reporter().flush() == pages
    assert svc.hits == before + pages and svc.client_local_hits == pages
