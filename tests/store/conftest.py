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
from tidepool.store.index import INDEX_FILE, OLD_INDEX_FILE, key_of
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
        rows = db.execute("SELECT file_key, idx, length(data) FROM packs").fetchall()
        return [(key_of(fk), idx, n) for fk, idx, n in rows]
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


_OLD_TABLES = {
    1: [
        "CREATE TABLE pages (dataset TEXT NOT NULL, file_key TEXT NOT NULL, idx INTEGER NOT NULL,"
        " tier TEXT NOT NULL, size INTEGER NOT NULL, checksum INTEGER NOT NULL,"
        " atime INTEGER NOT NULL, PRIMARY KEY (dataset, file_key, idx)) WITHOUT ROWID",
        "CREATE TABLE files (file_key TEXT PRIMARY KEY, dataset TEXT NOT NULL,"
        " path TEXT NOT NULL, version TEXT NOT NULL)",
    ],
    2: [
        "CREATE TABLE extents (dataset TEXT NOT NULL, file_key TEXT NOT NULL, tier TEXT NOT NULL,"
        " PRIMARY KEY (dataset, file_key)) WITHOUT ROWID"
    ],
    3: ["CREATE INDEX pages_by_recency ON pages (tier, atime, size)"],
    4: [
        "CREATE TABLE packs (dataset TEXT NOT NULL, file_key TEXT NOT NULL, idx INTEGER NOT NULL,"
        " id INTEGER NOT NULL, PRIMARY KEY (dataset, file_key, idx)) WITHOUT ROWID"
    ],
}
"""The tables an index of schema 1 to 4 had (``index.sqlite3``), each schema adding its own."""


def write_old_index(state: Path, schema: int = 4, *, keep_new: bool = False) -> Path:
    """Rewrite a closed store's index (schema 6) as a release of ``schema`` (1 to 4) wrote it:
    dataset and tier names and hex file keys in every row, a ``files`` row per file (its path is
    its key here: schema 6 keeps none, and the upgrade reads none), packed pages in ``packs``
    (schema 4; an older index knows no packed page). The new file goes unless ``keep_new`` (as
    after a rollback). Returns the old index's path."""
    new, old = state / INDEX_FILE, state / OLD_INDEX_FILE
    db = sqlite3.connect(old, isolation_level=None)
    try:
        for s in range(1, schema + 1):
            for sql in _OLD_TABLES[s]:
                db.execute(sql)
        db.execute("ATTACH DATABASE ? AS n", (str(new),))
        db.create_function("hexkey", 1, lambda v: v.hex() if isinstance(v, bytes) else v)
        names = " JOIN n.datasets d ON d.id = x.dataset JOIN n.tiers t ON t.id = x.tier"
        db.execute("BEGIN")
        db.execute(
            "INSERT INTO pages SELECT d.name, hexkey(x.file_key), x.idx, t.root, x.size,"
            f" x.checksum, x.atime FROM n.pages x{names}"
        )
        db.execute(
            "INSERT INTO files SELECT DISTINCT hexkey(x.file_key), d.name, hexkey(x.file_key), 'v'"
            " FROM n.pages x JOIN n.datasets d ON d.id = x.dataset"
        )
        if schema >= 2:
            db.execute(
                "INSERT INTO extents SELECT d.name, hexkey(x.file_key), t.root"
                f" FROM n.extents x{names}"
            )
        if schema >= 4:
            db.execute(
                "INSERT INTO packs SELECT d.name, hexkey(x.file_key), x.idx, x.pack"
                " FROM n.pages x JOIN n.datasets d ON d.id = x.dataset WHERE x.pack IS NOT NULL"
            )
        db.execute(f"PRAGMA user_version={schema}")
        db.execute("COMMIT")
        db.execute("DETACH DATABASE n")
    finally:
        db.close()
    if not keep_new:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{new}{suffix}")
    return old


def write_schema5_files(state: Path) -> int:
    """Give a closed store's index (schema 6) the ``files`` table and its index by path that
    schema 5 kept (a row per file), as that release left it; how many rows."""
    db = sqlite3.connect(state / INDEX_FILE, isolation_level=None)
    try:
        db.execute(
            "CREATE TABLE files (file_key BLOB NOT NULL PRIMARY KEY, dataset INTEGER NOT NULL,"
            " path TEXT NOT NULL, version TEXT NOT NULL) WITHOUT ROWID"
        )
        db.execute("CREATE INDEX files_by_path ON files (dataset, path, version)")
        n = db.execute(
            "INSERT INTO files SELECT DISTINCT file_key, dataset, hex(file_key), 'v' FROM pages"
        ).rowcount
        db.execute("PRAGMA user_version=5")
    finally:
        db.close()
    return int(n)
