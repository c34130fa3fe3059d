"""A large file held whole becomes one extent file (issue 18): the same-host fast path reads it as
one file, the worker serves it over HTTP (sendfile and buffered) from it, and a damaged extent is
never served by either: the fast path falls back, the worker drops the extent and refetches."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import ThreadWorker

from tidepool.client import TidepoolFileSystem
from tidepool.core.pages import PageKey, extent_relpath, file_key

from .conftest import Serve, client, flush

pytestmark = pytest.mark.integration

PAGE = 64 << 10
SIZE = 5 * PAGE + 777
DATA = random.Random(18).randbytes(SIZE)
RANGES = [(None, None), (0, 1), (PAGE - 2, PAGE + 2), (3 * PAGE, 4 * PAGE), (-100, None), (5, -5)]


def extent_of(worker: ThreadWorker, fs: TidepoolFileSystem) -> Path:
    svc = worker.worker.services["ds"]
    version = fs.info("ds/model.bin")["version"]
    (tier,) = svc.store.tier_roots()
    return Path(tier) / extent_relpath("ds", file_key("ds", "model.bin", version))


@pytest.fixture
def cold(serve: Serve) -> tuple[ThreadWorker, TidepoolFileSystem]:
    """A worker whose store makes extents of files of two pages or more, having read the model
    once (cold) for a fast-path client."""
    worker = serve({"ds": {"model.bin": DATA}}, page_size=PAGE)
    worker.worker.services["ds"].store.extent_min_bytes = 2 * PAGE
    fs = client(worker, local_reads=True)
    assert fs.cat_file("ds/model.bin") == DATA
    flush(worker)
    return worker, fs


def test_a_whole_large_file_is_read_from_its_extent(
    cold: tuple[ThreadWorker, TidepoolFileSystem],
) -> None:
    worker, fs = cold
    svc = worker.worker.services["ds"]
    ext = extent_of(worker, fs)
    assert ext.is_file()
    assert [p for p in ext.parent.iterdir()] == [ext], "the page files were not removed"
    assert fs._local is not None
    hits, local_hits = svc.hits, fs._local.hits
    for start, end in RANGES:
        assert fs.cat_file("ds/model.bin", start, end) == DATA[start:end]
    with fs.open("ds/model.bin", block_size=PAGE) as f:
        f.seek(PAGE + 3)
        assert f.read(2 * PAGE) == DATA[PAGE + 3 : 3 * PAGE + 3]
        f.seek(0)
        assert f.read() == DATA
    assert svc.hits == hits, "a warm same-host read went to the worker"
    assert fs._local.hits > local_hits

    # over HTTP: the worker serves the extent's pages (sendfile for the large read)
    remote = client(worker, local_reads=False)
    for start, end in RANGES:
        assert remote.cat_file("ds/model.bin", start, end) == DATA[start:end]
    assert svc.hits > hits


@pytest.mark.parametrize("where", [0, 3 * PAGE + 5, SIZE - 1])
def test_a_damaged_extent_is_never_served(
    cold: tuple[ThreadWorker, TidepoolFileSystem], where: int
) -> None:
    worker, fs = cold
    ext = extent_of(worker, fs)
    assert fs._local is not None
    with open(ext, "r+b") as f:
        f.seek(where)
        byte = f.read(1)
        f.seek(where)
        f.write(bytes([byte[0] ^ 0x5A]))
    fresh = client(worker, local_reads=True)  # a process that has not checked the extent yet
    assert fresh.cat_file("ds/model.bin") == DATA
    assert fresh._local is not None and fresh._local.misses >= 1
    # the worker never serves the damaged page either. That read may have dropped the extent
    # (and refetched the page) or not (a read that refreshes the metadata brings page 0 from
    # the origin along): either way the store gives back no damaged byte, and no damaged extent
    svc = worker.worker.services["ds"]
    version = fs.info("ds/model.bin")["version"]
    idx = where // PAGE
    got = svc.store.get(PageKey("ds", file_key("ds", "model.bin", version), idx))
    assert got is None or bytes(got) == DATA[idx * PAGE : (idx + 1) * PAGE]
    # (the whole file may have been refetched and made an extent again: a good one)
    assert not ext.exists() or ext.read_bytes()[:SIZE] == DATA, "a damaged extent was kept"
    flush(worker)
    assert client(worker, local_reads=False).cat_file("ds/model.bin") == DATA
    flush(worker)
    assert ext.is_file(), "the refetched file did not become an extent again"
    assert fresh.cat_file("ds/model.bin") == DATA


def test_an_extent_another_user_could_write_is_not_read(
    cold: tuple[ThreadWorker, TidepoolFileSystem],
) -> None:
    worker, fs = cold
    ext = extent_of(worker, fs)
    os.chmod(ext, 0o666)
    try:
        fresh = client(worker, local_reads=True)
        assert fresh.cat_file("ds/model.bin", 10, 3 * PAGE) == DATA[10 : 3 * PAGE]
        assert fresh._local is not None and fresh._local.hits == 0
    finally:
        os.chmod(ext, 0o600)


def open_fds_to(path: Path) -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        n += target.startswith(str(path))
    return n


def test_an_open_file_keeps_its_extent_until_it_is_closed(
    cold: tuple[ThreadWorker, TidepoolFileSystem],
) -> None:
    """One open per open file, not per read; an extent evicted meanwhile keeps serving this
    version's checked bytes from the open descriptor; closing the file lets its space go."""
    worker, fs = cold
    svc = worker.worker.services["ds"]
    ext = extent_of(worker, fs)
    assert fs._local is not None
    with fs.open("ds/model.bin", block_size=PAGE) as f:
        assert f.read(PAGE + 5) == DATA[: PAGE + 5]
        assert open_fds_to(ext) == 1
        svc.store.drop_file("ds", file_key("ds", "model.bin", fs.info("ds/model.bin")["version"]))
        assert not ext.exists()
        hits = svc.hits
        assert f.read(2 * PAGE) == DATA[PAGE + 5 : 3 * PAGE + 5]
        assert f.read() == DATA[3 * PAGE + 5 :]
        assert svc.hits == hits, "the open file's reads went to the worker"
    assert open_fds_to(ext) == 0


@pytest.mark.parametrize("local_reads", [True, False], ids=["same-host", "http"])
def test_a_large_read_is_not_kept_by_the_file(serve: Serve, local_reads: bool) -> None:
    """A read of a megabyte or more returned whole is the reader's alone: the file keeps no
    reference, so its memory is freed when the reader drops it and the next read reuses it
    (kept, every read's buffer was fresh pages from the kernel: ~2,300 page faults per
    256 MiB read in 4 MiB reads)."""
    big = random.Random(7).randbytes(3 << 20)
    worker = serve({"ds": {"big.bin": big}}, page_size=PAGE)
    fs = client(worker, local_reads=local_reads)
    assert fs.cat_file("ds/big.bin") == big
    flush(worker)
    with fs.open("ds/big.bin", block_size=1 << 20) as f:
        f.seek(PAGE)
        data = f.read(1 << 20)
        assert data == big[PAGE : PAGE + (1 << 20)]
        assert sys.getrefcount(data) == 2  # `data` and getrefcount's argument
        data = f.read(1 << 20)
        assert data == big[PAGE + (1 << 20) : PAGE + (2 << 20)]
        assert sys.getrefcount(data) == 2
        f.seek(PAGE + 5)  # a read after a seek
        assert f.read(100) == big[PAGE + 5 : PAGE + 105]
        f.seek(0)
        assert f.read() == big


def test_large_same_host_reads_skip_the_buffered_layers_and_keep_reading_right(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read of a megabyte or more that this host's disk holds goes straight to it (not
    through fsspec's buffered file and the read-ahead cache); small reads, seeks and reads past
    the end around it still return the right bytes."""
    from tidepool.client.file import ReadAheadCache

    big = random.Random(8).randbytes(3 << 20)
    worker = serve({"ds": {"big.bin": big}}, page_size=PAGE)
    worker.worker.services["ds"].store.extent_min_bytes = 2 * PAGE
    fs = client(worker, local_reads=True)
    assert fs.cat_file("ds/big.bin") == big
    flush(worker)
    fetched: list[tuple[int, int]] = []
    real = ReadAheadCache._fetch

    def counting(self: ReadAheadCache, start: int | None, stop: int | None) -> bytes:
        fetched.append((start or 0, stop or 0))
        return real(self, start, stop)

    monkeypatch.setattr(ReadAheadCache, "_fetch", counting)
    with fs.open("ds/big.bin") as f:
        assert f.read(1 << 20) == big[: 1 << 20]
        assert f.read(1 << 20) == big[1 << 20 : 2 << 20]
        assert fetched == [], "a large same-host read went through the cache"
        assert f.read(10) == big[2 << 20 : (2 << 20) + 10]  # small: through the cache
        assert len(fetched) == 1
        f.seek(5)
        assert f.read(1 << 20) == big[5 : 5 + (1 << 20)]
        assert f.read() == big[5 + (1 << 20) :]
        assert f.read(1 << 20) == b""
        assert f.tell() == len(big)
    # only the small read, and fsspec's read at the end of the file, went through the cache
    assert fetched[:1] == [(2 << 20, (2 << 20) + 10)]
    assert all(start >= len(big) for start, _ in fetched[1:])


def mapped_regions(path: Path) -> list[tuple[int, int]]:
    """The address ranges of this process mapping ``path`` (``/proc/self/maps``)."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip().endswith(str(path)):
                lo, hi = line.split()[0].split("-")
                out.append((int(lo, 16), int(hi, 16)))
    return out


@pytest.fixture
def small_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Map reads of a page or more, two pages at a time (1 MiB and 64 MiB in use); an open
    file sends reads of a page or more straight to the fast path."""
    from tidepool.client import file, local

    monkeypatch.setattr(file, "ALIGN_MIN", PAGE)
    monkeypatch.setattr(local, "MAP_MIN", PAGE)
    monkeypatch.setattr(local, "MAP_WINDOW", 2 * PAGE)
    monkeypatch.setitem(local._populate, "ok", True)


def test_large_reads_are_copied_from_a_window_that_moves_along(
    cold: tuple[ThreadWorker, TidepoolFileSystem], small_windows: None
) -> None:
    """Reads of an open extent large enough are copied out of a mapped window of it: right
    bytes wherever the read falls (across a window's edge, the file's last partial page), one
    window mapped at a time, no larger than a window and the read, gone when the file closes."""
    from tidepool.client.local import OpenExtent

    worker, fs = cold
    svc = worker.worker.services["ds"]
    ext = extent_of(worker, fs)
    copied: list[tuple[int, int]] = []
    real = OpenExtent.copy_mapped

    def spy(self: OpenExtent, start: int, end: int) -> bytes | None:
        out = real(self, start, end)
        if out is not None:
            copied.append((start, end))
            regions = mapped_regions(ext)
            assert len(regions) == 1, regions
            assert regions[0][1] - regions[0][0] <= 2 * (2 * PAGE)  # a window and a read
        return out

    hits = svc.hits
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(OpenExtent, "copy_mapped", spy)
        with fs.open("ds/model.bin", block_size=PAGE) as f:
            for start, n in [(0, PAGE), (PAGE + 3, PAGE + 9), (2 * PAGE - 1, 2 * PAGE), (5, PAGE)]:
                f.seek(start)
                assert f.read(n) == DATA[start : start + n]
            f.seek(SIZE - PAGE - 10)
            assert f.read(2 * PAGE) == DATA[SIZE - PAGE - 10 :]  # to the end: not the trailer
            assert f.read(PAGE) == b""
        assert mapped_regions(ext) == [], "the window outlived the file"
        assert fs.cat_file("ds/model.bin", PAGE, 3 * PAGE) == DATA[PAGE : 3 * PAGE]
        assert mapped_regions(ext) == []
    assert len(copied) == 6, copied
    assert svc.hits == hits, "a mapped read went to the worker"


def test_without_madv_populate_read_the_fast_path_reads_instead(
    cold: tuple[ThreadWorker, TidepoolFileSystem],
    small_windows: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A kernel that does not know ``MADV_POPULATE_READ`` (before 5.14: EINVAL) turns the windows
    off for the process; reads go on with ``pread``."""
    from tidepool.client import local

    _, fs = cold
    monkeypatch.setattr(local, "MADV_POPULATE_READ", 0x7FFF)  # no such advice: EINVAL
    with fs.open("ds/model.bin", block_size=PAGE) as f:
        assert f.read(2 * PAGE) == DATA[: 2 * PAGE]
        assert local._populate["ok"] is False
        assert f.read() == DATA[2 * PAGE :]
    assert fs._local is not None and fs._local.misses == 0


_CUT_SHORT = """
import os, sys
from tidepool.client import file, local, TidepoolFileSystem
endpoint, ext, page, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
file.ALIGN_MIN = local.MAP_MIN = page
local.MAP_WINDOW = 2 * page
fs = TidepoolFileSystem(endpoint, skip_instance_cache=True, local_reads=True)
with fs.open("ds/model.bin", block_size=page) as f:
    head = f.read(page)  # the window is mapped (pages 0 and 1)
    os.truncate(ext, page // 2)
    f.seek(page // 2 + 100)
    middle = f.read(page)
    rest = f.read()
sys.stdout.buffer.write(head + middle + rest)
"""


def test_an_extent_cut_short_under_an_open_file_is_never_a_sigbus(
    cold: tuple[ThreadWorker, TidepoolFileSystem],
) -> None:
    """Touching a mapped page past the end of a file cut short raises ``SIGBUS``, which kills
    the reader's process (so the reader here is a child). The window's pages are mapped with
    ``MADV_POPULATE_READ`` first, which fails instead: the read goes to ``pread`` (short: not
    served), then to the worker, which finds its extent damaged too, drops it and refetches.
    Right bytes, no signal."""
    worker, fs = cold
    ext = extent_of(worker, fs)
    out = subprocess.run(
        [sys.executable, "-c", _CUT_SHORT, worker.endpoint, str(ext), str(PAGE), str(SIZE)],
        capture_output=True,
        timeout=120,
    )
    assert out.returncode == 0, (
        f"exit {out.returncode}: {out.stderr.decode(errors='replace')[-2000:]}"
    )
    assert out.stdout == DATA[:PAGE] + DATA[PAGE // 2 + 100 :]
    flush(worker)
    assert client(worker, local_reads=True).cat_file("ds/model.bin") == DATA
