"""The same-host fast path: warm reads skip the worker, and a damaged or missing page file makes
the client fall back to HTTP (where the worker drops the bad page and refetches it) with the right
bytes either way."""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from tests.conftest import ThreadWorker

from tidepool.client import TidepoolFileSystem
from tidepool.core.pages import HEADER_SIZE, PACK_FILE, PageKey, file_key
from tidepool.store.index import sql_key

from .conftest import Serve, client, flush

pytestmark = pytest.mark.integration

PAGE = 64 << 10
rng = random.Random(99)
FILES = {
    "multi.bin": rng.randbytes(3 * PAGE + 777),
    "dir/small.bin": rng.randbytes(1234),
}


@pytest.fixture
def warm(serve: Serve) -> tuple[ThreadWorker, TidepoolFileSystem]:
    """A worker with every page of FILES cached, and a fast-path client that has read them."""
    worker = serve({"ds": FILES}, page_size=PAGE)
    fs = client(worker, local_reads=True)
    for rel, data in FILES.items():
        assert fs.cat_file(f"ds/{rel}") == data
    flush(worker)
    assert fs._local is not None, "the client did not enable the fast path on the worker's host"
    return worker, fs


def origin_reads(worker: ThreadWorker) -> int:
    return int(worker.worker.services["ds"].origins[0].stats.calls.get("read", 0))


def fkey(fs: TidepoolFileSystem, rel: str) -> str:
    return file_key("ds", rel, fs.info(f"ds/{rel}")["version"])


def page_file(worker: ThreadWorker, fs: TidepoolFileSystem, rel: str, index: int) -> Path:
    key = PageKey("ds", fkey(fs, rel), index)
    path = worker.worker.services["ds"].store.locate(key)
    assert path is not None and path.is_file()
    return path


def flip(path: Path) -> None:
    with open(path, "r+b") as f:
        f.seek(HEADER_SIZE + 10)
        byte = f.read(1)
        f.seek(HEADER_SIZE + 10)
        f.write(bytes([byte[0] ^ 0xFF]))


def truncate(path: Path) -> None:
    os.truncate(path, HEADER_SIZE + 5)


def unlink(path: Path) -> None:
    path.unlink()


def damage_packed(damage: str, db_path: Path, fkey: str) -> None:
    """The ``damage`` of :data:`DAMAGE` done to a packed page's row in its pack database
    (:mod:`tidepool.store.packs`): a flipped byte, a short row, no row."""
    db = sqlite3.connect(db_path, isolation_level=None)
    stored = sql_key(fkey)
    try:
        (data,) = db.execute("SELECT data FROM packs WHERE file_key = ?", (stored,)).fetchone()
        if damage == "flip":
            data = data[:10] + bytes([data[10] ^ 0xFF]) + data[11:]
        elif damage == "truncate":
            data = data[:5]
        if damage == "unlink":
            db.execute("DELETE FROM packs WHERE file_key = ?", (stored,))
        else:
            db.execute("UPDATE packs SET data = ? WHERE file_key = ?", (data, stored))
    finally:
        db.close()


def test_warm_reads_do_not_touch_the_worker(
    warm: tuple[ThreadWorker, TidepoolFileSystem],
) -> None:
    worker, fs = warm
    svc = worker.worker.services["ds"]
    assert fs._local is not None
    hits, misses, local_hits = svc.hits, svc.misses, fs._local.hits
    data = FILES["multi.bin"]
    for start, end in [(None, None), (0, 1), (PAGE - 2, PAGE + 2), (-100, None), (5, -5)]:
        assert fs.cat_file("ds/multi.bin", start, end) == data[start:end]
    assert fs.cat_file("tidepool://ds/dir/small.bin") == FILES["dir/small.bin"]
    assert fs.cat_ranges(["ds/multi.bin"] * 2, [0, 2 * PAGE], [10, 3 * PAGE + 1]) == [
        data[:10],
        data[2 * PAGE : 3 * PAGE + 1],
    ]
    with fs.open("ds/multi.bin", block_size=PAGE) as f:
        f.seek(PAGE + 3)
        assert f.read(PAGE) == data[PAGE + 3 : 2 * PAGE + 3]
        f.seek(0)
        assert f.read() == data
    assert (svc.hits, svc.misses) == (hits, misses), "a warm same-host read went to the worker"
    assert fs._local.hits > local_hits


DAMAGE: dict[str, Callable[[Path], None]] = {"flip": flip, "truncate": truncate, "unlink": unlink}


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize(
    ("rel", "index", "start", "end"),
    [("dir/small.bin", 0, None, None), ("multi.bin", 1, PAGE - 10, 2 * PAGE + 10)],
    ids=["whole-page", "page-span"],
)
def test_damaged_page_falls_back_to_the_worker(
    warm: tuple[ThreadWorker, TidepoolFileSystem],
    damage: str,
    rel: str,
    index: int,
    start: int | None,
    end: int | None,
) -> None:
    worker, fs = warm
    assert fs._local is not None
    if len(FILES[rel]) < PAGE:  # a small file is packed: a row of the tier's pack database
        where = worker.worker.services["ds"].store.locate(PageKey("ds", fkey(fs, rel), 0))
        assert where is not None and where.name == PACK_FILE
        damage_packed(damage, where, fkey(fs, rel))
    else:
        DAMAGE[damage](page_file(worker, fs, rel, index))
    reads, local_misses = origin_reads(worker), fs._local.misses

    assert fs.cat_file(f"ds/{rel}", start, end) == FILES[rel][start:end]
    assert fs._local.misses == local_misses + 1  # the fast path noticed and gave up
    assert origin_reads(worker) == reads + 1  # the worker dropped the bad page and refetched it
    with fs.open(f"ds/{rel}") as f:
        assert f.read() == FILES[rel]

    # the refetched page is on disk again: the fast path serves it without the worker
    flush(worker)
    hits, local_hits = worker.worker.services["ds"].hits, fs._local.hits
    assert fs.cat_file(f"ds/{rel}", start, end) == FILES[rel][start:end]
    assert fs._local.hits == local_hits + 1
    assert worker.worker.services["ds"].hits == hits
    assert origin_reads(worker) == reads + 1


def test_evicted_file_falls_back_to_the_worker(
    warm: tuple[ThreadWorker, TidepoolFileSystem],
) -> None:
    worker, fs = warm
    assert fs._local is not None
    store = worker.worker.services["ds"].store
    version = fs.info("ds/multi.bin")["version"]
    store.drop_file("ds", file_key("ds", "multi.bin", version))
    reads = origin_reads(worker)
    data = FILES["multi.bin"]
    assert fs.cat_file("ds/multi.bin") == data
    assert origin_reads(worker) == reads + 4  # every page came back from the origin
    with fs.open("ds/multi.bin", block_size=PAGE) as f:
        f.seek(2 * PAGE - 1)
        assert f.read(2) == data[2 * PAGE - 1 : 2 * PAGE + 1]


def test_fast_path_off(
    warm: tuple[ThreadWorker, TidepoolFileSystem], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, _ = warm
    monkeypatch.setenv("TIDEPOOL_LOCAL_READS", "0")
    fs = TidepoolFileSystem(worker.endpoint, skip_instance_cache=True)
    svc = worker.worker.services["ds"]
    hits = svc.hits
    assert fs.cat_file("ds/multi.bin") == FILES["multi.bin"]
    assert fs._local is None and svc.hits == hits + 4


def test_fast_path_reads_reach_the_workers_hit_ratio(
    warm: tuple[ThreadWorker, TidepoolFileSystem],
) -> None:
    """The worker never sees a same-host read; the client reports them so cacheHitRatio counts
    them (otherwise a warm pool read through a mount would show 0%)."""
    worker, fs = warm
    svc = worker.worker.services["ds"]
    assert fs._local is not None
    fs._hit_reporter().flush()  # whatever the warm-up read locally
    hits, misses = svc.hits, svc.misses
    for _ in range(3):
        assert fs.cat_file("ds/multi.bin") == FILES["multi.bin"]  # 4 pages each
        assert fs.cat_file("ds/dir/small.bin") == FILES["dir/small.bin"]  # 1 page
    assert (svc.hits, svc.misses) == (hits, misses), "the reads did not take the fast path"
    assert fs._hit_reporter().flush() == 15
    assert (svc.hits, svc.misses) == (hits + 15, misses)
    assert svc.client_local_hits >= 15
    assert fs._hit_reporter().flush() == 0  # reported once


def test_local_hits_report_is_validated(serve: Serve) -> None:
    worker = serve({"ds": FILES}, page_size=PAGE)
    url = urlsplit(worker.endpoint)
    json_type = {"Content-Type": "application/json"}
    for body in ('{"pages": -1}', '{"pages": "3"}', "[]", "not json", '{"pages": true}'):
        conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=5)
        conn.request("POST", "/v1/datasets/ds/local-hits", body, json_type)
        resp = conn.getresponse()
        answer = json.loads(resp.read())
        conn.close()
        assert resp.status == 400, body
        assert "pages" in answer["message"] or "JSON" in answer["message"]
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=5)
    conn.request("POST", "/v1/datasets/ds/local-hits", '{"pages": 1}')  # no JSON content type
    assert conn.getresponse().status == 415
    conn.close()
    assert worker.worker.services["ds"].hits == 0


def test_a_forked_reader_reports_its_own_reads_once(
    warm: tuple[ThreadWorker, TidepoolFileSystem],
) -> None:
    """Data-loader workers are forked: the child reports what it read, the parent what it read
    before the fork; nothing twice."""
    worker, fs = warm
    svc = worker.worker.services["ds"]
    fs._hit_reporter().flush()
    hits = svc.hits
    assert fs.cat_file("ds/dir/small.bin") == FILES["dir/small.bin"]  # 1 page, not yet reported
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def child() -> None:
        ok = fs.cat_file("ds/multi.bin") == FILES["multi.bin"]  # 4 pages
        queue.put((ok, fs._hit_reporter().flush()))

    proc = ctx.Process(target=child)
    proc.start()
    ok, reported = queue.get(timeout=30)
    proc.join(30)
    assert ok and reported == 4
    assert fs._hit_reporter().flush() == 1
    assert svc.hits == hits + 5


def test_a_page_file_is_checked_once_per_process_and_again_when_it_changes(
    warm: tuple[ThreadWorker, TidepoolFileSystem], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Warm reads pay the checksum of a page once (page files are immutable once in place), not
    on every read; a page file that changed since (new mtime or size) is checked again."""
    import tidepool.client.local as local_mod

    worker, fs = warm
    calls: list[int] = []
    real = local_mod.checksum

    def counting(data: bytes | bytearray | memoryview) -> int:
        calls.append(len(data))
        return real(data)

    monkeypatch.setattr(local_mod, "checksum", counting)
    data = FILES["multi.bin"]
    for _ in range(3):
        assert fs.cat_file("ds/multi.bin") == data
        assert fs.cat_file("ds/multi.bin", PAGE - 5, 2 * PAGE + 5) == data[PAGE - 5 : 2 * PAGE + 5]
    assert sorted(calls) == [777, PAGE, PAGE, PAGE], "each page checked once in six reads"

    calls.clear()
    flip(page_file(worker, fs, "multi.bin", 2))  # a changed file: a new mtime
    assert fs.cat_file("ds/multi.bin") == data  # refused locally, served by the worker
    assert calls == [PAGE]


def test_a_small_file_is_read_from_its_packed_row(
    warm: tuple[ThreadWorker, TidepoolFileSystem],
) -> None:
    """A small file has no page file (it is a row of the tier's pack database): the fast path
    finds it through the worker's index and serves it, any range of it, without the worker; so
    does a forked data-loader process, on its own connections."""
    worker, fs = warm
    assert fs._local is not None
    svc = worker.worker.services["ds"]
    store = svc.store
    small = FILES["dir/small.bin"]
    where = store.locate(PageKey("ds", fkey(fs, "dir/small.bin"), 0))
    assert where is not None and where.name == PACK_FILE
    assert not list(where.parent.rglob(f"{fkey(fs, 'dir/small.bin')}*"))  # no page file
    hits, local_hits = svc.hits, fs._local.hits
    for start, end in [(None, None), (0, 1), (10, 100), (-5, None)]:
        assert fs.cat_file("ds/dir/small.bin", start, end) == small[start:end]
    with fs.open("ds/dir/small.bin") as f:
        f.seek(7)
        assert f.read(20) == small[7:27]
    assert svc.hits == hits, "a packed read went to the worker"
    assert fs._local.hits >= local_hits + 5

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def child() -> None:
        assert fs._local is not None
        before = fs._local.hits
        ok = fs.cat_file("ds/dir/small.bin") == small
        queue.put((ok, fs._local.hits - before))

    proc = ctx.Process(target=child)
    proc.start()
    ok, child_hits = queue.get(timeout=30)
    proc.join(30)
    assert ok and child_hits == 1


def test_a_pack_database_others_can_write_is_not_read(serve: Serve, tmp_path: Path) -> None:
    """The same trust rule as page files: a pack database (or index) another user could write
    is never read by the fast path; the worker serves the file over HTTP instead."""
    worker = serve({"ds": FILES}, page_size=PAGE)
    warmup = client(worker, local_reads=False)
    assert warmup.cat_file("ds/dir/small.bin") == FILES["dir/small.bin"]
    flush(worker)
    store = worker.worker.services["ds"].store
    where = store.locate(PageKey("ds", fkey(warmup, "dir/small.bin"), 0))
    assert where is not None and where.name == PACK_FILE
    where.chmod(0o666)
    fs = client(worker, local_reads=True)
    svc = worker.worker.services["ds"]
    hits = svc.hits
    assert fs.cat_file("ds/dir/small.bin") == FILES["dir/small.bin"]
    assert fs._local is not None and fs._local.hits == 0
    assert svc.hits == hits + 1  # served by the worker
