"""The persistent, tiered, checksummed page cache of one worker.

Pages go to the top tier (MEM) first. Space is *reserved before a page is written*, and a tier's
byte count drops only *after* a page file is unlinked, so a tier's quota holds at every moment, not
eventually. Making room evicts the least recently used pages (the index's ``pages_by_recency``);
an evicted page is demoted to the next lower tier when there is one (whose quota is kept the same
way), else deleted. After each put, a tier above its high watermark is evicted down to its low one.

One store caches one dataset. Its tiers are the dataset's subdirectories of the configured tier
directories, claimed and locked by :mod:`tidepool.store.tierdir` (the state directory holding the
index is locked too), so a second worker on the same tiers fails at once and datasets sharing a
tier never touch each other's pages.

Reads look the page up in the index (no filesystem probe): one ``pread`` of header and data,
length and checksum verified against the checksum the index recorded when the page was written
(not only against the file's own header), the data returned as a memoryview of the read buffer.
A page is dropped and deleted only on proof that it is bad: a wrong header, length or checksum,
or no page file at its path. An error that may pass — out of file descriptors (EMFILE/ENFILE),
out of memory, an interrupted call, EIO from a flaky disk, a permission problem — makes that
read a miss (counted in ``read_errors``) and keeps the page for the next one.

Persistence (``index.py``): the SQLite index is the authority, not a copy of memory (issue 16).
A put becomes visible by its commit, so a SIGKILL loses no page whose ``put`` returned; the store
keeps only per-tier totals, the recency of pages read since the last flush, the pages claimed by a
move or drop in progress (``_pinned``) and a bounded memo of checked files — nothing per cached
page, so memory and restart time do not grow with the page count. Startup removes leftover temp
files, reads the totals, evicts down if quotas were lowered and serves; the page files are checked
against the index in the background (:mod:`tidepool.store.recovery` says why nothing is adopted).

Extents (issue 18, :mod:`tidepool.core.pages`): a put that completes a large file (``file_size`` at
least ``extent_min_bytes``, every page in one tier) rewrites the file as one extent file and removes
its page files, so a warm large read is one file's read. Its pages stay indexed one by one (rows
flagged ``extent``; reads checked against each page's recorded checksum, at the page's offset in the
extent); they are evicted, demoted and dropped together, as the extent they share. The extent is
written beside the pages before they go, with its length reserved in the tier first, so the quota
holds while both exist; afterwards the pages' accounted bytes stand for it (within 4 KiB).
Consolidation holds the space lock (no eviction or drop runs meanwhile) and is given up, leaving the
page files, when the tier has no room for a second copy.

Packed pages (issue 16, :mod:`tidepool.store.packs`): a page that is a whole file of at most
``pack_max`` bytes is a row of its tier's pack database instead of a page file (its index row
names the row's id, column ``pages.pack``). Put in one transaction per tier and batch, then indexed;
read, evicted, demoted, dropped and checked at restart as a page file is, with a row for a file:
no ``sendfile`` of it (:meth:`PageStore.open_run` says None; :meth:`PageStore.get` reads it).

Concurrency: ``get`` (event-loop thread) and ``put`` (worker threads) may run at once. One
``threading.Lock`` guards the accounting and the claims and is never held across file I/O (index
lookups, microseconds, are made under it: every change to an existing row is made while its page
is claimed, so a lookup under the lock sees either the claim or the finished change); a second,
re-entrant lock serialises the slow work of making room (eviction/demotion) and drops.

Limits:
- Recency is persisted in batches (every 2 s or every 1000 hits, and by :meth:`PageStore.flush`
  and :meth:`PageStore.close`); a crash loses at most that much recency, never pages.
- A demoted page keeps its recency: the lower tier evicts it by when it was last read.
- Eviction order follows recency as flushed: touches are flushed before a victim is chosen, but a
  page read while a victim is being chosen may still be chosen.
- Page files are not fsync'ed: a power cut may tear a page; the checksum catches it on read.
- Each lookup is an SQLite query (a few microseconds); a worker serving a page over HTTP makes two
  or three. Same-host readers (:mod:`tidepool.client.local`) make none.
- If the disk under a tier fills before its quota (``ENOSPC``/``EDQUOT``), a put evicts some pages
  of that tier and retries once, then tries the next tier, and otherwise returns False.
- ``drop_file``/``drop_dataset`` racing with a ``put`` of the same file may leave that page cached.
- A ``put`` of a key another thread is putting returns True at once (the worker single-flights
  page fetches, so this is only a guard); watermark eviction runs in the calling ``put``.
- A ``get`` that finds a corrupt page deletes it on the calling thread (rare, small I/O).
- A page whose reads keep failing with a transient error (a disk that always answers EIO there)
  stays indexed, and every read of it goes to the origin, until it is evicted.

Why this module is longer than ~400 lines: the quota, eviction, demotion and verification rules
share one lock and one index, and their invariants (a tier's bytes never over quota, a
page dropped only on proof) are checked against each other here; the file format, tier
directories, index persistence and recovery are in their own modules.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tidepool.core.pages import (
    EXTENT_MIN_BYTES,
    HEADER_SIZE,
    PACK_MAX,
    PageKey,
    checksum,
    decode_header,
    encode_extent_trailer,
    encode_header,
    extent_length,
    extent_trailer_at,
    packed,
    page_count,
)
from tidepool.spec.config import TierConfig
from tidepool.store.index import PageIndex, PageRow, open_index
from tidepool.store.packs import PackFile
from tidepool.store.recovery import extent_backed, page_backed, unvouched
from tidepool.store.tierdir import DirLock, TierClaim, claim_state_dir, claim_tier, make_dirs
from tidepool.store.tiers import (
    EXTENT,
    FOREIGN,
    Buffer,
    Tier,
    TierUsage,
    check_extent_fd,
    check_page_fd,
    install_file,
    open_page_file,
    proves_no_page,
    read_extent_page,
    read_page,
    read_page_file,
    unlink_quiet,
    walk_tier,
    write_extent_file,
    write_page_file,
)

log = logging.getLogger(__name__)

DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
SQLITE_FULL = 13
"""SQLite's "database or disk is full" result code."""
FLUSH_INTERVAL = 2.0
"""Seconds between flushes of touched recency counters."""
FLUSH_TOUCHES = 1000
"""Touched pages that trigger an early flush."""
VERIFIED_PAGES = 1 << 16
"""Pages whose checked file :meth:`PageStore.open_run` remembers."""
WINDOW_ROWS = 1000
"""Index rows handled at a time by the background check and by a dataset drop."""
EVICT_BATCH = 256
"""Most pages evicted with one index query and one transaction."""
WARN_INTERVAL = 60.0
"""A full disk is logged at most once per tier per this many seconds."""


@dataclass(frozen=True)
class StoreStats:
    """Counters since the store was opened."""

    hits: int
    """``get`` calls that returned a verified page."""
    misses: int
    """``get`` calls that returned None (corrupt pages included)."""
    evictions: int
    """Pages deleted from the cache to make room (demotions not included)."""
    demotions: int
    """Pages moved to a lower tier to make room."""
    corrupt: int
    """Pages that failed verification (or whose file was gone), and were dropped."""
    put_failures: int
    """``put`` calls that cached nothing (too big, disk full, I/O error)."""
    read_errors: int = 0
    """``get`` calls that met a transient error (EMFILE, EIO …): a miss, the page kept."""


def _read_data(
    path: str, offset: int, size: int, digest: int, in_extent: bool
) -> memoryview | None:
    """The verified data of a page of ``size`` bytes (header included) at ``path``/``offset``
    (see :meth:`PageStore._where`): None when it does not match ``digest``; ``OSError`` when
    the file cannot be read."""
    if in_extent:
        return read_extent_page(path, offset, size - HEADER_SIZE, digest)
    return read_page(path, size, digest)


@dataclass(frozen=True, slots=True)
class _Written:
    """A page file written into its tier (space reserved), not yet in the index."""

    slot: int
    """Its position in the batch being put."""
    tier: Tier
    key: PageKey
    size: int
    digest: int
    pack: int | None = None
    """Its row in the tier's pack database, when packed (no page file)."""


class _Entry:
    """A page as the index has it, looked up for one operation; ``moving``: claimed by an
    eviction, move or drop in progress (then the store keeps it in ``_pinned`` until done, and
    every lookup of the page returns this object)."""

    __slots__ = ("alive", "atime", "checksum", "extent", "key", "moving", "pack", "size", "tier")

    def __init__(
        self,
        key: PageKey,
        tier: int,
        size: int,
        checksum: int,
        atime: int,
        extent: bool = False,
        pack: int | None = None,
    ) -> None:
        self.key = key
        self.pack = pack
        """Its row in the tier's pack database (:mod:`.packs`), when packed; None: a file."""
        self.atime = atime
        """The row's recency when looked up: a page put again (after an eviction or drop) has a
        new one, so two lookups of a key tell whether they saw the same page."""
        self.extent = extent
        """The page lives in its file's extent (at ``index * page_size``), not a file of its own."""
        self.tier = tier
        self.size = size
        self.checksum = checksum
        self.moving = False
        self.alive = True


class PageStore:
    """Tiered page cache with a persisted index; sync and thread-safe.

    ``tiers`` are ordered top (fastest) first; ``dataset`` is the one dataset whose pages the
    store holds (in ``<tier>/<dataset>``); ``state_dir`` holds ``index.sqlite3``; ``page_size``
    is the largest page accepted. ``flush_interval`` (seconds, None: no background thread) sets
    how often touched recency is written (and so the eviction order, the index's ``atime``);
    ``extent_min_bytes`` is the smallest file kept as one extent once whole (None: never);
    ``pack_max`` the largest one-page file packed into its tier's pack database (0: none);
    ``verify_after`` how many seconds after opening the background check of the tiers starts
    (:mod:`.recovery`; a worker lets its start-up finish first).

    Raises :class:`tidepool.core.errors.ConfigError` when a tier directory is not Tidepool's, is
    another dataset's, or is in use by another worker (:mod:`tidepool.store.tierdir`).
    """

    def __init__(
        self,
        tiers: Sequence[TierConfig],
        state_dir: Path,
        *,
        dataset: str,
        page_size: int,
        flush_interval: float | None = FLUSH_INTERVAL,
        extent_min_bytes: int | None = EXTENT_MIN_BYTES,
        verify_after: float = 0.0,
        pack_max: int = PACK_MAX,
    ) -> None:
        if not tiers:
            raise ValueError("a page store needs at least one tier")
        if page_size <= 0:
            raise ValueError(f"page_size {page_size} must be > 0")
        paths = [os.path.abspath(os.path.expanduser(t.path)) for t in tiers]
        for i, path in enumerate(paths):
            if path in paths[:i]:
                raise ValueError(f"tier path {path!r} is used by two tiers")
        self.page_size = page_size
        self.dataset = dataset
        self.extent_min_bytes = extent_min_bytes
        self.pack_max = pack_max
        self._claims: list[TierClaim] = []
        self._state_lock: DirLock | None = None
        try:
            for cfg in tiers:
                self._claims.append(claim_tier(cfg, dataset))
            self._state_lock = claim_state_dir(Path(state_dir))
        except BaseException:
            self._release_claims()
            raise
        self._tiers = [
            Tier(i, cfg, claim.root)
            for i, (cfg, claim) in enumerate(zip(tiers, self._claims, strict=True))
        ]
        self._by_root = {tier.root_str: tier for tier in self._tiers}
        for tier in self._tiers:
            if tier.quota < HEADER_SIZE + page_size:
                log.warning(
                    "tier %s %s: quota %d bytes holds no full page of %d bytes",
                    tier.config.medium,
                    tier.root_str,
                    tier.quota,
                    page_size,
                )
        self._lock = threading.Lock()
        self._space_lock = threading.RLock()
        self._pinned: dict[PageKey, _Entry] = {}
        """Pages claimed by a move or drop in progress (a handful at a time)."""
        self._checked: OrderedDict[PageKey, tuple[int, int, int, int]] = OrderedDict()
        """(device, inode, size, mtime) of the file of each page :meth:`open_run` last checked
        against the index's checksum: the last :data:`VERIFIED_PAGES` pages."""
        self._files = 0
        """Files with a page in the index (kept in step with it; read from it at open)."""
        self._bytes = 0
        """Data bytes of the indexed pages (headers not counted)."""
        self._pending: set[PageKey] = set()
        self._dirty: dict[PageKey, int] = {}
        """Recency of pages read since the last flush."""
        self._clock = 0
        self._hits = self._misses = self._evictions = self._demotions = 0
        self._corrupt = self._put_failures = self._read_errors = 0
        self._warned: dict[int, float] = {}
        self._read_warned = float("-inf")
        self._closed = False
        self._wake = threading.Event()
        self._stopping = False
        self._opened_ns = time.time_ns()
        self._verified = threading.Event()
        self._verify_after = verify_after
        self._closing = threading.Event()
        self._packs: list[PackFile] = []
        """Each tier's pack database (:mod:`.packs`), by tier index."""
        try:
            self._index: PageIndex = self._recover(Path(state_dir))
        except BaseException:
            for packs in self._packs:
                packs.close()
            self._release_claims()
            raise
        self._verifier = threading.Thread(
            target=self._verify, name="tidepool-store-verify", daemon=True
        )
        self._verifier.start()
        self._flusher: threading.Thread | None = None
        if flush_interval is not None:
            self._flusher = threading.Thread(
                target=self._flush_loop,
                args=(flush_interval,),
                name="tidepool-store-flush",
                daemon=True,
            )
            self._flusher.start()

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: PageKey) -> memoryview | None:
        """The verified data of a cached page, or None: a miss, a corrupt page (then dropped) or
        a transient read error (the page is kept; see the module docstring)."""
        for _ in range(3):  # retried only when a concurrent demotion moved the page
            with self._lock:
                if self._closed:
                    raise RuntimeError("page store is closed")
                entry = self._lookup(key)
                if entry is None:
                    self._misses += 1
                    return None
                tier = self._tiers[entry.tier]
                in_extent = entry.extent
                was = (entry.tier, in_extent, entry.atime)
                path, offset = self._where(tier, entry)
            error: OSError | None = None
            try:
                data = self._read(tier, entry, path, offset)
            except OSError as exc:
                data, error = None, exc
            with self._lock:
                if data is not None:
                    self._hit(key)
                    return data
                now = self._lookup(key)
                if now is not None and (now.tier, now.extent, now.atime) != was:
                    continue  # demoted, made an extent, or put again while it was read
                self._misses += 1
                if now is None or now.moving:
                    return None  # an eviction or drop got there first
                transient = error is not None and not proves_no_page(error)
                warn, count = False, self._read_errors
                victims: list[_Entry] = []
                if transient:
                    self._read_errors = count = count + 1
                    warn = time.monotonic() - self._read_warned >= WARN_INTERVAL
                    if warn:
                        self._read_warned = time.monotonic()
                else:
                    self._corrupt += 1
                    victims = self._claim_group(now)
            if transient:
                if warn:
                    log.warning(
                        "page %s in %s could not be read (%s); this read is served from "
                        "elsewhere and the page is kept (%d such reads so far)",
                        key,
                        path,
                        error,
                        count,
                    )
                return None
            log.warning(
                "page %s in %s is %s; dropping it",
                key,
                path,
                f"not a page file ({error.strerror})"
                if error
                else "corrupt (header, length or checksum differs from the index)",
            )
            self._delete(victims)
            return None
        with self._lock:
            self._misses += 1
        return None

    def open_run(self, first: PageKey, last: int) -> tuple[int, int, int] | None:
        """An open descriptor of the file holding the cached page ``first``, the offset of
        that page's data in it (``HEADER_SIZE`` in a page file, ``index * page_size`` in an
        extent), and how many pages of its file from ``first`` up to index ``last`` that file
        holds in a row: one for a page file, up to all of them in an extent. For ``sendfile``
        (the caller closes it); each page counted as a hit like :meth:`get`. None when the
        first page is not indexed or its file is not what the index recorded (then read it with
        :meth:`get`, which counts and drops a bad page).

        Each page is checked against the index's checksum the first time it is opened this way
        and remembered (the last :data:`VERIFIED_PAGES`) by the file's device, inode, size and
        mtime: page files and extents are immutable once indexed, and a file replaced or
        rewritten since is checked again. So a warm large read pays the checksum once, not on
        every read."""
        with self._lock:
            if self._closed:
                raise RuntimeError("page store is closed")
            entry = self._lookup(first)
            if entry is None or entry.moving or entry.pack is not None:
                return None  # a packed page has no file of its own: get() reads it
            tier = self._tiers[entry.tier]
            path, offset = self._where(tier, entry)
            run = [(entry, offset)]
            if entry.extent and last > first.index:
                for row in self._index.file_pages(
                    first.dataset, first.file_key, first.index + 1, last
                ):
                    e = self._entry_of(row)
                    if (
                        e.key.index != run[-1][0].key.index + 1
                        or e.moving
                        or not e.extent
                        or e.tier != entry.tier
                    ):
                        break
                    run.append((e, self._where(tier, e)[1]))
            known = [self._checked.get(e.key) for e, _ in run]
        try:
            fd = open_page_file(path)
        except OSError:
            return None
        checked_now: list[PageKey] = []
        try:
            st = os.fstat(fd)
            ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            good = len(run)
            for i, (e, at) in enumerate(run):
                if known[i] == ident:
                    continue
                if e.extent:
                    checked = check_extent_fd(fd, at, e.size - HEADER_SIZE, e.checksum)
                else:
                    checked = check_page_fd(fd, e.size, e.checksum)
                if checked is None:
                    good = i  # serve the pages before it; get() drops the bad one
                    break
                checked_now.append(e.key)
        except OSError:
            good = 0
        if not good:
            os.close(fd)
            return None
        with self._lock:
            verified = self._checked
            for k in checked_now:
                verified[k] = ident
                if len(verified) > VERIFIED_PAGES:
                    verified.popitem(last=False)
            for e, _ in run[:good]:
                self._hit(e.key)
        return fd, offset, good

    def contains(self, key: PageKey) -> bool:
        """Whether the page is indexed (it may still fail verification on ``get``)."""
        if self._closed:
            return False
        return key in self._pinned or self._index.has(key)

    def locate(self, key: PageKey) -> Path | None:
        """Where the page file is, for diagnostics."""
        with self._lock:
            entry = self._lookup(key)
            return None if entry is None else Path(self._where(self._tiers[entry.tier], entry)[0])

    def pages_of(self, dataset: str, file_key: str) -> set[int]:
        """Indexes of the cached pages of one file (read from the index)."""
        return set(self._indexes(dataset, file_key))

    def pages_of_files(self, dataset: str, file_keys: Iterable[str]) -> dict[str, set[int]]:
        """:meth:`pages_of` for many files at once (files with no cached page left out)."""
        if self._closed or dataset != self.dataset:
            return {}
        return self._index.file_indexes(dataset, file_keys)

    def held(self, keys: Iterable[PageKey]) -> set[PageKey]:
        """Which of ``keys`` are indexed (:meth:`contains` for many, one query per 500 files)."""
        if self._closed:
            return set()
        keys = list(keys)
        return self._index.held(keys) | {k for k in keys if k in self._pinned}

    def usage(self) -> list[TierUsage]:
        with self._lock:
            return [t.usage() for t in self._tiers]

    def dataset_bytes(self, dataset: str) -> int:
        """Cached data bytes of a dataset (page headers not counted)."""
        with self._lock:
            return max(0, self._bytes) if dataset == self.dataset else 0

    def dataset_files(self, dataset: str) -> int:
        """Number of files of a dataset with at least one cached page."""
        with self._lock:
            return max(0, self._files) if dataset == self.dataset else 0

    def stats(self) -> StoreStats:
        with self._lock:
            return StoreStats(
                self._hits,
                self._misses,
                self._evictions,
                self._demotions,
                self._corrupt,
                self._put_failures,
                self._read_errors,
            )

    # -- writes ------------------------------------------------------------------------------

    def put(
        self,
        key: PageKey,
        data: Buffer,
        *,
        file_size: int | None = None,
    ) -> bool:
        """Cache a page; False when it could not be cached (too big, disk full, I/O error).

        A page already cached (or being cached by another thread) is a no-op returning True.
        ``file_size`` (the file's size, when known): a put that completes a large file makes it
        an extent (:meth:`make_extent`).
        """
        stored = self._put_claimed([(key, data)])[0]
        if stored is None:
            return True  # cached already, or being cached by another thread
        if not stored:
            return False
        self._enforce_watermarks()
        if file_size is not None and self._wants_extent(file_size):
            held = len(self._indexes(key.dataset, key.file_key))
            if held == page_count(file_size, self.page_size):
                self.make_extent(key.dataset, key.file_key, file_size)
        return True

    def put_many(self, pages: Sequence[tuple[PageKey, Buffer]]) -> list[bool]:
        """Cache several pages, ``(key, data)`` each, as :meth:`put` would one by
        one, with one index transaction for all of them: a load of many small files pays one
        commit per batch instead of one per file. A page already cached (or being cached, or
        given twice) counts as cached. No extent is made (for files of one page, which is what
        this is for, none ever is). One result per page, in order."""
        results = self._put_claimed(pages)
        if any(r is not None for r in results):
            self._enforce_watermarks()
        return [r is not False for r in results]

    def _put_claimed(self, pages: Sequence[tuple[PageKey, Buffer]]) -> list[bool | None]:
        """Claim each page in ``_pending`` unless it is cached or claimed already (None), and
        write and index the claimed ones together (whether each was cached)."""
        views = [self._page_view(key, data) for key, data in pages]
        todo: list[int] = []
        with self._lock:
            if self._closed:
                raise RuntimeError("page store is closed")
            keys = [key for key, _ in pages]
            held = self._index.held(keys)
            for i, key in enumerate(keys):
                if key not in self._pending and key not in self._pinned and key not in held:
                    self._pending.add(key)
                    todo.append(i)
        results: list[bool | None] = [None] * len(pages)
        try:
            stored = self._put_pages([(pages[i][0], views[i]) for i in todo])
            for i, ok in zip(todo, stored, strict=True):
                results[i] = ok
        finally:
            with self._lock:
                for i in todo:
                    self._pending.discard(pages[i][0])
        return results

    def _page_view(self, key: PageKey, data: Buffer) -> memoryview:
        """``data`` as bytes, checked to be a page this store may hold."""
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        if view.nbytes > self.page_size:
            raise ValueError(
                f"page {key} is {view.nbytes} bytes, larger than the page size {self.page_size}"
            )
        if key.dataset != self.dataset:
            raise ValueError(
                f"page {key} belongs to dataset {key.dataset!r}; this store caches {self.dataset!r}"
            )
        return view

    def _put_pages(self, pages: Sequence[tuple[PageKey, memoryview]]) -> list[bool]:
        """Write pages claimed in ``_pending`` to the first tier with room each, then commit
        them to the index together; which were cached."""
        written: list[_Written] = []
        to_pack: dict[int, list[_Written]] = {}
        results = [False] * len(pages)
        for i, (key, view) in enumerate(pages):
            size = HEADER_SIZE + view.nbytes
            pack = packed(key.index, view.nbytes, self.page_size, self.pack_max)
            header = b"" if pack else encode_header(view)
            digest = checksum(view) if pack else decode_header(header)[1]
            for tier in self._tiers:
                if tier.quota < size or not self._reserve(tier, size):
                    continue
                if pack:  # written below, with the tier's other packed pages
                    to_pack.setdefault(tier.index, []).append(_Written(i, tier, key, size, digest))
                    break
                if self._write(tier, key, (header, view), size):
                    written.append(_Written(i, tier, key, size, digest))
                    break
        for tier_index, batch in to_pack.items():
            written += self._write_packed(self._tiers[tier_index], batch, pages)
        if written and self._record(written):
            for w in written:
                results[w.slot] = True
        failed = results.count(False)
        if failed:
            with self._lock:
                self._put_failures += failed
            log.debug("%d of %d pages not cached", failed, len(pages))
        return results

    def make_extent(self, dataset: str, fkey: str, size: int) -> bool:
        """Rewrite the pages of a whole cached file of ``size`` bytes as one extent file and
        remove its page files (see the module docstring); True when the file is an extent now.
        False (nothing changed) when the file is too small, not whole, not in one tier, already
        being moved, or the tier has no room for the second copy while it is written."""
        if not self._wants_extent(size):
            return False
        ps = self.page_size
        n = page_count(size, ps)
        length = extent_length(size, n)
        with self._space_lock:
            with self._lock:
                if self._closed:
                    return False
                entries = [self._entry_of(r) for r in self._index.file_pages(dataset, fkey)]
                if (
                    [e.key.index for e in entries] != list(range(n))
                    or any(e.moving or e.extent or e.pack is not None for e in entries)
                    or len({e.tier for e in entries}) != 1
                ):
                    return False
                lengths = [e.size - HEADER_SIZE for e in entries]
                if lengths != [min(ps, size - i * ps) for i in range(n)]:
                    return False
                tier = self._tiers[entries[0].tier]
                if tier.used + length > tier.quota:
                    return False
                tier.used += length
                for e in entries:  # out of reach of eviction, drops and corrupt-drops
                    self._pin(e)
            final = tier.extent_path(entries[0].key)
            ok = self._write_extent(tier, tier, entries, size, final)
            if ok:
                try:
                    self._index.set_extent(dataset, fkey, tier.root_str)
                except sqlite3.Error as exc:
                    log.warning("could not record the extent of %s/%s: %s", dataset, fkey, exc)
                    unlink_quiet(final)
                    ok = False
            with self._lock:
                for e in entries:
                    self._unpin(e)
            if not ok:
                self._release(tier, length)
                return False
            for e in entries:
                unlink_quiet(tier.page_path(e.key))
            with self._lock:
                for e in entries:
                    self._checked.pop(e.key, None)
            self._release(tier, length)  # the pages' bytes now stand for the extent
        log.debug("%s/%s: %d pages now one extent in %s", dataset, fkey, n, tier.root_str)
        return True

    def _wants_extent(self, size: int) -> bool:
        return (
            self.extent_min_bytes is not None
            and size >= self.extent_min_bytes
            and page_count(size, self.page_size) >= 2
        )

    def _write_extent(
        self, src: Tier, tier: Tier, entries: Sequence[_Entry], size: int, final: str
    ) -> bool:
        """Write the extent of ``entries`` (every page of a file, in order, each read back from
        ``src`` and checked against the index) to ``final`` in ``tier``; False (nothing left
        behind) on failure."""
        tmp = tier.tmp_path()
        try:
            write_extent_file(tmp, self._extent_parts(src, entries, size))
            install_file(tmp, final, tier.root_str)
            return True
        except (OSError, LookupError) as exc:
            unlink_quiet(tmp)
            if isinstance(exc, OSError):
                self._write_failed(tier, entries[0].key, exc)
            else:
                log.info("not making an extent of %s: page %s is not readable", final, exc)
            return False

    def _extent_parts(
        self, tier: Tier, entries: Sequence[_Entry], size: int
    ) -> Iterator[memoryview | bytes]:
        """The bytes of an extent of ``entries``, one verified page at a time (LookupError when
        a page cannot be read as the index recorded it)."""
        for e in entries:
            path, offset = self._where(tier, e)
            data = _read_data(path, offset, e.size, e.checksum, e.extent)
            if data is None:
                raise LookupError(e.key.index)
            yield data
        yield bytes(extent_trailer_at(size) - size)
        yield encode_extent_trailer(size, self.page_size, [e.checksum for e in entries])

    def drop_file(self, dataset: str, file_key: str) -> None:
        """Remove every cached page of one file (e.g. its origin version changed)."""
        if dataset != self.dataset:
            return
        with self._space_lock:
            with self._lock:
                entries = [
                    e
                    for row in self._index.file_pages(dataset, file_key)
                    if self._claim(e := self._entry_of(row))
                ]
            self._delete(entries)

    def drop_dataset(self, dataset: str) -> None:
        """Remove every cached page of a dataset, a window of the index at a time."""
        if dataset != self.dataset:
            return
        with self._space_lock:
            after: PageKey | None = None
            while True:
                with self._lock:
                    rows = self._index.window(after, WINDOW_ROWS)
                    entries = [e for row in rows if self._claim(e := self._entry_of(row))]
                self._delete(entries)
                if len(rows) < WINDOW_ROWS:
                    return
                after = rows[-1].key

    def flush(self) -> None:
        """Persist the recency of pages read since the last flush."""
        with self._lock:
            dirty, self._dirty = self._dirty, {}
        if not dirty:
            return
        try:
            self._index.set_atimes(dirty.items())
        except sqlite3.Error as exc:
            log.warning("could not persist page recency: %s", exc)

    def checkpoint(self) -> None:
        """Fold the index's and the pack databases' write-ahead logs in and truncate them (a
        load leaves up to 32 MiB of log: :data:`tidepool.store.index.WAL_PAGES`)."""
        if self._closed:
            return
        self._index.checkpoint()
        for packs in self._packs:
            packs.checkpoint()

    def close(self, *, flush: bool = True) -> None:
        """Stop the flusher, persist recency (unless ``flush=False``) and close the index."""
        with self._lock:
            if self._closed:
                return
            self._stopping = True
        self._wake.set()
        self._closing.set()
        if self._flusher is not None:
            self._flusher.join()
        self._verifier.join()
        if flush:
            self.flush()
        with self._space_lock, self._lock:
            self._closed = True
        self._index.close()
        for packs in self._packs:
            packs.close()
        self._release_claims()

    def index_path(self) -> str:
        """The index database (for the same-host reader of packed pages, :mod:`.packs`)."""
        return str(self._index.path)

    def tier_roots(self) -> list[str]:
        """The dataset's directory in each tier, top first (where its page files live)."""
        return [t.root_str for t in self._tiers]

    def __enter__(self) -> PageStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PageStore({self.dataset!r}, {self._tiers!r})"

    def _release_claims(self) -> None:
        for claim in self._claims:
            claim.release()
        self._claims = []
        if self._state_lock is not None:
            self._state_lock.release()
            self._state_lock = None

    # -- space ---------------------------------------------------------------------------

    def _reserve(self, tier: Tier, size: int) -> bool:
        """Count ``size`` bytes into ``tier``, evicting LRU pages first if needed."""
        with self._lock:
            if tier.used + size <= tier.quota:
                tier.used += size
                return True
        with self._space_lock:
            while True:
                self._flush_touched()
                with self._lock:
                    if tier.used + size <= tier.quota:
                        tier.used += size
                        return True
                    victims = self._take_victims(tier, tier.used + size - tier.quota)
                if not victims:
                    return False  # the rest is reserved by writes in progress
                if not self._evict(tier, victims):
                    return False  # nothing could be removed (the index cannot write now)

    def _release(self, tier: Tier, size: int) -> None:
        with self._lock:
            tier.used -= size

    def _shrink(self, tier: Tier, target: int) -> None:
        """Evict from ``tier`` until it uses at most ``target`` bytes (or has no victim left)."""
        with self._space_lock:
            while True:
                self._flush_touched()
                with self._lock:
                    if tier.used <= target:
                        return
                    victims = self._take_victims(tier, tier.used - target)
                if not victims or not self._evict(tier, victims):
                    return

    def _flush_touched(self) -> None:
        """Persist recency before choosing a victim by it (the index orders by ``atime``)."""
        if self._dirty:
            self.flush()

    def _enforce_watermarks(self) -> None:
        for tier in self._tiers:  # top first, so demotions are accounted for below
            if tier.used > tier.high_bytes:
                self._shrink(tier, tier.low_bytes)

    def _take_victims(self, tier: Tier, want: int) -> list[_Entry]:
        """Claim the least recently used pages of ``tier`` no one else has claimed, oldest
        first, until they hold ``want`` bytes or :data:`EVICT_BATCH` pages (lock held). A page
        of an extent is claimed alone: its extent goes whole (:meth:`_evict_extent`)."""
        claimed: list[_Entry] = []
        got = 0
        average = tier.used // max(1, tier.pages) or 1
        n = min(EVICT_BATCH, -(-want // average) + 1)  # rows enough for ``want``, most likely
        for row in self._index.oldest(tier.root_str, len(self._pinned) + n):
            if row.extent and claimed:
                break
            entry = self._entry_of(row)
            if not self._claim(entry):
                continue
            claimed.append(entry)
            got += entry.size
            if entry.extent or got >= want or len(claimed) >= EVICT_BATCH:
                break
        return claimed

    def _evict(self, tier: Tier, victims: list[_Entry]) -> bool:
        """Demote claimed pages to the next tier, or delete them (holding ``_space_lock``):
        those not demoted go in one index transaction; a page of an extent goes with the whole
        extent. False when none left the tier's count (the index could not delete them), so a
        caller looping until there is room stops instead of taking the same victims again."""
        if len(victims) == 1 and victims[0].extent:
            return self._evict_extent(tier, victims[0])
        doomed: list[_Entry] = []
        moved = False
        lower = self._tiers[tier.index + 1] if tier.index + 1 < len(self._tiers) else None
        for entry in victims:
            src = tier.page_path(entry.key)
            if (
                lower is not None
                and lower.quota >= entry.size
                and self._demote(tier, lower, entry, src)
            ):
                if entry.pack is None:
                    unlink_quiet(src)
                with self._lock:
                    tier.used -= entry.size
                    self._unpin(entry)
                moved = True
            else:
                doomed.append(entry)
        if doomed:
            with self._lock:
                self._evictions += len(doomed)
            moved = self._delete(doomed) or moved
        return moved

    def _demote(self, upper: Tier, lower: Tier, entry: _Entry, src: str) -> bool:
        key = entry.key
        if entry.pack is not None:
            return self._demote_packed(upper, lower, entry)
        try:
            raw = read_page_file(src, entry.size, entry.checksum)
        except OSError as exc:  # the page is being evicted anyway: it is deleted, not demoted
            log.warning("page %s in %s unreadable while demoting: %s", key, src, exc)
            return False
        if raw is None:
            with self._lock:
                self._corrupt += 1
            return False
        if not self._reserve(lower, entry.size):
            return False
        tmp = lower.tmp_path()
        try:
            write_page_file(tmp, (raw,))
            install_file(tmp, lower.page_path(key), lower.root_str)
        except OSError as exc:
            unlink_quiet(tmp)
            self._release(lower, entry.size)
            self._write_failed(lower, key, exc)
            return False
        try:
            self._index.set_tier([key], lower.root_str)
        except sqlite3.Error as exc:  # a restart drops the page: its row names the upper tier
            log.warning("could not record demotion of %s: %s", key, exc)
        with self._lock:
            upper.pages -= 1
            entry.tier = lower.index
            lower.pages += 1
            self._demotions += 1
        log.debug("demoted %s from %s to %s", key, upper.config.medium, lower.config.medium)
        return True

    def _demote_packed(self, upper: Tier, lower: Tier, entry: _Entry) -> bool:
        """Move a claimed packed page to ``lower``'s pack database (its row in ``upper``'s is
        deleted once the index says where it went); False when it stayed where it is."""
        key, old = entry.key, entry.pack
        assert old is not None
        try:
            data = self._read(upper, entry, *self._where(upper, entry))
        except OSError as exc:  # the page is being evicted anyway: it is deleted, not demoted
            log.warning("packed page %s unreadable while demoting: %s", key, exc)
            return False
        if data is None:
            with self._lock:
                self._corrupt += 1
            return False
        if not self._reserve(lower, entry.size):
            return False
        moved = _Written(0, lower, key, entry.size, entry.checksum)
        written = self._write_packed(lower, [moved], [(key, data)])
        if not written:
            return False  # its space is released
        new = written[0].pack
        assert new is not None
        try:
            self._index.move_pack(key, lower.root_str, new)
        except sqlite3.Error as exc:
            log.warning("could not record demotion of %s: %s", key, exc)
            self._drop_rows(lower.index, [new])
            self._release(lower, entry.size)
            return False
        with self._lock:
            upper.pages -= 1
            entry.tier = lower.index
            entry.pack = new
            lower.pages += 1
            self._demotions += 1
        self._drop_rows(upper.index, [old])
        return True

    def _evict_extent(self, tier: Tier, entry: _Entry) -> bool:
        """Evict an extent whose page ``entry`` was claimed as a victim: demote it whole to the
        next tier when that has room, else delete it (holding ``_space_lock``)."""
        with self._lock:
            group = [entry, *(e for e in self._extent_of(entry) if self._claim(e))]
        group.sort(key=lambda e: e.key.index)
        if tier.index + 1 < len(self._tiers) and self._demote_extent(
            tier, self._tiers[tier.index + 1], group
        ):
            return True
        with self._lock:
            self._evictions += len(group)
        return self._delete(group)

    def _demote_extent(self, upper: Tier, lower: Tier, group: list[_Entry]) -> bool:
        """Copy a claimed extent (``group``: its pages, in order) to ``lower``; False when it
        stayed where it is (no room, a page unreadable, a write failed)."""
        total = sum(e.size for e in group)
        size = total - HEADER_SIZE * len(group)
        whole = [e.key.index for e in group] == list(range(page_count(size, self.page_size)))
        if not whole or lower.quota < total or not self._reserve(lower, total):
            return False
        src = upper.extent_path(group[0].key)
        if not self._write_extent(upper, lower, group, size, lower.extent_path(group[0].key)):
            self._release(lower, total)
            return False
        keys = [e.key for e in group]
        try:
            self._index.set_tier(keys, lower.root_str)
        except sqlite3.Error as exc:  # a restart drops the extent: its rows name the upper tier
            log.warning("could not record demotion of the extent of %s: %s", keys[0], exc)
        with self._lock:
            for e in group:
                upper.pages -= 1
                e.tier = lower.index
                lower.pages += 1
                self._checked.pop(e.key, None)
            self._demotions += len(group)
        unlink_quiet(src)
        with self._lock:
            upper.used -= total
            for e in group:
                self._unpin(e)
        return True

    def _extent_of(self, entry: _Entry) -> list[_Entry]:
        """The other pages in ``entry``'s extent (lock held)."""
        key = entry.key
        return [
            e
            for row in self._index.file_pages(key.dataset, key.file_key)
            if row.key.index != key.index
            and (e := self._entry_of(row)).extent
            and e.tier == entry.tier
        ]

    def _claim_group(self, entry: _Entry) -> list[_Entry]:
        """Claim a page found bad, and the rest of its extent if it has one (lock held)."""
        if not self._claim(entry):
            return []
        if not entry.extent:
            return [entry]
        return [entry, *(e for e in self._extent_of(entry) if self._claim(e))]

    def _where(self, tier: Tier, entry: _Entry) -> tuple[str, int]:
        """The file holding ``entry``'s data in ``tier``, and the data's offset in it."""
        if entry.pack is not None:
            return self._packs[tier.index].path, entry.pack  # a row, not an offset
        if entry.extent:
            return tier.extent_path(entry.key), entry.key.index * self.page_size
        return tier.page_path(entry.key), HEADER_SIZE

    def _read(self, tier: Tier, entry: _Entry, path: str, offset: int) -> memoryview | None:
        """The verified data of ``entry`` at ``path``/``offset`` (:meth:`_where`): None when it
        is not there or does not match the index; ``OSError`` when it cannot be read now."""
        if entry.pack is None:
            return _read_data(path, offset, entry.size, entry.checksum, entry.extent)
        try:
            data = self._packs[tier.index].read(
                entry.pack, entry.key, entry.size - HEADER_SIZE, entry.checksum
            )
        except sqlite3.Error as exc:  # locked, I/O error: may pass
            raise OSError(errno.EIO, f"pack database: {exc}") from exc
        return None if data is None else memoryview(data)

    def _delete(self, entries: Sequence[_Entry]) -> bool:
        """Remove claimed pages: index row, then file, then accounting; False when the index
        could not delete the rows (they stay counted, see below)."""
        if not entries:
            return True
        gone = 0
        deleted = False  # the index rows went
        try:
            gone = self._index.delete_pages([e.key for e in entries])
            deleted = True
        except sqlite3.Error as exc:
            # the rows stay, and so does their count: the data still goes (on a full disk its
            # space may be what the index needs), and the read or eviction that next finds a
            # row without data drops it then, uncounting it once (uncounted here as well, a
            # tier's count went below what it held: negative in tests/faults/test_disk.py)
            log.warning("could not delete %d page rows: %s", len(entries), exc)
        rows: dict[int, list[int]] = {}
        for e in entries:
            if e.pack is not None:
                rows.setdefault(e.tier, []).append(e.pack)
        for tier_index, ids in rows.items():
            self._drop_rows(tier_index, ids)
        files = (self._where(self._tiers[e.tier], e)[0] for e in entries if e.pack is None)
        for path in dict.fromkeys(files):
            unlink_quiet(path)
        with self._lock:
            self._files -= gone
            for e in entries:
                if deleted:
                    self._forget(e)
                else:
                    self._unpin(e)
        return deleted

    def _write(self, tier: Tier, key: PageKey, chunks: Sequence[Buffer], size: int) -> bool:
        """Write a page file in place into a tier whose space is reserved (see
        :mod:`tidepool.store.tiers`); releases the space on failure."""
        final = tier.page_path(key)
        for attempt in range(2):
            try:
                try:
                    write_page_file(final, chunks)
                except FileNotFoundError:
                    make_dirs(os.path.dirname(final), tier.root_str)
                    write_page_file(final, chunks)
                return True
            except FileExistsError:
                # not indexed, so no one's page (an eviction whose unlink failed, a file left
                # by a crash): replaced, never served
                unlink_quiet(final)
                if attempt:
                    break
            except OSError as exc:
                unlink_quiet(final)
                self._write_failed(tier, key, exc)
                if exc.errno not in DISK_FULL or attempt:
                    break
                self._make_disk_room(tier, size)
        self._release(tier, size)
        return False

    def _write_packed(
        self,
        tier: Tier,
        batch: list[_Written],
        pages: Sequence[tuple[PageKey, memoryview]],
    ) -> list[_Written]:
        """Append pages whose space is reserved in ``tier`` to its pack database in one
        transaction (their data: ``pages[w.slot]``); those written, with their row ids. On
        failure the space is released; a full disk evicts a little and is tried once more."""
        packs = self._packs[tier.index]
        for attempt in range(2):
            try:
                ids = packs.add([(w.key, pages[w.slot][1]) for w in batch])
                return [
                    _Written(w.slot, tier, w.key, w.size, w.digest, pack)
                    for w, pack in zip(batch, ids, strict=True)
                ]
            except (sqlite3.Error, OSError) as exc:
                if isinstance(exc, OSError):
                    full = exc.errno in DISK_FULL
                else:
                    full = getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL
                    exc = OSError(errno.ENOSPC if full else errno.EIO, f"{packs.path}: {exc}")
                self._write_failed(tier, batch[0].key, exc)
                if not full or attempt:
                    break
                self._make_disk_room(tier, sum(w.size for w in batch))
        for w in batch:
            self._release(tier, w.size)
        return []

    def _drop_rows(self, tier_index: int, ids: Sequence[int]) -> None:
        """Delete rows of a tier's pack database whose pages are no longer indexed (a failure
        leaves them to the background check of a later start)."""
        try:
            self._packs[tier_index].delete(ids)
        except sqlite3.Error as exc:
            log.warning(
                "could not delete %d rows of %s: %s", len(ids), self._packs[tier_index].path, exc
            )

    def _make_disk_room(self, tier: Tier, size: int) -> None:
        """The disk under ``tier`` is full before its quota: evict a little of what it holds.

        A twentieth of what the tier *uses* (at least two pages' worth), not of its quota: on a
        disk much smaller than the quota, a share of the quota is the whole cache. The tier's
        effective quota drops to what is left, so later writes evict first instead of meeting
        ENOSPC again (and the index, which may share the disk, keeps room to grow).
        """
        self._index.checkpoint()  # the index's log may live on the same disk
        self._packs[tier.index].checkpoint()
        with self._lock:
            limit = max(0, tier.used - max(2 * size, tier.used // 20))
            tier.disk_limit = limit if tier.disk_limit is None else min(tier.disk_limit, limit)
        self._shrink(tier, limit)

    def _write_failed(self, tier: Tier, key: PageKey, exc: OSError) -> None:
        """Log a failed page write: disk-full at most once per tier per minute."""
        if exc.errno in DISK_FULL:
            now = time.monotonic()
            with self._lock:
                last = self._warned.get(tier.index)
                if last is not None and now - last < WARN_INTERVAL:
                    return
                self._warned[tier.index] = now
            log.warning(
                "tier %s %s: disk full (%s) at %d of %d quota bytes; evicting to make room",
                tier.config.medium,
                tier.root_str,
                exc.strerror,
                tier.used,
                tier.quota,
            )
        else:
            log.warning(
                "tier %s %s: writing page %s failed: %s",
                tier.config.medium,
                tier.root_str,
                key,
                exc,
            )

    def _record(self, written: Sequence[_Written]) -> bool:
        """Commit written pages to the index in one transaction (from then on they are cached);
        on failure remove their files and release their space."""
        with self._lock:
            atimes = [self._tick() for _ in written]
        rows = [
            PageRow(w.key, w.tier.root_str, w.size, w.digest, atime, pack=w.pack)
            for w, atime in zip(written, atimes, strict=True)
        ]
        for attempt in range(2):
            try:
                new_files = self._index.add_pages(rows)
                break
            except sqlite3.Error as exc:
                # The index may share its disk with the pages: when that disk is full, evict a
                # little (these pages held back, so none is its own victim) and try once more.
                if not attempt and getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL:
                    self._make_disk_room(written[0].tier, sum(w.size for w in written))
                    continue
                log.warning(
                    "could not record %d page(s) (%s …) in the index: %s",
                    len(written),
                    written[0].key,
                    exc,
                )
                for w in written:
                    if w.pack is None:
                        unlink_quiet(w.tier.page_path(w.key))
                    else:
                        self._drop_rows(w.tier.index, [w.pack])
                    self._release(w.tier, w.size)
                return False
        with self._lock:
            self._files += new_files
            for w in written:
                w.tier.pages += 1
                self._bytes += w.size - HEADER_SIZE
        return True

    # -- index lookups and accounting (callers hold _lock) --------------------------------

    def _lookup(self, key: PageKey) -> _Entry | None:
        """The page as it is now: claimed by a move or drop in progress, else its row (lock
        held: every change to an existing row is made while its page is claimed)."""
        entry = self._pinned.get(key)
        if entry is not None:
            return entry
        row = self._index.row(key)
        return None if row is None else self._entry(row)

    def _entry_of(self, row: PageRow) -> _Entry:
        """The claimed entry of ``row``'s page if there is one, else a new one (lock held)."""
        entry = self._pinned.get(row.key)
        return entry if entry is not None else self._entry(row)

    def _entry(self, row: PageRow) -> _Entry:
        tier = self._by_root.get(row.tier)
        if tier is None:  # rows of unconfigured tiers are deleted at open
            raise LookupError(f"page {row.key} is in {row.tier!r}, not a tier of this store")
        return _Entry(row.key, tier.index, row.size, row.checksum, row.atime, row.extent, row.pack)

    def _hit(self, key: PageKey) -> None:
        """Count a verified read of a page and make it the most recent (lock held)."""
        self._hits += 1
        self._dirty[key] = self._tick()
        if len(self._dirty) >= FLUSH_TOUCHES:
            self._wake.set()

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def _indexes(self, dataset: str, file_key: str) -> list[int]:
        """The indexes of the cached pages of a file, in order."""
        if dataset != self.dataset:
            return []
        return self._index.indexes(dataset, file_key)

    def _pin(self, entry: _Entry) -> None:
        entry.moving = True
        self._pinned[entry.key] = entry

    def _unpin(self, entry: _Entry) -> None:
        entry.moving = False
        if self._pinned.get(entry.key) is entry:
            del self._pinned[entry.key]

    def _claim(self, entry: _Entry) -> bool:
        """Take a page out of eviction's reach before deleting it; False if already claimed."""
        if entry.moving or not entry.alive or entry.key in self._pinned:
            return False
        self._pin(entry)
        return True

    def _forget(self, entry: _Entry) -> None:
        """Uncount a claimed page whose row and file are gone."""
        if not entry.alive:
            return
        entry.alive = False
        self._unpin(entry)
        key = entry.key
        tier = self._tiers[entry.tier]
        tier.pages -= 1
        tier.used -= entry.size
        self._dirty.pop(key, None)
        self._checked.pop(key, None)
        self._bytes -= entry.size - HEADER_SIZE

    # -- background and startup ----------------------------------------------------------

    def _flush_loop(self, interval: float) -> None:
        while True:
            self._wake.wait(interval)
            self._wake.clear()
            if self._stopping:
                return
            try:
                self.flush()
            except Exception:
                log.exception("flushing page recency failed")

    def _recover(self, state_dir: Path) -> PageIndex:
        """Open the persisted index and take the tiers' totals from it; the page files are
        checked against it in the background (:mod:`.recovery`)."""
        for tier in self._tiers:
            tier.prepare()
        self._packs = [PackFile(tier.root_str) for tier in self._tiers]
        index, totals, fresh = open_index(state_dir)
        self._index = index
        gone = 0
        if any(root not in self._by_root for root in totals):  # a tier no longer configured
            gone = index.delete_tiers_except(self._by_root)
            totals = index.totals()
        pages = size = 0
        for root, (n, used, atime) in totals.items():
            tier = self._by_root[root]
            tier.pages, tier.used = n, used
            pages, size = pages + n, size + used
            self._clock = max(self._clock, atime)
        self._bytes = size - HEADER_SIZE * pages
        self._files = index.file_count(self.dataset)
        log.info(
            "page store %s: %d pages in %d tiers%s; checking them against the tiers' files in "
            "the background",
            self.dataset,
            pages,
            len(self._tiers),
            f" ({gone} rows of tiers no longer configured dropped)" if gone else "",
        )
        if fresh:
            log.warning(
                "page store %s: the index was unreadable; the cache refills from the origin "
                "(its page files are removed in the background)",
                self.dataset,
            )
        self._enforce_watermarks()
        for tier in self._tiers:  # the watermark may be 1.0: still honour the quota
            if tier.used > tier.quota:
                self._shrink(tier, tier.quota)
        return index

    def wait_verified(self, timeout: float | None = None) -> bool:
        """Wait until the background check of the index against the tiers' files
        (:mod:`.recovery`) is done; whether it is."""
        return self._verified.wait(timeout)

    def _verify(self) -> None:
        """The background check of a restarted store (:mod:`.recovery`): files no row vouches
        for removed, then rows whose file is missing or of the wrong size dropped. A directory
        of files, or a thousand rows, at a time: no list of the whole cache is built."""
        try:
            if self._closing.wait(self._verify_after):
                return
            removed, foreign = self._remove_unvouched()
            dropped = self._drop_unbacked()
        except Exception:
            log.exception(
                "page store %s: checking the index against the tiers failed", self.dataset
            )
            return
        finally:
            self._verified.set()
        if removed or dropped:
            log.warning(
                "page store %s check: %d pages kept, %d index rows dropped (file missing or "
                "wrong size), %d page files the index does not vouch for removed",
                self.dataset,
                sum(t.pages for t in self._tiers),
                dropped,
                removed,
            )
        if foreign:
            log.warning(
                "page store %s: %d files in the tiers' pages/ directories are not Tidepool "
                "pages of this dataset and were left alone (%s)",
                self.dataset,
                len(foreign),
                ", ".join(sorted(foreign)[:3]),
            )

    def _remove_unvouched(self) -> tuple[int, list[str]]:
        """Delete the page and extent files no row vouches for (rule 3); how many, and the
        paths that are not Tidepool's (rule 5, left alone)."""
        removed = 0
        foreign: list[str] = []
        for tier in self._tiers:
            for kind, path, key in walk_tier(tier.root, self.dataset, lambda: self._stopping):
                if kind == FOREIGN:
                    foreign.append(path)
                    continue
                with self._lock:  # most files are indexed: no stat for them
                    if any(self._holders(tier, kind, key)):
                        continue
                # a candidate: judged with no demotion or extent in progress (they hold the
                # space lock), then claimed like a put claims a page while it is removed
                with self._space_lock:
                    with self._lock:
                        indexed, writing = self._holders(tier, kind, key)
                        try:
                            mtime = os.stat(path, follow_symlinks=False).st_mtime_ns
                        except FileNotFoundError:
                            continue
                        if not unvouched(indexed, writing, mtime, self._opened_ns):
                            continue
                        claim = key if isinstance(key, PageKey) else None
                        if claim is not None:
                            self._pending.add(claim)
                    try:
                        os.unlink(path)
                        removed += 1
                    except FileNotFoundError:
                        pass
                    except OSError as exc:
                        log.warning("could not remove %s: %s", path, exc)
                    finally:
                        if claim is not None:
                            with self._lock:
                                self._pending.discard(claim)
            removed += self._remove_unvouched_rows(tier)
        return removed, foreign

    def _remove_unvouched_rows(self, tier: Tier) -> int:
        """Delete the rows of ``tier``'s pack database no index row refers to (rule 3 for
        packed pages: a crash between a row's commit and its page's), among the rows written
        before this store opened (a put or demotion of this run has a higher id); how many.
        Judged a window at a time under the space lock, so no demotion moves a row meanwhile."""
        packs = self._packs[tier.index]
        removed = after = 0
        while not self._stopping:
            rows = packs.keys(after, packs.opened_max, WINDOW_ROWS)
            if not rows:
                break
            with self._space_lock:
                held = self._index.pack_holders(self.dataset, [(fk, i) for _, fk, i in rows])
                doomed = [
                    pack for pack, fk, i in rows if held.get((fk, i)) != (tier.root_str, pack)
                ]
                if doomed:
                    self._drop_rows(tier.index, doomed)
            removed += len(doomed)
            after = rows[-1][0]
        return removed

    def _holders(self, tier: Tier, kind: str, key: PageKey | str | None) -> tuple[bool, bool]:
        """For a page or extent file found in ``tier``: whether a row vouches for it, and
        whether a put is writing it (lock held)."""
        if kind == EXTENT:
            first = self._lookup(PageKey(self.dataset, str(key), 0))
            return first is not None and first.extent and first.tier == tier.index, False
        assert isinstance(key, PageKey)
        entry = self._lookup(key)
        indexed = (
            entry is not None
            and not entry.extent
            and entry.pack is None
            and entry.tier == tier.index
        )
        return indexed, key in self._pending

    def _drop_unbacked(self) -> int:
        """Drop the rows whose file is missing or of the wrong size (rules 1, 2 and 4), unless
        the page changed since it was looked at; how many. A window of the index at a time."""
        dropped = 0
        seen: set[tuple[str, int]] = set()
        after: PageKey | None = None
        while not self._stopping:
            rows = self._index.window(after, WINDOW_ROWS)
            for row in rows:
                if self._stopping:
                    break
                with self._lock:  # the window's row, or its claim: looked up again below
                    entry = self._entry_of(row)
                    if entry.moving:
                        continue
                    tier, extent = entry.tier, entry.extent
                    was = (tier, extent, entry.atime)
                    path = self._where(self._tiers[tier], entry)[0]
                    group: list[_Entry] = []
                    if extent:
                        if (row.key.file_key, tier) in seen:
                            continue
                        seen.add((row.key.file_key, tier))
                        group = [entry, *self._extent_of(entry)]
                try:
                    if entry.pack is not None:
                        length = self._packs[tier].length(entry.pack)
                        size = None if length is None else length + HEADER_SIZE
                    else:
                        size = os.stat(path, follow_symlinks=False).st_size
                except FileNotFoundError:
                    size = None
                except (OSError, sqlite3.Error):
                    continue  # cannot tell: reads will
                if extent:
                    good = extent_backed(
                        [(e.key.index, e.size) for e in group], size, self.page_size
                    )
                else:
                    good = page_backed(entry.size, size)
                if good:
                    continue
                with self._lock:
                    now = self._lookup(row.key)
                    if now is None or now.moving or (now.tier, now.extent, now.atime) != was:
                        continue
                    victims = self._claim_group(now)
                self._delete(victims)
                dropped += len(victims)
            if len(rows) < WINDOW_ROWS:
                break
            after = rows[-1].key
        return dropped
