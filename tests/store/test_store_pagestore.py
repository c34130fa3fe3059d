"""PageStore behaviour with plain bytes in temp dirs: caching, eviction, demotion, corruption."""

from __future__ import annotations

import errno
import logging
import sqlite3
import threading
from pathlib import Path

import pytest

from tidepool.core.pages import HEADER_SIZE, PAGES_DIR, TMP_DIR, PageKey
from tidepool.spec.config import TierConfig
from tidepool.store import PageStore, pagestore
from tidepool.store.index import INDEX_FILE, PageRow, open_index

from .conftest import PAGE, StoreFactory, disk_bytes, key, page_files, payload, store_root

FULL = PAGE + HEADER_SIZE


def put(store: PageStore, k: PageKey, size: int = PAGE) -> bytes:
    data = payload(k, size)
    assert store.put(k, data)
    return data


def test_put_get_round_trip(make_store: StoreFactory, tiers: list[TierConfig]) -> None:
    store = make_store()
    k = key(1, 3)
    data = put(store, k, 1000)
    got = store.get(k)
    assert isinstance(got, memoryview) and bytes(got) == data
    assert store.contains(k)
    assert store.locate(k) == Path(tiers[0].path).resolve() / "ds" / k.relpath()
    assert store.pages_of("ds", k.file_key) == {3}
    assert store.dataset_bytes("ds") == 1000
    assert store.dataset_files("ds") == 1
    mem, ssd = store.usage()
    assert (mem.medium, mem.used, mem.pages, mem.capacity) == (
        "MEM",
        1000 + HEADER_SIZE,
        1,
        tiers[0].quota,
    )
    assert (ssd.used, ssd.pages) == (0, 0)
    assert store.get(key(2)) is None
    stats = store.stats()
    assert (stats.hits, stats.misses) == (1, 1)


def test_empty_page_and_bytearray_and_memoryview_inputs(make_store: StoreFactory) -> None:
    store = make_store()
    assert store.put(key(1), b"")
    empty = store.get(key(1))
    assert empty is not None and bytes(empty) == b""
    assert store.put(key(2), bytearray(b"abc"))
    assert store.put(key(3), memoryview(b"xyzw")[1:])
    assert bytes(store.get(key(2)) or b"") == b"abc"
    assert bytes(store.get(key(3)) or b"") == b"yzw"


def test_put_existing_key_is_a_noop(make_store: StoreFactory) -> None:
    store = make_store()
    data = put(store, key(1))
    assert store.put(key(1), b"other")
    assert bytes(store.get(key(1)) or b"") == data
    assert store.usage()[0].pages == 1


def test_page_larger_than_every_quota_is_refused(tmp_path: Path) -> None:
    tiers = [TierConfig("MEM", str(tmp_path / "m"), quota=100, high=1.0, low=1.0)]
    with PageStore(
        tiers, tmp_path / "s", dataset="ds", page_size=PAGE, flush_interval=None
    ) as store:
        assert not store.put(key(1), b"x" * 200)
        assert store.stats().put_failures == 1
        assert not store.contains(key(1))
        assert store.usage()[0].used == 0


def test_page_larger_than_page_size_is_an_error(make_store: StoreFactory) -> None:
    with pytest.raises(ValueError, match="page size"):
        make_store().put(key(1), b"x" * (PAGE + 1))


def test_big_page_skips_a_small_top_tier(tmp_path: Path) -> None:
    tiers = [
        TierConfig("MEM", str(tmp_path / "m"), quota=FULL // 2, high=1.0, low=1.0),
        TierConfig("SSD", str(tmp_path / "s"), quota=4 * FULL, high=1.0, low=1.0),
    ]
    with PageStore(
        tiers, tmp_path / "st", dataset="ds", page_size=PAGE, flush_interval=None
    ) as store:
        data = put(store, key(1))
        assert [u.pages for u in store.usage()] == [0, 1]
        assert bytes(store.get(key(1)) or b"") == data


@pytest.mark.parametrize("damage", ["flip", "truncate", "extend_header_length", "delete"])
def test_damaged_page_is_dropped(make_store: StoreFactory, damage: str) -> None:
    store = make_store()
    k = key(7)
    put(store, k)
    put(store, key(8))
    path = store.locate(k)
    assert path is not None
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[HEADER_SIZE + 100] ^= 0x01
        path.write_bytes(raw)
    elif damage == "truncate":
        path.write_bytes(raw[:-1])
    elif damage == "extend_header_length":
        raw[8] ^= 0x01  # the length field
        path.write_bytes(raw)
    else:
        path.unlink()
    assert store.get(k) is None
    assert not path.exists()
    assert not store.contains(k)
    assert store.stats().corrupt == 1
    mem = store.usage()[0]
    assert mem.used == FULL and mem.pages == 1
    assert store.get(key(8)) is not None


def test_corrupt_drop_is_persisted(make_store: StoreFactory) -> None:
    store = make_store()
    put(store, key(1))
    path = store.locate(key(1))
    assert path is not None
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(raw)
    assert store.get(key(1)) is None
    store.close()
    assert not make_store().contains(key(1))


def test_lru_order_in_one_tier(tmp_path: Path) -> None:
    tiers = [TierConfig("SSD", str(tmp_path / "s"), quota=3 * FULL, high=1.0, low=1.0)]
    with PageStore(
        tiers, tmp_path / "st", dataset="ds", page_size=PAGE, flush_interval=None
    ) as store:
        for n in (1, 2, 3):
            put(store, key(n))
        assert store.get(key(1)) is not None
        put(store, key(4))  # evicts 2, the least recently used
        assert [store.contains(key(n)) for n in (1, 2, 3, 4)] == [True, False, True, True]
        put(store, key(5))  # then 3
        assert [store.contains(key(n)) for n in (1, 3, 4, 5)] == [True, False, True, True]
        assert store.stats().evictions == 2
        assert disk_bytes(tiers[0].path) == 3 * FULL


def test_demotion_mem_to_ssd_then_eviction(
    make_store: StoreFactory, tiers: list[TierConfig]
) -> None:
    store = make_store()
    data = {n: put(store, key(n)) for n in range(4)}
    assert store.get(key(0)) is not None  # 1 is now the LRU of MEM
    data[4] = put(store, key(4))
    loc = store.locate(key(1))
    assert loc is not None and str(loc).startswith(str(Path(tiers[1].path).resolve()))
    assert [u.pages for u in store.usage()] == [4, 1]
    assert store.stats().demotions == 1
    assert bytes(store.get(key(1)) or b"") == data[1]  # served from SSD
    for n in range(5, 20):
        data[n] = put(store, key(n))
    mem, ssd = store.usage()
    assert mem.used <= mem.capacity and ssd.used <= ssd.capacity
    assert (mem.pages, ssd.pages) == (4, 8)
    assert store.stats().evictions == 20 - 12
    for n, d in data.items():
        got = store.get(key(n))
        assert got is None or bytes(got) == d
    assert disk_bytes(tiers[0].path) == mem.used and disk_bytes(tiers[1].path) == ssd.used


def test_watermarks(tmp_path: Path) -> None:
    tiers = [TierConfig("SSD", str(tmp_path / "s"), quota=10 * FULL, high=0.8, low=0.5)]
    with PageStore(
        tiers, tmp_path / "st", dataset="ds", page_size=PAGE, flush_interval=None
    ) as store:
        for n in range(8):
            put(store, key(n))
        assert store.usage()[0].pages == 8  # exactly at high: no eviction
        put(store, key(8))
        assert store.usage()[0].pages == 5  # crossed high: down to low
        assert [store.contains(key(n)) for n in range(9)] == [False] * 4 + [True] * 5


def test_watermark_demotes_into_lower_tier(tmp_path: Path) -> None:
    tiers = [
        TierConfig("MEM", str(tmp_path / "m"), quota=4 * FULL, high=0.75, low=0.5),
        TierConfig("SSD", str(tmp_path / "s"), quota=10 * FULL, high=1.0, low=1.0),
    ]
    with PageStore(
        tiers, tmp_path / "st", dataset="ds", page_size=PAGE, flush_interval=None
    ) as store:
        for n in range(4):
            put(store, key(n))
        assert [u.pages for u in store.usage()] == [2, 2]
        assert store.stats().demotions == 2


def test_drop_file_and_dataset(make_store: StoreFactory) -> None:
    store = make_store()
    for i in range(3):
        put(store, key(1, i))
    put(store, key(2))
    store.drop_file("ds", key(1).file_key)
    assert store.pages_of("ds", key(1).file_key) == set()
    assert store.dataset_files("ds") == 1 and store.dataset_bytes("ds") == PAGE
    store.drop_dataset("ds")
    assert store.dataset_files("ds") == 0 and store.dataset_bytes("ds") == 0
    assert store.usage()[0].used == 0
    assert page_files(store.usage()[0].path) == []


def test_a_store_holds_one_dataset(make_store: StoreFactory) -> None:
    store = make_store()
    with pytest.raises(ValueError, match="belongs to dataset 'other'; this store caches 'ds'"):
        store.put(key(3, dataset="other"), b"x")
    assert not store.contains(key(3, dataset="other"))


def test_reopen_keeps_pages_and_recency(make_store: StoreFactory) -> None:
    store = make_store()
    data = {n: put(store, key(n)) for n in range(4)}
    assert store.get(key(0)) is not None  # 0 becomes most recent; 1 is LRU
    store.close()
    store = make_store()
    assert all(bytes(store.get(key(n)) or b"") == d for n, d in data.items())
    store.close()
    # recency after the reopen: reads 0,1,2,3 in that order -> 0 is LRU
    store = make_store()
    put(store, key(9))
    assert "ssd" in str(store.locate(key(0)))
    assert store.usage()[0].pages == 4


def test_close_without_flush_keeps_pages(make_store: StoreFactory) -> None:
    store = make_store()
    data = {n: put(store, key(n)) for n in range(3)}
    for n in range(3):
        store.get(key(n))
    store.close(flush=False)
    store = make_store()
    assert all(bytes(store.get(key(n)) or b"") == d for n, d in data.items())


def test_background_flush_persists_recency(make_store: StoreFactory) -> None:
    store = make_store(flush_interval=0.05)
    for n in range(4):
        put(store, key(n))
    store.get(key(0))
    deadline = threading.Event()
    for _ in range(100):
        if not store._dirty:
            break
        deadline.wait(0.02)
    store.close(flush=False)
    store = make_store()
    put(store, key(9))  # key(1) is the LRU: demoted
    assert "ssd" in str(store.locate(key(1)))
    assert "mem" in str(store.locate(key(0)))


def test_recovery_drops_rows_of_missing_files(
    make_store: StoreFactory, tiers: list[TierConfig]
) -> None:
    store = make_store()
    for n in range(6):
        put(store, key(n))  # 4 in MEM... then 2 demoted
    store.close()
    for f in page_files(tiers[0].path):  # a reboot empties the tmpfs
        f.unlink()
    store = make_store()
    mem, ssd = store.usage()
    assert (mem.pages, mem.used) == (0, 0)
    assert ssd.pages == 2
    assert sorted(n for n in range(6) if store.contains(key(n))) == [0, 1]


def test_recovery_wrong_size_file_is_not_served(
    make_store: StoreFactory, tiers: list[TierConfig]
) -> None:
    store = make_store()
    put(store, key(1))
    path = store.locate(key(1))
    store.close()
    assert path is not None
    path.write_bytes(path.read_bytes()[:100])
    store = make_store()
    assert not store.contains(key(1))
    assert not path.exists()
    assert store.usage()[0].used == 0


def test_recovery_never_adopts_and_deletes_only_its_own_files(
    make_store: StoreFactory, tiers: list[TierConfig]
) -> None:
    """A page file the index does not know is deleted even when its own header checksum matches
    (it may be planted); files Tidepool did not name are left where they are."""
    from tidepool.core.pages import encode_header

    store = make_store()
    put(store, key(1))
    store.close()
    ssd = store_root(tiers[1].path)
    orphan = key(42, 5)
    data = payload(orphan, 777)
    target = ssd / orphan.relpath()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(encode_header(data) + data)  # self-consistent, unknown to the index
    bad = ssd / key(43).relpath()
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"garbage" * 10)
    stray = ssd / PAGES_DIR / "ds" / "zz" / "notapage"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"x")
    misplaced = ssd / PAGES_DIR / "ds" / "zz" / f"{key(44).file_key}.0"  # wrong shard dir
    misplaced.write_bytes(encode_header(b"a") + b"a")
    mem_tmp = store_root(tiers[0].path) / TMP_DIR
    leftover = mem_tmp / "tp-123-4.part"
    leftover.write_bytes(b"partial")
    thesis = mem_tmp / "thesis.tex"
    thesis.write_bytes(b"\\documentclass{article}")

    store = make_store()
    assert not store.contains(orphan) and store.get(orphan) is None
    assert not target.exists() and not bad.exists() and not leftover.exists()
    assert stray.read_bytes() == b"x" and misplaced.exists()  # not Tidepool's names: kept
    assert thesis.read_bytes() == b"\\documentclass{article}"
    assert store.get(key(1)) is not None
    assert store.usage()[1].used == 0
    assert store.stats().corrupt == 0


def test_recovery_removes_duplicate_left_by_interrupted_demotion(
    make_store: StoreFactory, tiers: list[TierConfig]
) -> None:
    store = make_store()
    data = put(store, key(1))
    path = store.locate(key(1))
    store.close()
    assert path is not None
    dup = store_root(tiers[1].path) / key(1).relpath()
    dup.parent.mkdir(parents=True, exist_ok=True)
    dup.write_bytes(path.read_bytes())
    store = make_store()
    assert bytes(store.get(key(1)) or b"") == data
    assert [u.pages for u in store.usage()] == [1, 0]
    assert not dup.exists()


def test_corrupt_index_is_moved_aside_and_rebuilt(
    make_store: StoreFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store()
    data = {n: put(store, key(n)) for n in range(6)}
    store.close()
    db = tmp_path / "state" / INDEX_FILE
    db.write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING):
        store = make_store()
    assert "unreadable" in caplog.text
    assert "refills from the origin" in caplog.text
    assert list((tmp_path / "state").glob(f"{INDEX_FILE}.corrupt-*"))
    # nothing vouches for the pages any more: none is adopted, none is served
    assert all(store.get(key(n)) is None for n in data)
    assert [u.pages for u in store.usage()] == [0, 0]
    assert all(page_files(u.path) == [] for u in store.usage())
    assert store.put(key(0), data[0])
    assert bytes(store.get(key(0)) or b"") == data[0]


def test_lowered_quota_evicts_on_open(make_store: StoreFactory, tmp_path: Path) -> None:
    store = make_store()
    for n in range(8):
        put(store, key(n))
    store.close()
    smaller = [
        TierConfig("MEM", str(tmp_path / "mem"), quota=2 * FULL, high=1.0, low=1.0),
        TierConfig("SSD", str(tmp_path / "ssd"), quota=3 * FULL, high=1.0, low=1.0),
    ]
    store = make_store(smaller)
    mem, ssd = store.usage()
    assert (mem.pages, ssd.pages) == (2, 3)
    assert disk_bytes(mem.path) == mem.used <= mem.capacity
    assert disk_bytes(ssd.path) == ssd.used <= ssd.capacity


def test_removed_tier_rows_are_dropped(make_store: StoreFactory, tmp_path: Path) -> None:
    store = make_store()
    for n in range(6):
        put(store, key(n))
    store.close()
    only_ssd = [TierConfig("SSD", str(tmp_path / "ssd"), quota=8 * FULL, high=1.0, low=1.0)]
    store = make_store(only_ssd)
    assert store.usage()[0].pages == 2
    assert sum(store.contains(key(n)) for n in range(6)) == 2


# -- full disks ------------------------------------------------------------------------------


def test_disk_full_always_gives_up_quietly(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store()
    put(store, key(1))

    def full(path: str, chunks: object) -> None:
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pagestore, "write_page_file", full)
    with caplog.at_level(logging.WARNING, logger="tidepool.store.pagestore"):
        for n in range(2, 6):
            assert not store.put(key(n), payload(key(n), PAGE))
    assert store.stats().put_failures == 4
    assert not any(store.contains(key(n)) for n in range(2, 6))
    for u in store.usage():
        assert disk_bytes(u.path) == u.used
        assert not list((store_root(u.path) / TMP_DIR).iterdir())
    full_lines = [r for r in caplog.records if "disk full" in r.getMessage()]
    assert len(full_lines) == 2  # once per tier per minute


def test_disk_full_once_evicts_and_retries(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store()
    for n in range(3):
        put(store, key(n))
    real = pagestore.write_page_file
    calls = []

    def full_once(path: str, chunks: object) -> None:
        calls.append(path)
        if len(calls) == 1:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        real(path, chunks)  # type: ignore[arg-type]

    monkeypatch.setattr(pagestore, "write_page_file", full_once)
    data = put(store, key(9))
    assert bytes(store.get(key(9)) or b"") == data
    assert store.stats().demotions >= 1  # room was made in MEM before the retry
    assert store.stats().put_failures == 0


def test_real_small_tmpfs_fills_up(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import subprocess

    mnt = tmp_path / "tiny"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    try:
        tiers = [
            TierConfig("MEM", str(mnt), quota=4 << 20, high=1.0, low=1.0),  # lies: fs is 256k
            TierConfig("SSD", str(tmp_path / "ssd"), quota=200 * FULL, high=1.0, low=1.0),
        ]
        with (
            caplog.at_level(logging.WARNING),
            PageStore(
                tiers, tmp_path / "st", dataset="ds", page_size=PAGE, flush_interval=None
            ) as store,
        ):
            data = {}
            for n in range(120):
                k = key(n)
                data[k] = payload(k, PAGE)
                store.put(k, data[k])
            assert store.usage()[0].pages > 0
            for k, d in data.items():
                got = store.get(k)
                assert got is None or bytes(got) == d
            assert sum(store.contains(k) for k in data) > 100  # overflow went to SSD
            for u in store.usage():
                assert disk_bytes(u.path) == u.used <= u.capacity
        assert "disk full" in caplog.text  # the real ENOSPC path ran
        assert store.stats().put_failures == 0
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# -- concurrency -----------------------------------------------------------------------------


def test_concurrent_puts_and_gets(make_store: StoreFactory, tiers: list[TierConfig]) -> None:
    store = make_store(flush_interval=0.01)
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(base: int) -> None:
        try:
            for n in range(60):
                k = key(base * 1000 + n % 25)
                store.put(k, payload(k, PAGE - n))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader() -> None:
        try:
            while not stop.is_set():
                for base in range(4):
                    for n in range(25):
                        got = store.get(key(base * 1000 + n))
                        assert got is None or len(got) > PAGE - 60
                for u in store.usage():
                    assert u.used <= u.capacity
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(b,)) for b in range(4)]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in writers + readers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert not errors, errors
    for tier, u in zip(tiers, store.usage(), strict=True):
        assert disk_bytes(tier.path) == u.used <= u.capacity
        assert len(page_files(tier.path)) == u.pages
    assert store.stats().corrupt == 0


def test_closed_store_refuses(make_store: StoreFactory) -> None:
    store = make_store()
    store.close()
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.get(key(1))
    with pytest.raises(RuntimeError, match="closed"):
        store.put(key(1), b"")


def test_invalid_tiers_are_refused(tmp_path: Path) -> None:
    t = TierConfig("MEM", str(tmp_path / "m"), quota=FULL)
    with pytest.raises(ValueError, match="two tiers"):
        PageStore([t, t], tmp_path / "s", dataset="ds", page_size=PAGE)
    with pytest.raises(ValueError, match="watermarks"):
        PageStore(
            [TierConfig("MEM", str(tmp_path / "m"), quota=FULL, high=0.5, low=0.9)],
            tmp_path / "s",
            dataset="ds",
            page_size=PAGE,
        )
    with pytest.raises(ValueError, match="at least one tier"):
        PageStore([], tmp_path / "s", dataset="ds", page_size=PAGE)


def test_the_index_counts_files_with_a_page(tmp_path: Path) -> None:
    """A file counts once from its first page to its last (the index has no table of files:
    the count is of keys with a page row), whatever order its pages come and go in, a page put
    or deleted twice counted once, and a reopened index counts the same from its pages."""
    index, _, _ = open_index(tmp_path / "state")

    def rows(*keys: PageKey) -> list[PageRow]:
        return [PageRow(k, str(tmp_path), 10, 0, 1) for k in keys]

    assert index.add_pages(rows(key(1, 0), key(1, 2))) == 1
    assert index.add_pages(rows(key(1, 1), key(2), key(1, 1))) == 1  # file 2
    assert index.add_pages(rows(key(2))) == 0  # put again
    assert index.file_count("ds") == 2
    assert index.delete_pages([key(1, 0), key(1, 2)]) == 0  # page 1 left
    assert index.delete_pages([key(1, 1), key(1, 1), key(1, 0)]) == 1
    assert index.delete_pages([key(1, 1)]) == 0  # gone already
    assert index.add_pages(rows(key(3, 4))) == 1
    assert index.file_count("ds") == 2 and index.file_count("other") == 0
    index.close()
    index, _, _ = open_index(tmp_path / "state")
    assert index.file_count("ds") == 2 and index.indexes("ds", key(3).file_key) == [4]
    index.close()


def _full_tier_failing_deletes(
    make_store: StoreFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failures: int
) -> tuple[PageStore, Path, list[list[PageKey]]]:
    """A tier holding three pages, full, whose index's first ``failures`` deletes fail as on
    a full disk; the store, the tier's root and the keys of every delete asked for."""
    full = PAGE + HEADER_SIZE
    tiers = [TierConfig("SSD", str(tmp_path / "one"), quota=3 * full, high=1.0, low=1.0)]
    store = make_store(tiers)
    for i in range(3):
        assert store.put(key(i), payload(key(i), PAGE))
    real = store._index.delete_pages
    calls: list[list[PageKey]] = []

    def failing(keys: list[PageKey]) -> int:
        calls.append(list(keys))
        if len(calls) <= failures:
            raise sqlite3.OperationalError("database or disk is full")
        return real(keys)

    monkeypatch.setattr(store._index, "delete_pages", failing)
    return store, Path(tiers[0].path), calls


def test_a_failed_index_delete_leaves_the_pages_counted_once(
    make_store: StoreFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An eviction whose index delete fails (a full disk): the page's data goes, its row and
    its count stay (the put that needed the room is refused), and the row is dropped (uncounted)
    once, when next found: the tier's count always equals what it holds, never below it."""
    store, root, calls = _full_tier_failing_deletes(make_store, tmp_path, monkeypatch, 1)
    # the eviction it tried could not be recorded: refused (served from the origin)
    assert not store.put(key(3), payload(key(3), PAGE))
    assert calls == [[key(0)]]
    assert store.put(key(3), payload(key(3), PAGE))  # key(0)'s row goes
    assert calls[1] == [key(0)]
    assert store.get(key(0)) is None  # its row without data, dropped now if not already
    for i in (1, 2, 3):
        assert bytes(store.get(key(i)) or b"") == payload(key(i), PAGE)
    usage = store.usage()[0]
    held = (disk_bytes(root), len(page_files(root)))
    assert (usage.used, usage.pages) == held == (3 * (PAGE + HEADER_SIZE), 3)
    assert not store._index.has(key(0))


def test_an_index_that_cannot_delete_stops_eviction_instead_of_looping(
    make_store: StoreFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every index delete fails (the disk stays full): a put that needs room tries once and
    is refused (the page is served from the origin instead), rather than taking the same
    victims again for ever; the count never drops below what the tier holds, and once the
    index can write again the next put evicts and the count is exact."""
    store, root, calls = _full_tier_failing_deletes(make_store, tmp_path, monkeypatch, 10**6)
    assert not store.put(key(3), payload(key(3), PAGE))
    assert len(calls) == 1
    assert store.usage()[0].used >= disk_bytes(root)
    monkeypatch.undo()  # the index writes again
    assert store.put(key(4), payload(key(4), PAGE))
    for i in (0, 1, 2, 3):
        store.get(key(i))  # a row whose data went is dropped when found
    usage = store.usage()[0]
    assert (usage.used, usage.pages) == (disk_bytes(root), len(page_files(root)))
    assert bytes(store.get(key(4)) or b"") == payload(key(4), PAGE)
