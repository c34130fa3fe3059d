"""The same-host fast path never serves a planted page, and other users cannot read the cache.

A page's own checksum proves only that the file is intact; these tests plant files that are intact
and wrong (``EVIL-bytes!`` with a valid header) and check that neither the fast path nor the
worker serves them. Planting "as another user" is simulated with ``chown`` (the real defence, a
0700 tier nobody else can write to, is checked by a child process running as ``nobody``).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from tests.conftest import ThreadWorker

from tidepool.client import TidepoolFileSystem
from tidepool.client.local import LocalLayout, LocalReader, trusted_layout
from tidepool.core.pages import PageKey, encode_header, file_key

from .conftest import Serve, client, flush

pytestmark = pytest.mark.integration

PAGE = 64 << 10
NOBODY = 65534
DATA = bytes(range(256)) * 80  # one page of 20,480 bytes: a page file (packed: up to 16 KiB)
EVIL = (b"EVIL-bytes!" * 1000)[: len(DATA)]
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing owners and users needs root")


@pytest.fixture
def warm(serve: Serve) -> tuple[ThreadWorker, TidepoolFileSystem, Path]:
    """A worker with one cached page, a fast-path client, and that page's file."""
    worker = serve({"ds": {"f.bin": DATA}}, page_size=PAGE)
    fs = client(worker, local_reads=True)
    assert fs.cat_file("ds/f.bin") == DATA
    flush(worker)
    assert fs._local is not None
    key = PageKey("ds", file_key("ds", "f.bin", fs.info("ds/f.bin")["version"]), 0)
    path = worker.worker.services["ds"].store.locate(key)
    assert path is not None and path.is_file()
    return worker, fs, path


def plant(path: Path, owner: int | None = None) -> None:
    """Replace a page file with an intact page of other bytes (same length, valid checksum)."""
    tmp = path.with_name("planted")
    tmp.write_bytes(encode_header(EVIL) + EVIL)
    if owner is not None:
        os.chown(tmp, owner, owner)
    os.replace(tmp, path)


def origin_reads(worker: ThreadWorker) -> int:
    return int(worker.worker.services["ds"].origins[0].stats.calls.get("read", 0))


@as_root
def test_a_page_planted_by_another_user_is_served_by_nobody(
    warm: tuple[ThreadWorker, TidepoolFileSystem, Path],
) -> None:
    worker, fs, path = warm
    assert fs._local is not None
    plant(path, owner=NOBODY)
    misses, reads = fs._local.misses, origin_reads(worker)
    assert fs.cat_file("ds/f.bin") == DATA  # the fast path refused; the worker refetched
    assert fs._local.misses == misses + 1
    assert origin_reads(worker) == reads + 1
    assert worker.worker.services["ds"].store.stats().corrupt >= 1


def test_a_page_planted_by_the_workers_user_is_not_served_over_http(
    warm: tuple[ThreadWorker, TidepoolFileSystem, Path],
) -> None:
    """Whoever can write as the worker's user defeats the fast path's checks, but the worker
    checks the page against the checksum its index recorded: an intact foreign page is dropped
    and refetched, never sent."""
    worker, _, path = warm
    plant(path)
    reads = origin_reads(worker)
    assert client(worker, local_reads=False).cat_file("ds/f.bin") == DATA
    assert origin_reads(worker) == reads + 1


def test_a_link_planted_at_a_page_path_is_not_followed(
    warm: tuple[ThreadWorker, TidepoolFileSystem, Path], tmp_path: Path
) -> None:
    _, fs, path = warm
    assert fs._local is not None
    elsewhere = tmp_path / "evil-page"
    elsewhere.write_bytes(encode_header(EVIL) + EVIL)
    path.unlink()
    path.symlink_to(elsewhere)
    misses = fs._local.misses
    assert fs.cat_file("ds/f.bin") == DATA
    assert fs._local.misses == misses + 1
    assert elsewhere.exists()  # the worker removed its link, not the target


def test_only_directories_nobody_else_can_write_are_trusted(
    warm: tuple[ThreadWorker, TidepoolFileSystem, Path],
) -> None:
    worker, _, _ = warm
    root = Path(worker.worker.stores["ds"].tier_roots()[0])
    layout = LocalLayout("ds", PAGE, (str(root),), owner=os.geteuid())
    assert trusted_layout(layout) == layout
    assert trusted_layout(LocalLayout("ds", PAGE, (str(root),), owner=os.geteuid() + 1)) is None
    pages = root / "pages" / "ds"
    for loose in (root, pages):
        before = stat.S_IMODE(loose.stat().st_mode)
        os.chmod(loose, 0o777)
        try:
            assert trusted_layout(layout) is None, loose
            assert LocalReader({"ds": layout}).layouts == {}
        finally:
            os.chmod(loose, before)
    assert trusted_layout(LocalLayout("ds", PAGE, (str(root),))) == layout  # owner from the dir


@as_root
def test_other_users_can_neither_read_nor_plant_pages(
    warm: tuple[ThreadWorker, TidepoolFileSystem, Path],
) -> None:
    """Run as ``nobody`` in a forked child: the page file cannot be opened, nothing can be
    created next to it, and the fast path finds no tier it may use."""
    worker, _, path = warm
    root = worker.worker.stores["ds"].tier_roots()[0]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest, no asserts, report through the pipe and _exit
        codes = []
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            for attempt in (
                lambda: os.open(path, os.O_RDONLY),
                lambda: os.open(path.with_name("planted"), os.O_WRONLY | os.O_CREAT, 0o644),
                lambda: os.listdir(root),
            ):
                try:
                    attempt()
                    codes.append(0)
                except OSError as exc:
                    codes.append(exc.errno or -1)
            reader = LocalReader({"ds": LocalLayout("ds", PAGE, (root,))})
            codes.append(len(reader.layouts))
        finally:
            os.write(write, repr(codes).encode())
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        codes = f.read()
    os.waitpid(pid, 0)
    assert codes == repr([errno.EACCES, errno.EACCES, errno.EACCES, 0])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
