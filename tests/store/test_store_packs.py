"""Packed pages (issue 16, :mod:`tidepool.store.packs`): a small file of one page is a row of its
tier's pack database, not a page file; it is served byte for byte, survives a restart, is
evicted and demoted like a page file, and a damaged, missing or unvouched row is handled like a
damaged, missing or unvouched page file."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

import pytest

from tidepool.core.pages import HEADER_SIZE, PACK_FILE, PACK_MAX, PageKey
from tidepool.spec.config import TierConfig
from tidepool.store import PageStore
from tidepool.store.index import sql_key
from tidepool.store.packs import PackReader

from .conftest import (
    DS,
    StoreFactory,
    key,
    packed_rows,
    page_files,
    payload,
    store_root,
    tier_bytes,
    write_old_index,
)

KiB = 1024


def packs_db(tier: TierConfig | str | Path) -> Path:
    return store_root(tier.path if isinstance(tier, TierConfig) else tier) / PACK_FILE


def edit(db: Path, sql: str, *args: object) -> None:
    """Change a pack database behind the store's back (rot, loss, a crash's leftover)."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute(sql, args)
    finally:
        conn.close()


def put_all(store: PageStore, keys: list[PageKey], size: int) -> None:
    for k in keys:
        assert store.put(k, payload(k, size))


def assert_serves(store: PageStore, keys: list[PageKey], size: int) -> None:
    for k in keys:
        got = store.get(k)
        assert got is not None and bytes(got) == payload(k, size)


def test_small_files_are_rows_not_page_files(
    make_store: StoreFactory, tiers: list[TierConfig]
) -> None:
    store = make_store(pack_max=PACK_MAX)
    small = {key(n): payload(key(n), 100 + n) for n in range(20)}
    for k, data in small.items():
        assert store.put(k, data)
    big = key(99)  # a full page: a page file
    assert store.put(big, payload(big, 4096))
    tail = key(98, 1)  # not page 0: a file of more than one page
    assert store.put(tail, payload(tail, 100))
    mem = tiers[0].path
    assert [p.name for p in page_files(mem)] == sorted([f"{big.file_key}.0", f"{tail.file_key}.1"])
    assert len(packed_rows(mem)) == 20
    assert store.usage()[0].used == tier_bytes(mem)
    assert store.dataset_files(DS) == 22
    for k, data in small.items():
        got = store.get(k)
        assert got is not None and bytes(got) == data
    # put_many: one batch, one transaction in the pack database and in the index
    batch = [(key(200 + n), payload(key(200 + n), 50)) for n in range(10)]
    assert store.put_many(batch) == [True] * 10
    store.close()

    store = make_store(pack_max=PACK_MAX)  # restart: served from the rows, nothing re-put
    for k, data in [*small.items(), *batch]:
        got = store.get(k)
        assert got is not None and bytes(got) == data
    assert store.stats().corrupt == 0
    assert len(packed_rows(mem)) + len(packed_rows(tiers[1].path)) == 30


def test_eviction_and_demotion_reuse_the_space(tmp_path: Path, make_store: StoreFactory) -> None:
    """Thousands of small files through two small tiers: each tier's accounting stays what its
    rows and files hold, under quota; what is still cached reads back exactly; and the pack
    databases reuse the space of evicted rows instead of growing with every file put."""
    quota = 256 * KiB
    tiers = [
        TierConfig("MEM", str(tmp_path / "m"), quota=quota, high=0.9, low=0.7),
        TierConfig("SSD", str(tmp_path / "s"), quota=2 * quota, high=0.9, low=0.7),
    ]
    store = make_store(tiers, pack_max=PACK_MAX, page_size=64 * KiB)
    put: dict[PageKey, bytes] = {}
    for n in range(6000):
        k = key(n)
        put[k] = payload(k, 700 + n % 900)
        assert store.put(k, put[k])
        if n % 500 == 0:
            for t, u in zip(tiers, store.usage(), strict=True):
                assert u.used == tier_bytes(t.path) <= u.capacity
    stats = store.stats()
    assert stats.demotions > 1000 and stats.evictions > 1000
    cached = [k for k in put if store.contains(k)]
    assert 300 < len(cached) < 2000
    for k in cached:
        got = store.get(k)
        assert got is not None and bytes(got) == put[k]
    assert store.stats().corrupt == 0
    store.close()  # folds the write-ahead logs in
    for t in tiers:
        # 6000 files of ~1.1 KiB went through each tier (~6.5 MiB); what stays on disk is about
        # the quota, plus a few 64 KiB database pages the rows do not fill
        size = packs_db(t).stat().st_size
        assert size < 1.5 * t.quota + 8 * 64 * KiB, (t.medium, size)
        assert not page_files(t.path)


def test_a_damaged_or_missing_row_is_dropped_and_refetched(
    make_store: StoreFactory, tiers: list[TierConfig]
) -> None:
    store = make_store(pack_max=PACK_MAX)
    keys = [key(n) for n in range(4)]
    put_all(store, keys, 300)
    db = packs_db(tiers[0])
    edit(db, "UPDATE packs SET data = zeroblob(300) WHERE file_key = ?", sql_key(keys[0].file_key))
    edit(
        db,
        "UPDATE packs SET data = substr(data, 1, 10) WHERE file_key = ?",
        sql_key(keys[1].file_key),
    )
    edit(db, "DELETE FROM packs WHERE file_key = ?", sql_key(keys[2].file_key))
    # another page's row: the right length, but not this page
    edit(
        db,
        "UPDATE packs SET file_key = ? WHERE file_key = ?",
        sql_key("e" * 32),
        sql_key(keys[3].file_key),
    )
    for k in keys:
        assert store.get(k) is None
        assert not store.contains(k)  # dropped: the next read refetches it
    assert store.stats().corrupt == 4
    assert store.usage()[0].pages == 0 and store.usage()[0].used == 0
    put_all(store, keys, 300)  # cached again, served again
    assert_serves(store, keys, 300)


def test_restart_check_drops_rows_that_lost_their_data_and_removes_unvouched_rows(
    make_store: StoreFactory, tiers: list[TierConfig]
) -> None:
    store = make_store(pack_max=PACK_MAX)
    keys = [key(n) for n in range(5)]
    put_all(store, keys, 200)
    store.close()
    db = packs_db(tiers[0])
    edit(db, "DELETE FROM packs WHERE file_key = ?", sql_key(keys[0].file_key))  # lost
    edit(
        db, "UPDATE packs SET data = zeroblob(7) WHERE file_key = ?", sql_key(keys[1].file_key)
    )  # short
    # a row committed just before a crash, whose page never reached the index
    edit(db, "INSERT INTO packs (file_key, idx, data) VALUES (?, 0, zeroblob(200))", "a" * 32)

    store = make_store(pack_max=PACK_MAX)  # returned once the background check is done
    assert not store.contains(keys[0]) and not store.contains(keys[1])
    assert sorted(fk for fk, _, _ in packed_rows(tiers[0].path)) == sorted(
        k.file_key for k in keys[2:]
    )
    assert store.usage()[0].pages == 3
    assert store.usage()[0].used == tier_bytes(tiers[0].path) == 3 * (200 + HEADER_SIZE)
    assert_serves(store, keys[2:], 200)


def test_rows_written_after_the_store_opened_are_not_judged_by_the_restart_check(
    make_store: StoreFactory, tiers: list[TierConfig]
) -> None:
    store = make_store(pack_max=PACK_MAX)
    assert store.put(key(1), payload(key(1), 10))
    store.close()
    store = make_store(pack_max=PACK_MAX, verified=False, verify_after=0.5)
    k = key(2)
    assert store.put(k, payload(k, 10))
    assert store.wait_verified(30)
    assert store.contains(k) and store.contains(key(1))
    assert len(packed_rows(tiers[0].path)) == 2


def test_a_tier_without_small_files_has_no_pack_database(
    make_store: StoreFactory, tiers: list[TierConfig]
) -> None:
    store = make_store(pack_max=PACK_MAX)
    assert store.put(key(1), payload(key(1), 4096))
    store.close()
    assert not os.path.exists(packs_db(tiers[0]))
    assert not os.path.exists(packs_db(tiers[1]))


def test_same_host_reader_follows_a_page_demoted_to_another_tier(
    make_store: StoreFactory, tiers: list[TierConfig]
) -> None:
    """The reader attaches a tier's pack database when the index first names that tier: a page
    read from MEM, then demoted to SSD (MEM filled by others), is read from SSD; a page evicted
    from both is a miss; a page the index has with other bytes than recorded is a miss."""
    store = make_store(pack_max=PACK_MAX)
    first = key(1)
    assert store.put(first, payload(first, 3000))
    reader = PackReader(store.index_path(), store.tier_roots(), os.getuid())
    assert reader.usable()
    assert reader.read(first, 3000) == payload(first, 3000)
    assert reader.read(first, 2999) is None  # not the length the listing says: not this page
    n = 2
    while store.locate(first) is not None and str(store.locate(first)).startswith(
        str(store_root(tiers[0].path))
    ):  # fill MEM until the first page is demoted
        k = key(n)
        assert store.put(k, payload(k, 3000))
        n += 1
    where = store.locate(first)
    assert where is not None and str(where).startswith(str(store_root(tiers[1].path)))
    assert reader.read(first, 3000) == payload(first, 3000)
    edit(
        packs_db(tiers[1]),
        "UPDATE packs SET data = zeroblob(3000) WHERE file_key = ?",
        sql_key(first.file_key),
    )
    assert reader.read(first, 3000) is None
    store.drop_file(DS, first.file_key)
    assert reader.read(first, 3000) is None


def test_same_host_reader_refuses_an_index_others_can_write(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    store = make_store(pack_max=PACK_MAX)
    assert store.put(key(1), payload(key(1), 10))
    index = Path(store.index_path())
    assert PackReader(str(index), store.tier_roots(), os.getuid()).usable()
    assert not PackReader(str(index), store.tier_roots(), os.getuid() + 1).usable()  # not its owner
    index.chmod(0o620)
    assert not PackReader(str(index), store.tier_roots(), os.getuid()).usable()


@pytest.fixture
def roomy(tmp_path: Path) -> list[TierConfig]:
    return [TierConfig("SSD", str(tmp_path / "roomy"), quota=10**8, high=1.0, low=1.0)]


def _mixed_store(
    make_store: StoreFactory, tier: list[TierConfig]
) -> tuple[PageStore, dict[PageKey, bytes]]:
    """A store of packed small files and page files (whole pages) in one roomy tier."""
    store = make_store(tier, pack_max=PACK_MAX)
    data = {key(n): payload(key(n), 100 + n) for n in range(30)}
    data |= {key(100 + n): payload(key(100 + n), 4096) for n in range(5)}
    for k, d in data.items():
        assert store.put(k, d)
    return store, data


def test_an_index_of_schema_4_upgrades_with_its_packed_pages(
    make_store: StoreFactory, roomy: list[TierConfig], tmp_path: Path
) -> None:
    """The packed pages of a schema 4 index (table ``packs``) are still packed after the
    upgrade: served from their rows, none removed as unvouched, nothing re-put."""
    store, data = _mixed_store(make_store, roomy)
    usage = store.usage()
    store.close()
    mem = roomy[0].path
    rows = sorted(packed_rows(mem))
    write_old_index(tmp_path / "state", 4)
    store = make_store(roomy, pack_max=PACK_MAX)
    assert store.usage() == usage
    for k, d in data.items():
        got = store.get(k)
        assert got is not None and bytes(got) == d, k
    store.close()  # the background check has run: no row was unvouched
    assert sorted(packed_rows(mem)) == rows and len(rows) == 30
    assert len(page_files(mem)) == 5


def test_an_index_a_rolled_back_release_wrote_since_wins(
    make_store: StoreFactory, roomy: list[TierConfig], tmp_path: Path
) -> None:
    """A release before schema 5, rolled back to, wrote ``index.sqlite3`` after this one's
    index: the older schema's file is the newer state (here: it evicted two files), so it
    replaces the stale new index; what it no longer vouches for is not served."""
    store, data = _mixed_store(make_store, roomy)
    store.close()
    old = write_old_index(tmp_path / "state", 4, keep_new=True)
    gone = [key(3), key(101)]
    edit(old, "DELETE FROM pages WHERE file_key IN (?, ?)", *(k.file_key for k in gone))
    edit(old, "DELETE FROM packs WHERE file_key = ?", key(3).file_key)
    store = make_store(roomy, pack_max=PACK_MAX)
    assert not old.exists()
    for k, d in data.items():
        got = store.get(k)
        assert (got is None) if k in gone else (got is not None and bytes(got) == d), k


def test_an_unreadable_index_of_schema_4_is_moved_aside_and_nothing_is_served(
    make_store: StoreFactory,
    roomy: list[TierConfig],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An ``index.sqlite3`` that cannot be read is moved aside, the new index beside it
    (older than it) dropped: the store starts empty and fetches again, never serving what
    nothing vouches for."""
    store, data = _mixed_store(make_store, roomy)
    store.close()
    old = write_old_index(tmp_path / "state", 4, keep_new=True)
    old.write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING):
        store = make_store(roomy, pack_max=PACK_MAX)
    assert "unreadable" in caplog.text
    assert list((tmp_path / "state").glob(f"{old.name}.corrupt-*")) and not old.exists()
    assert all(store.get(k) is None for k in data)
    assert store.usage()[0].pages == 0
