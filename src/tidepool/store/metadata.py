"""Persisted file metadata of the datasets: ``stat`` results and directory listings.

The worker caches what the origin said about a path (``info``) and a directory (``listing``) with
the time it was fetched; the TTL decision (``metadataSyncPolicy``) is the caller's. Both are
stored in SQLite (``state_dir/metadata.sqlite3``, WAL, ``synchronous=NORMAL``) so a restarted
worker answers ``ls`` and ``stat`` while the origin is unreachable. Writing a listing also
records the info of every entry (same ``fetched_at``), so a listed file can be stat-ed offline.
The last known size of a whole dataset (``total``: bytes and files, as Fluid's ``ufsTotal``) is
kept too, so a restarted worker knows what share of it is cached before the origin answers.
:meth:`MetadataStore.drop_prefix` forgets a path and everything below it (``tidepool refresh``).

A recursive find is kept as the ``info`` rows of what it found plus one ``finds`` row saying when
the whole prefix was listed (a table added in place: an older state directory gains it empty).
:meth:`MetadataStore.info_rows` pages through those rows in path order with the primary key's
index (``path > ? ORDER BY path LIMIT ?``), so a listing of a million keys is served a page at a
time and never read into memory whole.

Writes are seen at once by readers (they go to memory first) and committed to SQLite by one
writer thread, many writes to a transaction: a 20,000-entry listing never stalls the worker's
event loop on a commit. :meth:`MetadataStore.flush` waits for the writer; ``close`` flushes. A
SIGKILL can lose the writes of the last moments — metadata, which is fetched again.

A bounded in-memory LRU sits in front of the database for hot lookups (absent keys included);
values not yet committed are kept apart until they are, so the LRU never drops them.

Stored form: JSON text, an info of the plain shape (``name``, ``type``, ``size``, ``version``,
``mtime``) as an array without its keys (:func:`_short`): ``["f",1024,"1024-17…",17…]`` for an
info row, whose name is its path, ``["d000/f1.bin","f",…]`` in a listing; a version that is the
one an origin without ETags gives (``size-mtime``) is stored as ``0``. Rows written before
(objects) read as they were.

Limits: values are JSON (dicts of str/int/float/bool/None/lists); listing entries are keyed by
their ``"name"`` — the same path form the caller uses with :meth:`MetadataStore.put_info`. Values
handed out are shallow copies: do not mutate the entry dicts of a listing. One process owns the
database; an unreadable one is moved aside and started afresh (metadata can be refetched).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from tidepool.core import jsoncodec
from tidepool.core.pages import version_of
from tidepool.store import forksafe
from tidepool.store.index import connect, move_aside
from tidepool.store.tierdir import private_dir

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.sqlite3"
DEFAULT_CACHE_ENTRIES = 100_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS info (
    dataset    TEXT NOT NULL,
    path       TEXT NOT NULL,
    info       TEXT NOT NULL,
    fetched_at REAL NOT NULL,
    PRIMARY KEY (dataset, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS listings (
    dataset    TEXT NOT NULL,
    dir        TEXT NOT NULL,
    entries    TEXT NOT NULL,
    fetched_at REAL NOT NULL,
    PRIMARY KEY (dataset, dir)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS finds (
    dataset    TEXT NOT NULL,
    prefix     TEXT NOT NULL,
    fetched_at REAL NOT NULL,
    PRIMARY KEY (dataset, prefix)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS totals (
    dataset    TEXT NOT NULL PRIMARY KEY,
    bytes      INTEGER NOT NULL,
    files      INTEGER NOT NULL,
    fetched_at REAL NOT NULL
) WITHOUT ROWID;
"""

_Kind = Literal["info", "listing"]
_CacheKey = tuple[_Kind, str, str]
_Value = tuple[Any, float] | None  # None: known to be absent
_MISSING: Any = object()

_SHAPE = ("name", "type", "size", "version", "mtime")
"""The keys of a plain file or directory info, in the order :func:`tidepool.core.fileinfo.file_info`
and ``dir_info`` write them: such an info is stored as an array (:func:`_short`)."""
_TYPE_CODES = {"file": "f", "directory": "d"}
_TYPES = {code: name for name, code in _TYPE_CODES.items()}


def _short(info: Any, path: str | None) -> Any:
    """An info as it is stored: one of the plain shape as an array without its keys —
    ``[type, size, version, mtime]`` when its name is ``path`` (an info row's own), else
    ``[name, type, size, version, mtime]`` (a listing's entry), the type as ``f``/``d`` —
    anything else as the object it is. A million files' infos are stored twice (their rows and
    their directories' listings): the keys and the repeated name were 40 % of those bytes."""
    if not isinstance(info, dict) or tuple(info) != _SHAPE or not isinstance(info["type"], str):
        return info
    code = _TYPE_CODES.get(info["type"])
    if code is None:
        return info
    version = info["version"]
    if version and version == _derived(info["size"], info["mtime"]):
        version = 0  # an origin without ETags: the version is size and mtime again
    if info["name"] == path:
        return [code, info["size"], version, info["mtime"]]
    return [info["name"], code, info["size"], version, info["mtime"]]


def _derived(size: Any, mtime: Any) -> str | None:
    """The version :func:`tidepool.core.pages.version_of` gives a file without an ETag, or None
    when ``size`` and ``mtime`` are not numbers it takes."""
    if type(size) is not int or not (mtime is None or type(mtime) is float):
        return None
    return version_of(None, size, mtime)


def _long(value: Any, path: str | None) -> Any:
    """:func:`_short` undone (an object, as older rows hold every info, comes back as it is)."""
    if not isinstance(value, list):
        return value
    if len(value) == 4 and path is not None:
        name, (code, size, version, mtime) = path, value
    elif len(value) == 5:
        name, code, size, version, mtime = value
    else:
        raise ValueError(f"a stored info of {len(value)} fields, not 4 or 5")
    if version == 0:
        version = _derived(size, mtime)
        if version is None:
            raise ValueError(f"a stored info of {path!r} with no version to derive")
    return {"name": name, "type": _TYPES[code], "size": size, "version": version, "mtime": mtime}


def _load_info(raw: str, path: str) -> Any:
    return _long(jsoncodec.loads(raw), path)


def _dump_info(info: Any, path: str) -> str:
    return jsoncodec.dumps(_short(info, path))


def _load_entries(raw: str) -> list[Any]:
    return [_long(e, None) for e in jsoncodec.loads(raw)]


class MetadataStore:
    """Thread-safe persisted stat/listing cache with an in-memory LRU in front."""

    def __init__(self, state_dir: Path, *, cache_entries: int = DEFAULT_CACHE_ENTRIES) -> None:
        state_dir = Path(state_dir)
        private_dir(state_dir)
        self.path = state_dir / METADATA_FILE
        self._lock = threading.Lock()
        self._cache: OrderedDict[_CacheKey, _Value] = OrderedDict()
        self._cache_entries = max(0, cache_entries)
        self._pending: dict[_CacheKey, tuple[_Value, int]] = {}
        """Values written to memory and not yet committed (consulted before the database)."""
        self._queue: queue.Queue[
            tuple[Callable[[sqlite3.Connection], object], tuple[list[_CacheKey], int] | None]
        ] = queue.Queue()
        self._seq = 0
        self._closed = False
        try:
            self._conn = self._open()
        except sqlite3.DatabaseError as exc:
            aside = move_aside(self.path)
            log.warning(
                "metadata store %s is unreadable (%s); moved it to %s and starting empty",
                self.path,
                exc,
                aside,
            )
            self._conn = self._open()
        forksafe.guard(self)
        self._writer = threading.Thread(
            target=self._write_loop, name="tidepool-meta-writer", daemon=True
        )
        self._writer.start()

    def fork_locks(self) -> list[threading.Lock]:
        return [self._lock]

    def _open(self) -> sqlite3.Connection:
        conn = connect(self.path)
        try:
            conn.executescript(_SCHEMA)
            conn.execute("SELECT count(*) FROM info").fetchone()
            conn.execute("SELECT count(*) FROM listings").fetchone()
        except BaseException:
            conn.close()
            raise
        return conn

    # -- info ----------------------------------------------------------------------------

    def put_info(self, dataset: str, path: str, info: dict[str, Any], fetched_at: float) -> None:
        """Record what the origin said about ``path`` at ``fetched_at`` (epoch seconds)."""
        raw = _dump_info(info, path)
        value = (_load_info(raw, path), float(fetched_at))
        row = (dataset, path, raw, float(fetched_at))
        self._stage(
            ("info", dataset, path),
            value,
            lambda c: c.execute("INSERT OR REPLACE INTO info VALUES (?, ?, ?, ?)", row),
        )

    def get_info(self, dataset: str, path: str) -> tuple[dict[str, Any], float] | None:
        """``(info, fetched_at)`` of a path, or None when never recorded."""
        key: _CacheKey = ("info", dataset, path)
        with self._lock:
            value = self._lookup(key)
            if value is _MISSING:
                row = self._conn.execute(
                    "SELECT info, fetched_at FROM info WHERE dataset = ? AND path = ?",
                    (dataset, path),
                ).fetchone()
                value = None if row is None else (_load_info(row[0], path), float(row[1]))
                self._remember(key, value)
        if value is None:
            return None
        return dict(value[0]), value[1]

    def delete_info(self, dataset: str, path: str) -> None:
        self._stage(
            ("info", dataset, path),
            None,
            lambda c: c.execute("DELETE FROM info WHERE dataset = ? AND path = ?", (dataset, path)),
        )

    # -- listings ------------------------------------------------------------------------

    def put_infos(self, dataset: str, infos: list[dict[str, Any]], fetched_at: float) -> None:
        """Record the info of many paths (each keyed by its ``"name"``) in one write, keeping
        none of them in the LRU (a find's pages would flush it: the rows are read by pages,
        :meth:`info_rows`). The dicts are the store's from now on: do not change them."""
        raws = [_dump_info(e, e["name"]) for e in infos]
        when = float(fetched_at)
        rows = [(dataset, e["name"], raw, when) for e, raw in zip(infos, raws, strict=True)]
        self._stage_many(
            [(("info", dataset, e["name"]), (e, when)) for e in infos],
            lambda c: c.executemany("INSERT OR REPLACE INTO info VALUES (?, ?, ?, ?)", rows),
            remember=False,
        )

    def put_listing(
        self,
        dataset: str,
        dir: str,
        entries: list[dict[str, Any]],
        fetched_at: float,
        *,
        infos: bool = True,
    ) -> None:
        """Record a directory listing, and the info of each entry that has a ``"name"``
        (``infos=False``: the caller recorded them already, e.g. a find's pages; the listing is
        then not kept in the LRU either, and until it is committed readers see ``entries``
        themselves: the store's from now on, as :meth:`put_infos` takes its dicts)."""
        raw = jsoncodec.dumps([_short(e, None) for e in entries])
        # what readers see is what was stored (parsed back), but for a find's listings: a
        # million entries decoded again only to be dropped at the commit
        parsed: list[dict[str, Any]] = _load_entries(raw) if infos else entries
        when = float(fetched_at)
        named = [(e["name"], e) for e in parsed if infos and isinstance(e.get("name"), str)]

        def write(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT OR REPLACE INTO listings VALUES (?, ?, ?, ?)", (dataset, dir, raw, when)
            )
            c.executemany(
                "INSERT OR REPLACE INTO info VALUES (?, ?, ?, ?)",
                [(dataset, name, _dump_info(e, name), when) for name, e in named],
            )

        staged: list[tuple[_CacheKey, _Value]] = [(("listing", dataset, dir), (parsed, when))]
        staged += [(("info", dataset, name), (e, when)) for name, e in named]
        self._stage_many(staged, write, remember=infos)

    def get_listing(self, dataset: str, dir: str) -> tuple[list[dict[str, Any]], float] | None:
        """``(entries, fetched_at)`` of a directory, or None when never listed."""
        key: _CacheKey = ("listing", dataset, dir)
        with self._lock:
            value = self._lookup(key)
            if value is _MISSING:
                row = self._conn.execute(
                    "SELECT entries, fetched_at FROM listings WHERE dataset = ? AND dir = ?",
                    (dataset, dir),
                ).fetchone()
                value = None if row is None else (_load_entries(row[0]), float(row[1]))
                self._remember(key, value)
        if value is None:
            return None
        return list(value[0]), value[1]

    def delete_listing(self, dataset: str, dir: str) -> None:
        self._stage(
            ("listing", dataset, dir),
            None,
            lambda c: c.execute(
                "DELETE FROM listings WHERE dataset = ? AND dir = ?", (dataset, dir)
            ),
        )

    # -- recursive finds -------------------------------------------------------------------

    def put_found(self, dataset: str, prefix: str, fetched_at: float) -> None:
        """Record that everything below ``prefix`` was listed at ``fetched_at`` (call it once
        the rows are committed: :meth:`flush` first)."""
        with self._lock, self._transaction():
            self._conn.execute(
                "INSERT OR REPLACE INTO finds VALUES (?, ?, ?)",
                (dataset, prefix, float(fetched_at)),
            )

    def found_at(self, dataset: str, prefix: str) -> float | None:
        """When everything below ``prefix`` was last listed whole, or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT fetched_at FROM finds WHERE dataset = ? AND prefix = ?", (dataset, prefix)
            ).fetchone()
        return None if row is None else float(row[0])

    def info_rows(
        self, dataset: str, prefix: str, after: str, limit: int
    ) -> list[tuple[str, dict[str, Any]]]:
        """At most ``limit`` committed ``(path, info)`` rows strictly below ``prefix`` and after
        ``after``, in path order (byte order of UTF-8, as S3 orders keys). Rows of every kind:
        files, directories and paths known to be missing; the caller picks."""
        low, high = _range(prefix)
        with self._lock:
            rows = self._conn.execute(
                "SELECT path, info FROM info WHERE dataset = ? AND path > ? AND path >= ?"
                + (" AND path < ?" if high is not None else "")
                + " ORDER BY path LIMIT ?",
                (dataset, after, low, *((high,) if high is not None else ()), int(limit)),
            ).fetchall()
        return [(str(path), _load_info(raw, path)) for path, raw in rows]

    def rows_from(
        self, dataset: str, start: str, limit: int, *, strict: bool = False
    ) -> list[tuple[str, Any, float]]:
        """At most ``limit`` ``(path, info, fetched_at)`` rows of the dataset in path order from
        ``start`` on (``strict``: after it), of every kind (files, directories, paths known
        missing). Writes still queued are committed first, so a path learned a moment ago is
        among them (a wait for the writer only when something is queued)."""
        with self._lock:
            queued = bool(self._pending)
        if queued:
            self.flush()
        with self._lock:
            rows = self._conn.execute(
                "SELECT path, info, fetched_at FROM info WHERE dataset = ?"
                + (" AND path > ?" if strict else " AND path >= ?")
                + " ORDER BY path LIMIT ?",
                (dataset, start, int(limit)),
            ).fetchall()
        return [(str(path), _load_info(raw, path), float(at)) for path, raw, at in rows]

    def drop_older(self, dataset: str, prefix: str, before: float) -> int:
        """Forget the info and listings strictly below ``prefix`` fetched before ``before`` (what
        a complete new listing did not mention is gone at the origin); returns how many."""
        self.flush()
        low, high = _range(prefix)
        bound = " AND {col} < ?" if high is not None else ""
        dropped = 0
        with self._lock:
            with self._transaction():
                for table, col in (("info", "path"), ("listings", "dir")):
                    cur = self._conn.execute(
                        f"DELETE FROM {table} WHERE dataset = ? AND {col} >= ? AND {col} != ?"
                        + bound.format(col=col)
                        + " AND fetched_at < ?",
                        (
                            dataset,
                            low,
                            prefix,
                            *((high,) if high is not None else ()),
                            float(before),
                        ),
                    )
                    dropped += max(cur.rowcount, 0)
            if dropped:
                for key, value in list(self._cache.items()):
                    if (
                        value is not None
                        and value[1] < before
                        and key[1] == dataset
                        and key[2] != prefix
                        and _under(key[2], prefix)
                    ):
                        del self._cache[key]
        return dropped

    def drop_found(self, dataset: str, path: str) -> None:
        """Forget the finds that cover ``path``: its own, those below it and its ancestors'
        (they no longer hold all of it), so the next find lists again."""
        self.flush()
        ancestors = [path[:i] for i, ch in enumerate(path) if ch == "/"] + [""]
        with self._lock, self._transaction():
            self._finds_drop(dataset, path, ancestors)

    def _finds_drop(self, dataset: str, path: str, ancestors: list[str]) -> None:
        low, high = _range(path)
        self._conn.executemany(
            "DELETE FROM finds WHERE dataset = ? AND prefix = ?",
            [(dataset, p) for p in [path, *ancestors]],
        )
        if high is None:
            self._conn.execute("DELETE FROM finds WHERE dataset = ?", (dataset,))
        else:
            self._conn.execute(
                "DELETE FROM finds WHERE dataset = ? AND prefix >= ? AND prefix < ?",
                (dataset, low, high),
            )

    # -- subtrees and totals --------------------------------------------------------------

    def drop_prefix(self, dataset: str, path: str) -> int:
        """Forget the info and listings of ``path`` and of everything below it (``""``: the
        whole dataset); returns how many were dropped. The next stat or listing asks the origin.
        """
        # "a/b" and what sorts between "a/b/" and "a/b0" ("0" follows "/"): an index range,
        # compared byte for byte (LIKE would fold case)
        self.flush()  # queued writes first, so none lands after the delete
        with self._lock:
            with self._transaction():
                dropped = 0
                for table, column in (("info", "path"), ("listings", "dir")):
                    if path:
                        cur = self._conn.execute(
                            f"DELETE FROM {table} WHERE dataset = ? AND "
                            f"({column} = ? OR ({column} >= ? AND {column} < ?))",
                            (dataset, path, path + "/", path + "0"),
                        )
                    else:
                        cur = self._conn.execute(
                            f"DELETE FROM {table} WHERE dataset = ?", (dataset,)
                        )
                    dropped += max(cur.rowcount, 0)
                ancestors = [path[:i] for i, ch in enumerate(path) if ch == "/"]
                self._finds_drop(dataset, path, [*ancestors, ""] if path else [])
            for key in [k for k in self._cache if k[1] == dataset and _under(k[2], path)]:
                del self._cache[key]
        return dropped

    def put_total(self, dataset: str, nbytes: int, files: int, fetched_at: float) -> None:
        """Record the size of a whole dataset at the origin (bytes and files) at ``fetched_at``."""
        with self._lock, self._transaction():
            self._conn.execute(
                "INSERT OR REPLACE INTO totals VALUES (?, ?, ?, ?)",
                (dataset, int(nbytes), int(files), float(fetched_at)),
            )

    def get_total(self, dataset: str) -> tuple[int, int, float] | None:
        """``(bytes, files, fetched_at)`` last recorded for a dataset, or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT bytes, files, fetched_at FROM totals WHERE dataset = ?", (dataset,)
            ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]), float(row[2]))

    # -- whole datasets ------------------------------------------------------------------

    def drop_dataset(self, dataset: str) -> None:
        """Forget every info and listing of a dataset."""
        self.flush()
        with self._lock:
            with self._transaction():
                self._conn.execute("DELETE FROM info WHERE dataset = ?", (dataset,))
                self._conn.execute("DELETE FROM listings WHERE dataset = ?", (dataset,))
                self._conn.execute("DELETE FROM totals WHERE dataset = ?", (dataset,))
                self._conn.execute("DELETE FROM finds WHERE dataset = ?", (dataset,))
            for key in [k for k in self._cache if k[1] == dataset]:
                del self._cache[key]

    def flush(self) -> None:
        """Wait until every write so far is committed."""
        if self._closed or not self._writer.is_alive():
            return
        done = threading.Event()
        self._queue.put((lambda _c: done.set(), None))
        done.wait()

    def checkpoint(self) -> None:
        """Write what is queued, then fold the write-ahead log into the database and truncate
        it (after a load: the log may hold up to 32 MiB, :data:`tidepool.store.index.WAL_PAGES`)."""
        if self._closed:
            return
        self.flush()
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        self._queue.put((lambda _c: None, None))  # wakes the writer to stop
        self._writer.join(timeout=5)
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._cache.clear()

    # -- helpers (callers hold _lock) ------------------------------------------------------

    def _stage(
        self, key: _CacheKey, value: _Value, write: Callable[[sqlite3.Connection], object]
    ) -> None:
        self._stage_many([(key, value)], write)

    def _stage_many(
        self,
        values: list[tuple[_CacheKey, _Value]],
        write: Callable[[sqlite3.Connection], object],
        *,
        remember: bool = True,
    ) -> None:
        """Make the values visible now and queue their database write (``remember``: keep them
        in the LRU too; else they are read from the database once committed)."""
        if self._closed:
            raise RuntimeError("metadata store is closed")
        with self._lock:
            self._seq += 1
            for key, value in values:
                self._pending[key] = (value, self._seq)
                if remember:
                    self._remember(key, value)
                else:
                    self._cache.pop(key, None)
            self._queue.put((write, ([k for k, _ in values], self._seq)))

    def _write_loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < 1000:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            with self._lock:
                try:
                    with self._transaction():
                        for write, _ in batch:
                            write(self._conn)
                except Exception as exc:  # the writer must outlive any one bad write
                    log.warning("metadata store %s: a write failed (%s)", self.path, exc)
                for _, staged in batch:
                    if staged is None:
                        continue
                    keys, seq = staged
                    for key in keys:
                        # a later write of the same key stays pending until its own commit
                        if self._pending.get(key, (None, -1))[1] == seq:
                            del self._pending[key]
            if self._closed:
                return

    def _lookup(self, key: _CacheKey) -> _Value:
        """The cached value, or ``_MISSING`` when the database must be asked."""
        if key in self._pending:
            return self._pending[key][0]
        value: _Value = self._cache.get(key, _MISSING)
        if value is not _MISSING:
            self._cache.move_to_end(key)
        return value

    def _remember(self, key: _CacheKey, value: _Value) -> None:
        if not self._cache_entries:
            return
        self._cache[key] = value
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_entries:
            self._cache.popitem(last=False)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")


def _range(prefix: str) -> tuple[str, str | None]:
    """``[low, high)`` of the paths strictly below ``prefix`` (high None: no bound). "0"
    follows "/", so "a/b/…" sorts between "a/b/" and "a/b0" byte for byte."""
    return (prefix + "/", prefix + "0") if prefix else ("", None)


def _under(name: str, path: str) -> bool:
    return not path or name == path or name.startswith(path + "/")
