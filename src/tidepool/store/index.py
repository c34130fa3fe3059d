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

Tables (schema 6, ``pageindex.sqlite3``)::

    datasets(id, name) / tiers(id, root)      -- names, each stored once
    pages(dataset, file_key, idx, tier, size, checksum, atime, pack)   -- one row per page
    extents(dataset, file_key, tier)                      -- files kept as one extent
    pages_by_recency ON pages(tier, atime, size)          -- eviction order per tier;
                                                          -- covers the tier totals

Every row is as small as it can be, because a million-file dataset has a million of each (issue
16's disk budget is 1.1x the data + 200 MB): a dataset and a tier are small integers naming a row
of ``datasets`` / ``tiers`` (a tier by its absolute root path, so reordering tiers in the spec
does not confuse it); a file key — 32 hex digits everywhere else — is its 16 bytes (a key that is
not lowercase hex, which only tests make, is kept as text); ``pack`` is the page's row in its
tier's pack database (:mod:`tidepool.store.packs`), NULL for a page with a file of its own.
``size`` is the page file size (header included); ``checksum`` the xxh3 of the data, stored as a
signed 64-bit integer. A file with a row in ``extents`` has its pages in that tier's extent file
(:mod:`tidepool.core.pages`) rather than in page files of their own. ``size`` is in the recency
index so the totals read at start-up scan the index alone (0.13 s for a million pages, 2.2 s
through the table). At 1,000,000 one-page files this is ~85 bytes a file.

No table says what a file key stands for: a key is the hash of dataset, path and version
(:func:`tidepool.core.pages.file_key`), and whoever needs the files of a dataset in path order
walks its metadata (which names the version served now) and asks the index for each key's pages.
Schema 5 kept ``files(file_key, dataset, path, version)`` and an index of it by path: 138 of its
219 MiB at a million files, and two of the three b-trees a load of hashed keys writes at random.
A schema-5 index loses them when opened (dropped, then the file is vacuumed: ~1.5 s at a
million pages, once); a schema-5 release rolled back to recreates them empty, and lists no held
files until its puts refill them.

Schemas 1 to 4 lived in ``index.sqlite3``: :func:`open_index` rewrites such an index into this file
once (a million pages in seconds) and deletes it. A release before schema 5, rolled back to, finds
no ``index.sqlite3`` and rebuilds its index from the page files (packed pages it never knew are
fetched again); when a rolled-back release has written an ``index.sqlite3`` since, that one is the
newer and is rewritten again at the next upgrade.

Limits: one process owns the index at a time (the page store holds the state directory's lock,
:mod:`tidepool.store.tierdir`). An unreadable database file is moved aside
(``<name>.corrupt-<ts>``) by :func:`open_index` and the store rebuilds from its tiers.
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

INDEX_FILE = "pageindex.sqlite3"
OLD_INDEX_FILE = "index.sqlite3"
"""Where schemas 1 to 4 kept the index: rewritten into :data:`INDEX_FILE` when opened."""
WAL_PAGES = 8192
"""Pages of write-ahead log (32 MiB) before SQLite folds it into the database, and what the log
is cut back to afterwards. Each fold rewrites every page the log touched and syncs the database;
a load of many files dirties about one page per file (their keys are hashes, spread over the
whole table), so at SQLite's default of 1,000 pages a load folded every few batches: 100,000
one-page puts in batches of 64 went at 11.5k/s, at 17k/s with this."""
SCHEMA_VERSION = 6
FILES_PER_QUERY = 500
"""File keys asked about in one query by the lookups of many files (SQLite's limit on a
statement's parameters is 32,766; this keeps each query's plan and result small)."""

_TABLES = """
CREATE TABLE IF NOT EXISTS datasets (
    id   INTEGER PRIMARY KEY,
    name TEXT    NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS tiers (
    id   INTEGER PRIMARY KEY,
    root TEXT    NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS pages (
    dataset  INTEGER NOT NULL,
    file_key BLOB    NOT NULL,
    idx      INTEGER NOT NULL,
    tier     INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    checksum INTEGER NOT NULL,
    atime    INTEGER NOT NULL,
    pack     INTEGER,
    PRIMARY KEY (dataset, file_key, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS extents (
    dataset  INTEGER NOT NULL,
    file_key BLOB    NOT NULL,
    tier     INTEGER NOT NULL,
    PRIMARY KEY (dataset, file_key)
) WITHOUT ROWID;
"""
_INDEXES = """
CREATE INDEX IF NOT EXISTS pages_by_recency ON pages (tier, atime, size);
"""
_SCHEMA = _TABLES + _INDEXES

_ROW = (
    "SELECT p.dataset, p.file_key, p.idx, p.tier, p.size, p.checksum, p.atime,"
    " e.tier IS NOT NULL, p.pack FROM pages p LEFT JOIN extents e"
    " ON e.dataset = p.dataset AND e.file_key = p.file_key AND e.tier = p.tier"
)
"""A page row, whether it lives in its file's extent, and its pack id if it is packed."""

_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1


def _to_sql(digest: int) -> int:
    return digest - _U64 if digest > _I64_MAX else digest


def _from_sql(value: int) -> int:
    return value % _U64


def sql_key(file_key: str) -> bytes | str:
    """A file key as the index stores it: the 16 bytes of a key of 32 lowercase hex digits
    (every key :func:`tidepool.core.pages.file_key` makes), any other key as it is."""
    if len(file_key) == 32:  # (on every same-host read: no context manager here)
        try:
            raw = bytes.fromhex(file_key)
        except ValueError:
            return file_key
        if raw.hex() == file_key:
            return raw
    return file_key


def key_of(value: bytes | str) -> str:
    """The file key a stored value stands for (:func:`sql_key` undone)."""
    return value.hex() if isinstance(value, bytes) else value


def _key_order(value: bytes | str) -> tuple[bool, Any]:
    return isinstance(value, str), value


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


class _Names:
    """A table of names (datasets, tier roots) stored as small integers, mirrored in memory: a
    handful of rows, every name the index was ever given (never deleted, so an id always means
    the same name)."""

    def __init__(self, conn: sqlite3.Connection, table: str, column: str) -> None:
        self._table, self._column = table, column
        rows = conn.execute(f"SELECT id, {column} FROM {table}").fetchall()
        self._ids: dict[str, int] = {name: i for i, name in rows}
        self._names: dict[int, str] = {i: name for i, name in rows}

    def get(self, name: str) -> int | None:
        return self._ids.get(name)

    def name(self, ident: int) -> str:
        return self._names[ident]

    def add(self, conn: sqlite3.Connection, name: str) -> int:
        """The id of ``name``, committed first if it is new (the caller holds the write lock
        outside any transaction, so an id in memory is always one in the database)."""
        ident = self._ids.get(name)
        if ident is None:
            t, c = self._table, self._column
            conn.execute(f"INSERT OR IGNORE INTO {t} ({c}) VALUES (?)", (name,))
            (ident,) = conn.execute(f"SELECT id FROM {t} WHERE {c} = ?", (name,)).fetchone()
            self._names[ident] = name
            self._ids[name] = ident
        return int(ident)


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


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


_Where = tuple[int, bytes | str, int]


class PageIndex:
    """Thread-safe access to the index database; every write is its own committed transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn = connect(path)
        try:
            self._conn.executescript(_SCHEMA)
            _drop_files(self._conn, path)
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._datasets = _Names(self._conn, "datasets", "name")
            self._tiers = _Names(self._conn, "tiers", "root")
        except BaseException:
            self._conn.close()
            raise
        self._read_lock = threading.Lock()
        self._reader = connect(path)
        forksafe.guard(self)

    def fork_locks(self) -> list[threading.Lock]:
        return [self._lock, self._read_lock]

    # -- names (the write lock held for add) --------------------------------------------------

    def _where(self, key: PageKey) -> _Where | None:
        """A page key as its row's primary key, or None when its dataset was never indexed."""
        ds = self._datasets.get(key.dataset)
        return None if ds is None else (ds, sql_key(key.file_key), key.index)

    def _wheres(self, keys: Iterable[PageKey]) -> list[_Where]:
        return [w for k in keys if (w := self._where(k)) is not None]

    def _rows(self, where: str, args: tuple[object, ...]) -> list[PageRow]:
        """Page rows matching ``where`` (on ``p``), through the read connection."""
        with self._read_lock:
            found = self._reader.execute(f"{_ROW} WHERE {where}", args).fetchall()
        dataset, tier = self._datasets.name, self._tiers.name
        return [
            PageRow(
                PageKey(dataset(ds), key_of(fk), idx),
                tier(t),
                size,
                _from_sql(digest),
                atime,
                bool(extent),
                pk,
            )
            for ds, fk, idx, t, size, digest, atime, extent, pk in found
        ]

    def row(self, key: PageKey) -> PageRow | None:
        """The row of one page, if it is indexed."""
        where = self._where(key)
        if where is None:
            return None
        rows = self._rows("p.dataset = ? AND p.file_key = ? AND p.idx = ?", where)
        return rows[0] if rows else None

    def has(self, key: PageKey) -> bool:
        where = self._where(key)
        if where is None:
            return False
        with self._read_lock:
            return (
                self._reader.execute(
                    "SELECT 1 FROM pages WHERE dataset = ? AND file_key = ? AND idx = ?", where
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
            found.setdefault(key_of(fk), set()).add(i)
        return found

    def _of_files(
        self, query: str, dataset: str, file_keys: Iterable[str]
    ) -> Iterator[tuple[Any, ...]]:
        """The rows of ``query`` (its ``{}`` a list of file keys) for a dataset's ``file_keys``,
        asked :data:`FILES_PER_QUERY` keys at a time through the read connection."""
        ds = self._datasets.get(dataset)
        if ds is None:
            return
        names = sorted({sql_key(k) for k in file_keys}, key=_key_order)
        for start in range(0, len(names), FILES_PER_QUERY):
            part = names[start : start + FILES_PER_QUERY]
            sql = query.format(", ".join("?" * len(part)))
            with self._read_lock:
                rows = self._reader.execute(sql, (ds, *part)).fetchall()
            yield from rows

    def file_pages(
        self, dataset: str, file_key: str, first: int = 0, last: int | None = None
    ) -> list[PageRow]:
        """The rows of a file's pages from index ``first`` to ``last`` (all: None), in order."""
        ds = self._datasets.get(dataset)
        if ds is None:
            return []
        return self._rows(
            "p.dataset = ? AND p.file_key = ? AND p.idx BETWEEN ? AND ? ORDER BY p.idx",
            (ds, sql_key(file_key), first, _I64_MAX if last is None else last),
        )

    def indexes(self, dataset: str, file_key: str) -> list[int]:
        """The indexes of a file's indexed pages, in order."""
        ds = self._datasets.get(dataset)
        if ds is None:
            return []
        with self._read_lock:
            return [
                i
                for (i,) in self._reader.execute(
                    "SELECT idx FROM pages WHERE dataset = ? AND file_key = ? ORDER BY idx",
                    (ds, sql_key(file_key)),
                )
            ]

    def oldest(self, tier: str, limit: int) -> list[PageRow]:
        """The ``limit`` least recently used pages of a tier, oldest first
        (``pages_by_recency``)."""
        t = self._tiers.get(tier)
        return [] if t is None else self._rows("p.tier = ? ORDER BY p.atime LIMIT ?", (t, limit))

    def window(self, after: PageKey | None, limit: int) -> list[PageRow]:
        """At most ``limit`` rows in key order after the key ``after`` (None: from the first):
        a walk over the whole index that holds one window in memory at a time (in the order of
        the stored keys: datasets by id, file keys by their bytes)."""
        order = " ORDER BY p.dataset, p.file_key, p.idx LIMIT ?"
        if after is None:
            return self._rows("1" + order, (limit,))
        where = self._where(after)
        if where is None:
            return []
        return self._rows("(p.dataset, p.file_key, p.idx) > (?, ?, ?)" + order, (*where, limit))

    def totals(self) -> dict[str, tuple[int, int, int]]:
        """``tier -> (pages, bytes, highest atime)`` over the whole index: one scan of
        ``pages_by_recency``, in SQLite (a damaged index raises here; a damaged table is found
        by the lookups that reach it)."""
        with self._read_lock:
            return {
                self._tiers.name(tier): (n, size, atime)
                for tier, n, size, atime in self._reader.execute(
                    "SELECT tier, COUNT(*), SUM(size), MAX(atime)"
                    " FROM pages INDEXED BY pages_by_recency GROUP BY tier"
                )
            }

    def file_count(self, dataset: str) -> int:
        """How many files of the dataset have a page: one walk of its part of the primary key
        (0.25 s at a million pages; the store counts from there on)."""
        ds = self._datasets.get(dataset)
        if ds is None:
            return 0
        with self._read_lock:
            (n,) = self._reader.execute(
                "SELECT COUNT(*) FROM (SELECT 1 FROM pages WHERE dataset = ? GROUP BY file_key)",
                (ds,),
            ).fetchone()
        return int(n)

    def delete_tiers_except(self, tiers: Iterable[str]) -> int:
        """Delete the rows of tiers not in ``tiers`` (no longer configured), with their extents;
        how many page rows."""
        keep = [t for root in tiers if (t := self._tiers.get(root)) is not None]
        marks = ", ".join("?" * len(keep))
        with self._lock, self._transaction():
            n = self._conn.execute(f"DELETE FROM pages WHERE tier NOT IN ({marks})", keep).rowcount
            self._conn.execute(f"DELETE FROM extents WHERE tier NOT IN ({marks})", keep)
        return n

    def add_pages(self, rows: Iterable[PageRow]) -> int:
        """Insert (or replace) pages in one transaction; how many files had no page before."""
        rows = list(rows)
        with self._lock:
            ds = {n: self._datasets.add(self._conn, n) for n in {r.key.dataset for r in rows}}
            tiers = {root: self._tiers.add(self._conn, root) for root in {r.tier for r in rows}}
            page_params = [
                (
                    ds[r.key.dataset],
                    sql_key(r.key.file_key),
                    r.key.index,
                    tiers[r.tier],
                    r.size,
                    _to_sql(r.checksum),
                    r.atime,
                    r.pack,
                )
                for r in rows
            ]
            files = {(p[0], p[1]) for p in page_params}
            with self._transaction():
                new = sum(not self._has_pages(f) for f in files)
                self._conn.executemany(
                    "INSERT OR REPLACE INTO pages VALUES (?, ?, ?, ?, ?, ?, ?, ?)", page_params
                )
            return new

    def _has_pages(self, file: tuple[int, bytes | str]) -> bool:
        """Whether a file (dataset id, stored key) has a page row (write connection, its lock
        held): one probe of the primary key."""
        return (
            self._conn.execute(
                "SELECT 1 FROM pages WHERE dataset = ? AND file_key = ? LIMIT 1", file
            ).fetchone()
            is not None
        )

    def set_tier(self, keys: Iterable[PageKey], tier: str) -> None:
        """Record that pages moved to another tier (one transaction); an extent moves with
        its pages."""
        with self._lock:
            t = self._tiers.add(self._conn, tier)
            wheres = self._wheres(keys)
            files = {(ds, fk) for ds, fk, _ in wheres}
            with self._transaction():
                self._conn.executemany(
                    "UPDATE pages SET tier = ? WHERE dataset = ? AND file_key = ? AND idx = ?",
                    [(t, *w) for w in wheres],
                )
                self._conn.executemany(
                    "UPDATE extents SET tier = ? WHERE dataset = ? AND file_key = ?",
                    [(t, ds, fk) for ds, fk in files],
                )

    def move_pack(self, key: PageKey, tier: str, pack: int) -> None:
        """Record that a packed page moved to another tier's pack database, as row ``pack``."""
        with self._lock:
            t = self._tiers.add(self._conn, tier)
            where = self._where(key)
            if where is None:
                return
            with self._transaction():
                self._conn.execute(
                    "UPDATE pages SET tier = ?, pack = ?"
                    " WHERE dataset = ? AND file_key = ? AND idx = ?",
                    (t, pack, *where),
                )

    def pack_holders(
        self, dataset: str, keys: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], tuple[str, int]]:
        """``(file_key, idx) -> (tier, pack id)`` of those of ``keys`` that are packed pages."""
        wanted = set(keys)
        query = (
            "SELECT file_key, idx, tier, pack FROM pages"
            " WHERE dataset = ? AND pack IS NOT NULL AND file_key IN ({})"
        )
        rows = self._of_files(query, dataset, (fk for fk, _ in wanted))
        found = ((key_of(fk), i, t, pk) for fk, i, t, pk in rows)
        return {(fk, i): (self._tiers.name(t), pk) for fk, i, t, pk in found if (fk, i) in wanted}

    def set_extent(self, dataset: str, file_key: str, tier: str) -> None:
        """Record that the file's pages in ``tier`` now live in its extent there."""
        with self._lock:
            row = (
                self._datasets.add(self._conn, dataset),
                sql_key(file_key),
                self._tiers.add(self._conn, tier),
            )
            with self._transaction():
                self._conn.execute("INSERT OR REPLACE INTO extents VALUES (?, ?, ?)", row)

    def delete_pages(self, keys: Iterable[PageKey]) -> int:
        """Delete pages (and the extents of files left without pages); how many files lost their
        last page."""
        wheres = self._wheres(keys)
        files = {(ds, fk) for ds, fk, _ in wheres}
        with self._lock, self._transaction():
            had = [f for f in files if self._has_pages(f)]
            self._conn.executemany(
                "DELETE FROM pages WHERE dataset = ? AND file_key = ? AND idx = ?", wheres
            )
            gone = sum(not self._has_pages(f) for f in had)
            self._conn.executemany(
                "DELETE FROM extents WHERE dataset = ? AND file_key = ? AND NOT EXISTS "
                "(SELECT 1 FROM pages WHERE dataset = ? AND file_key = ?)",
                [(ds, fk, ds, fk) for ds, fk in files],
            )
        return gone

    def set_atimes(self, items: Iterable[tuple[PageKey, int]]) -> None:
        params = [(atime, *w) for k, atime in items if (w := self._where(k)) is not None]
        with self._lock, self._transaction():
            self._conn.executemany(
                "UPDATE pages SET atime = ? WHERE dataset = ? AND file_key = ? AND idx = ?",
                params,
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


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _drop_files(conn: sqlite3.Connection, path: Path) -> None:
    """Drop schema 5's ``files`` table and its index, if there, and give their space back (a
    vacuum: ~1.5 s at a million pages, once). The version says 5 until the vacuum is done, so a
    kill between the drop and the vacuum vacuums at the next open (the dropped tables' pages
    would otherwise stay in the file as free pages)."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version != 5 and "files" not in _tables(conn, "main"):
        return
    started = time.monotonic()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("DROP INDEX IF EXISTS files_by_path")
    conn.execute("DROP TABLE IF EXISTS files")
    conn.execute("PRAGMA user_version=5")
    conn.execute("COMMIT")
    conn.execute("VACUUM")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the smaller file now, not at the next fold
    log.info(
        "page index %s: its files table dropped (schema %d) in %.1f s",
        path,
        SCHEMA_VERSION,
        time.monotonic() - started,
    )


def _tables(conn: sqlite3.Connection, schema: str) -> set[str]:
    return {
        name
        for (name,) in conn.execute(f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table'")
    }


def upgrade(old: Path, new: Path) -> int:
    """Rewrite an index of schema 1 to 4 (``old``: names and hex keys in every row, packs in a
    table of their own, a table of files) as schema 6 at ``new``, then delete ``old``; how many
    pages.

    Built beside ``new`` without a journal (a crash part way leaves ``old`` in place and the
    next open starts again), the tables first and their indexes after (sorted once, not
    updated a row at a time), then renamed over ``new``: a million pages in ~16 s, once.
    Raises :class:`sqlite3.DatabaseError` for an ``old`` that cannot be read."""
    tmp = new.with_name(f"{new.name}.upgrading")
    _remove_database(tmp)
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    os.close(fd)
    conn = sqlite3.connect(str(tmp), isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")  # 256 MiB at most, while it runs
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.executescript(_TABLES)
        conn.execute("ATTACH DATABASE ? AS old", (str(old),))
        conn.execute(f"PRAGMA old.mmap_size={1 << 32}")  # read in place, not a pread a page
        conn.create_function("tp_key", 1, sql_key, deterministic=True)
        have = _tables(conn, "old")
        if not {"pages", "files"} <= have:  # (schemas 1 to 4 all had both)
            raise sqlite3.DatabaseError(f"{old} has no pages and files tables")
        pack = (
            "(SELECT k.id FROM old.packs k WHERE"
            " k.dataset = p.dataset AND k.file_key = p.file_key AND k.idx = p.idx)"
            if "packs" in have
            else "NULL"
        )
        extent_tiers = " UNION SELECT tier FROM old.extents" if "extents" in have else ""
        conn.execute("BEGIN")
        conn.execute("INSERT OR IGNORE INTO datasets (name) SELECT DISTINCT dataset FROM old.pages")
        conn.execute(f"INSERT OR IGNORE INTO tiers (root) SELECT tier FROM old.pages{extent_tiers}")
        n = conn.execute(
            "INSERT INTO pages SELECT d.id, tp_key(p.file_key), p.idx, t.id, p.size,"
            f" p.checksum, p.atime, {pack} FROM old.pages p"
            " JOIN datasets d ON d.name = p.dataset JOIN tiers t ON t.root = p.tier"
        ).rowcount
        if "extents" in have:
            conn.execute(
                "INSERT OR IGNORE INTO extents SELECT d.id, tp_key(e.file_key), t.id"
                " FROM old.extents e JOIN datasets d ON d.name = e.dataset"
                " JOIN tiers t ON t.root = e.tier"
            )
        conn.execute("COMMIT")
        conn.execute("DETACH DATABASE old")
        conn.executescript(_INDEXES)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    finally:
        conn.close()
    _fsync(tmp)  # no journal: written whole before it replaces anything
    os.replace(tmp, new)
    _fsync(new.parent)
    _remove_database(old)
    return int(n)


def open_index(state_dir: Path) -> tuple[PageIndex, dict[str, tuple[int, int, int]], bool]:
    """Open the index and take its :meth:`PageIndex.totals`, upgrading an index of an older
    schema (:func:`upgrade`) and moving an unreadable one aside: ``(index, totals, fresh)``.

    ``fresh`` is True when the database was replaced by an empty one, so the caller knows to
    rebuild from the tiers.
    """
    private_dir(state_dir)
    path = state_dir / INDEX_FILE
    old = state_dir / OLD_INDEX_FILE
    fresh = False
    if old.exists():
        started = time.monotonic()
        try:
            n = upgrade(old, path)
            log.info(
                "page index %s: %d pages rewritten to schema %d as %s in %.1f s",
                old,
                n,
                SCHEMA_VERSION,
                path.name,
                time.monotonic() - started,
            )
        except sqlite3.DatabaseError as exc:
            # it was written after ``path`` (a rolled-back release wrote it), so ``path`` is
            # stale: both go, and the store rebuilds from its tiers
            aside = move_aside(old)
            _remove_database(path)
            fresh = True
            log.warning(
                "page index %s is unreadable (%s); moved it to %s and rebuilding from the tiers",
                old,
                exc,
                aside,
            )
    try:
        index = PageIndex(path)
        try:
            return index, index.totals(), fresh
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
