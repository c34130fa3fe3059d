"""Small files packed into one SQLite database per tier, instead of a page file each (issue 16).

A file system gives every page file a 4 KiB block and an inode: a million 1 KiB files cost
4.6 GB of disk for 1 GB of data, and loading them costs a file creation each. A page that is a
whole file of at most :data:`tidepool.core.pages.PACK_MAX` bytes (:func:`tidepool.core.pages.packs`)
is instead a row of its tier's pack database, ``<tier root>/packs.sqlite3``::

    packs(id INTEGER PRIMARY KEY AUTOINCREMENT, file_key TEXT, idx INTEGER, data BLOB)

``file_key`` is stored as the index stores it (:func:`tidepool.store.index.sql_key`: the key's
16 bytes; rows written before are its 32 hex digits, read alike).

Rows are appended in id order into 64 KiB database pages, so they are packed end to end
(SQLite stores a row of up to ~64 KiB inside its leaf page, no overflow page); a batch of pages is
one transaction. Ids are never reused (``AUTOINCREMENT``). The page index (:mod:`.index`) maps
a page to its pack id (column ``pages.pack``) and keeps its checksum, as for a page file: a
reader checks the row's key and the data's checksum against the index, so a row that is not the
page it is looked up as is never served. Why SQLite rather than segment files of our own: a row is
written whole or not at all (no torn page), deleted rows' space is reused by later rows, and the
library does the free-space bookkeeping a segment format would need (holes, compaction).

Order of writes, as for page files: the row is committed to the pack database first, then the
page to the index; a crash in between leaves a row no index entry refers to, which the store's
background check removes (only rows older than the store's opening: a put in progress has
higher ids). A page is deleted from the index first, then from the pack database.

Space: deleted rows free space inside their database pages, reused by later rows; the file does
not shrink (the tier's quota bounds it, as it bounds page files). The tier counts a packed page
as a page file would (header included), so its quota stays conservative.

Same-host readers (:mod:`tidepool.client.local`) read the index and pack databases read-only
(:class:`PackReader`), with the same ownership checks as for page files.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from tidepool.core.pages import PACK_FILE, PageKey, checksum
from tidepool.store import forksafe
from tidepool.store.index import key_of, sql_key

DB_PAGE_SIZE = 1 << 16
"""SQLite page size of a pack database: rows of up to ~64 KiB stay in their leaf page."""
WAL_PAGES = 64
"""Database pages of write-ahead log (4 MiB) before SQLite folds it into the database (and
what the log is cut back to afterwards): disk the tier's quota does not count."""

ATTACH_RETRY = 1.0
"""Seconds before a same-host reader looks again for a tier's pack database it did not find."""
MMAP_BYTES = 1 << 30
"""How much of a database a connection reads through a memory map (SQLite's ``mmap_size``):
a row is then read out of the kernel's page cache in place, not copied with its whole 64 KiB
database page into SQLite's own cache first (half the cost of a small read)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS packs (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    file_key TEXT    NOT NULL,
    idx      INTEGER NOT NULL,
    data     BLOB    NOT NULL
);
"""


def _connect(path: str, *, create: bool) -> sqlite3.Connection:
    if create:  # 0600 first: SQLite gives its -wal and -shm files the database's mode
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        os.close(fd)
        conn = sqlite3.connect(path, timeout=30.0, check_same_thread=False, isolation_level=None)
        conn.execute(f"PRAGMA page_size={DB_PAGE_SIZE}")  # only takes on a new database
    else:
        conn = sqlite3.connect(
            f"file:{quote(path)}?mode=ro", uri=True, timeout=5.0, check_same_thread=False
        )
    conn.execute("PRAGMA journal_mode=WAL" if create else "PRAGMA query_only=1")
    conn.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
    if create:
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit={WAL_PAGES * DB_PAGE_SIZE}")
    return conn


class PackFile:
    """The pack database of one tier: append rows, read one, delete some. Thread-safe: writes
    go through one connection under a lock, reads through a second (WAL: a read never waits
    behind a write's transaction)."""

    def __init__(self, root: str) -> None:
        self.path = f"{root}/{PACK_FILE}"
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self.opened_max = 0
        """The highest id when opened: rows up to it were written before this store."""
        if os.path.exists(self.path):
            with self._lock:
                self._open()
            self.opened_max = self._max_id()
        forksafe.guard(self)

    def fork_locks(self) -> list[threading.Lock]:
        return [self._lock, self._read_lock]

    def _open(self) -> sqlite3.Connection:
        """The write connection, the database created on first use (lock held): a tier that
        never holds a small file has no pack database."""
        if self._conn is None:
            conn = _connect(self.path, create=True)
            try:
                conn.executescript(_SCHEMA)
                reader = _connect(self.path, create=True)
            except BaseException:
                conn.close()
                raise
            with self._read_lock:
                self._conn, self._reader = conn, reader
        return self._conn

    def _max_id(self) -> int:
        with self._read_lock:
            assert self._reader is not None
            (n,) = self._reader.execute("SELECT COALESCE(MAX(id), 0) FROM packs").fetchone()
        return int(n)

    def add(self, rows: Sequence[tuple[PageKey, memoryview]]) -> list[int]:
        """Append pages in one transaction; their ids, in order (``sqlite3.Error`` on failure,
        nothing added)."""
        with self._lock:
            conn = self._open()
            conn.execute("BEGIN IMMEDIATE")
            try:
                ids = [
                    int(
                        conn.execute(
                            "INSERT INTO packs (file_key, idx, data) VALUES (?, ?, ?)",
                            (sql_key(key.file_key), key.index, data),
                        ).lastrowid
                        or 0
                    )
                    for key, data in rows
                ]
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return ids

    def read(self, pack: int, key: PageKey, length: int, digest: int) -> bytes | None:
        """The data of row ``pack`` if it is page ``key`` of ``length`` bytes with checksum
        ``digest``; None when the row is gone or is not that page (``sqlite3.Error`` when the
        database cannot be read)."""
        row = self._one("SELECT file_key, idx, data FROM packs WHERE id = ?", pack)
        return _checked(row, key, length, digest)

    def length(self, pack: int) -> int | None:
        """The data length of row ``pack`` (None: no such row), without reading the data."""
        row = self._one("SELECT length(data) FROM packs WHERE id = ?", pack)
        return None if row is None else int(row[0])

    def _one(self, sql: str, pack: int) -> Any:
        """The row ``sql`` finds for row id ``pack`` (None: none, or no database yet)."""
        with self._read_lock:
            if self._reader is None:
                return None
            return self._reader.execute(sql, (pack,)).fetchone()

    def keys(self, after: int, upto: int, limit: int) -> list[tuple[int, str, int]]:
        """``(id, file_key, idx)`` of at most ``limit`` rows with ids in ``(after, upto]``."""
        with self._read_lock:
            if self._reader is None:
                return []
            rows = self._reader.execute(
                "SELECT id, file_key, idx FROM packs WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
                (after, upto, limit),
            ).fetchall()
        return [(i, key_of(fk), idx) for i, fk, idx in rows]

    def delete(self, ids: Sequence[int]) -> None:
        """Delete rows in one transaction (``sqlite3.Error`` on failure)."""
        if not ids:
            return
        with self._lock:
            conn = self._open()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("DELETE FROM packs WHERE id = ?", [(i,) for i in ids])
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the database and truncate it (frees disk space)."""
        with self._lock, contextlib.suppress(sqlite3.Error):
            if self._conn is not None:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
        self.checkpoint()
        with self._lock:
            if self._conn is not None:
                self._conn.close()


def _checked(
    row: tuple[str, int, bytes] | None, key: PageKey, length: int, digest: int
) -> bytes | None:
    if row is None:
        return None
    fkey, idx, data = row
    if key_of(fkey) != key.file_key or idx != key.index or len(data) != length:
        return None
    if checksum(data) != digest:
        return None
    return data


_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


def _trusted(path: str, owner: int) -> bool:
    """Whether ``path`` is a regular file of ``owner`` no one else can write to (not a link)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_uid == owner and not st.st_mode & _OTHERS_WRITE


class PackReader:
    """Read-only lookups of packed pages for a same-host reader: one statement finds the page in
    the worker's index (its tier and checksum) and reads its row from that tier's pack
    database, attached to the index's connection.

    Only databases owned by ``owner`` that no one else can write to, in the tier directories
    the reader already trusts, are opened, read-only. A tier's pack database is attached the
    first time the index names that tier (a tier that has none yet is asked again at most once
    every :data:`ATTACH_RETRY` seconds). Lookups are serialised (one at a time per process), on
    connections of this process (a forked data-loader worker opens its own)."""

    def __init__(self, index: str, tiers: Sequence[str], owner: int) -> None:
        self.index = index
        self.tiers = frozenset(tiers)
        self.owner = owner
        self._pid = 0
        self._conn: sqlite3.Connection | None = None
        self._attached: list[str] = []
        self._query = ""
        self._tried: dict[str, float] = {}
        self._lock = threading.Lock()
        """Held around each lookup, so a fork never happens in the middle of one
        (:mod:`.forksafe`)."""
        forksafe.guard(self)

    def fork_locks(self) -> list[threading.Lock]:
        return [self._lock]

    def usable(self) -> bool:
        """Whether the index is a file the reader may trust (in a directory only its owner can
        write to)."""
        parent = os.path.dirname(self.index)
        try:
            st = os.stat(parent)
        except OSError:
            return False
        return (
            _trusted(self.index, self.owner)
            and st.st_uid == self.owner
            and not st.st_mode & _OTHERS_WRITE
        )

    def read(self, key: PageKey, length: int) -> bytes | None:
        """The verified data of a packed page, or None (not packed here, gone, not trusted,
        or not the page the index says: the data must have the length and the checksum the
        index recorded)."""
        where = (key.dataset, sql_key(key.file_key), key.index)
        try:
            with self._lock:
                conn = self._connection()
                found = conn.execute(self._query, (*where, *self._attached)).fetchall()
                if not found:
                    return None
                tier, digest, data = found[0]
                if data is None and self._attach(conn, tier):
                    found = conn.execute(self._query, (*where, *self._attached)).fetchall()
                    tier, digest, data = found[0] if found else (tier, digest, None)
        except sqlite3.Error:
            return None
        if data is None or len(data) != length or checksum(data) != digest % (1 << 64):
            return None
        return bytes(data)

    def _connection(self) -> sqlite3.Connection:
        """This process's connection to the index (lock held): a forked child opens its own,
        never using its parent's (SQLite forbids carrying a connection across a fork)."""
        if self._pid != os.getpid() or self._conn is None:
            self._pid = os.getpid()
            self._conn = _connect(self.index, create=False)
            self._attached, self._tried = [], {}
            self._query = self._build()
        return self._conn

    def _attach(self, conn: sqlite3.Connection, tier: str) -> bool:
        """Attach ``tier``'s pack database if it is one this reader may read and is not attached
        yet (lock held); whether it was."""
        if tier in self._attached or tier not in self.tiers:
            return False
        now = time.monotonic()
        if now - self._tried.get(tier, -ATTACH_RETRY) < ATTACH_RETRY:
            return False
        self._tried[tier] = now
        path = f"{tier}/{PACK_FILE}"
        if not _trusted(path, self.owner):
            return False
        name = f"t{len(self._attached)}"
        conn.execute(f"ATTACH DATABASE ? AS {name}", (f"file:{quote(path)}?mode=ro",))
        conn.execute(f"PRAGMA {name}.mmap_size={MMAP_BYTES}")
        self._attached.append(tier)
        self._query = self._build()
        return True

    def _build(self) -> str:
        """The lookup statement over the attached tiers (``?4``… their roots)."""
        data = " ".join(
            f"WHEN ?{4 + i} THEN (SELECT data FROM t{i}.packs WHERE id = p.pack)"
            for i in range(len(self._attached))
        )
        return (
            f"SELECT t.root, p.checksum, {f'CASE t.root {data} END' if data else 'NULL'}"
            " FROM pages p JOIN tiers t ON t.id = p.tier"
            " WHERE p.dataset = (SELECT id FROM datasets WHERE name = ?1)"
            " AND p.file_key = ?2 AND p.idx = ?3 AND p.pack IS NOT NULL"
        )
