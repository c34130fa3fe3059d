"""Hit accounting over a scripted sequence of reads in a two-worker pool: every page a program
reads is counted exactly once, by where its bytes came from — this worker's cache (local hit),
another worker's cache (remote hit) or the origin (miss) — so the pool's ``localHitRatio``,
``remoteHitRatio`` and miss ratio add up to exactly 1 and their counts to the pages read.
Read-ahead, peer-to-peer reads and warm-ups are never counted."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tidepool.client import TidepoolFileSystem
from tidepool.core.ring import file_key, owners

from .test_pool_loopback import FILES, flush, start_pool

pytestmark = pytest.mark.integration

MiB = 1 << 20


def counts(worker: Any) -> tuple[int, int, int]:
    """(local hits, remote hits, origin misses) of the worker's dataset."""
    c = worker.worker.services["ds"].reader.counts
    return c.cache, c.peer, c.origin


def http_read(address: str, name: str, span: str | None = None) -> bytes:
    headers = {"Range": span} if span else {}
    req = urllib.request.Request(f"{address}/v1/datasets/ds/files/{name}", headers=headers)
    with urllib.request.urlopen(req, timeout=30) as answer:
        data: bytes = answer.read()
        return data


def test_every_page_read_is_counted_once_by_its_source(
    make_dataset: Any, start_worker: Any, tmp_path: Path
) -> None:
    workers, members = start_pool(make_dataset, start_worker, tmp_path, n=2)
    w0, w1 = workers
    small = [n for n in FILES if n != "big.bin"]
    by_owner = {
        m.name: [n for n in small if owners(file_key("ds", n), members)[0] == m] for m in members
    }
    x, y, z = by_owner["w0"][0], by_owner["w1"][0], by_owner["w1"][1]
    fs = TidepoolFileSystem(w0.endpoint, local_reads=False, skip_instance_cache=True)

    assert fs.cat_file(f"ds/{x}") == FILES[x]  # w0 owns x, cold: a miss at w0
    flush(workers)
    assert fs.cat_file(f"ds/{x}") == FILES[x]  # warm: a local hit at w0
    assert fs.cat_file(f"ds/{y}") == FILES[y]  # routed to its owner w1, cold: a miss at w1
    flush(workers)
    assert http_read(members[0].address, y) == FILES[y]  # w0 is no owner: w1's cache, remote
    assert http_read(members[0].address, z) == FILES[z]  # w1 fetched z for w0: a miss at w0
    assert http_read(members[1].address, x) == FILES[x]  # w0's cache for w1: remote at w1
    assert counts(w0) == (1, 1, 2)
    assert counts(w1) == (0, 1, 1)

    # a multi-page file: its read-ahead pages are fetched uncounted, then read as hits
    big_owner = workers[
        [m.name for m in members].index(owners(file_key("ds", "big.bin"), members)[0].name)
    ]
    before = counts(big_owner)
    owner_address = members[workers.index(big_owner)].address
    assert (
        http_read(owner_address, "big.bin", f"bytes=0-{2 * MiB - 1}") == FILES["big.bin"][: 2 * MiB]
    )
    big_owner.call(big_owner.worker.services["ds"].reader.settle())
    assert http_read(owner_address, "big.bin") == FILES["big.bin"]
    after = counts(big_owner)
    assert (after[0] - before[0], after[1] - before[1], after[2] - before[2]) == (4, 0, 2)

    statuses = [fs.status("ds", refresh=False)]  # the worker's view, through the API
    raw = statuses[0]["raw"]
    local, remote, origin = counts(w0)
    assert raw["page_hits"] == local and raw["peer_hits"] == remote
    assert raw["page_misses"] == remote + origin

    pool = [counts(w) for w in workers]
    pages_read = 6 + 2 + 4
    lookups = sum(sum(c) for c in pool)
    assert lookups == pages_read
    ratios = [sum(c[i] for c in pool) / lookups for i in range(3)]
    assert ratios[0] + ratios[1] + ratios[2] == pytest.approx(1.0, abs=1e-12)


def test_hints_go_to_each_files_owner_and_nothing_crosses_twice(
    make_dataset: Any, start_worker: Any, tmp_path: Path
) -> None:
    """``fs.prefetch`` sends each path to its owner: every file is fetched from the origin once,
    by its owner, and a second node's reads then cost no origin request."""
    workers, members = start_pool(make_dataset, start_worker, tmp_path, n=2)  # prefetch: off
    for w in workers:
        w.worker.services["ds"].prefetch.policy = "pattern"  # hints only, no warm-up
    fs = TidepoolFileSystem(workers[0].endpoint, local_reads=False, skip_instance_cache=True)
    small = sorted(n for n in FILES if n != "big.bin")
    assert fs.prefetch([f"ds/{n}" for n in small]) == len(small)
    deadline = time.monotonic() + 30
    reads = [0, 0]
    while time.monotonic() < deadline:
        reads = [w.worker.services["ds"].origins[0].stats.calls.get("read", 0) for w in workers]
        if sum(reads) >= len(small):
            break
        time.sleep(0.05)
    owned = [sum(1 for n in small if owners(file_key("ds", n), members)[0] == m) for m in members]
    assert reads == owned
    flush(workers)
    other = TidepoolFileSystem(workers[1].endpoint, local_reads=False, skip_instance_cache=True)
    for n in small:
        assert other.cat_file(f"ds/{n}") == FILES[n]
    assert [w.worker.services["ds"].origins[0].stats.calls.get("read", 0) for w in workers] == owned
