"""The worker's data path for one dataset: pages from the store, misses fetched once, each read
counted once.

For a read of ``[start, end)`` of one file version the reader walks the pages in order. A page in
the store is read from disk; a missing page is fetched by exactly one task however many readers
want it (single flight) — from another worker of the pool over the LAN when the placement says
one holds it, else from the origin — and handed to every waiting reader as soon as it arrives,
while it is written to the store on the I/O threads (serve while writing). While a reader is sent
page *k* the next pages are fetched in parallel: a window that starts at one page for a read from
the start of a file (the first byte is not slowed by read-ahead) and then widens.

Accounting happens here and nowhere else: every page handed to a reader is counted once, by where
its bytes came from — the cache (store, or a fetch that had already finished), a peer of the pool
(a remote hit) or the origin (a miss). Reads for another worker, for warm-ups and for prefetch are
not counted: the pool's ``cacheHitRatio``, ``localHitRatio`` and ``remoteHitRatio`` add up to the
reads programs made. :class:`HitCounts` holds the numbers.

Limits: a page fetch that finds the origin object changed fails with
:class:`~tidepool.core.errors.VersionChangedError` (the HTTP layer answers 412); pages are never
mixed across versions because a page is named by its file version.

Why this module is longer than ~400 lines: single flight, serve-while-writing, the read-ahead
window and the one place hits are counted must see the same in-flight table; split apart, the
accounting would again be done in several places (issue 10).
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from enum import Enum
from typing import Any

from tidepool.core.errors import OriginError, VersionChangedError
from tidepool.core.fileinfo import FileInfo
from tidepool.core.pages import (
    HEADER_SIZE,
    PageKey,
    file_key,
    page_count,
    page_span,
    pages_for,
)
from tidepool.origin.funnel import Origin
from tidepool.store.pagestore import PageStore
from tidepool.worker.metrics import DatasetCounters

log = logging.getLogger(__name__)

Chunk = bytes | memoryview
MAX_PREFETCHED = 1_000_000
"""Prefetched-and-not-yet-read pages remembered for the statistics."""


class Source(Enum):
    CACHE = "cache"
    PEER = "peer"
    ORIGIN = "origin"


@dataclass(frozen=True, slots=True)
class Fetched:
    data: bytes
    source: Source


PeerFetch = Callable[[FileInfo, int, int], Awaitable["Fetched | None"]]
"""``(info, start, end)`` from another worker of the pool — :class:`Fetched` with
``Source.PEER`` when the peer had the bytes cached, ``Source.ORIGIN`` when it had to fetch them
for us — or None to go to the origin ourselves."""


class HitCounts:
    """Page lookups of readers, by where the bytes came from (the one place they are counted)."""

    def __init__(self, counters: DatasetCounters) -> None:
        self.counters = counters
        self.cache = 0
        """Pages served from this worker's cache (including same-host client reads)."""
        self.peer = 0
        """Pages another worker of the pool served (remote hits)."""
        self.origin = 0
        """Pages fetched from the origin for a waiting reader (misses)."""
        self.client_local = 0
        """Of ``cache``: pages same-host clients read from our page files and reported."""

    def record(self, source: Source, nbytes: int) -> None:
        c = self.counters
        if source is Source.CACHE:
            self.cache += 1
            c.hits.inc()
            c.bytes_cache.inc(nbytes)
            return
        c.misses.inc()
        c.bytes_origin.inc(nbytes)
        if source is Source.PEER:
            self.peer += 1
            c.peer_hits.inc()
        else:
            self.origin += 1

    def record_client_local(self, pages: int, nbytes: int) -> None:
        self.cache += pages
        self.client_local += pages
        self.counters.hits.inc(pages)
        self.counters.bytes_cache.inc(nbytes)

    @property
    def lookups(self) -> int:
        return self.cache + self.peer + self.origin


@dataclass(frozen=True, slots=True)
class ReadTarget:
    """One file version as the reader needs it: where it comes from and who keeps it."""

    info: FileInfo
    origin: Origin
    orel: str
    """The path below the origin mount's root."""
    keep: bool = True
    """Whether this worker keeps the pages (False: another worker of the pool owns the file)."""
    peers: PeerFetch | None = None
    """Ask the pool before the origin (None for reads another worker asked us for)."""
    prefetch: bool = False
    """Fetched ahead of the program: the pages are remembered until a program reads them."""
    chunk_pages: int = 0
    """Pages per placement chunk of a large file (0: the file is placed whole)."""
    chunked: Callable[[int], tuple[bool, PeerFetch | None]] | None = None
    """``keep`` and ``peers`` of chunk ``c > 0`` of a file placed by chunk (see
    :func:`tidepool.core.ring.chunk_key`); ``keep`` and ``peers`` above are chunk 0's."""

    def at(self, idx: int) -> tuple[bool, PeerFetch | None]:
        """Whether this worker keeps page ``idx``, and whom to ask for it before the origin."""
        if self.chunked is None or self.chunk_pages <= 0 or idx < self.chunk_pages:
            return self.keep, self.peers
        return self.chunked(idx // self.chunk_pages)


class PageReader:
    def __init__(
        self,
        dataset: str,
        store: PageStore,
        counters: DatasetCounters,
        io_pool: Executor,
        *,
        page_size: int,
        fetch_window: int = 8,
    ) -> None:
        self.dataset = dataset
        self.store = store
        self.counters = counters
        self.page_size = page_size
        self.fetch_window = max(1, fetch_window)
        self.counts = HitCounts(counters)
        self._io_pool = io_pool
        self._inflight: dict[PageKey, asyncio.Task[Fetched]] = {}
        self._writes: set[asyncio.Future[None]] = set()
        self.prefetched: OrderedDict[PageKey, int] = OrderedDict()
        """Pages fetched ahead and not read by a program yet (bounded: the oldest are
        forgotten), with their sizes: the prefetch statistics."""
        self.on_prefetch_used: Callable[[int], None] | None = None
        self._wasted = 0
        self.unwritten = 0
        """Bytes (headers included) of fetched pages waiting for their write to the store."""

    def key(self, info: FileInfo, idx: int) -> PageKey:
        return PageKey(self.dataset, file_key(self.dataset, info["name"], info["version"]), idx)

    # ---- single flight ---------------------------------------------------------------------

    def _lookup(self, t: ReadTarget, idx: int) -> memoryview | asyncio.Task[Fetched] | Fetched:
        """A page: from the store, from a fetch that already finished, or the fetch to await."""
        key = self.key(t.info, idx)
        task = self._inflight.get(key)
        if task is not None:
            if task.done() and not task.cancelled() and task.exception() is None:
                return Fetched(task.result().data, Source.CACHE)  # in memory, being written
            if not task.done():
                return task
        data = self.store.get(key)
        if data is not None:
            return data
        task = asyncio.get_running_loop().create_task(self._fetch(key, t, idx))
        self._inflight[key] = task
        task.add_done_callback(lambda done: self._fetch_done(key, done))
        return task

    def _fetch_done(self, key: PageKey, task: asyncio.Task[Fetched]) -> None:
        # success keeps the entry until the page is written (see _write); failure frees it now
        failed = task.cancelled() or task.exception() is not None
        if failed and self._inflight.get(key) is task:
            del self._inflight[key]

    async def _fetch(self, key: PageKey, t: ReadTarget, idx: int) -> Fetched:
        info = t.info
        start, end = page_span(idx, self.page_size, info["size"])
        keep, peers = t.at(idx)
        got = await peers(info, start, end) if peers is not None else None
        if got is not None:
            data, source = got.data, got.source
        else:
            source = Source.ORIGIN
            self.counters.origin_requests.inc()
            data = await t.origin.read(t.orel, start, end, info["version"])
        if len(data) != end - start:
            raise OriginError(
                errno.EIO,
                f"{source.value} returned {len(data)} bytes for {self.dataset}/{info['name']} "
                f"[{start}, {end}); the object may have changed",
            )
        self.put_later(key, data, info, keep=keep)
        if t.prefetch and keep:
            self.prefetched[key] = len(data)
            if len(self.prefetched) > MAX_PREFETCHED:
                self.prefetched.popitem(last=False)
        return Fetched(data, source)

    def adopt(self, t: ReadTarget, idx: int, data: bytes, source: Source) -> Fetched:
        """A page fetched elsewhere (with the file's metadata): cache it like a fetched page."""
        key = self.key(t.info, idx)
        fetched = Fetched(data, source)
        if t.at(idx)[0] and key not in self._inflight:
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(fetched)
            self._inflight[key] = fut  # type: ignore[assignment]
            self.put_later(key, data, t.info, keep=True)
            if t.prefetch:
                self.prefetched[key] = len(data)
        return fetched

    def put_later(self, key: PageKey, data: bytes, info: FileInfo, *, keep: bool) -> None:
        if not keep:
            # not ours to keep: serve it, let the owners hold the pool's copy
            self._inflight.pop(key, None)
            return
        self.unwritten += len(data) + HEADER_SIZE
        fut = asyncio.get_running_loop().run_in_executor(
            self._io_pool, self._write, key, data, info
        )
        self._writes.add(fut)
        fut.add_done_callback(self._writes.discard)
        size = len(data) + HEADER_SIZE
        fut.add_done_callback(lambda _f: self._written(size))  # on the loop: no race

    def _written(self, size: int) -> None:
        self.unwritten -= size

    def _write(self, key: PageKey, data: bytes, info: FileInfo) -> None:
        try:
            self.store.put(key, data, file_size=info["size"])
        except Exception:
            log.exception("could not cache page %s of %s/%s", key.index, self.dataset, info["name"])
        finally:
            self._inflight.pop(key, None)  # dict.pop is atomic; the loop only reads this dict

    # ---- reads -----------------------------------------------------------------------------

    async def read(
        self,
        t: ReadTarget,
        start: int,
        end: int,
        *,
        counted: bool = True,
        first: Fetched | None = None,
    ) -> AsyncGenerator[Chunk, None]:
        """Yield the bytes ``[start, end)`` in page-sized chunks, in order.

        ``counted``: a program's read (False for peers, warm-ups and prefetch). ``first``: page 0,
        already fetched with the file's metadata."""
        if end <= start:
            return
        ps = self.page_size
        span = pages_for(start, end, ps)
        idxs = iter(span)
        window = 1 if start < ps else self.fetch_window
        pending: deque[tuple[int, memoryview | asyncio.Task[Fetched] | Fetched]] = deque()
        ahead_done = len(span) < 2  # only multi-page (bulk) reads earn read-ahead past `end`

        def fill() -> None:
            nonlocal ahead_done
            while len(pending) < window:
                i = next(idxs, None)
                if i is None:
                    if not ahead_done:
                        ahead_done = True
                        self.warm_pages(t, span[-1] + 1, span[-1] + 1 + self.fetch_window)
                    return
                if i == 0 and first is not None:
                    pending.append((i, self.adopt(t, 0, first.data, first.source)))
                else:
                    pending.append((i, self._lookup(t, i)))

        fill()
        try:
            while pending:
                idx, item = pending.popleft()
                data: Chunk
                if isinstance(item, asyncio.Task):
                    fetched = await asyncio.shield(item)
                    data, source = fetched.data, fetched.source
                elif isinstance(item, Fetched):
                    data, source = item.data, item.source
                else:
                    data, source = item, Source.CACHE
                window = self.fetch_window
                fill()
                pstart = idx * ps
                lo = max(start, pstart) - pstart
                hi = min(end, pstart + len(data)) - pstart
                if counted:
                    self.counts.record(source, hi - lo)
                    if self.prefetched:
                        self._prefetch_used(t, idx)
                yield data if (lo == 0 and hi == len(data)) else memoryview(data)[lo:hi]
        finally:
            pending.clear()

    def cached_slice(
        self, t: ReadTarget, start: int, end: int, *, counted: bool = True
    ) -> memoryview | None:
        """``[start, end)`` straight from the store when it lies in one cached page, else None.

        The hot path of a warm small-file read: no generator, no task, one page file read."""
        idxs = pages_for(start, end, self.page_size)
        if len(idxs) != 1 or self.key(t.info, idxs[0]) in self._inflight:
            return None
        idx = idxs[0]
        data = self.store.get(self.key(t.info, idx))
        if data is None:
            return None
        if counted:
            self.counts.record(Source.CACHE, end - start)
            if self.prefetched:
                self._prefetch_used(t, idx)
        lo = start - idx * self.page_size
        return data if (lo == 0 and end - start == len(data)) else data[lo : lo + end - start]

    def stored(self, info: FileInfo, start: int, end: int) -> bool:
        """Whether every page of ``[start, end)`` is in the store (none being fetched)."""
        for idx in pages_for(start, end, self.page_size):
            key = self.key(info, idx)
            if key in self._inflight or not self.store.contains(key):
                return False
        return True

    def open_stored(
        self, t: ReadTarget, first: int, last: int, start: int, end: int, *, counted: bool
    ) -> tuple[int, int, int] | None:
        """An open descriptor of the file holding page ``first`` when it is in the store and
        checked, the page's offset in it, and how many pages from ``first`` (up to ``last``)
        it holds in a row (see :meth:`PageStore.open_run`); the bytes of ``[start, end)`` in
        them counted as cache reads. None otherwise (then read it with :meth:`read`). Only
        ``first`` can be a page being written: the others of a run share an extent, which is
        made of written pages."""
        key = self.key(t.info, first)
        if key in self._inflight:
            return None
        opened = self.store.open_run(key, last)
        if opened is not None and counted:
            ps = self.page_size
            for idx in range(first, first + opened[2]):
                self.counts.record(Source.CACHE, min(end, (idx + 1) * ps) - max(start, idx * ps))
                if self.prefetched:
                    self._prefetch_used(t, idx)
        return opened

    def holds(self, info: FileInfo, start: int, end: int) -> bool:
        """Whether every page of ``[start, end)`` is in the store or fetched into memory."""
        for idx in pages_for(start, end, self.page_size):
            key = self.key(info, idx)
            task = self._inflight.get(key)
            in_memory = (
                task is not None
                and task.done()
                and not task.cancelled()
                and task.exception() is None
            )
            if not in_memory and not self.store.contains(key):
                return False
        return True

    def _prefetch_used(self, t: ReadTarget, idx: int) -> None:
        size = self.prefetched.pop(self.key(t.info, idx), None)
        if size is not None and self.on_prefetch_used is not None:
            self.on_prefetch_used(size)

    def prefetch_wasted(self) -> int:
        """Bytes fetched ahead that left the cache before a program read them (forgotten
        afterwards, so each is counted once)."""
        gone = [
            k for k in self.prefetched if not self.store.contains(k) and k not in self._inflight
        ]
        wasted = sum(self.prefetched.pop(k) for k in gone)
        self._wasted += wasted
        return self._wasted

    def missing_pages(self, info: FileInfo) -> list[int]:
        """Pages of a file version this worker neither holds nor is fetching."""
        count = page_count(info["size"], self.page_size)
        out = []
        for idx in range(count):
            key = self.key(info, idx)
            if key not in self._inflight and not self.store.contains(key):
                out.append(idx)
        return out

    def warm_pages(self, t: ReadTarget, first: int, stop: int) -> list[asyncio.Task[Fetched]]:
        """Start fetching pages ``[first, stop)`` that are missing (uncounted read-ahead)."""
        last = min(stop, page_count(t.info["size"], self.page_size))
        tasks = []
        for idx in range(first, last):
            key = self.key(t.info, idx)
            if key in self._inflight or self.store.contains(key):
                continue
            item = self._lookup(t, idx)
            if isinstance(item, asyncio.Task):
                tasks.append(item)
        return tasks

    async def warm(self, t: ReadTarget, on_bytes: Callable[[int], None] | None = None) -> int:
        """Fetch every missing page of a file version (warm-up, prefetch); bytes fetched.

        The window of pages fetched at once starts at one and doubles up to ``fetch_window``:
        several files warmed together share the link, so small first windows make each file's
        first pages (and a progress bar) arrive early instead of all pages at the very end."""
        total = 0
        count = page_count(t.info["size"], self.page_size)
        lo, window = 0, 1
        while lo < count:
            tasks = self.warm_pages(t, lo, lo + window)
            lo, window = lo + window, min(self.fetch_window, window * 2)
            for task in tasks:
                n = len((await asyncio.shield(task)).data)
                total += n
                if on_bytes is not None:
                    on_bytes(n)
        return total

    async def warm_whole(
        self, origin: Origin, files: Sequence[tuple[FileInfo, str]]
    ) -> list[int | None]:
        """Warm-up of whole one-page files, ``(info, path at the origin)`` each, many at once:
        read in one thread hop (:meth:`Origin.read_whole`, ``file://`` origins) and cached with
        one index commit (:meth:`PageStore.put_many`), uncounted like :meth:`warm`. Per file the
        bytes fetched (0: cached already), or None when it must be warmed one by one with
        :meth:`warm`: not a file of one page, being fetched already, changed since it was
        listed, unreadable, or an origin that is not on this machine."""
        results: list[int | None] = [None] * len(files)
        todo: list[tuple[int, PageKey, FileInfo, str]] = []
        for i, (info, orel) in enumerate(files):
            if info["type"] != "file" or not 0 < info["size"] <= self.page_size:
                continue
            key = self.key(info, 0)
            if key in self._inflight:
                continue
            todo.append((i, key, info, orel))
        held = self.store.held(key for _, key, _, _ in todo)  # one query, not one a file
        for i, key, _, _ in todo:
            if key in held:
                results[i] = 0
        todo = [t for t in todo if t[1] not in held]
        if not todo:
            return results
        got = await origin.read_whole(
            [(orel, info["version"], info["size"]) for *_, info, orel in todo]
        )
        if got is None:
            return results
        pages: list[tuple[PageKey, Chunk]] = []
        for (i, key, _, _), data in zip(todo, got, strict=True):
            if data is not None:
                pages.append((key, data))
                results[i] = len(data)
        if pages:
            self.counters.origin_requests.inc(len(pages))
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._io_pool, self.store.put_many, pages)
        return results

    def forget_version(self, info: FileInfo) -> None:
        """Drop the cached pages of a version the origin no longer has."""
        self.store.drop_file(self.dataset, file_key(self.dataset, info["name"], info["version"]))

    async def flush_writes(self) -> None:
        """Wait for pending page writes (tests and shutdown)."""
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    async def settle(self) -> None:
        """Wait until every fetch in flight (read-ahead included) is done and written. For tests
        that count sources: a read-ahead page still in flight is served to the next read from
        memory, which would count it differently. Not for shutdown: a fetch may wait on an origin
        that is down."""
        while self._inflight or self._writes:
            pending: list[asyncio.Future[Any]] = [*self._inflight.values(), *self._writes]
            await asyncio.gather(*pending, return_exceptions=True)
            await asyncio.sleep(0)  # let the done-callbacks (put_later, _write's pop) run


__all__ = [
    "Chunk",
    "Fetched",
    "HitCounts",
    "PageReader",
    "ReadTarget",
    "Source",
    "VersionChangedError",
]
