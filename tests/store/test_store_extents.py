"""Extents: a large file whole in one tier becomes one file (issue 18) and stays a set of pages
to the rest of the store: every page read back as it was put, evicted, demoted, dropped and
recovered together, never adopted unvouched, never over quota."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tidepool.core.pages import (
    HEADER_SIZE,
    checksum,
    decode_extent_trailer,
    extent_length,
    extent_relpath,
    extent_trailer_at,
)
from tidepool.spec.config import TierConfig
from tidepool.store import PageStore

from .conftest import (
    DS,
    PAGE,
    StoreFactory,
    disk_bytes,
    key,
    page_files,
    payload,
    store_root,
    write_old_index,
)

FULL = PAGE + HEADER_SIZE
SIZE = 5 * PAGE + 1000
"""A file of six pages, the last one short."""


def file_bytes(n: int, size: int = SIZE) -> bytes:
    return b"".join(payload(key(n, i), min(PAGE, size - i * PAGE)) for i in range(-(-size // PAGE)))


def put_file(store: PageStore, n: int, size: int = SIZE, *, skip: int | None = None) -> bytes:
    """Put every page of file ``n`` (but ``skip``), telling the store the file's size."""
    data = file_bytes(n, size)
    for i in range(-(-size // PAGE)):
        if i != skip:
            page = data[i * PAGE : (i + 1) * PAGE]
            assert store.put(key(n, i), page, file_size=size)
    return data


def read_back(store: PageStore, n: int, size: int = SIZE) -> bytes | None:
    pages = [store.get(key(n, i)) for i in range(-(-size // PAGE))]
    return None if any(p is None for p in pages) else b"".join(bytes(p) for p in pages)  # type: ignore[arg-type]


def extent_file(tier: str | Path, n: int) -> Path:
    return store_root(tier) / extent_relpath(DS, key(n).file_key)


@pytest.fixture
def one_tier(tmp_path: Path) -> list[TierConfig]:
    """One SSD tier with room for 16 full pages, watermarks off."""
    return [TierConfig("SSD", str(tmp_path / "ssd"), quota=16 * FULL, high=1.0, low=1.0)]


def test_the_put_that_completes_a_large_file_makes_it_one_extent(
    make_store: StoreFactory, one_tier: list[TierConfig]
) -> None:
    store = make_store(one_tier, extent_min_bytes=2 * PAGE)
    data = put_file(store, 1, skip=3)
    assert not extent_file(one_tier[0].path, 1).exists()  # not whole yet: pages
    assert store.put(key(1, 3), data[3 * PAGE : 4 * PAGE], file_size=SIZE)

    ext = extent_file(one_tier[0].path, 1)
    assert page_files(one_tier[0].path) == [ext]  # the page files are gone
    raw = ext.read_bytes()
    assert len(raw) == extent_length(SIZE, 6)
    assert raw[:SIZE] == data and raw[SIZE : extent_trailer_at(SIZE)] == bytes(4096 - 1000)
    sums = decode_extent_trailer(raw[extent_trailer_at(SIZE) :], SIZE, PAGE)
    assert list(sums) == [checksum(data[i * PAGE : (i + 1) * PAGE]) for i in range(6)]
    assert oct(ext.stat().st_mode & 0o777) == "0o600"

    assert read_back(store, 1) == data
    for i in range(6):
        opened = store.open_run(key(1, i), 5)
        assert opened is not None
        fd, offset, pages = opened
        try:
            assert (offset, pages) == (i * PAGE, 6 - i)  # the rest of the file, in one run
            assert os.pread(fd, 100, offset) == data[i * PAGE : i * PAGE + 100]
        finally:
            os.close(fd)
    assert store.locate(key(1, 2)) == ext
    assert store.pages_of(DS, key(1).file_key) == set(range(6))
    assert store.dataset_bytes(DS) == SIZE
    (usage,) = store.usage()
    assert (usage.used, usage.pages) == (SIZE + 6 * HEADER_SIZE, 6)
    assert disk_bytes(one_tier[0].path) <= usage.used + 4096


def test_small_files_and_files_split_across_tiers_stay_pages(
    make_store: StoreFactory, one_tier: list[TierConfig], tmp_path: Path
) -> None:
    store = make_store(one_tier, extent_min_bytes=2 * PAGE)
    put_file(store, 1, size=2 * PAGE - 1)  # two pages, under the threshold
    put_file(store, 2, size=2 * PAGE)  # two pages, at it
    assert not extent_file(one_tier[0].path, 1).exists()
    assert extent_file(one_tier[0].path, 2).exists()
    assert not store.make_extent(DS, key(3).file_key, 3 * PAGE)  # nothing cached
    store.close()

    tiers = [  # MEM holds 4 pages: the 5th and 6th of a file go to SSD
        TierConfig("MEM", str(tmp_path / "m"), quota=4 * FULL, high=1.0, low=1.0),
        TierConfig("SSD", str(tmp_path / "s"), quota=16 * FULL, high=1.0, low=1.0),
    ]
    split = make_store(tiers, extent_min_bytes=2 * PAGE)
    put_file(split, 4)
    assert not any(extent_file(t.path, 4).exists() for t in tiers)
    assert {split.locate(key(4, i)).parent.parent.parent.parent.parent.name for i in range(6)} == {  # type: ignore[union-attr]
        "m",
        "s",
    }
    assert read_back(split, 4) == file_bytes(4)


def test_no_extent_when_the_tier_has_no_room_for_a_second_copy(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    tight = [TierConfig("SSD", str(tmp_path / "t"), quota=7 * FULL, high=1.0, low=1.0)]
    store = make_store(tight, extent_min_bytes=2 * PAGE)
    data = put_file(store, 1)
    assert not extent_file(tight[0].path, 1).exists()
    assert len(page_files(tight[0].path)) == 6
    assert read_back(store, 1) == data
    (usage,) = store.usage()
    assert usage.used == SIZE + 6 * HEADER_SIZE <= usage.capacity


def test_an_extent_survives_a_restart_and_an_unvouched_one_is_not_adopted(
    make_store: StoreFactory, one_tier: list[TierConfig]
) -> None:
    store = make_store(one_tier, extent_min_bytes=2 * PAGE)
    data = put_file(store, 1)
    store.close()
    # a planted extent of a file the index does not know, and a stray page file of file 1
    planted = extent_file(one_tier[0].path, 7)
    planted.parent.mkdir(mode=0o700, exist_ok=True)
    planted.write_bytes(b"EVIL" * 100)
    stray = store_root(one_tier[0].path) / key(1, 2).relpath()
    stray.write_bytes(b"left from before the switch")

    again = make_store(one_tier, extent_min_bytes=2 * PAGE)
    assert read_back(again, 1) == data
    assert not planted.exists() and not stray.exists()
    assert again.get(key(7, 0)) is None
    (usage,) = again.usage()
    assert (usage.used, usage.pages) == (SIZE + 6 * HEADER_SIZE, 6)


@pytest.mark.parametrize("damage", ["truncate", "remove"])
def test_a_missing_or_wrong_length_extent_drops_all_its_pages_at_restart(
    make_store: StoreFactory, one_tier: list[TierConfig], damage: str
) -> None:
    store = make_store(one_tier, extent_min_bytes=2 * PAGE)
    put_file(store, 1)
    other = put_file(store, 2, size=1000)
    store.close()
    ext = extent_file(one_tier[0].path, 1)
    if damage == "truncate":
        os.truncate(ext, SIZE)
    else:
        ext.unlink()
    again = make_store(one_tier, extent_min_bytes=2 * PAGE)
    assert all(again.get(key(1, i)) is None for i in range(6))
    assert not ext.exists()
    assert bytes(again.get(key(2, 0)) or b"") == other
    (usage,) = again.usage()
    assert (usage.used, usage.pages) == (1000 + HEADER_SIZE, 1)


def test_a_corrupt_page_drops_the_whole_extent_and_nothing_else(
    make_store: StoreFactory, one_tier: list[TierConfig]
) -> None:
    store = make_store(one_tier, extent_min_bytes=2 * PAGE)
    put_file(store, 1)
    other = put_file(store, 2, size=3 * PAGE)
    ext = extent_file(one_tier[0].path, 1)
    with open(ext, "r+b") as f:
        f.seek(2 * PAGE + 7)
        f.write(b"\xff")
    assert store.get(key(1, 2)) is None
    assert not ext.exists()
    assert all(not store.contains(key(1, i)) for i in range(6))
    assert store.stats().corrupt == 1
    assert read_back(store, 2, 3 * PAGE) == other
    (usage,) = store.usage()
    assert (usage.used, usage.pages) == (3 * FULL, 3)


def test_a_corrupt_page_is_also_refused_to_sendfile(
    make_store: StoreFactory, one_tier: list[TierConfig]
) -> None:
    store = make_store(one_tier, extent_min_bytes=2 * PAGE)
    put_file(store, 1)
    with open(extent_file(one_tier[0].path, 1), "r+b") as f:
        f.seek(4 * PAGE)
        f.write(b"\x00\x01")
    assert store.open_run(key(1, 4), 4) is None
    opened = store.open_run(key(1, 0), 5)  # the pages before it are good
    assert opened is not None
    os.close(opened[0])
    assert opened[1:] == (0, 4)


def test_eviction_takes_an_extent_whole_and_keeps_the_quota(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    tier = [TierConfig("SSD", str(tmp_path / "q"), quota=14 * FULL, high=1.0, low=1.0)]
    store = make_store(tier, extent_min_bytes=2 * PAGE)
    put_file(store, 1)  # 6 pages, an extent (needs room for 12 while it is written)
    put_file(store, 2)  # 6 more pages: no room for a second copy, stays pages
    assert extent_file(tier[0].path, 1).exists() and not extent_file(tier[0].path, 2).exists()
    assert store.get(key(2, 0)) is not None  # file 1 is now the least recently used
    for i in range(4):  # 4 more pages: 16 > 14, file 1 goes, whole
        assert store.put(key(3, i), payload(key(3, i), PAGE))
        (usage,) = store.usage()
        assert usage.used <= usage.capacity
        assert disk_bytes(tier[0].path) <= usage.capacity + 4096
    assert not extent_file(tier[0].path, 1).exists()
    assert all(not store.contains(key(1, i)) for i in range(6))
    assert store.stats().evictions == 6
    assert read_back(store, 2) == file_bytes(2)


def test_demotion_moves_an_extent_whole_and_a_restart_finds_it_below(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    tiers = [
        TierConfig("MEM", str(tmp_path / "m"), quota=12 * FULL, high=1.0, low=1.0),
        TierConfig("SSD", str(tmp_path / "s"), quota=12 * FULL, high=1.0, low=1.0),
    ]
    store = make_store(tiers, extent_min_bytes=2 * PAGE)
    data = put_file(store, 1)
    assert extent_file(tiers[0].path, 1).exists()
    put_file(store, 2)  # MEM is full now (and has no room to make file 2 an extent)
    assert extent_file(tiers[0].path, 1).exists()
    for i in range(2):  # the second does not fit: file 1 goes down, whole
        assert store.put(key(3, i), payload(key(3, i), PAGE))
    assert not extent_file(tiers[0].path, 1).exists()
    assert extent_file(tiers[1].path, 1).exists()
    assert store.stats().demotions == 6 and store.stats().evictions == 0
    assert read_back(store, 1) == data
    assert store.locate(key(1, 0)) == extent_file(tiers[1].path, 1)
    mem, ssd = store.usage()
    assert (mem.pages, ssd.pages) == (8, 6)
    assert ssd.used == SIZE + 6 * HEADER_SIZE
    store.close()
    again = make_store(tiers, extent_min_bytes=2 * PAGE)
    assert read_back(again, 1) == data and read_back(again, 2) == file_bytes(2)
    assert again.locate(key(1, 0)) == extent_file(tiers[1].path, 1)


def test_drop_file_removes_the_extent(make_store: StoreFactory, one_tier: list[TierConfig]) -> None:
    store = make_store(one_tier, extent_min_bytes=2 * PAGE)
    put_file(store, 1)
    store.drop_file(DS, key(1).file_key)
    assert page_files(one_tier[0].path) == []
    (usage,) = store.usage()
    assert (usage.used, usage.pages) == (0, 0)


def test_an_index_of_schema_1_opens_and_its_pages_are_page_files(
    make_store: StoreFactory, one_tier: list[TierConfig], tmp_path: Path
) -> None:
    store = make_store(one_tier, extent_min_bytes=None)
    data = put_file(store, 1)
    store.close()
    write_old_index(tmp_path / "state", 1)
    again = make_store(one_tier, extent_min_bytes=2 * PAGE)
    assert read_back(again, 1) == data
    assert again.make_extent(DS, key(1).file_key, SIZE)
    assert read_back(again, 1) == data
    again.close()
    assert read_back(make_store(one_tier), 1) == data


def test_an_index_of_schema_4_keeps_its_extents(
    make_store: StoreFactory, one_tier: list[TierConfig], tmp_path: Path
) -> None:
    """The upgrade to schema 6 carries the extents table over: the file is still served from
    its extent (no page file of its own) and still counted once."""
    store = make_store(one_tier, extent_min_bytes=2 * PAGE)
    data = put_file(store, 1)
    store.make_extent(DS, key(1).file_key, SIZE)
    only_extent = [extent_file(one_tier[0].path, 1)]
    assert page_files(one_tier[0].path) == only_extent
    usage = store.usage()
    store.close()
    write_old_index(tmp_path / "state", 4)
    again = make_store(one_tier, extent_min_bytes=2 * PAGE)
    assert read_back(again, 1) == data
    assert again.usage() == usage
    assert page_files(one_tier[0].path) == only_extent


def test_a_page_read_while_its_file_turns_into_an_extent_is_served(
    make_store: StoreFactory, one_tier: list[TierConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """get() looked up a page file, the file became an extent, the page file went: the read
    retries at the page's new place instead of dropping a good page."""
    store = make_store(one_tier, extent_min_bytes=2 * PAGE)
    data = put_file(store, 1, skip=5)
    from tidepool.store import pagestore

    real = pagestore.read_page
    switched: list[bool] = []

    def read_then_switch(path: str, size: int, digest: int) -> memoryview | None:
        if not switched:
            switched.append(True)
            last = data[5 * PAGE :]
            assert store.put(key(1, 5), last, file_size=SIZE)
            assert extent_file(one_tier[0].path, 1).exists()
        return real(path, size, digest)

    monkeypatch.setattr(pagestore, "read_page", read_then_switch)
    got = store.get(key(1, 0))
    assert got is not None and bytes(got) == data[:PAGE]
    assert store.stats().corrupt == 0
    assert read_back(store, 1) == data


CRASH_CHILD = """
import os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from conftest import key, payload
from tidepool.spec.config import TierConfig
from tidepool.store import PageStore, pagestore

tier, state, point = sys.argv[2:5]
store = PageStore(
    [TierConfig("SSD", tier, quota=1 << 30, high=1.0, low=1.0)], Path(state), dataset="ds",
    page_size=4096, flush_interval=None, extent_min_bytes=8192,
)
real = store._index.set_extent

def crash(*args):
    if point == "recorded":
        real(*args)
    os._exit(9)  # as a SIGKILL: no cleanup, no close

store._index.set_extent = crash
size = 5 * 4096 + 1000
for i in range(6):
    k = key(1, i)
    store.put(k, payload(k, min(4096, size - i * 4096)), file_size=size)
os._exit(0)  # not reached: the last put makes the extent
"""


@pytest.mark.parametrize("point", ["installed", "recorded"])
def test_a_crash_while_a_file_turns_into_an_extent_loses_nothing(
    make_store: StoreFactory, one_tier: list[TierConfig], tmp_path: Path, point: str
) -> None:
    """Killed after the extent is in place but before the index names it (the extent is not
    vouched for: deleted, the pages serve), or after the index names it but before the page
    files go (they are deleted, the extent serves): either way every byte reads back."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", CRASH_CHILD, str(Path(__file__).parent), one_tier[0].path,
         str(tmp_path / "state"), point],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 9, proc.stderr
    ext = extent_file(one_tier[0].path, 1)
    assert ext.exists() and len(page_files(one_tier[0].path)) == 7  # both, at the crash
    store = make_store(one_tier, extent_min_bytes=2 * PAGE)
    expected = b"".join(payload(key(1, i), min(PAGE, SIZE - i * PAGE)) for i in range(6))
    assert read_back(store, 1) == expected
    files = page_files(one_tier[0].path)
    assert files == ([ext] if point == "recorded" else [p for p in files if p != ext])
    assert len(files) == (1 if point == "recorded" else 6)
    (usage,) = store.usage()
    assert (usage.used, usage.pages) == (SIZE + 6 * HEADER_SIZE, 6)


STRESS_CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from conftest import key, payload
from tidepool.spec.config import TierConfig
from tidepool.store import PageStore

mem, ssd, state, mem_q, ssd_q, start = sys.argv[2:8]
tiers = [
    TierConfig("MEM", mem, quota=int(mem_q), high=0.9, low=0.6),
    TierConfig("SSD", ssd, quota=int(ssd_q), high=1.0, low=0.8),
]
store = PageStore(
    tiers, Path(state), dataset="ds", page_size=16 << 10, flush_interval=0.01,
    extent_min_bytes=32 << 10,
)
n = int(start)
size = 3 * (16 << 10) + 1000
while True:
    k = key(n // 4, n % 4)
    length = min(16 << 10, size - (n % 4) * (16 << 10))
    if store.put(k, payload(k, length), file_size=size):
        print(n, flush=True)
    store.get(key(max(0, n - 9) // 4, max(0, n - 9) % 4))
    n += 1
"""
STRESS_PAGE = 16 << 10
STRESS_SIZE = 3 * STRESS_PAGE + 1000


@pytest.mark.slow
@pytest.mark.parametrize("kills", [(37, 120, 251), (64, 9, 333)])
def test_sigkill_while_extents_are_made_evicted_and_demoted_stays_consistent(
    tmp_path: Path, kills: tuple[int, ...]
) -> None:
    """Files of four pages become extents as their last page lands, under quotas that keep
    evicting and demoting them, killed at arbitrary points: after each restart nothing half-made
    is left, every extent on disk is one the index vouches for, and every page reads back."""
    from tidepool.core.pages import TMP_DIR

    from .test_store_crash import run_and_kill

    full = STRESS_PAGE + HEADER_SIZE
    quotas = (30 * full, 60 * full)
    tiers = [
        TierConfig("MEM", str(tmp_path / "mem"), quota=quotas[0], high=0.9, low=0.6),
        TierConfig("SSD", str(tmp_path / "ssd"), quota=quotas[1], high=1.0, low=0.8),
    ]
    seen_extents = 0
    for round_, kill_after in enumerate(kills):
        run_and_kill(tmp_path, quotas, round_ * 4000, kill_after, STRESS_CHILD)
        store = PageStore(
            tiers, tmp_path / "state", dataset=DS, page_size=STRESS_PAGE, flush_interval=None
        )
        assert store.wait_verified(30)  # the restart check runs in the background
        try:
            for tier, usage in zip(tiers, store.usage(), strict=True):
                assert not list((store_root(tier.path) / TMP_DIR).iterdir())
                files = page_files(tier.path)
                extents = [f for f in files if f.suffix == ".x"]
                seen_extents += len(extents)
                assert usage.used <= usage.capacity
                assert disk_bytes(tier.path) <= usage.used + 4096 * len(extents)
                assert usage.pages == len(files) - len(extents) + 4 * len(extents)
                for f in files:
                    stem, _, idx = f.name.partition(".")
                    n = int(stem, 16)
                    idxs = range(4) if idx == "x" else [int(idx)]
                    for i in idxs:
                        k = key(n, i)
                        assert store.locate(k) == f, (f, i)
                        got = store.get(k)
                        assert got is not None, (f, i)
                        length = min(STRESS_PAGE, STRESS_SIZE - i * STRESS_PAGE)
                        assert bytes(got) == payload(k, length)
            assert store.stats().corrupt == 0
        finally:
            store.close()
    assert seen_extents > 0, "no extent survived to be checked: the test checked nothing"
