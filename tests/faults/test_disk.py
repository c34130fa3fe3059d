"""Disk faults under the page store: a tier on a filesystem smaller than its quota, flipped bytes.

The tiny filesystem is a real tmpfs mount (root is needed; the test is skipped otherwise) that is
unmounted in ``finally`` whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tidepool.spec.config import TierConfig

from .conftest import client, metric

pytestmark = pytest.mark.integration

PAGE = 64 * 1024
MiB = 1 << 20


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting a tmpfs needs root"
)


@pytest.mark.slow
@needs_root
def test_tier_on_a_filesystem_smaller_than_its_quota(
    make_dataset: Any, start_worker: Any, tmp_path: Path
) -> None:
    """A tier whose quota (64 MiB) is far larger than its filesystem (a 2 MiB tmpfs, which also
    holds the index and metadata): reading 8 MiB — twice — keeps working with the right bytes
    (served from the origin when nothing more can be cached), the worker stays up, and neither
    the quota nor the disk ever overflows."""
    files = {f"f{i:02d}.bin": os.urandom(200_000 + i) for i in range(40)}
    with tmpfs(tmp_path / "tiny", "2m") as mnt:
        tier = TierConfig("SSD", str(mnt / "tier"), 64 * MiB, high=0.95, low=0.7)
        cfg = make_dataset(files, page_size=PAGE, tiers=(tier,))
        w = start_worker([cfg])
        try:
            fs = client(w.endpoint)
            fs.find("ds")
            for _ in range(2):
                for name, data in files.items():
                    assert fs.cat_file(f"ds/{name}") == data, name
                    st = os.statvfs(mnt)
                    assert (st.f_blocks - st.f_bfree) * st.f_frsize <= 2 * MiB
            assert fs.info("ds/f00.bin")["size"] == len(files["f00.bin"])
            assert client(w.endpoint).ls("ds", detail=False)
            used = metric(fs, "tidepool_cache_used_bytes")
            assert 0 < used <= 2 * MiB  # still caching, within the disk
            assert metric(fs, "tidepool_cache_capacity_bytes") == 64 * MiB
            assert fs.status("ds", refresh=False)["raw"]["cached_bytes"] <= 2 * MiB
        finally:
            w.stop()  # before the unmount: the worker holds files on the tmpfs
            w.stop = lambda: None  # type: ignore[method-assign]


def _page_files(cache: Path) -> list[Path]:
    """The page files of every dataset cached in a tier directory."""
    return [p for p in cache.glob("*/pages/**/*") if p.is_file()]


def test_flipped_bytes_in_a_page_file_are_detected_and_refetched(
    make_dataset: Any, start_worker: Any, tmp_path: Path
) -> None:
    """Bytes flipped inside a cached page file (bit rot, a torn write): the read notices (checksum),
    counts it in tidepool_cache_corrupt_pages_total, drops the page, refetches it from the origin
    (one origin request) and returns the right bytes; the page is cached again and served from
    the cache after that. Nothing corrupt is ever served."""
    data = os.urandom(4 * PAGE)
    cfg = make_dataset({"c.bin": data}, page_size=PAGE)
    w = start_worker([cfg])
    fs = client(w.endpoint)
    assert fs.cat_file("ds/c.bin") == data
    w.call(w.worker.services["ds"].flush_writes())
    pages = sorted(_page_files(tmp_path / "cache-ds"))
    assert len(pages) == 4, pages
    victim = pages[1]
    raw = bytearray(victim.read_bytes())
    for off in (len(raw) // 2, len(raw) - 1):
        raw[off] ^= 0xFF
    victim.write_bytes(bytes(raw))
    origin_before = metric(fs, "tidepool_origin_requests_total")
    assert client(w.endpoint).cat_file("ds/c.bin") == data
    assert metric(fs, "tidepool_cache_corrupt_pages_total") == 1
    assert metric(fs, "tidepool_origin_requests_total") == origin_before + 1
    w.call(w.worker.services["ds"].flush_writes())
    assert len(_page_files(tmp_path / "cache-ds")) == 4
    origin_before = metric(fs, "tidepool_origin_requests_total")
    assert client(w.endpoint).cat_file("ds/c.bin") == data
    assert metric(fs, "tidepool_origin_requests_total") == origin_before
    assert metric(fs, "tidepool_cache_corrupt_pages_total") == 1
