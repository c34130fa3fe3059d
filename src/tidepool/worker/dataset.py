"""Serve one dataset read-through: metadata with a TTL, pages from the store, misses from origin.

This is the heart of the worker, free of HTTP so it can be driven directly by tests and by the load
job. For a read of ``[start, end)`` it walks the pages in order; a page already in the store is read
straight from disk, a missing page is fetched with exactly one origin call however many readers
want it (single flight: the in-flight fetch is shared through a future), and while a reader is
sent page *k* the next pages are fetched in parallel (a window that starts at one page, so the first
byte is not slowed by the read-ahead, and then widens). A fetched page is handed to the readers at
once and written to the store on the I/O thread pool: serve while writing.

Metadata: ``stat`` answers from the persisted metadata store while the entry is younger than the
dataset's TTL; a stale or missing entry is revalidated by re-listing its parent directory when the
parent was listed before (one origin call refreshes every sibling) or by a stat otherwise. If the
origin cannot be reached the last known entry is served (edge autonomy).

Limits: one version per read — if the origin object changes in the middle of a multi-page read, the
read fails with :class:`VersionChangedError` rather than mixing versions; the caller retries.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from tidepool.core.errors import OriginError, OriginUnavailableError, VersionChangedError
from tidepool.core.fileinfo import FileInfo, dir_info
from tidepool.core.pages import PageKey, file_key, page_span, pages_for
from tidepool.core.paths import normalize, parent
from tidepool.origin.funnel import Origin, OriginSettings
from tidepool.spec.config import DatasetConfig
from tidepool.store.metadata import MetadataStore
from tidepool.store.pagestore import PageStore
from tidepool.worker.metrics import DatasetCounters
from tidepool.worker.placement import Placement

log = logging.getLogger(__name__)
T = TypeVar("T")

Chunk = bytes | memoryview


class DatasetService:
    """Read-through access to one dataset for the worker's HTTP layer and load jobs."""

    def __init__(
        self,
        cfg: DatasetConfig,
        store: PageStore,
        meta: MetadataStore,
        counters: DatasetCounters,
        io_pool: Executor,
        *,
        origin_settings: OriginSettings | None = None,
        fetch_window: int = 8,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.store = store
        self.meta = meta
        self.counters = counters
        self.page_size = cfg.runtime.page_size
        self.ttl = cfg.runtime.metadata_ttl
        self.immutable = cfg.runtime.immutable
        self.fetch_window = max(1, fetch_window)
        self._io_pool = io_pool
        self._clock = clock
        # longest mount path first, so "a/b" wins over "a" and "" (the root)
        self.mounts = sorted(
            ((m.path, Origin(cfg.name, m, origin_settings)) for m in cfg.mounts),
            key=lambda item: len(item[0]),
            reverse=True,
        )
        self._pages_inflight: dict[PageKey, asyncio.Task[bytes]] = {}
        self._meta_inflight: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self._writes: set[asyncio.Future[Any]] = set()
        self.hits = 0
        """Pages a reader asked for that were in this worker's store (local hits)."""
        self.misses = 0
        """Pages a reader asked for that this worker lacked (fetched, or joined a fetch)."""
        self.peer_hits = 0
        """Misses answered by another worker of the pool (remote hits), not by the origin."""
        self.client_local_hits = 0
        """Of ``hits``: pages same-host clients read from our page files and reported."""
        self.stale_served = 0
        """Metadata answers given from the last known state because the origin was down."""
        self.placement: Placement | None = None
        """Set by the worker when it is one of several in a node pool."""
        self.ufs_total: tuple[int, int, float] | None = None  # (bytes, files, when)

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        for _, origin in self.mounts:
            await origin.start()

    async def close(self) -> None:
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        for _, origin in self.mounts:
            await origin.close()

    @property
    def origin_reachable(self) -> bool:
        return all(o.reachable for _, o in self.mounts)

    @property
    def origin_down_since(self) -> float | None:
        since = [o.breaker.down_since for _, o in self.mounts if o.breaker.down_since]
        return min(since) if since else None

    # ---- namespace -------------------------------------------------------------------------

    def route(self, rel: str) -> tuple[Origin, str] | None:
        """The origin and origin-relative path serving ``rel``; None for a virtual directory."""
        for mpath, origin in self.mounts:
            if mpath == "" or rel == mpath:
                return origin, rel if mpath == "" else ""
            if rel.startswith(mpath + "/"):
                return origin, rel[len(mpath) + 1 :]
        return None

    def _virtual_children(self, rel: str) -> list[FileInfo]:
        """Directories that exist only because mounts live below ``rel``."""
        prefix = rel + "/" if rel else ""
        names = set()
        for mpath, _ in self.mounts:
            if mpath and mpath.startswith(prefix):
                names.add(prefix + mpath[len(prefix) :].split("/", 1)[0])
        return [dir_info(n) for n in sorted(names)]

    @staticmethod
    def _to_dataset(origin_prefix: str, entry: FileInfo) -> FileInfo:
        if origin_prefix:
            entry = dict(entry)  # type: ignore[assignment]
            entry["name"] = origin_prefix + ("/" + entry["name"] if entry["name"] else "")
        return entry

    def _mount_prefix(self, rel: str, orel: str) -> str:
        return rel[: len(rel) - len(orel)].rstrip("/") if orel else rel

    # ---- single flight helper --------------------------------------------------------------

    async def _once(self, kind: str, key: str, make: Callable[[], Awaitable[T]]) -> T:
        fut = self._meta_inflight.get((kind, key))
        if fut is None:
            fut = asyncio.ensure_future(make())
            self._meta_inflight[(kind, key)] = fut
            fut.add_done_callback(lambda _f: self._meta_inflight.pop((kind, key), None))
        return await asyncio.shield(fut)

    def _fresh(self, fetched_at: float) -> bool:
        return self.immutable or (self._clock() - fetched_at) < self.ttl

    # ---- metadata --------------------------------------------------------------------------

    async def stat(self, path: str) -> FileInfo:
        """Metadata of a file or directory, from the metadata cache when fresh."""
        rel = normalize(path)
        routed = self.route(rel)
        if routed is None:
            if rel == "" or self._virtual_children(rel):
                return dir_info(rel)
            raise FileNotFoundError(errno.ENOENT, f"no such path in dataset {self.name!r}", rel)
        cached = self.meta.get_info(self.name, rel)
        if cached is not None and self._fresh(cached[1]):
            return self._checked(cached[0], rel)
        try:
            info = await self._once("stat", rel, lambda: self._revalidate(rel))
        except OriginUnavailableError:
            if cached is not None:
                log.debug("origin unreachable; serving last known stat of %s/%s", self.name, rel)
                self.stale_served += 1
                return self._checked(cached[0], rel)
            raise
        return info

    def _checked(self, info: dict[str, Any], rel: str) -> FileInfo:
        if info.get("missing"):
            raise FileNotFoundError(errno.ENOENT, f"no such path in dataset {self.name!r}", rel)
        return info  # type: ignore[return-value]

    async def _revalidate(self, rel: str) -> FileInfo:
        routed = self.route(rel)
        assert routed is not None
        origin, orel = routed
        now = self._clock()
        par = parent(rel)
        if rel and self.meta.get_listing(self.name, par) is not None and self.route(par):
            # the parent was listed before: one listing revalidates every sibling
            entries = await self._once("ls", par, lambda: self._list_origin(par))
            for e in entries:
                if e["name"] == rel:
                    return e
        try:
            info = await origin.info(orel)
        except FileNotFoundError:
            self.meta.delete_info(self.name, rel)
            raise
        info = self._to_dataset(self._mount_prefix(rel, orel), info)
        info["name"] = rel
        self.meta.put_info(self.name, rel, dict(info), now)
        return info

    async def _list_origin(self, rel: str) -> list[FileInfo]:
        routed = self.route(rel)
        assert routed is not None
        origin, orel = routed
        now = self._clock()
        entries = await origin.ls(orel)
        prefix = self._mount_prefix(rel, orel)
        out = [self._to_dataset(prefix, e) for e in entries]
        out.extend(e for e in self._virtual_children(rel) if e not in out)
        self.meta.put_listing(self.name, rel, [dict(e) for e in out], now)
        return out

    async def ls(self, path: str) -> list[FileInfo]:
        """Direct children of a directory."""
        rel = normalize(path)
        if self.route(rel) is None:
            children = self._virtual_children(rel)
            if rel and not children:
                raise FileNotFoundError(errno.ENOENT, f"no such path in dataset {self.name!r}", rel)
            return children
        cached = self.meta.get_listing(self.name, rel)
        if cached is not None and self._fresh(cached[1]):
            return cached[0]  # type: ignore[return-value]
        try:
            entries = await self._once("ls", rel, lambda: self._list_origin(rel))
        except OriginUnavailableError:
            if cached is not None:
                self.stale_served += 1
                return cached[0]  # type: ignore[return-value]
            raise
        if not entries and rel:
            try:
                info = await self.stat(rel)  # an empty listing of a missing dir is a 404
            except FileNotFoundError:
                self.meta.delete_listing(self.name, rel)
                raise
            if info["type"] == "file":
                self.meta.delete_listing(self.name, rel)
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", rel)
        return entries

    async def find(self, path: str = "") -> list[FileInfo]:
        """Every file below ``path`` (recursive), with their metadata cached for later stats."""
        rel = normalize(path)
        routed = self.route(rel)
        if routed is None:
            out: list[FileInfo] = []
            for child in self._virtual_children(rel):
                out.extend(await self.find(child["name"]))
            return out
        origin, orel = routed
        prefix = self._mount_prefix(rel, orel)
        now = self._clock()
        try:
            found = await self._once("find", rel, lambda: origin.find(orel))
        except OriginUnavailableError:
            self.stale_served += 1
            return self._find_cached(rel)
        files = [self._to_dataset(prefix, e) for e in found]
        # Persist as listings per directory, so offline ls/stat of every file works.
        by_dir: dict[str, list[dict[str, Any]]] = {}
        for f in files:
            by_dir.setdefault(parent(f["name"]), []).append(dict(f))
        for d in list(by_dir):
            while d and d != rel:  # make sure intermediate directories appear in their parents
                up = parent(d)
                entry = dict(dir_info(d))
                if entry not in by_dir.setdefault(up, []):
                    by_dir[up].append(entry)
                d = up
        for d, entries in by_dir.items():
            self.meta.put_listing(self.name, d, entries, now)
        if rel == "":
            self.ufs_total = (sum(f["size"] for f in files), len(files), now)
        return files

    def _find_cached(self, rel: str) -> list[FileInfo]:
        listing = self.meta.get_listing(self.name, rel)
        if listing is None:
            raise OriginUnavailableError(self.name, rel, "not listed before and origin down")
        out: list[FileInfo] = []
        for e in listing[0]:
            if e["type"] == "directory":
                with_sub = self.meta.get_listing(self.name, e["name"])
                if with_sub is not None:
                    out.extend(self._find_cached(e["name"]))
            else:
                out.append(e)  # type: ignore[arg-type]
        return out

    # ---- data ------------------------------------------------------------------------------

    def _page_or_task(
        self, origin: Origin, orel: str, info: FileInfo, fkey: str, idx: int, peers: bool = True
    ) -> memoryview | asyncio.Task[bytes]:
        """A page from the store, or the task fetching it.

        ``peers`` is False for a read another worker of the pool asked for: it is neither fetched
        from peers (no forwarding loops) nor counted as a reader's hit or miss (the asking
        worker counts it, as a remote hit), so the pool's ratios count each read once.
        """
        key = PageKey(self.name, fkey, idx)
        data = self.store.get(key)
        if data is not None:
            self._count(peers, hit=True)
            return data
        task = self._pages_inflight.get(key)
        if task is not None and task.done() and not task.cancelled() and not task.exception():
            # fetched already, still being written: the bytes are in memory, a cache hit
            self._count(peers, hit=True)
            return memoryview(task.result())
        if task is None:
            self._count(peers, hit=False)
            task = asyncio.get_running_loop().create_task(
                self._fetch(key, origin, orel, info, idx, peers)
            )
            self._pages_inflight[key] = task
            task.add_done_callback(lambda t: self._fetch_done(key, t))
        return task

    def count_local_hits(self, pages: int, nbytes: int) -> None:
        """Pages a client on this host read from our page files itself (fast path): hits that
        never reached us, reported afterwards so the hit ratio counts them."""
        self.hits += pages
        self.client_local_hits += pages
        self.counters.hits.inc(pages)
        self.counters.bytes_cache.inc(nbytes)

    def _count(self, counted: bool, *, hit: bool) -> None:
        if not counted:
            return
        if hit:
            self.hits += 1
            self.counters.hits.inc()
        else:
            self.misses += 1
            self.counters.misses.inc()

    def _fetch_done(self, key: PageKey, task: asyncio.Task[bytes]) -> None:
        # Success keeps the entry until the page is written (see _write); failure frees it now.
        if task.cancelled() or task.exception() is not None:
            self._pages_inflight.pop(key, None)

    async def _fetch(
        self, key: PageKey, origin: Origin, orel: str, info: FileInfo, idx: int, peers: bool
    ) -> bytes:
        start, end = page_span(idx, self.page_size, info["size"])
        data = await self._from_peers(info, start, end) if peers else None
        if data is not None:
            self.peer_hits += 1
            self.counters.peer_hits.inc()
        else:
            self.counters.origin_requests.inc()
            data = await origin.read(orel, start, end, info["version"])
            if idx == 0 and self.placement is not None:
                # first sight of this file in the pool: the other owners copy it from us
                self.placement.replicate(self.name, info["name"])
        if len(data) != end - start:
            raise OriginError(
                errno.EIO,
                f"origin returned {len(data)} bytes for {self.name}/{info['name']} "
                f"[{start}, {end}); the object may have changed",
            )
        if self.placement is not None and not self.placement.is_owner(self.name, info["name"]):
            # not ours to keep: serve it, let the owners hold the pool's copy
            self._pages_inflight.pop(key, None)
            return data
        fut = asyncio.get_running_loop().run_in_executor(
            self._io_pool, self._write, key, data, info["name"], info["version"]
        )
        self._writes.add(fut)
        fut.add_done_callback(self._writes.discard)
        return data

    async def _from_peers(self, info: FileInfo, start: int, end: int) -> bytes | None:
        """The bytes from another owner in the pool (LAN), or None to go to the origin."""
        if self.placement is None:
            return None
        for peer in self.placement.peers_for(self.name, info["name"]):
            try:
                return await self.placement.read(
                    peer, self.name, info["name"], info["version"], start, end
                )
            except (OSError, VersionChangedError) as exc:
                log.debug("peer %s could not serve %s: %s", peer.name, info["name"], exc)
        return None

    def _write(self, key: PageKey, data: bytes, path: str, version: str) -> None:
        try:
            self.store.put(key, data, path=path, version=version)
        except Exception:
            log.exception("could not cache page %s of %s/%s", key.index, self.name, path)
        finally:
            # dict.pop is atomic; the loop thread only reads this dict
            self._pages_inflight.pop(key, None)

    async def read(
        self, info: FileInfo, start: int, end: int, *, from_peer: bool = False
    ) -> AsyncGenerator[Chunk, None]:
        """Yield the bytes ``[start, end)`` of a file in page-sized chunks, in order.

        ``from_peer``: the request comes from another worker of the pool, so missing pages are
        fetched from the origin, never from peers (no forwarding loops).
        """
        if end <= start:
            return
        rel = info["name"]
        routed = self.route(rel)
        if routed is None:
            raise IsADirectoryError(errno.EISDIR, "is a directory", rel)
        origin, orel = routed
        fkey = file_key(self.name, rel, info["version"])
        ps = self.page_size
        span = pages_for(start, end, ps)
        idxs = iter(span)
        # a read from the start of a file fetches its first page alone, so read-ahead never
        # delays the first byte; later pages (and continuing reads) go wide at once
        window = 1 if start < ps else self.fetch_window
        pending: deque[tuple[int, memoryview | asyncio.Task[bytes]]] = deque()
        ahead_done = len(span) < 2  # only multi-page (bulk) reads earn read-ahead past `end`

        def fill() -> None:
            nonlocal ahead_done
            while len(pending) < window:
                i = next(idxs, None)
                if i is None:
                    if not ahead_done:
                        ahead_done = True
                        self._read_ahead(origin, orel, info, fkey, span[-1] + 1, not from_peer)
                    return
                pending.append((i, self._page_or_task(origin, orel, info, fkey, i, not from_peer)))

        fill()
        try:
            while pending:
                idx, item = pending.popleft()
                if isinstance(item, asyncio.Task):
                    try:
                        data: Chunk = await asyncio.shield(item)
                    except VersionChangedError:
                        self.meta.delete_info(self.name, rel)
                        raise
                    src = self.counters.bytes_origin
                else:
                    data = item
                    src = self.counters.bytes_cache
                window = self.fetch_window
                fill()
                pstart = idx * ps
                lo = max(start, pstart) - pstart
                hi = min(end, pstart + len(data)) - pstart
                chunk = data if (lo == 0 and hi == len(data)) else memoryview(data)[lo:hi]
                src.inc(hi - lo)
                yield chunk
        finally:
            pending.clear()

    def cached_slice(
        self, info: FileInfo, start: int, end: int, *, from_peer: bool = False
    ) -> memoryview | None:
        """``[start, end)`` straight from the store when it lies in one cached page, else None.

        The hot path of a warm small-file read: no generator, no task, one page file read.
        A read another worker asked for is not counted as a hit here (see ``_page_or_task``)."""
        idxs = pages_for(start, end, self.page_size)
        if len(idxs) != 1:
            return None
        idx = idxs[0]
        data = self.store.get(
            PageKey(self.name, file_key(self.name, info["name"], info["version"]), idx)
        )
        if data is None:
            return None
        self._count(not from_peer, hit=True)
        self.counters.bytes_cache.inc(end - start)
        lo = start - idx * self.page_size
        return data if (lo == 0 and end - start == len(data)) else data[lo : lo + end - start]

    def _read_ahead(
        self, origin: Origin, orel: str, info: FileInfo, fkey: str, first: int, peers: bool
    ) -> None:
        """Start fetching the pages that follow a bulk read, so the next request finds them."""
        last = min(first + self.fetch_window, -(-info["size"] // self.page_size))
        for idx in range(first, last):
            key = PageKey(self.name, fkey, idx)
            if key not in self._pages_inflight and not self.store.contains(key):
                self._page_or_task(origin, orel, info, fkey, idx, peers)

    async def read_all(
        self, info: FileInfo, start: int, end: int, *, from_peer: bool = False
    ) -> Chunk:
        """The bytes ``[start, end)`` as one buffer (for reads of one page or a few)."""
        chunks = [c async for c in self.read(info, start, end, from_peer=from_peer)]
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    async def flush_writes(self) -> None:
        """Wait for pending page writes (tests and shutdown)."""
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)
