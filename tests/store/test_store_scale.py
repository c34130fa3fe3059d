"""The page store keeps nothing per cached page in memory (issue 16): its index is SQLite.

Allocation counts (tracemalloc), not time: a store of 200,000 pages opens with the memory of one
of 2,000, answers lookups, evicts in LRU order and drops a dataset without building a list of it.
"""

from __future__ import annotations

import sqlite3
import tracemalloc
from pathlib import Path
from typing import Any

from tests.store.conftest import (
    DS,
    PAGE,
    StoreFactory,
    key,
    payload,
    write_old_index,
    write_schema5_files,
)

from tidepool.core.pages import HEADER_SIZE
from tidepool.spec.config import TierConfig
from tidepool.store.index import INDEX_FILE, PageRow, open_index

BIG = 200_000
SMALL = 2_000


def fill_index(state: Path, tier_root: Path, n: int) -> None:
    """``n`` one-page files of 1 KiB written straight into the index (no page files: the
    background check, which would drop them, is kept from starting)."""
    index, _, fresh = open_index(state)
    assert fresh is False
    rows = [PageRow(key(i), str(tier_root), HEADER_SIZE + 1024, i, i + 1) for i in range(n)]
    assert index.add_pages(rows) == n
    index.close()


def kept_after_open(make_store: StoreFactory, tmp_path: Path, n: int) -> tuple[int, int]:
    """Bytes still allocated once a store of ``n`` pages is open, and its page count."""
    tiers = [TierConfig("SSD", str(tmp_path / f"t{n}"), quota=10**12, high=1.0, low=1.0)]
    first = make_store(tiers, verified=False, verify_after=3600)  # makes the tier directory
    root = Path(first.tier_roots()[0])
    first.close()
    fill_index(tmp_path / "state", root, n)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        store = make_store(tiers, verified=False, verify_after=3600)
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    pages = store.usage()[0].pages
    assert store.dataset_files(DS) == n
    assert store.dataset_bytes(DS) == 1024 * n
    assert store.contains(key(n - 1)) and not store.contains(key(n))
    assert store.pages_of(DS, key(7).file_key) == {0}
    store.close()
    (tmp_path / "state" / INDEX_FILE).unlink()
    return kept, pages


def test_opening_a_store_keeps_no_memory_per_page(make_store: StoreFactory, tmp_path: Path) -> None:
    small, small_pages = kept_after_open(make_store, tmp_path, SMALL)
    big, big_pages = kept_after_open(make_store, tmp_path, BIG)
    assert (small_pages, big_pages) == (SMALL, BIG)
    # the old in-memory index kept ~500 bytes a page: 100 MB here
    assert big - small < 2 << 20, (small, big)
    assert big < 8 << 20, big


def test_eviction_follows_recency_persisted_in_the_index(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    """Victims come from the index's LRU order, with reads flushed first: the page read last
    survives, in a tier that holds three pages, across a restart too."""
    full = PAGE + HEADER_SIZE
    tiers = [TierConfig("SSD", str(tmp_path / "one"), quota=3 * full, high=1.0, low=1.0)]
    store = make_store(tiers)
    for i in range(3):
        store.put(key(i), payload(key(i), PAGE))
    assert store.get(key(0)) is not None  # 0 is now the most recent, 1 the oldest
    store.put(key(3), payload(key(3), PAGE))
    assert [store.contains(key(i)) for i in range(4)] == [True, False, True, True]
    store.close()
    store = make_store(tiers)
    assert store.get(key(2)) is not None  # order now 0, 3, 2
    store.put(key(4), payload(key(4), PAGE))
    assert [store.contains(key(i)) for i in range(5)] == [False, False, True, True, True]
    for i in (2, 3, 4):
        assert bytes(store.get(key(i)) or b"") == payload(key(i), PAGE)
    assert store.usage()[0].used == 3 * full


def test_dropping_a_large_dataset_goes_a_window_at_a_time(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    """drop_dataset over more rows than one window removes every row and page file."""
    tiers = [TierConfig("SSD", str(tmp_path / "drop"), quota=10**9, high=1.0, low=1.0)]
    store = make_store(tiers)
    n = 2_500
    store.put_many([(key(i), payload(key(i), 64)) for i in range(n)])
    assert store.dataset_files(DS) == n
    root = Path(store.tier_roots()[0])
    store.drop_dataset(DS)
    assert store.usage()[0].pages == 0 and store.usage()[0].used == 0
    assert store.dataset_files(DS) == 0 and store.dataset_bytes(DS) == 0
    assert not [p for p in (root / "pages").rglob("*") if p.is_file()]
    store.close()
    store = make_store(tiers)
    assert store.usage()[0].pages == 0 and not store.contains(key(0))


def test_an_index_of_an_older_schema_is_upgraded_with_its_pages_and_recency(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    """An index of schema 2 (no recency index), 3 or 4 (``index.sqlite3``: names and hex keys
    in every row) is rewritten as schema 6 when opened: its pages, totals, file count and LRU
    order kept, the old file gone, no table of files."""
    full = PAGE + HEADER_SIZE
    tiers = [TierConfig("SSD", str(tmp_path / "old"), quota=3 * full, high=1.0, low=1.0)]
    state = tmp_path / "state"
    for schema in (2, 3, 4):
        store = make_store(tiers)
        for i in range(3):
            store.put(key(i), payload(key(i), PAGE))
        store.close()
        old = write_old_index(state, schema)
        assert not (state / INDEX_FILE).exists()
        store = make_store(tiers)
        assert not old.exists() and (state / INDEX_FILE).exists()
        db = sqlite3.connect(state / INDEX_FILE)
        names = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        assert db.execute("PRAGMA user_version").fetchone() == (6,)
        db.close()
        assert {"pages_by_recency", "datasets", "tiers"} <= names
        assert not {"packs", "files", "files_by_path"} & names
        assert store.usage()[0].pages == 3 and store.usage()[0].used == 3 * full
        assert store.dataset_files(DS) == 3
        store.put(key(3), payload(key(3), PAGE))  # evicts the oldest
        assert [store.contains(key(i)) for i in range(4)] == [False, True, True, True]
        assert bytes(store.get(key(2)) or b"") == payload(key(2), PAGE)
        store.drop_dataset(DS)
        store.close()


def test_a_schema_5_index_loses_its_files_table_and_their_space(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    """Schema 5's ``files`` table and its index by path (what a key stands for; nothing reads
    them since schema 6) are dropped when the index is opened, the file vacuumed smaller, and
    every page, the totals and the file count kept."""
    tiers = [TierConfig("SSD", str(tmp_path / "five"), quota=10**9, high=1.0, low=1.0)]
    state = tmp_path / "state"
    store = make_store(tiers)
    n = 3_000
    store.put_many([(key(i), payload(key(i), 64)) for i in range(n)])
    used = store.usage()[0].used
    store.close()
    before = (state / INDEX_FILE).stat().st_size
    assert write_schema5_files(state) == n
    with_files = (state / INDEX_FILE).stat().st_size
    assert with_files > before
    store = make_store(tiers)
    db = sqlite3.connect(state / INDEX_FILE)
    names = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert db.execute("PRAGMA user_version").fetchone() == (6,)
    db.close()
    assert not {"files", "files_by_path"} & names
    assert (state / INDEX_FILE).stat().st_size <= before < with_files
    assert store.usage()[0].pages == n and store.usage()[0].used == used
    assert store.dataset_files(DS) == n
    for i in (0, 1234, n - 1):
        assert bytes(store.get(key(i)) or b"") == payload(key(i), 64)
    store.close()


def test_an_upgrade_killed_before_its_vacuum_vacuums_at_the_next_open(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    """The files table dropped and the worker killed before the vacuum (the version still 5):
    the next open vacuums, so the dropped tables' pages do not stay in the file for ever."""
    tiers = [TierConfig("SSD", str(tmp_path / "five"), quota=10**9, high=1.0, low=1.0)]
    state = tmp_path / "state"
    store = make_store(tiers)
    store.put_many([(key(i), payload(key(i), 64)) for i in range(3_000)])
    store.close()
    before = (state / INDEX_FILE).stat().st_size
    write_schema5_files(state)
    db = sqlite3.connect(state / INDEX_FILE, isolation_level=None)
    db.execute("DROP INDEX files_by_path")
    db.execute("DROP TABLE files")
    assert db.execute("PRAGMA freelist_count").fetchone()[0] > 0
    db.close()
    assert (state / INDEX_FILE).stat().st_size > before
    store = make_store(tiers)
    db = sqlite3.connect(state / INDEX_FILE)
    assert db.execute("PRAGMA user_version").fetchone() == (6,)
    assert db.execute("PRAGMA freelist_count").fetchone() == (0,)
    db.close()
    assert (state / INDEX_FILE).stat().st_size <= before
    assert store.dataset_files(DS) == 3_000
    store.close()


def test_a_shrink_to_the_low_watermark_is_one_query_and_one_transaction(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    """Crossing the high watermark evicts the oldest pages down to the low one in batches, not
    one index query and transaction per page; what goes is exactly the least recently used."""
    size = HEADER_SIZE + 100
    tiers = [TierConfig("SSD", str(tmp_path / "wm"), quota=200 * size, high=0.95, low=0.5)]
    store = make_store(tiers)
    deletes: list[int] = []
    real = store._index.delete_pages

    def counted(keys: Any) -> int:
        keys = list(keys)
        deletes.append(len(keys))
        return real(keys)

    store._index.delete_pages = counted  # type: ignore[method-assign]
    for i in range(190):
        store.put(key(i), payload(key(i), 100))
    assert deletes == []
    store.put(key(190), payload(key(190), 100))  # 191 > 190 (95 %)
    assert deletes == [91]  # down to 100 pages (50 %), in one transaction
    assert not any(store.contains(key(i)) for i in range(91))
    assert all(store.contains(key(i)) for i in range(91, 191))
    assert store.usage()[0].used == 100 * size
