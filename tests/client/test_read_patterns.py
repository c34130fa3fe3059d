"""Read patterns of training loops: sequential reads with read-ahead, random seeks, and forked
data-loader workers that use the parent's client instance."""

from __future__ import annotations

import multiprocessing
import random
from multiprocessing.connection import Connection

import pytest
from tests.conftest import ThreadWorker

from tidepool.client import TidepoolFileSystem

from .conftest import Serve, client

pytestmark = pytest.mark.integration

MiB = 1 << 20
rng = random.Random(2024)
BIG = rng.randbytes(20 * MiB)
SMALL = {f"s/{i}.bin": rng.randbytes(1000 + i) for i in range(20)}


@pytest.fixture(scope="module")
def worker(serve: Serve) -> ThreadWorker:
    return serve({"ds": {"big.bin": BIG, **SMALL}}, page_size=MiB)


@pytest.mark.parametrize("block_size", [None, MiB, 3 * MiB + 5], ids=["default", "1MiB", "odd"])
def test_sequential_reads_with_read_ahead(worker: ThreadWorker, block_size: int | None) -> None:
    fs = client(worker, local_reads=False)
    for step in (MiB, MiB + 17):
        out = bytearray()
        prefetched = 0
        with fs.open("ds/big.bin", block_size=block_size) as f:
            while chunk := f.read(step):
                assert chunk == BIG[len(out) : len(out) + len(chunk)]
                out += chunk
                prefetched += bool(f.cache._ahead)  # read-ahead requests in flight
        assert bytes(out) == BIG
        assert prefetched > 0, "a sequential reader never had the next block in flight"


def test_random_seeks(worker: ThreadWorker) -> None:
    fs = client(worker, local_reads=False)
    seeks = random.Random(5)
    with fs.open("ds/big.bin", block_size=MiB) as f:
        for _ in range(60):
            start = seeks.randrange(len(BIG))
            size = seeks.choice([1, 100, MiB - 1, MiB, MiB + 1, 3 * MiB])
            f.seek(start)
            assert f.read(size) == BIG[start : start + size]
            assert f.tell() == min(len(BIG), start + size)
        # back and forth across one page boundary, which defeats read-ahead every time
        for i in range(10):
            start = 7 * MiB - 3 if i % 2 else 2 * MiB - 3
            f.seek(start)
            assert f.read(6) == BIG[start : start + 6]


def _child(fs: TidepoolFileSystem, conn: Connection) -> None:
    try:
        got = {rel: fs.cat_file(f"ds/{rel}") == data for rel, data in SMALL.items()}
        with fs.open("ds/big.bin") as f:
            f.seek(5 * MiB - 1)
            big_ok = f.read(2 * MiB) == BIG[5 * MiB - 1 : 7 * MiB - 1]
        conn.send(("ok", all(got.values()) and big_ok and fs.cat_file("ds/big.bin") == BIG))
    except BaseException as exc:
        conn.send(("error", repr(exc)))
    finally:
        conn.close()


# Python 3.12+ warns about fork() in a process with threads (fsspec's I/O loop, the worker's
# loop): exactly what PyTorch's fork-started DataLoader workers do, so it is what is tested here
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.parametrize("local_reads", [True, False], ids=["local", "http"])
def test_forked_child_uses_the_parents_instance(worker: ThreadWorker, local_reads: bool) -> None:
    fs = client(worker, local_reads=local_reads)
    # the parent has a session, a running I/O loop and cached metadata before forking
    assert fs.cat_file("ds/s/0.bin") == SMALL["s/0.bin"]
    assert fs.cat_file("ds/big.bin", 0, 10) == BIG[:10]
    ctx = multiprocessing.get_context("fork")
    results = []
    for _ in range(2):
        parent_end, child_end = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(fs, child_end))
        proc.start()
        child_end.close()
        assert parent_end.poll(60), "the forked child did not answer"
        results.append(parent_end.recv())
        proc.join(30)
        assert proc.exitcode == 0
    assert results == [("ok", True), ("ok", True)]
    # the parent's instance still works after its children used their copies
    assert fs.cat_file("ds/s/1.bin") == SMALL["s/1.bin"]
    with fs.open("ds/big.bin") as f:
        assert f.read() == BIG
