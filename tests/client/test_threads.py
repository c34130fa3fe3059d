"""One client instance shared by many threads, as PyTorch's thread pools and Dask workers share it.

Every read is compared with the origin bytes; both the HTTP path and the same-host fast path are
exercised, cold (pages fetched from the origin while other threads wait on the same pages) and warm.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tidepool.client import TidepoolFileSystem

from .conftest import Serve, client, flush

pytestmark = pytest.mark.integration

PAGE = 64 << 10
THREADS = 8
rng = random.Random(7)
SMALL = {f"small/{i // 50}/f{i:03d}.bin": rng.randbytes(rng.randint(1, 6000)) for i in range(200)}
BIG = rng.randbytes(40 * PAGE + 321)
CHUNK = 100_003  # deliberately not page aligned


def read_small(fs: TidepoolFileSystem, rel: str) -> tuple[str, bytes]:
    return rel, fs.cat_file(f"ds/{rel}")


def read_big(fs: TidepoolFileSystem, start: int) -> tuple[int, bytes]:
    """Read from ``start`` to the end in chunks through one file object."""
    parts = []
    with fs.open("ds/big.bin", block_size=4 * PAGE) as f:
        f.seek(start)
        while chunk := f.read(CHUNK):
            parts.append(chunk)
    return start, b"".join(parts)


def read_everything(fs: TidepoolFileSystem, seed: int) -> list[str]:
    """Every small file twice (so threads race on the same file) and the big file from
    several offsets, all at once on one pool; returns a description of each bad result."""
    order = list(SMALL) * 2
    random.Random(seed).shuffle(order)
    starts = [0, 1, PAGE - 1, PAGE, 7 * PAGE + 5, len(BIG) // 2, len(BIG) - 3, len(BIG)]
    bad = []
    with ThreadPoolExecutor(THREADS) as pool:
        bigs = [pool.submit(read_big, fs, s) for s in starts]
        smalls = [pool.submit(read_small, fs, rel) for rel in order]
        for fut in smalls:
            try:
                rel, data = fut.result()
            except Exception as exc:
                bad.append(f"{exc!r}")
                continue
            if data != SMALL[rel]:
                bad.append(f"{rel}: {len(data)} bytes differ from the origin's {len(SMALL[rel])}")
        for fut in bigs:
            try:
                start, data = fut.result()
            except Exception as exc:
                bad.append(f"{exc!r}")
                continue
            if data != BIG[start:]:
                bad.append(f"big.bin from {start}: wrong bytes ({len(data)} read)")
    return bad


@pytest.mark.parametrize("local_reads", [True, False], ids=["local", "http"])
def test_one_instance_shared_by_threads(serve: Serve, local_reads: bool) -> None:
    worker = serve({"ds": {**SMALL, "big.bin": BIG}}, page_size=PAGE)
    svc = worker.worker.services["ds"]
    fs = client(worker, local_reads=local_reads)

    assert read_everything(fs, seed=1) == []  # cold: every page comes from the origin
    flush(worker)
    reads_before: Any = svc.origins[0].stats.calls.get("read", 0)
    hits_before = svc.hits
    assert read_everything(fs, seed=2) == []  # warm
    assert svc.origins[0].stats.calls.get("read", 0) == reads_before, "warm reads hit the origin"
    if local_reads:
        assert fs._local is not None and fs._local.hits > 0
    else:
        assert fs._local is None
        assert svc.hits > hits_before
