"""Loads of many small files from a ``file://`` origin (issue 16, load at the origin's pace):
read many files per thread hop and cached with one index commit per batch, on a real worker over a
real local origin, every byte compared with the origin's; a file that changed since it was listed
goes the one-by-one way."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tidepool.core.fileinfo import file_info
from tidepool.core.pages import HEADER_SIZE, PageKey, file_key
from tidepool.origin.funnel import Origin
from tidepool.spec.config import DatasetConfig, MountConfig, RuntimeConfig, TierConfig
from tidepool.store.pagestore import PageStore
from tidepool.worker.loads import BATCH_FILE_MAX, BATCH_FILES

pytestmark = pytest.mark.integration

PAGE = 1 << 20


def _files() -> dict[str, bytes]:
    """Small files in directories, an empty one, one over the batch limit and one of 3 pages."""
    files = {f"d{i % 5}/f{i:04d}.bin": os.urandom(1 + i * 37 % 4000) for i in range(400)}
    files["empty.bin"] = b""
    files["big/over.bin"] = os.urandom(BATCH_FILE_MAX + 1)
    files["big/pages.bin"] = os.urandom(2 * PAGE + 12345)
    return files


def _dataset(tmp_path: Path, files: dict[str, bytes]) -> DatasetConfig:
    root = tmp_path / "origin"
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    mount = MountConfig(name="ds", url=f"file://{root}", protocol="file", root=str(root), path="")
    return DatasetConfig(
        name="ds",
        mounts=(mount,),
        runtime=RuntimeConfig(
            tiers=(TierConfig("SSD", str(tmp_path / "cache"), 1 << 28),), page_size=PAGE
        ),
    )


async def _load(endpoint: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{endpoint}/v1/datasets/ds/load", json={"paths": []}) as r:
            assert r.status == 202, await r.text()
            job = await r.json()
        deadline = time.monotonic() + 120
        while job["phase"] not in ("Complete", "Incomplete", "Failed"):
            assert time.monotonic() < deadline, job
            await asyncio.sleep(0.05)
            async with s.get(f"{endpoint}/v1/loads/{job['id']}") as r:
                job = await r.json()
    return job


def _check_cached(store: PageStore, files: dict[str, bytes], versions: dict[str, str]) -> None:
    """Every page of every file is in the store with the origin's bytes."""
    for name, data in files.items():
        fkey = file_key("ds", name, versions[name])
        pages = [data[i : i + PAGE] for i in range(0, len(data), PAGE)]
        for i, expected in enumerate(pages):
            got = store.get(PageKey("ds", fkey, i))
            assert got is not None, (name, i)
            assert bytes(got) == expected, (name, i)


def _versions(root: Path, files: dict[str, bytes]) -> dict[str, str]:
    out = {}
    for name in files:
        st = (root / name).stat()
        out[name] = file_info(name, st.st_size, None, st.st_mtime)["version"]
    return out


class _Commits:
    """Counts the index transactions that add pages."""

    def __init__(self, store: PageStore) -> None:
        self.calls = 0
        self.rows = 0
        index = store._index
        original = index.add_pages

        def counted(rows: Any) -> int:
            rows = list(rows)
            self.calls += 1
            self.rows += len(rows)
            return original(rows)

        index.add_pages = counted  # type: ignore[method-assign]


async def test_a_load_of_small_local_files_is_batched_and_exact(
    start_worker: Any, tmp_path: Path
) -> None:
    files = _files()
    w = start_worker([_dataset(tmp_path, files)])
    svc = w.worker.services["ds"]
    commits = _Commits(svc.store)
    job = await _load(w.endpoint)
    assert job["phase"] == "Complete", job
    assert job["files_done"] == job["files_total"] == len(files)
    assert job["bytes_done"] == sum(len(v) for v in files.values())
    assert not job["errors"]
    _check_cached(svc.store, files, _versions(tmp_path / "origin", files))
    # 400 small files in batches of at most BATCH_FILES; the two large files one page a commit
    small = sum(1 for v in files.values() if 0 < len(v) <= BATCH_FILE_MAX)
    assert commits.rows == small + 1 + 3
    assert commits.calls <= -(-small // BATCH_FILES) + 2 * 5 + 1 + 3
    assert commits.calls < small // 10
    assert svc.origins[0].stats.calls["read"] >= small  # every file counted as read
    # the small files are rows of the tier's pack database, and the load folded every
    # database's write-ahead log in before it said Complete
    state = Path(svc.store.index_path()).parent
    logs = [*state.glob("*.sqlite3-wal"), *(tmp_path / "cache").rglob("packs.sqlite3-wal")]
    assert len(logs) >= 3 and all(p.stat().st_size == 0 for p in logs), logs

    again = await _load(w.endpoint)  # all cached: nothing read or written again
    assert again["phase"] == "Complete", again
    assert again["bytes_done"] == job["bytes_done"]
    assert commits.rows == small + 4


async def test_a_file_changed_since_listed_is_loaded_one_by_one(
    start_worker: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch read refuses a file whose size or mtime moved since the listing (the
    version the load asked for) rather than cache its bytes under that version: such a file
    goes the usual way. Simulated for every third file of each batch by touching it after the
    listing; the contents stay the same, so every file is cached under its listed version."""
    files = _files()
    w = start_worker([_dataset(tmp_path, files)])
    root = tmp_path / "origin"
    listed = _versions(root, files)
    touched: list[str] = []
    real = Origin.read_whole

    async def touch_then_read(self: Origin, batch: Any) -> Any:
        for rel, _, _ in batch[::3]:
            os.utime(root / rel, (1_000_000_000, 1_000_000_000 + len(touched)))
            touched.append(rel)
        got = await real(self, batch)
        assert got is not None
        assert [i for i, d in enumerate(got) if d is None] == list(range(0, len(batch), 3))
        return got

    monkeypatch.setattr(Origin, "read_whole", touch_then_read)
    job = await _load(w.endpoint)
    assert job["phase"] == "Complete", job
    assert touched
    _check_cached(w.worker.services["ds"].store, files, listed)


async def test_read_whole_checks_the_version_on_the_open_file(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (tmp_path / "outside.bin").write_bytes(b"secret")
    (root / "link.bin").symlink_to(tmp_path / "outside.bin")
    data = {"a.bin": b"a" * 100, "d/b.bin": b"b" * 5, "c.bin": b"c" * 7}
    for name, body in data.items():
        (root / name).write_bytes(body)
    mount = MountConfig(name="m", url=f"file://{root}", protocol="file", root=str(root), path="")
    origin = Origin("ds", mount)
    await origin.start()
    try:
        v = _versions(root, data)
        os.utime(root / "c.bin", (1, 2))  # changed after it was "listed"
        got = await origin.read_whole(
            [
                ("a.bin", v["a.bin"], 100),
                ("d/b.bin", v["d/b.bin"], 5),
                ("c.bin", v["c.bin"], 7),
                ("a.bin", v["a.bin"], 99),  # another size
                ("gone.bin", v["a.bin"], 100),
                ("d", "", 0),  # a directory
                ("link.bin", file_info("link.bin", 6, None, 0)["version"], 6),  # leaves the root
            ]
        )
        assert got == [data["a.bin"], data["d/b.bin"], None, None, None, None, None]
        assert origin.stats.calls["read"] == 7
        assert origin.stats.bytes_read == 105
        assert await origin.read_whole([]) is None
    finally:
        await origin.close()


def test_put_many_is_one_transaction_and_survives_a_restart(tmp_path: Path) -> None:
    tiers = (TierConfig("SSD", str(tmp_path / "tier"), 40 * (HEADER_SIZE + 1000)),)
    pages = [(PageKey("ds", file_key("ds", f"f{i}", "v"), 0), bytes([i]) * 1000) for i in range(30)]
    with PageStore(tiers, tmp_path / "state", dataset="ds", page_size=4096) as store:
        commits = _Commits(store)
        assert store.put_many(pages[:20]) == [True] * 20
        assert commits.calls == 1
        # already cached, given twice, and new ones: one more transaction for the new ones only
        assert store.put_many([pages[0], pages[25], pages[25], pages[26]]) == [True] * 4
        assert commits.calls == 2
        assert commits.rows == 22
        with pytest.raises(ValueError, match="larger than the page size 4096"):
            store.put_many([(pages[29][0], b"x" * 4097)])
    with PageStore(tiers, tmp_path / "state", dataset="ds", page_size=4096) as store:
        for key, data in [*pages[:20], pages[25], pages[26]]:
            got = store.get(key)
            assert got is not None and bytes(got) == data
        assert store.dataset_files("ds") == 22


def test_put_many_keeps_the_quota(tmp_path: Path) -> None:
    """A batch larger than the tier evicts the oldest pages as single puts do; the tier never
    holds more than its quota."""
    size = HEADER_SIZE + 1000
    tiers = (TierConfig("SSD", str(tmp_path / "tier"), 10 * size, high=1.0, low=1.0),)
    pages = [(PageKey("ds", file_key("ds", f"f{i}", "v"), 0), bytes([i]) * 1000) for i in range(25)]
    with PageStore(tiers, tmp_path / "state", dataset="ds", page_size=4096) as store:
        assert store.put_many(pages[:8]) == [True] * 8
        results = store.put_many(pages[8:])
        usage = store.usage()[0]
        assert usage.used <= usage.capacity
        on_disk = [
            f for f in (tmp_path / "tier").rglob("*") if f.is_file() and f.parent.name != "tmp"
        ]
        assert sum(f.stat().st_size for f in on_disk if "pages" in f.parts) <= usage.capacity
        held = [key for key, _ in pages if store.contains(key)]
        assert len(held) <= 10
        # the batch's own pages are not evicted before they are indexed: the oldest ones went
        assert results.count(True) >= 2
        assert not store.contains(pages[0][0])
        for key, data in pages:
            got = store.get(key)
            assert got is None or bytes(got) == data


def test_a_stale_file_at_a_page_path_is_replaced_not_served(tmp_path: Path) -> None:
    """Pages are written in place (``O_EXCL``): a file no index row vouches for at the path (an
    eviction whose unlink failed, a planted file) is replaced by the page being put."""
    tiers = (TierConfig("SSD", str(tmp_path / "tier"), 1 << 20),)
    key = PageKey("ds", file_key("ds", "f", "v"), 0)
    with PageStore(tiers, tmp_path / "state", dataset="ds", page_size=4096) as store:
        path = Path(store._tiers[0].page_path(key))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"stale bytes of nobody's page")
        assert store.put_many([(key, b"fresh" * 10)]) == [True]
        got = store.get(key)
        assert got is not None and bytes(got) == b"fresh" * 10
        assert store.stats().put_failures == 0


async def test_overlapping_paths_load_each_file_once(start_worker: Any, tmp_path: Path) -> None:
    """Paths below a requested directory (and repeats) are left out: the job streams each
    directory's listing a page at a time and never keeps a set of the names it has seen."""
    files = _files()
    w = start_worker([_dataset(tmp_path, files)])
    async with aiohttp.ClientSession() as s:
        body = {"paths": ["d1", "d1/f0001.bin", "d1/", "d2", "big/over.bin", "d2/f0002.bin"]}
        async with s.post(f"{w.endpoint}/v1/datasets/ds/load", json=body) as r:
            assert r.status == 202, await r.text()
            job = await r.json()
        while job["phase"] not in ("Complete", "Incomplete", "Failed"):
            await asyncio.sleep(0.05)
            async with s.get(f"{w.endpoint}/v1/loads/{job['id']}") as r:
                job = await r.json()
    wanted = {n: v for n, v in files.items() if n.startswith(("d1/", "d2/")) or n == "big/over.bin"}
    assert job["phase"] == "Complete", job
    assert job["files_total"] == job["files_done"] == job["files_checked"] == len(wanted)
    assert job["bytes_total"] == job["bytes_done"] == sum(len(v) for v in wanted.values())
    store = w.worker.services["ds"].store
    _check_cached(store, wanted, _versions(tmp_path / "origin", wanted))
    assert store.dataset_files("ds") == len(wanted)


async def test_small_files_of_an_s3_origin_keep_the_jobs_concurrency(
    make_dataset: Any, start_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only files a batch can take go to the batch lanes: small files of an S3 origin are
    fetched ``concurrency`` at a time (the WAN is latency-bound), not one per lane."""
    from tidepool.worker.dataset import DatasetService

    files = {f"s/{i:03d}.bin": os.urandom(100 + i) for i in range(40)}
    w = start_worker([make_dataset(files, page_size=PAGE)])
    in_flight, most = 0, 0
    real = DatasetService.warm

    async def counted(self: DatasetService, path: str, *args: Any, **kw: Any) -> int:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            await asyncio.sleep(0.05)  # the file's WAN round trip, long enough to overlap
            return await real(self, path, *args, **kw)
        finally:
            in_flight -= 1

    monkeypatch.setattr(DatasetService, "warm", counted)
    job = await _load(w.endpoint)
    assert job["phase"] == "Complete", job
    assert job["files_done"] == len(files)
    assert most > 2, most  # 32 by default; the two batch lanes alone would give 2
