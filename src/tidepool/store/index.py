"""The page store's persisted index: which pages exist, in which tier, and how recently used.

SQLite in WAL mode with ``synchronous=NORMAL``: every change is committed right away, and a
committed transaction survives a process kill (SIGKILL) — WAL only risks the last transactions on a
power cut or OS crash, which the background check of the tiers repairs. Recency (``atime``) is a
monotonically increasing counter, not wall time, written in batches by the store.

The index is the authority and is *not* loaded into memory (issue 16: a worker of a million
pages keeps no object per page): the store asks it for one page (:meth:`PageIndex.row`), the
pages of one file, the least recently used pages of a tier (``pages_by_recency``) or a window of
all rows, and keeps only per-tier totals (:meth:`PageIndex.totals`) in memory. Lookups go
through a second connection, so a read never waits behind a put's transaction (WAL: readers see
every committed transaction).

Tables::

    pages(dataset, file_key, idx, tier, size, checksum, atime)   -- one row per page
    files(file_key PRIMARY KEY, dataset, path, version)          -- what a key stands for;
                                                                 -- indexed by path for listings
    extents(dataset, file_key, tier)                             -- files kept as one extent
    packs(dataset, file_key, idx, id)                            -- pages packed in their tier's
                                                                 -- pack database, by row id
    pages_by_recency ON pages(tier, atime, size)                 -- eviction order per tier;
                                                                 -- covers the tier totals

``tier`` is the tier's absolute root path, so reordering tiers in the spec does not confuse it;
``size`` is the page file size (header included); ``checksum`` the xxh3 of the data, stored as a
signed 64-bit integer. A file with a row in ``extents`` has its pages in that tier's extent file
(:mod:`tidepool.core.pages`) rather than in page files of their own. Schema 2 added that table
and changed nothing else: the previous release, rolled back to, still writes this index (it never
reads ``extents``, so it sees those pages' files missing, drops their rows and leaves the extent
files alone), and an index of schema 1 is one of schema 2 without extents. Schema 3 added the index
``pages_by_recency`` (built once when an older index is opened; a release before it ignores
it). ``size`` is in it so the totals read at start-up scan the index alone: 0.13 s for a
million pages, 2.2 s through the table. Schema 4 added ``packs`` (:mod:`tidepool.store.packs`),
beside ``pages`` for the same reason as ``extents``: a release before it, rolled back to, sees
packed pages' files missing and drops their rows.

Limits: one process owns the index at a time (the page store holds the state directory's lock,
:mod:`tidepool.store.tierdir`). An unreadable database file is moved aside
(``index.sqlite3.corrupt-<ts>``) by :func:`open_index` and the store rebuilds from its tiers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tidepool.core.pages import PageKey
from tidepool.store import forksafe
from tidepool.store.tierdir import private_dir

log = logging.getLogger(__name__)

INDEX_FILE = "index.sqlite3"
WAL_PAGES = 8192
"""Pages of write-ahead log (32 MiB) before SQLite folds it into the database, and what the log
is cut back to afterwards. Each fold rewrites every page the log touched and syncs the database;
a load of many files dirties about one page per file (their keys are hashes, spread over the
whole table), so at SQLite's default of 1,000 pages a load folded every few batches: 100,000
one-page puts in batches of 64 went at 11.5k/s, at 17k/s with this."""
SCHEMA_VERSION = 4
FILES_PER_QUERY = 500
"""File keys asked about in one query by the lookups of many files (SQLite's limit on a
statement's parameters is 32,766; this keeps each query's plan and result small)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pages (
    dataset  TEXT    NOT NULL,
    file_key TEXT    NOT NULL,
    idx      INTEGER NOT NULL,
    tier     TEXT    NOT NULL,
    size     INTEGER NOT NULL,
    checksum INTEGER NOT NULL,
    atime    INTEGER NOT NULL,
    PRIMARY KEY (dataset, file_key, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files (
    file_key TEXT PRIMARY KEY,
    dataset  TEXT NOT NULL,
    path     TEXT NOT NULL,
    version  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS extents (
    dataset  TEXT NOT NULL,
    file_key TEXT NOT NULL,
    tier     TEXT NOT NULL,
    PRIMARY KEY (dataset, file_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS packs (
    dataset  TEXT    NOT NULL,
    file_key TEXT    NOT NULL,
    idx      INTEGER NOT NULL,
    id       INTEGER NOT NULL,
    PRIMARY KEY (dataset, file_key, idx)
) WITHOUT ROWID;
DROP INDEX IF EXISTS files_dataset;
CREATE INDEX IF NOT EXISTS files_by_path ON files (dataset, path, version);
DROP INDEX IF EXISTS pages_lru;
CREATE INDEX IF NOT EXISTS pages_by_recency ON pages (tier, atime, size);
"""

_ROW = (
    "SELECT p.dataset, p.file_key, p.idx, p.tier, p.size, p.checksum, p.atime,"
    " e.tier IS NOT NULL, k.id FROM pages p LEFT JOIN extents e"
    " ON e.dataset = p.dataset AND e.file_key = p.file_key AND e.tier = p.tier"
    " LEFT JOIN packs k ON k.dataset = p.dataset AND k.file_key = p.file_key AND k.idx = p.idx"
)
"""A page row, whether it lives in its file's extent, and its pack id if it is packed."""

_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1


def _to_sql(digest: int) -> int:
    return digest - _U64 if digest > _I64_MAX else digest


def _from_sql(value: int) -> int:
    return value % _U64


@dataclass(slots=True)
class PageRow:
    """One persisted page."""

    key: PageKey
    tier: str
    size: int
    checksum: int
    atime: int
    extent: bool = False
    """The page lives in its file's extent, not in a page file of its own."""
    pack: int | None = None
    """The page's row in its tier's pack database, when it is packed (no page file)."""


@dataclass(frozen=True, slots=True)
class FileRow:
    """What a file key stands for (the dataset path and origin version its pages were put with)."""

    dataset: str
    path: str
    version: str


def connect(path: Path) -> sqlite3.Connection:
    """A connection in WAL / synchronous=NORMAL, shared between threads under a lock.

    The database file is created 0600 first: SQLite gives its ``-wal`` and ``-shm`` files the
    database's permissions, so none of them is readable by other users.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    os.close(fd)
    conn = sqlite3.connect(str(path), timeout=30.0, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
    conn.execute(f"PRAGMA journal_size_limit={WAL_PAGES * 4096}")
    return conn


def move_aside(path: Path) -> Path:
    """Rename a damaged database (and its -wal/-shm files) to ``<name>.corrupt-<ts>``."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 0
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{path}{suffix}")
        if src.exists():
            os.replace(src, f"{target}{suffix}")
    return target


class PageIndex:
    """Thread-safe access to the index database; every write is its own committed transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn = connect(path)
        try:
            self._conn.executescript(_SCHEMA)
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            self._conn.close()
            raise
        self._read_lock = threading.Lock()
        self._reader = connect(path)
        forksafe.guard(self)

    def fork_locks(self) -> list[threading.Lock]:
        return [self._lock, self._read_lock]

    def _rows(self, where: str, args: tuple[object, ...]) -> list[PageRow]:
        """Page rows matching ``where`` (on ``p``), through the read connection."""
        with self._read_lock:
            found = self._reader.execute(f"{_ROW} WHERE {where}", args).fetchall()
        return [
            PageRow(PageKey(ds, fk, idx), tier, size, _from_sql(digest), atime, bool(extent), pk)
            for ds, fk, idx, tier, size, digest, atime, extent, pk in found
        ]

    def row(self, key: PageKey) -> PageRow | None:
        """The row of one page, if it is indexed."""
        rows = self._rows(
            "p.dataset = ? AND p.file_key = ? AND p.idx = ?", (key.dataset, key.file_key, key.index)
        )
        return rows[0] if rows else None

    def has(self, key: PageKey) -> bool:
        with self._read_lock:
            return (
                self._reader.execute(
                    "SELECT 1 FROM pages WHERE dataset = ? AND file_key = ? AND idx = ?",
                    (key.dataset, key.file_key, key.index),
                ).fetchone()
                is not None
            )

    def held(self, keys: Iterable[PageKey]) -> set[PageKey]:
        """Which of ``keys`` are indexed: one query per dataset and 500 files, not one a key."""
        by_dataset: dict[str, set[str]] = {}
        wanted = set(keys)
        for k in wanted:
            by_dataset.setdefault(k.dataset, set()).add(k.file_key)
        found: set[PageKey] = set()
        for ds, fkeys in by_dataset.items():
            for fk, idxs in self.file_indexes(ds, fkeys).items():
                found.update(k for i in idxs if (k := PageKey(ds, fk, i)) in wanted)
        return found

    def file_indexes(self, dataset: str, file_keys: Iterable[str]) -> dict[str, set[int]]:
        """The indexed pages of each of ``file_keys`` (those with none left out): one query per
        500 files."""
        found: dict[str, set[int]] = {}
        query = "SELECT file_key, idx FROM pages WHERE dataset = ? AND file_key IN ({})"
        for fk, i in self._of_files(query, dataset, file_keys):
            found.setdefault(fk, set()).add(i)
        return found

    def _of_files(
        self, query: str, dataset: str, file_keys: Iterable[str]
    ) -> Iterator[tuple[Any, ...]]:
        """The rows of ``query`` (its ``{}`` a list of file keys) for a dataset's ``file_keys``,
        asked :data:`FILES_PER_QUERY` keys at a time through the read connection."""
        names = sorted(set(file_keys))
        for start in range(0, len(names), FILES_PER_QUERY):
            part = names[start : start + FILES_PER_QUERY]
            sql = query.format(", ".join("?" * len(part)))
            with self._read_lock:
                rows = self._reader.execute(sql, (dataset, *part)).fetchall()
            yield from rows

    def file_pages(
        self, dataset: str, file_key: str, first: int = 0, last: int | None = None
    ) -> list[PageRow]:
        """The rows of a file's pages from index ``first`` to ``last`` (all: None), in order."""
        return self._rows(
            "p.dataset = ? AND p.file_key = ? AND p.idx BETWEEN ? AND ? ORDER BY p.idx",
            (dataset, file_key, first, _I64_MAX if last is None else last),
        )

    def indexes(self, dataset: str, file_key: str) -> list[int]:
        """The indexes of a file's indexed pages, in order."""
        with self._read_lock:
            return [
                i
                for (i,) in self._reader.execute(
                    "SELECT idx FROM pages WHERE dataset = ? AND file_key = ? ORDER BY idx",
                    (dataset, file_key),
                )
            ]

    def oldest(self, tier: str, limit: int) -> list[PageRow]:
        """The ``limit`` least recently used pages of a tier, oldest first
        (``pages_by_recency``)."""
        return self._rows("p.tier = ? ORDER BY p.atime LIMIT ?", (tier, limit))

    def window(self, after: PageKey | None, limit: int) -> list[PageRow]:
        """At most ``limit`` rows in key order after the key ``after`` (None: from the first):
        a walk over the whole index that holds one window in memory at a time."""
        start = ("", "", -1) if after is None else tuple(after)  # before every key
        return self._rows(
            "(p.dataset, p.file_key, p.idx) > (?, ?, ?) ORDER BY p.dataset, p.file_key, p.idx"
            " LIMIT ?",
            (*start, limit),
        )

    def totals(self) -> dict[str, tuple[int, int, int]]:
        """``tier -> (pages, bytes, highest atime)`` over the whole index: one scan of
        ``pages_by_recency``, in SQLite (a damaged index raises here; a damaged table is found
        by the lookups that reach it)."""
        with self._read_lock:
            return {
                tier: (n, size, atime)
                for tier, n, size, atime in self._reader.execute(
                    "SELECT tier, COUNT(*), SUM(size), MAX(atime)"
                    " FROM pages INDEXED BY pages_by_recency GROUP BY tier"
                )
            }

    def file_count(self, dataset: str) -> int:
        """How many files of the dataset have a row (every file row has a page)."""
        with self._read_lock:
            (n,) = self._reader.execute(
                "SELECT COUNT(*) FROM files WHERE dataset = ?", (dataset,)
            ).fetchone()
        return int(n)

    def delete_tiers_except(self, tiers: Iterable[str]) -> int:
        """Delete the rows of tiers not in ``tiers`` (no longer configured), with their extents
        and the file rows left without pages; how many page rows."""
        keep = list(tiers)
        marks = ", ".join("?" * len(keep))
        with self._lock, self._transaction():
            n = self._conn.execute(f"DELETE FROM pages WHERE tier NOT IN ({marks})", keep).rowcount
            self._conn.execute(f"DELETE FROM extents WHERE tier NOT IN ({marks})", keep)
            self._conn.execute(
                "DELETE FROM packs WHERE NOT EXISTS (SELECT 1 FROM pages p WHERE"
                " p.dataset = packs.dataset AND p.file_key = packs.file_key AND p.idx = packs.idx)"
            )
        if n:
            self.delete_orphan_files()
        return n

    def file_row(self, file_key: str) -> FileRow | None:
        """What a file key stands for, if any page of it was put."""
        with self._lock:
            row = self._conn.execute(
                "SELECT dataset, path, version FROM files WHERE file_key = ?", (file_key,)
            ).fetchone()
        return None if row is None else FileRow(*row)

    def add_pages(self, rows: Iterable[PageRow], files: dict[str, FileRow]) -> int:
        """Insert (or replace) pages and insert the missing file rows, in one transaction; how
        many file rows were new."""
        page_params = [
            (
                r.key.dataset,
                r.key.file_key,
                r.key.index,
                r.tier,
                r.size,
                _to_sql(r.checksum),
                r.atime,
            )
            for r in rows
        ]
        pack_params = [
            (r.key.dataset, r.key.file_key, r.key.index, r.pack) for r in rows if r.pack is not None
        ]
        file_params = [(fk, f.dataset, f.path, f.version) for fk, f in files.items()]
        with self._lock, self._transaction():
            self._conn.executemany(
                "INSERT OR REPLACE INTO pages VALUES (?, ?, ?, ?, ?, ?, ?)", page_params
            )
            if pack_params:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO packs VALUES (?, ?, ?, ?)", pack_params
                )
            return self._conn.executemany(
                "INSERT OR IGNORE INTO files VALUES (?, ?, ?, ?)", file_params
            ).rowcount

    def files_from(
        self, dataset: str, start: str, limit: int, *, strict: bool, row: tuple[str, str] | None
    ) -> list[tuple[str, str]]:
        """At most ``limit`` ``(path, version)`` of the dataset's files in path order: after the
        row ``row`` when given (the last of a previous batch), else from the path ``start`` on
        (``strict``: after it). An index range, whatever the dataset's size."""
        args: tuple[str, ...]
        if row is not None:
            where, args = "(path, version) > (?, ?)", row
        else:
            where, args = ("path > ?" if strict else "path >= ?"), (start,)
        with self._lock:
            return self._conn.execute(
                f"SELECT path, version FROM files WHERE dataset = ? AND {where}"
                " ORDER BY path, version LIMIT ?",
                (dataset, *args, limit),
            ).fetchall()

    def set_tier(self, keys: Iterable[PageKey], tier: str) -> None:
        """Record that pages moved to another tier (one transaction); an extent moves with
        its pages."""
        keys = list(keys)
        files = {(k.dataset, k.file_key) for k in keys}
        with self._lock, self._transaction():
            self._conn.executemany(
                "UPDATE pages SET tier = ? WHERE dataset = ? AND file_key = ? AND idx = ?",
                [(tier, k.dataset, k.file_key, k.index) for k in keys],
            )
            self._conn.executemany(
                "UPDATE extents SET tier = ? WHERE dataset = ? AND file_key = ?",
                [(tier, ds, fk) for ds, fk in files],
            )

    def move_pack(self, key: PageKey, tier: str, pack: int) -> None:
        """Record that a packed page moved to another tier's pack database, as row ``pack``."""
        with self._lock, self._transaction():
            self._conn.execute(
                "UPDATE pages SET tier = ? WHERE dataset = ? AND file_key = ? AND idx = ?",
                (tier, *key),
            )
            self._conn.execute(
                "UPDATE packs SET id = ? WHERE dataset = ? AND file_key = ? AND idx = ?",
                (pack, *key),
            )

    def pack_holders(
        self, dataset: str, keys: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], tuple[str, int]]:
        """``(file_key, idx) -> (tier, pack id)`` of those of ``keys`` that are packed pages."""
        wanted = set(keys)
        query = (
            "SELECT k.file_key, k.idx, p.tier, k.id FROM packs k JOIN pages p"
            " ON p.dataset = k.dataset AND p.file_key = k.file_key AND p.idx = k.idx"
            " WHERE k.dataset = ? AND k.file_key IN ({})"
        )
        rows = self._of_files(query, dataset, (fk for fk, _ in wanted))
        return {(fk, i): (t, pk) for fk, i, t, pk in rows if (fk, i) in wanted}

    def set_extent(self, dataset: str, file_key: str, tier: str) -> None:
        """Record that the file's pages in ``tier`` now live in its extent there."""
        with self._lock, self._transaction():
            self._conn.execute(
                "INSERT OR REPLACE INTO extents VALUES (?, ?, ?)", (dataset, file_key, tier)
            )

    def delete_pages(self, keys: Iterable[PageKey]) -> int:
        """Delete pages, and the rows of their files when no page of the file is left; how many
        file rows went."""
        keys = list(keys)
        files = {(k.dataset, k.file_key) for k in keys}
        with self._lock, self._transaction():
            self._conn.executemany(
                "DELETE FROM pages WHERE dataset = ? AND file_key = ? AND idx = ?",
                [(k.dataset, k.file_key, k.index) for k in keys],
            )
            self._conn.executemany(
                "DELETE FROM packs WHERE dataset = ? AND file_key = ? AND idx = ?",
                [(k.dataset, k.file_key, k.index) for k in keys],
            )
            gone = self._conn.executemany(
                "DELETE FROM files WHERE file_key = ? AND NOT EXISTS "
                "(SELECT 1 FROM pages WHERE dataset = ? AND file_key = ?)",
                [(fk, ds, fk) for ds, fk in files],
            ).rowcount
            self._conn.executemany(
                "DELETE FROM extents WHERE dataset = ? AND file_key = ? AND NOT EXISTS "
                "(SELECT 1 FROM pages WHERE dataset = ? AND file_key = ?)",
                [(ds, fk, ds, fk) for ds, fk in files],
            )
        return gone

    def delete_orphan_files(self) -> int:
        """Delete the file rows no page row refers to any more (after recovery dropped some
        pages); how many."""
        with self._lock, self._transaction():
            return self._conn.execute(
                "DELETE FROM files WHERE NOT EXISTS (SELECT 1 FROM pages p"
                " WHERE p.dataset = files.dataset AND p.file_key = files.file_key)"
            ).rowcount

    def set_atimes(self, items: Iterable[tuple[PageKey, int]]) -> None:
        with self._lock, self._transaction():
            self._conn.executemany(
                "UPDATE pages SET atime = ? WHERE dataset = ? AND file_key = ? AND idx = ?",
                [(atime, k.dataset, k.file_key, k.index) for k, atime in items],
            )

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the database and truncate it (frees disk space: the WAL
        only shrinks at a checkpoint, and SQLite's automatic one waits for ~4 MB of log)."""
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._read_lock:
            self._reader.close()
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")


def open_index(state_dir: Path) -> tuple[PageIndex, dict[str, tuple[int, int, int]], bool]:
    """Open the index and take its :meth:`PageIndex.totals`, moving an unreadable one aside:
    ``(index, totals, fresh)``.

    ``fresh`` is True when the database was replaced by an empty one, so the caller knows to
    rebuild from the tiers.
    """
    private_dir(state_dir)
    path = state_dir / INDEX_FILE
    try:
        index = PageIndex(path)
        try:
            return index, index.totals(), False
        except BaseException:
            index.close()
            raise
    except sqlite3.DatabaseError as exc:
        aside = move_aside(path)
        log.warning(
            "page index %s is unreadable (%s); moved it to %s and rebuilding from the tiers",
            path,
            exc,
            aside,
        )
    return PageIndex(path), {}, True
