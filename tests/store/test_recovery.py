"""The restart policy: the index vouches for pages, the disk only confirms, and the check runs in
the background while the restarted store already serves (issue 16). The rules as pure functions,
then a real store reopened over damaged tiers."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from tidepool.core.pages import HEADER_SIZE, extent_length
from tidepool.spec.config import TierConfig
from tidepool.store import PageStore
from tidepool.store import pagestore as pagestore_mod
from tidepool.store.recovery import extent_backed, page_backed, unvouched

from .conftest import PAGE, StoreFactory, key, page_files, payload, store_root

SIZE = HEADER_SIZE + 100


def test_a_row_is_kept_only_with_a_file_of_its_size() -> None:
    assert page_backed(SIZE, SIZE)
    assert not page_backed(SIZE, None)  # gone (a MEM tier after a reboot)
    assert not page_backed(SIZE, SIZE + 1)  # torn or replaced
    assert not page_backed(10, 10)  # shorter than a header: no page at all


def test_an_extent_is_kept_only_with_the_length_its_rows_imply() -> None:
    full = HEADER_SIZE + PAGE
    rows = [(0, full), (1, full), (2, HEADER_SIZE + 7)]
    length = extent_length(2 * PAGE + 7, 3)
    assert extent_backed(rows, length, PAGE)
    assert extent_backed(list(reversed(rows)), length, PAGE)
    assert not extent_backed(rows, length - 1, PAGE)
    assert not extent_backed(rows, None, PAGE)
    assert not extent_backed(rows[1:], extent_length(PAGE + 7, 2), PAGE)  # page 0 missing
    assert not extent_backed([(0, HEADER_SIZE + 7), (1, full)], length, PAGE)  # short middle
    assert not extent_backed([], 0, PAGE)


def test_only_files_older_than_the_store_and_unindexed_are_removed() -> None:
    assert unvouched(False, False, mtime_ns=5, opened_ns=10)
    assert not unvouched(True, False, 5, 10)  # a row vouches for it
    assert not unvouched(False, True, 5, 10)  # a put is writing it
    assert not unvouched(False, False, 10, 10)  # written since the store opened: on its way in


def _reopen(make_store: StoreFactory) -> PageStore:
    store = make_store()
    assert store.wait_verified(30)
    return store


def test_reopened_store_drops_rows_without_their_file_and_never_adopts(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    store = make_store()
    for n in range(1, 5):
        assert store.put(key(n), payload(key(n), 100))
    paths = {n: store.locate(key(n)) for n in range(1, 5)}
    store.close()
    assert paths[1] is not None and paths[2] is not None and paths[3] is not None
    paths[1].unlink()  # gone
    paths[2].write_bytes(paths[2].read_bytes() + b"x")  # another size: torn or replaced
    planted = paths[3].parent.parent / "ff" / f"{'f' * 32}.0"  # page-named, no row for it
    planted.parent.mkdir(exist_ok=True)
    planted.write_bytes(paths[3].read_bytes())
    old = time.time() - 3600
    os.utime(planted, (old, old))
    foreign = store_root(tmp_path / "mem") / "pages" / "ds" / "notes.txt"
    foreign.write_text("someone else's")

    store = _reopen(make_store)
    assert not store.contains(key(1)) and not store.contains(key(2))
    assert store.contains(key(3)) and store.contains(key(4))
    assert not planted.exists() and not paths[2].exists()
    assert foreign.read_text() == "someone else's"  # not ours: left alone
    for n in (3, 4):
        got = store.get(key(n))
        assert got is not None and bytes(got) == payload(key(n), 100)
    assert store.dataset_files("ds") == 2  # 1 and 2 went with their last pages
    store.close()
    store = _reopen(make_store)  # the drops were persisted
    assert sorted(store.contains(key(n)) for n in range(1, 5)) == [False, False, True, True]


def test_the_copy_a_row_does_not_name_is_deleted(make_store: StoreFactory, tmp_path: Path) -> None:
    """An interrupted demotion leaves the page in two tiers; the row names one of them."""
    store = make_store()
    assert store.put(key(1), payload(key(1), 100))
    where = store.locate(key(1))
    store.close()
    assert where is not None
    copy = store_root(tmp_path / "ssd") / where.relative_to(store_root(tmp_path / "mem"))
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_bytes(where.read_bytes())
    os.utime(copy, (1, 1))
    store = _reopen(make_store)
    assert store.contains(key(1)) and where.exists() and not copy.exists()


def test_a_restarted_store_serves_before_its_check_and_keeps_what_it_writes_meanwhile(
    make_store: StoreFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check is held back until pages are put into the reopened store and a page is read:
    the store answers at once, and the check removes neither the new pages (written after it
    opened) nor anything it is still writing."""
    store = make_store()
    assert store.put(key(1), payload(key(1), 100))
    store.close()
    hold = threading.Event()
    real_walk = pagestore_mod.walk_tier

    def held_walk(*args: object, **kw: object):  # type: ignore[no-untyped-def]
        hold.wait(30)
        yield from real_walk(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(pagestore_mod, "walk_tier", held_walk)
    store = make_store(verified=False)
    assert not store.wait_verified(0.05)
    got = store.get(key(1))
    assert got is not None and bytes(got) == payload(key(1), 100)
    for n in range(2, 6):
        assert store.put(key(n), payload(key(n), 200))
    hold.set()
    assert store.wait_verified(30)
    for n in range(1, 6):
        assert store.contains(key(n)), n
        got = store.get(key(n))
        assert got is not None
    assert len(page_files(tmp_path / "mem")) + len(page_files(tmp_path / "ssd")) == 5


def test_rows_of_a_tier_no_longer_configured_are_dropped_at_once(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    store = make_store()
    assert store.put(key(1), payload(key(1), 100))
    store.close()
    only_ssd = [TierConfig("SSD", str(tmp_path / "ssd"), quota=1 << 20, high=1.0, low=1.0)]
    store = make_store(only_ssd, verified=False)
    assert not store.contains(key(1))  # before any check: its tier is gone
    assert store.wait_verified(30)


def test_close_stops_a_check_in_progress(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store()
    for n in range(1, 4):
        assert store.put(key(n), payload(key(n), 100))
    store.close()
    started = threading.Event()
    real_walk = pagestore_mod.walk_tier

    def slow_walk(root: Path, dataset: str, stop):  # type: ignore[no-untyped-def]
        started.set()
        while not stop():
            time.sleep(0.01)
        yield from real_walk(root, dataset, stop)

    monkeypatch.setattr(pagestore_mod, "walk_tier", slow_walk)
    store = make_store(verified=False)
    assert started.wait(10)
    store.close()  # the walk ends only when close() says stop: a close that did not would hang
    assert not store._verifier.is_alive()  # (until the suite's per-test timeout fails it)
    assert store.wait_verified(0)


def test_the_check_can_start_later_and_close_does_not_wait_for_it(
    make_store: StoreFactory,
) -> None:
    """A worker lets its start-up go first (``verify_after``); closing meanwhile does not wait
    out the delay (an hour here: a close that did would hit the suite's per-test timeout)."""
    store = make_store(verify_after=3600.0, verified=False)
    assert not store.wait_verified(0.2)
    store.close()
    assert not store._verifier.is_alive()
    assert store.wait_verified(0)
