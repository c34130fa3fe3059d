from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tidepool.core import jsoncodec
from tidepool.core.fileinfo import dir_info, file_info
from tidepool.store import MetadataStore
from tidepool.store.metadata import METADATA_FILE


def test_info_round_trip_and_delete(tmp_path: Path) -> None:
    store = MetadataStore(tmp_path)
    assert store.get_info("ds", "a/b.txt") is None
    store.put_info("ds", "a/b.txt", {"name": "a/b.txt", "size": 3, "type": "file"}, 100.5)
    assert store.get_info("ds", "a/b.txt") == (
        {"name": "a/b.txt", "size": 3, "type": "file"},
        100.5,
    )
    assert store.get_info("other", "a/b.txt") is None
    got = store.get_info("ds", "a/b.txt")
    assert got is not None
    got[0]["size"] = 99  # callers get a copy
    assert store.get_info("ds", "a/b.txt") == (
        {"name": "a/b.txt", "size": 3, "type": "file"},
        100.5,
    )
    store.put_info("ds", "a/b.txt", {"name": "a/b.txt", "size": 4}, 101.0)
    assert store.get_info("ds", "a/b.txt") == ({"name": "a/b.txt", "size": 4}, 101.0)
    store.delete_info("ds", "a/b.txt")
    assert store.get_info("ds", "a/b.txt") is None
    store.close()


def test_listing_round_trip_upserts_entry_info(tmp_path: Path) -> None:
    store = MetadataStore(tmp_path)
    entries = [
        {"name": "d/x", "size": 1, "type": "file", "ETag": "e1"},
        {"name": "d/sub", "size": 0, "type": "directory"},
        {"size": 5},  # no name: kept in the listing, no info
    ]
    store.put_listing("ds", "d", entries, 200.0)
    assert store.get_listing("ds", "d") == (entries, 200.0)
    assert store.get_info("ds", "d/x") == (entries[0], 200.0)
    assert store.get_info("ds", "d/sub") == (entries[1], 200.0)
    assert store.get_listing("ds", "nope") is None
    store.delete_listing("ds", "d")
    assert store.get_listing("ds", "d") is None
    assert store.get_info("ds", "d/x") is not None  # infos stay
    store.close()


@pytest.mark.parametrize("cache_entries", [0, 2, 100_000])
def test_persists_across_reopen(tmp_path: Path, cache_entries: int) -> None:
    store = MetadataStore(tmp_path, cache_entries=cache_entries)
    store.put_listing("ds", "", [{"name": f"f{i}", "size": i} for i in range(10)], 1.0)
    store.put_info("ds", "solo", {"name": "solo", "size": 7}, 2.0)
    store.put_info("other", "solo", {"name": "solo", "size": 8}, 3.0)
    for i in range(10):  # through the small in-memory LRU and back to the database
        assert store.get_info("ds", f"f{i}") == ({"name": f"f{i}", "size": i}, 1.0)
    store.close()
    store = MetadataStore(tmp_path, cache_entries=cache_entries)
    listing = store.get_listing("ds", "")
    assert listing is not None and len(listing[0]) == 10 and listing[1] == 1.0
    assert store.get_info("ds", "f3") == ({"name": "f3", "size": 3}, 1.0)
    assert store.get_info("ds", "solo") == ({"name": "solo", "size": 7}, 2.0)
    store.drop_dataset("ds")
    assert store.get_info("ds", "solo") is None and store.get_listing("ds", "") is None
    assert store.get_info("other", "solo") == ({"name": "solo", "size": 8}, 3.0)
    store.close()
    store = MetadataStore(tmp_path, cache_entries=cache_entries)
    assert store.get_info("ds", "f3") is None
    assert store.get_info("other", "solo") is not None
    store.close()


def test_negative_lookups_are_cached_and_invalidated(tmp_path: Path) -> None:
    store = MetadataStore(tmp_path)
    assert store.get_info("ds", "late") is None
    store.put_listing("ds", "", [{"name": "late", "size": 1}], 5.0)
    assert store.get_info("ds", "late") == ({"name": "late", "size": 1}, 5.0)
    store.close()


def test_unreadable_database_is_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "metadata.sqlite3").write_bytes(b"not sqlite at all" * 200)
    store = MetadataStore(tmp_path)
    assert "unreadable" in caplog.text
    assert list(tmp_path.glob("metadata.sqlite3.corrupt-*"))
    store.put_info("ds", "p", {"size": 1}, 1.0)
    assert store.get_info("ds", "p") == ({"size": 1}, 1.0)
    store.close()


def test_concurrent_writers(tmp_path: Path) -> None:
    import threading

    store = MetadataStore(tmp_path, cache_entries=50)

    def work(t: int) -> None:
        for i in range(100):
            store.put_info("ds", f"{t}/{i}", {"i": i}, float(i))
            assert store.get_info("ds", f"{t}/{i // 2}") is not None

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(
        store.get_info("ds", f"{t}/{i}") == ({"i": i}, float(i))
        for t in range(4)
        for i in range(100)
    )
    store.close()


@pytest.mark.parametrize("cache_entries", [0, 100])
def test_drop_prefix_forgets_a_subtree_exactly(tmp_path: Path, cache_entries: int) -> None:
    store = MetadataStore(tmp_path, cache_entries=cache_entries)
    names = ["a", "a/b", "a/b/c.txt", "a/b0", "a/bc.txt", "a/B/x", "a/b_", "ab", "z"]
    for name in names:
        store.put_info("ds", name, {"name": name}, 1.0)
        store.put_info("other", name, {"name": name}, 1.0)
    store.put_listing("ds", "a/b", [{"name": "a/b/c.txt"}], 1.0)
    store.put_listing("ds", "a", [{"name": "a/b"}, {"name": "a/b0"}], 1.0)
    for name in names:  # prime the in-memory cache too
        store.get_info("ds", name)
    dropped = store.drop_prefix("ds", "a/b")
    assert dropped == 3  # infos a/b and a/b/c.txt, the listing a/b
    left = {n for n in names if store.get_info("ds", n) is not None}
    assert left == {"a", "a/b0", "a/bc.txt", "a/B/x", "a/b_", "ab", "z"}  # exact, case kept
    assert store.get_listing("ds", "a/b") is None and store.get_listing("ds", "a") is not None
    assert all(store.get_info("other", n) is not None for n in names)
    assert store.drop_prefix("ds", "") == len(left) + 1  # the whole dataset, listing "a" too
    store.close()
    reopened = MetadataStore(tmp_path)
    assert reopened.get_info("ds", "a") is None and reopened.get_info("other", "a") is not None
    reopened.close()


def test_totals_survive_a_restart(tmp_path: Path) -> None:
    store = MetadataStore(tmp_path)
    assert store.get_total("ds") is None
    store.put_total("ds", 66_200_000, 249, 123.5)
    store.close()
    store = MetadataStore(tmp_path)
    assert store.get_total("ds") == (66_200_000, 249, 123.5)
    store.drop_dataset("ds")
    assert store.get_total("ds") is None
    store.close()


def _stored(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(tmp_path / METADATA_FILE)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_plain_infos_are_stored_without_their_keys_and_read_back_whole(tmp_path: Path) -> None:
    """A file's and a directory's info of the plain shape are stored as arrays (the info row
    without its name, which is its path); infos of any other shape as they are; all read back
    equal, from the database (a cold store) as from memory."""
    plain = [file_info(f"d/f{i}.bin", 1024 + i, None, 1.7e9 + i / 7) for i in range(3)]
    plain += [dir_info("d/sub"), file_info("d/e.bin", 5, "abc123", 2.5)]
    plain += [file_info("d/n.bin", 6, None, None)]
    odd = [
        {**file_info("d/m", 0, "e", None), "marker": True},
        {"name": "d/h", "type": "file", "size": 3, "version": "v", "mtime": 1.0, "headers": {}},
        {"type": "file", "name": "d/o", "size": 1, "version": "v", "mtime": None},  # order
        {"name": "d/t", "type": "link", "size": 1, "version": "v", "mtime": None},
        {"name": "d/big", "type": "file", "size": 1 << 70, "version": "", "mtime": None},
    ]
    entries = plain + odd
    store = MetadataStore(tmp_path)
    store.put_listing("ds", "d", entries, 5.0)
    store.put_info("ds", "other", file_info("elsewhere", 1, "e", None), 6.0)
    store.close()
    rows = dict(_stored(tmp_path, "SELECT path, info FROM info"))
    # no ETag: the version is size and mtime, stored as 0; an ETag is kept
    assert rows["d/f0.bin"] == jsoncodec.dumps(["f", 1024, 0, plain[0]["mtime"]])
    assert rows["d/e.bin"] == '["f",5,"abc123",2.5]' and rows["d/n.bin"] == '["f",6,0,null]'
    assert plain[0]["version"] == f"1024-{plain[0]['mtime']:.6f}"
    assert rows["d/sub"] == '["d",0,"",null]'
    assert rows["other"].startswith('["elsewhere","f",1,')  # a name that is not its path
    assert rows["d/m"].startswith("{")
    ((listing,),) = _stored(tmp_path, "SELECT entries FROM listings")
    assert listing.startswith('[["d/f0.bin","f",1024,')
    for cache_entries in (0, 100):
        store = MetadataStore(tmp_path, cache_entries=cache_entries)
        assert store.get_listing("ds", "d") == (entries, 5.0)
        for e in entries:
            assert store.get_info("ds", e["name"]) == (e, 5.0)
        assert store.get_info("ds", "other") == (file_info("elsewhere", 1, "e", None), 6.0)
        assert [info for _, info in store.info_rows("ds", "d", "", 100)] == sorted(
            entries, key=lambda e: e["name"]
        )
        store.close()


def test_rows_stored_as_objects_read_as_before(tmp_path: Path) -> None:
    """Rows an older release wrote (every info a JSON object) are read as they are."""
    store = MetadataStore(tmp_path)
    store.close()
    info = file_info("d/a", 7, "etag", 3.5)
    db = sqlite3.connect(tmp_path / METADATA_FILE)
    with db:
        db.execute("INSERT INTO info VALUES ('ds', 'd/a', ?, 1.0)", (json.dumps(info),))
        db.execute("INSERT INTO listings VALUES ('ds', 'd', ?, 1.0)", (json.dumps([info]),))
    db.close()
    store = MetadataStore(tmp_path)
    assert store.get_info("ds", "d/a") == (info, 1.0)
    assert store.get_listing("ds", "d") == ([info], 1.0)
    store.close()
