"""Helpers for the page-store tests: tier layouts, deterministic page bytes, disk accounting."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tidepool.core.pages import HEADER_SIZE, PACK_FILE, PAGES_DIR, TMP_DIR, PageKey
from tidepool.spec.config import TierConfig
from tidepool.store import PageStore
from tidepool.store.tierdir import DATASET_MARKER

PAGE = 4096
DS = "ds"
"""The dataset of the test stores (their pages live in ``<tier>/ds``)."""


def store_root(path: str | Path) -> Path:
    """The store's directory for a tier path (``<tier>/ds``), or ``path`` if it is one already."""
    p = Path(path)
    return p / DS if (p / DS / DATASET_MARKER).exists() else p


def payload(key: PageKey, size: int) -> bytes:
    """Deterministic bytes for a page, different for every key and size."""
    seed = hashlib.sha256(f"{key}/{size}".encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def key(n: int, idx: int = 0, dataset: str = "ds") -> PageKey:
    return PageKey(dataset, f"{n:032x}", idx)


def disk_bytes(root: str | Path, *, tmp: bool = True) -> int:
    """Bytes of the files under a tier's pages/ (and tmp/)."""
    total = 0
    dirs = [PAGES_DIR, TMP_DIR] if tmp else [PAGES_DIR]
    for sub in dirs:
        for dirpath, _dirs, files in os.walk(store_root(root) / sub):
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    total += os.stat(os.path.join(dirpath, name)).st_size
    return total


def packed_rows(root: str | Path) -> list[tuple[str, int, int]]:
    """``(file_key, idx, data length)`` of every row of a tier's pack database (none: no
    database)."""
    path = store_root(root) / PACK_FILE
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT file_key, idx, length(data) FROM packs").fetchall()
    finally:
        db.close()


def tier_bytes(root: str | Path) -> int:
    """What a tier's accounting should say it holds: its page and extent files' bytes, and
    its packed pages counted as page files (header included)."""
    return disk_bytes(root) + sum(n + HEADER_SIZE for _, _, n in packed_rows(root))


def page_files(root: str | Path) -> list[Path]:
    return sorted(p for p in (store_root(root) / PAGES_DIR).rglob("*") if p.is_file())


StoreFactory = Callable[..., PageStore]


@pytest.fixture
def tiers(tmp_path: Path) -> list[TierConfig]:
    """Two tiers: MEM holds 4 full pages, SSD holds 8 (header included), watermarks off."""
    from tidepool.core.pages import HEADER_SIZE

    full = PAGE + HEADER_SIZE
    return [
        TierConfig("MEM", str(tmp_path / "mem"), quota=4 * full, high=1.0, low=1.0),
        TierConfig("SSD", str(tmp_path / "ssd"), quota=8 * full, high=1.0, low=1.0),
    ]


@pytest.fixture
def make_store(tmp_path: Path, tiers: list[TierConfig]) -> Iterator[StoreFactory]:
    """Open page stores (default: the two tiers above) and close them after the test; each is
    returned once its restart check is done (``verified=False``: at once)."""
    opened: list[PageStore] = []

    def factory(tier_configs: list[TierConfig] | None = None, **kwargs: Any) -> PageStore:
        kwargs.setdefault("page_size", PAGE)
        kwargs.setdefault("flush_interval", None)
        kwargs.setdefault("dataset", DS)
        kwargs.setdefault("pack_max", 0)  # page files; packed pages: test_store_packs.py
        verified = kwargs.pop("verified", True)
        store = PageStore(tier_configs or tiers, tmp_path / "state", **kwargs)
        opened.append(store)
        if verified:  # the restart check runs in the background: most tests want it done
            assert store.wait_verified(30)
        return store

    yield factory
    for store in opened:
        store.close()
