"""One dataset served read-through: the metadata, the pages and the pool, put together per request.

This is what the worker's HTTP layer and its load jobs call, free of HTTP so tests drive it
directly. It owns no policy of its own; it makes each decision once per request and hands it
down:

* where the path lives (one mount table, :mod:`tidepool.core.mounts`);
* who owns the file in the pool (:meth:`~tidepool.worker.placement.Placement.place`);
* which version the read serves (:meth:`DatasetService.open_read`): the known one when fresh,
  else what the first page's answer says — a cold read is one origin round trip, metadata
  included — and the version a client pinned (``If-Match``) or
  :class:`~tidepool.core.errors.VersionGoneError` (412) when it is gone;
* where each page comes from and how it is counted (:mod:`tidepool.worker.reads`).

Metadata (stat, ls, find, TTL, offline) is :mod:`tidepool.worker.metadata` and page reads are
:mod:`tidepool.worker.reads`; the ``stat``/``ls``/``find`` methods here are one-line delegations,
so the HTTP layer talks to one object per dataset.

Why this module is longer than ~400 lines: what is left is the one place where each decision of a
read is made (:meth:`DatasetService.open_read`, with the first page from an owner, a former
holder or the origin) and the facades the HTTP layer, load jobs and metrics read (lifecycle,
counts, warm). Cutting the read's decisions apart again would spread one request's choices over
several modules, which is what issue 10 set out to undo.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, cast

from tidepool.core.clock import steady_time
from tidepool.core.errors import (
    NotCachedError,
    OriginUnavailableError,
    VersionChangedError,
    VersionGoneError,
)
from tidepool.core.fileinfo import FileInfo, file_info
from tidepool.core.mounts import MountTable, Route
from tidepool.core.pages import HEADER_SIZE, page_span
from tidepool.core.paths import normalize
from tidepool.core.ring import Member
from tidepool.origin.funnel import Origin, OriginSettings
from tidepool.serving.sendfile import send_ranges
from tidepool.spec.config import DatasetConfig
from tidepool.store.metadata import MetadataStore
from tidepool.store.pagestore import PageStore
from tidepool.worker.metadata import FoundPage, MetadataService
from tidepool.worker.metrics import DatasetCounters
from tidepool.worker.placement import FilePlace, PeerAnswer, PeerError, Placement
from tidepool.worker.prefetch import Prefetcher
from tidepool.worker.reads import Chunk, Fetched, PageReader, PeerFetch, ReadTarget, Source
from tidepool.worker.verify import MD5, PeerCheck, matches, origin_name

log = logging.getLogger(__name__)

MAX_PENDING_CHECKS = 10_000
"""Multi-page files with bytes from peers waiting to be complete for their check (bounded)."""
COPY_CHECKED_MAX = 16 << 20
"""A rebalance copy of a multi-page file up to this size is checked whole against the origin's
MD5 before any page of it is kept (held in memory meanwhile); a larger one is kept, then checked
(:meth:`DatasetService._check_copied`)."""
CHECK_WAITS = 30
"""Seconds a multi-page file's check waits for its pages after its last page came."""

DISK_MARGIN = 64 << 20
"""Bytes of a tier's disk that prefetch leaves free (for demanded reads and the index)."""


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """What one read request serves, decided when it starts."""

    info: FileInfo
    target: ReadTarget
    first: Fetched | None = None
    """Page 0, when it was fetched together with the metadata."""


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
        clock: Callable[[], float] = steady_time,
        peer_check: PeerCheck | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.store = store
        self.meta = meta
        self.counters = counters
        self.page_size = cfg.runtime.page_size
        self.ttl = cfg.runtime.metadata_ttl
        self.mounts: MountTable[Origin] = MountTable(
            (m.path, Origin(cfg.name, m, origin_settings)) for m in cfg.mounts
        )
        self.metadata = MetadataService(
            cfg.name,
            self.mounts,
            meta,
            ttl=cfg.runtime.metadata_ttl,
            immutable=cfg.runtime.immutable,
            clock=clock,
            ask_pool=self._ask_pool,
        )
        self.reader = PageReader(
            cfg.name,
            store,
            counters,
            io_pool,
            page_size=self.page_size,
            fetch_window=fetch_window,
        )
        self.placement: Placement | None = None
        """Set by the worker when it is one of several in a node pool."""
        self.rebalance_status: Callable[[], dict[str, object]] = lambda: {"state": "off"}
        """Progress of copying what this worker owns after a join (set by the worker's
        :class:`~tidepool.worker.rebalance.Rebalancer`; ``off`` outside a pool)."""
        self.peer_check = peer_check or PeerCheck()
        """How bytes from peers are checked against the origin's ETag (:mod:`.verify`)."""
        self._pending_checks: dict[tuple[str, str], set[str]] = {}
        """Multi-page files (path, version) holding peer bytes not checked yet, with the peers."""
        self._distrusted: dict[tuple[str, str], None] = {}
        """Files (path, version) a peer served wrong bytes of: read from the origin (bounded)."""
        self._checks: set[asyncio.Task[None]] = set()
        self._origin_names = {
            origin: origin_name(origin.mount.url, origin.mount.storage_options)
            for origin in self.mounts.targets()
        }
        """Each origin's calibration key (:func:`.verify.origin_name`), formatted once."""
        self._io_pool = io_pool
        self.prefetch = Prefetcher(
            cfg.name,
            policy=cfg.runtime.prefetch,
            warm=self._prefetch_file,
            owned=self._owned,
            listing=self.metadata.ls,
            everything=self._all_files,
            room=self.free_room,
            size_of=self._size_on_disk,
            reachable=lambda: self.origin_reachable,
            held=self._held,
            max_inflight=cfg.runtime.prefetch_inflight,
        )
        self.reader.on_prefetch_used = self.prefetch.used

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        for origin in self.origins:
            await origin.start()

    async def close(self) -> None:
        for task in list(self._checks):
            task.cancel()
        await self.prefetch.close()
        await self.reader.flush_writes()
        self.meta.flush()
        for origin in self.origins:
            await origin.close()

    @property
    def origins(self) -> list[Origin]:
        return self.mounts.targets()

    @property
    def origin_reachable(self) -> bool:
        return all(o.reachable for o in self.origins)

    @property
    def origin_down_since(self) -> float | None:
        since = [o.breaker.down_since for o in self.origins if o.breaker.down_since]
        return min(since) if since else None

    # ---- counts (see reads.HitCounts) ------------------------------------------------------

    @property
    def hits(self) -> int:
        """Pages readers got from this worker's cache (local hits)."""
        return self.reader.counts.cache

    @property
    def misses(self) -> int:
        """Pages readers waited for from a peer or the origin."""
        return self.reader.counts.peer + self.reader.counts.origin

    @property
    def peer_hits(self) -> int:
        """Of ``misses``: pages another worker of the pool served (remote hits)."""
        return self.reader.counts.peer

    @property
    def client_local_hits(self) -> int:
        """Of ``hits``: pages same-host clients read from our page files and reported."""
        return self.reader.counts.client_local

    def count_local_hits(self, pages: int, nbytes: int) -> None:
        self.reader.counts.record_client_local(pages, nbytes)

    @property
    def stale_served(self) -> int:
        return self.metadata.stale_served

    @property
    def ufs_total(self) -> tuple[int, int, float] | None:
        return self.metadata.ufs_total

    @ufs_total.setter
    def ufs_total(self, value: tuple[int, int, float] | None) -> None:
        self.metadata.ufs_total = value

    # ---- metadata --------------------------------------------------------------------------

    async def stat(self, path: str, *, from_peer: bool = False, full: bool = False) -> FileInfo:
        return await self.metadata.stat(path, forward=not from_peer, full=full)

    async def ls(self, path: str, *, from_peer: bool = False) -> list[FileInfo]:
        return await self.metadata.ls(path, forward=not from_peer)

    async def find(self, path: str = "", *, from_peer: bool = False) -> list[FileInfo]:
        return await self.metadata.find(path, forward=not from_peer)

    async def find_page(
        self, path: str, *, start_after: str, limit: int, from_peer: bool = False
    ) -> FoundPage:
        return await self.metadata.find_page(
            path, start_after=start_after, limit=limit, forward=not from_peer
        )

    async def _all_files(self) -> list[FileInfo]:
        """Every file of the dataset (folder markers left out), for prefetch."""
        return [f for f in await self.metadata.find("") if f["type"] == "file"]

    async def _ask_pool(self, kind: str, rel: str, query: dict[str, str] | None) -> Any:
        """Metadata from the member of the pool that owns it (see metadata.AskPool)."""
        if self.placement is None:
            return None
        owner = self.placement.metadata_owner(self.name, kind, rel)
        if owner is None:
            return None
        try:
            return await self.placement.fetch_json(owner, self.name, kind, rel, query)
        except PeerError as exc:
            log.debug(
                "%s of %s/%s from %s failed (%s): asking the origin",
                kind,
                self.name,
                rel,
                owner.name,
                exc,
            )
            return None

    # ---- reads -----------------------------------------------------------------------------

    def _route(self, rel: str) -> Route[Origin]:
        route = self.mounts.route(rel)
        if route is None:
            if self.mounts.is_virtual_dir(rel):
                raise IsADirectoryError(errno.EISDIR, f"{rel!r} is a directory", rel)
            raise FileNotFoundError(errno.ENOENT, f"no such path in dataset {self.name!r}", rel)
        return route

    def _place(self, rel: str) -> FilePlace | None:
        return self.placement.place(self.name, rel) if self.placement is not None else None

    def _owned(self, rel: str) -> bool:
        place = self._place(rel)
        return place is None or place.mine

    @property
    def chunk_pages(self) -> int:
        """Pages per placement chunk in the pool (0: files are placed whole, or no pool)."""
        p = self.placement
        return p.chunk_size // self.page_size if p is not None and p.chunk_size > 0 else 0

    def owned_pages(self, info: FileInfo, member: str | None = None) -> list[int]:
        """The pages of a file this worker (or the pool's ``member``) keeps: all of them outside
        a pool, else those of the chunks it owns (a small file is one chunk)."""
        count = -(-info["size"] // self.page_size) if info["size"] else 1
        if self.placement is None:
            return list(range(count))
        who = member or self.placement.me.name
        per = self.chunk_pages or count
        out: list[int] = []
        for c in range(-(-count // per)):
            owners = self.placement.place(self.name, info["name"], c).owners
            if any(m.name == who for m in owners):
                out.extend(range(c * per, min(count, (c + 1) * per)))
        return out

    def _chunks(
        self, rel: str, route: Route[Origin], from_peer: bool
    ) -> Callable[[int], tuple[bool, PeerFetch | None]]:
        """Where each further chunk of a large file lives, decided once per chunk per read."""
        placement = self.placement
        assert placement is not None
        decided: dict[int, tuple[bool, PeerFetch | None]] = {}

        def at(chunk: int) -> tuple[bool, PeerFetch | None]:
            got = decided.get(chunk)
            if got is None:
                place = placement.place(self.name, rel, chunk)
                peers = () if from_peer else place.peers
                holders = () if from_peer else place.holders
                fetch = self._peer_fetch(route, peers, holders) if (peers or holders) else None
                got = decided[chunk] = (place.mine, fetch)
            return got

        return at

    def _held(self, rel: str) -> bool:
        """Whether every page of ``rel`` this worker keeps is in the store, for the version last
        known of it (a prefetch would fetch nothing)."""
        known = self.metadata.known(rel)
        if known is None or known[0] is None or known[0]["type"] != "file":
            return False
        info = known[0]
        return all(self.store.contains(self.reader.key(info, i)) for i in self.owned_pages(info))

    def _size_on_disk(self, rel: str) -> int:
        """What caching a file will take (its size when known, else one page), headers included."""
        known = self.metadata.known(rel)
        size = known[0]["size"] if known is not None and known[0] is not None else self.page_size
        return size + -(-size // self.page_size) * HEADER_SIZE

    def free_room(self) -> int:
        """Bytes the cache can still take before its high watermark, and that the disks under
        its tiers still have free (prefetch never evicts, and never fills a disk)."""
        usage = self.store.usage()
        levels = zip(usage, self.cfg.runtime.tiers, strict=False)
        room = 0
        for t, level in levels:
            by_quota = int(level.high * t.capacity) - t.used
            try:
                st = os.statvfs(t.path)
                by_disk = st.f_bavail * st.f_frsize - DISK_MARGIN
            except OSError:
                by_disk = by_quota
            room += max(0, min(by_quota, by_disk))
        return max(0, room - self.reader.unwritten)

    async def open_read(
        self,
        path: str,
        pinned: str | None = None,
        *,
        from_peer: bool = False,
        demand: bool = True,
        cached_only: bool = False,
        start: int = 0,
    ) -> ReadPlan:
        """Decide what a read of ``path`` serves: the file version (``pinned`` if given, else
        the current one), where its pages come from and whether this worker keeps them.

        ``demand``: a program waits for this read (False for warm-ups and prefetch); it tells
        the prefetcher what is being read. ``cached_only``: a peer asks only if we hold the
        file — the last known metadata is used as it is and nothing is fetched
        (:class:`NotCachedError`); the caller checks that the pages are held. ``start``: where
        the read begins, when known (a read past the first page of a file another member owns
        asks that member for the metadata alone, not for its first page)."""
        rel = normalize(path)
        if demand and not from_peer and self.prefetch.policy != "off":
            self.prefetch.touched(rel)
        route = self._route(rel)
        place = self._place(rel)
        peers = place.peers if (place is not None and not from_peer) else ()
        holders = place.holders if (place is not None and not from_peer) else ()
        known = self.metadata.known(rel)
        first: Fetched | None = None
        if cached_only and (known is None or known[0] is None):
            raise NotCachedError(rel)
        if known is not None and (known[1] or cached_only):  # fresh (or all a peer may have)
            if known[0] is None:
                raise FileNotFoundError(errno.ENOENT, f"no such file in dataset {self.name!r}", rel)
            info = known[0]
        elif (from_peer or start >= self.page_size) and place is not None and not place.mine:
            # a chunk of a large file another member owns the head (and metadata) of: its
            # metadata over the LAN, from that member (never the origin, never its first page)
            info = await self.metadata.stat(rel)
        else:
            info, first = await self._learn(rel, route, peers, holders, stale=known)
        if info["type"] != "file":
            raise IsADirectoryError(errno.EISDIR, f"{rel!r} is a directory; list it instead", rel)
        if pinned is not None and pinned != info["version"]:
            if first is None and not cached_only:  # what we knew may be old: ask once more
                info, first = await self._learn(rel, route, peers, holders, stale=None, force=True)
            if pinned != info["version"]:
                raise VersionGoneError(rel, pinned, f"the origin now has {info['version']!r}")
        keep = place is None or place.mine
        per = self.chunk_pages
        target = ReadTarget(
            info,
            route.target,
            route.orel,
            keep=keep,
            peers=self._peer_fetch(route, peers, holders) if (peers or holders) else None,
            chunk_pages=per,
            chunked=self._chunks(rel, route, from_peer)
            if per and info["size"] > per * self.page_size
            else None,
        )
        if place is not None and place.mine and not from_peer and first is not None:
            # first sight of this file in the pool: the other owners copy it from us
            assert self.placement is not None
            self.placement.replicate(place, self.name, rel)
        return ReadPlan(info, target, first)

    async def _learn(
        self,
        rel: str,
        route: Route[Origin],
        peers: tuple[Member, ...],
        holders: tuple[Member, ...],
        *,
        stale: tuple[FileInfo | None, bool] | None,
        force: bool = False,
    ) -> tuple[FileInfo, Fetched | None]:
        """A file's metadata with its first page, in one round trip: from the pool when another
        worker owns the file, else from the origin. Falls back to the last known metadata when
        the origin is unreachable."""
        try:
            return await self.metadata._once(
                "first" if not force else "first!",
                rel,
                lambda: self._fetch_first(rel, route, peers, holders),
            )
        except OriginUnavailableError:
            if stale is not None and stale[0] is not None:
                self.metadata.stale_served += 1
                return stale[0], None
            raise

    async def _fetch_first(
        self,
        rel: str,
        route: Route[Origin],
        peers: tuple[Member, ...],
        holders: tuple[Member, ...] = (),
    ) -> tuple[FileInfo, Fetched | None]:
        ps = self.page_size
        refused: tuple[str, bytes] | None = None
        if self.placement is not None:
            for peer in peers:
                try:
                    got = await self.placement.read(peer, self.name, rel, None, 0, ps)
                except FileNotFoundError:
                    break  # the owner says it does not exist: ask the origin ourselves
                except PeerError as exc:
                    log.debug("peer %s could not serve %s: %s", peer.name, rel, exc)
                    continue
                info = file_info(rel, got.size, got.version, got.mtime)
                if not self._peer_bytes_ok(route, info, 0, got.data, peer.name):
                    refused = (peer.name, got.data)
                    break  # the origin's bytes settle it
                self.metadata.learn(rel, info)
                return info, Fetched(got.data, Source.PEER if got.cached else Source.ORIGIN)
            held = None if refused else await self._ask_holders(holders, rel, None, 0, ps)
            if held is not None:
                info = file_info(rel, held.size, held.version, held.mtime)
                if self._peer_bytes_ok(route, info, 0, held.data, "a former holder"):
                    self.metadata.learn(rel, info)
                    return info, Fetched(held.data, Source.PEER)
                refused = ("a former holder", held.data)
        try:
            info, data = await route.target.read_first(route.orel, ps)
        except FileNotFoundError:
            # no object there: a directory, or nothing (remembered as missing)
            return await self.metadata._stat_origin(rel, route), None
        info["name"] = rel
        if info["type"] != "file":
            self.metadata.learn(rel, info)
            return info, None
        self.metadata.learn(rel, info)
        self.counters.origin_requests.inc()
        if info["size"] <= ps:
            self._origin_bytes(route, info, data, refused)
        return info, Fetched(data, Source.ORIGIN)

    async def _ask_holders(
        self, holders: tuple[Member, ...], rel: str, version: str | None, start: int, end: int
    ) -> PeerAnswer | None:
        """Bytes from whichever member still holds them from before a join or a leave (asked
        at once, only if cached: nothing crosses the WAN for it), or None."""
        if not holders or self.placement is None:
            return None
        placement = self.placement
        asks = [
            asyncio.ensure_future(
                placement.read(h, self.name, rel, version, start, end, cached_only=True)
            )
            for h in holders
        ]
        try:
            for done in asyncio.as_completed(asks):
                try:
                    return await done
                except (OSError, NotCachedError) as exc:
                    log.debug("no copy of %s/%s to take over: %s", self.name, rel, exc)
            return None
        finally:
            for ask in asks:
                ask.cancel()

    def _peer_fetch(
        self, route: Route[Origin], peers: tuple[Member, ...], holders: tuple[Member, ...] = ()
    ) -> PeerFetch:
        placement = self.placement
        assert placement is not None
        name = self.name

        async def fetch(info: FileInfo, start: int, end: int) -> Fetched | None:
            if (info["name"], info["version"]) in self._distrusted:
                return None  # a peer served wrong bytes of this version: the origin's only
            refused: tuple[str, bytes] | None = None
            for peer in peers:
                try:
                    got = await placement.read(
                        peer, name, info["name"], info["version"], start, end
                    )
                except (PeerError, FileNotFoundError) as exc:
                    log.debug("peer could not serve %s: %s", info["name"], exc)
                    continue
                if self._peer_bytes_ok(route, info, start, got.data, peer.name):
                    return Fetched(got.data, Source.PEER if got.cached else Source.ORIGIN)
                refused = (peer.name, got.data)
                break
            if refused is None:
                held = await self._ask_holders(holders, info["name"], info["version"], start, end)
                if held is None:
                    return None
                if self._peer_bytes_ok(route, info, start, held.data, "a former holder"):
                    return Fetched(held.data, Source.PEER)
                refused = ("a former holder", held.data)
            # wrong bytes from the pool: the origin's own, which also say who was wrong
            self.counters.origin_requests.inc()
            data = await route.target.read(route.orel, start, end, info["version"])
            self._origin_bytes(route, info, data, refused)
            return Fetched(data, Source.ORIGIN)

        return fetch

    # ---- bytes from peers checked against the origin's checksum (see .verify) ---------------

    def _origin_key(self, route: Route[Origin]) -> str:
        return self._origin_names[route.target]

    def peer_check_status(self) -> dict[str, object]:
        """How peer bytes are checked, per origin (``md5``, ``off``, ``unknown``), and counts."""
        names = [self._origin_names[o] for o in self.origins]
        without_etags = [n for n, o in zip(names, self.origins, strict=True) if not o.has_etags]
        return self.peer_check.status(names, without_etags)

    def _peer_bytes_ok(
        self, route: Route[Origin], info: FileInfo, start: int, data: bytes, who: str
    ) -> bool:
        """Whether a peer's bytes ``[start, …)`` of a file may be used. A whole object is
        checked now; the pages of a larger one when all are here (:meth:`_check_complete`)."""
        check, version, size = self.peer_check, info["version"], info["size"]
        origin = self._origin_key(route)
        if not check.checkable(origin, version):
            check.unchecked += 1
            return True
        if start == 0 and len(data) == size:
            if matches(version, size, lambda: (data,)):
                check.verified += 1
                self.counters.peer_verified.inc()
                return True
            return False
        # part of a larger file: checked once every page is here, if the origin's ETags are
        # known to be MD5s (a mismatch is then the peer's; before that, it could be SSE-KMS).
        # A file placed by chunk is never whole on one member: its peer bytes stay unchecked.
        key = (info["name"], str(version))
        chunked = bool(self.chunk_pages) and size > self.chunk_pages * self.page_size
        if chunked or check.mode(origin, version) != MD5:
            check.unchecked += 1
            return True
        if key in self._pending_checks:
            self._pending_checks[key].add(who)
        elif len(self._pending_checks) < MAX_PENDING_CHECKS:
            self._pending_checks[key] = {who}
        else:
            check.unchecked += 1
            return True
        if start + len(data) == size:  # the last page: look whether the file is complete
            asyncio.get_running_loop().call_soon(self._schedule_check, info)
        return True

    def _origin_bytes(
        self,
        route: Route[Origin],
        info: FileInfo,
        data: bytes,
        refused: tuple[str, bytes] | None,
    ) -> None:
        """A whole object from the origin itself: calibrates whether its ETags are MD5s, and
        settles a peer answer refused for it (the peer was wrong unless it sent these bytes)."""
        check = self.peer_check
        if len(data) == info["size"]:
            check.calibrate(self._origin_key(route), info["version"], data)
        if refused is None:
            return
        who, theirs = refused
        if theirs == data:  # the ETag was no MD5 after all (now calibrated as such)
            check.unchecked += 1
            return
        self._rejected(info, {who})

    def _rejected(self, info: FileInfo, peers: set[str]) -> None:
        self.peer_check.rejected += 1
        self.counters.peer_rejected.inc()
        key = (info["name"], str(info["version"]))
        self._distrusted[key] = None
        if len(self._distrusted) > MAX_PENDING_CHECKS:
            del self._distrusted[next(iter(self._distrusted))]
        log.warning(
            "pool peer %s served bytes of %s/%s (version %s) that do not match the origin's "
            "checksum; they were dropped and the file is read from the origin",
            ", ".join(sorted(peers)),
            self.name,
            info["name"],
            info["version"],
        )

    def _schedule_check(self, info: FileInfo) -> None:
        task = asyncio.get_running_loop().create_task(self._check_complete(info))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _check_complete(self, info: FileInfo) -> None:
        """Check a multi-page file with peer bytes once all its pages are in the store; drop
        them all when they do not match the origin's ETag. (Its pages may have been served
        before: a multi-page file is checked as a whole, and S3 has no per-page checksum.)"""
        key = (info["name"], str(info["version"]))
        size = info["size"]
        for _ in range(CHECK_WAITS):  # pages fetched concurrently may still be on their way
            await self.reader.flush_writes()
            if self.reader.stored(info, 0, size):
                break
            await asyncio.sleep(1.0)
        else:
            return  # still incomplete: the next read of its last page looks again
        peers = self._pending_checks.pop(key, None)
        if peers is None:
            return
        n = -(-size // self.page_size)

        def pages() -> Iterator[memoryview]:  # one page in memory at a time
            for i in range(n):
                page = self.store.get(self.reader.key(info, i))
                if page is None:
                    raise LookupError(i)
                yield page

        def check() -> bool | None:
            try:
                return matches(info["version"], size, pages)
            except LookupError:
                return None  # a page was evicted meanwhile: nothing left to check

        ok = await asyncio.get_running_loop().run_in_executor(self._io_pool, check)
        if ok is None:
            self.peer_check.unchecked += 1
        elif ok:
            self.peer_check.verified += 1
            self.counters.peer_verified.inc()
        else:
            self.store.drop_file(self.name, self.reader.key(info, 0).file_key)
            self._rejected(info, peers)

    async def read(
        self, plan: ReadPlan, start: int, end: int, *, counted: bool = True
    ) -> AsyncGenerator[Chunk, None]:
        """The bytes ``[start, end)`` of the plan's file version in page-sized chunks."""
        first = plan.first
        if first is not None and start >= self.page_size:
            self.reader.adopt(plan.target, 0, first.data, first.source)  # kept, not served
            first = None
        try:
            async for chunk in self.reader.read(
                plan.target, start, end, counted=counted, first=first
            ):
                yield chunk
        except VersionChangedError:
            self.metadata.forget(plan.info["name"])
            raise

    async def send_stored(
        self,
        plan: ReadPlan,
        start: int,
        end: int,
        sock_fd: int,
        *,
        idle_timeout: float,
        counted: bool = True,
    ) -> int:
        """Send ``[start, end)`` to the socket ``sock_fd`` straight from the page files with
        ``sendfile`` (:mod:`tidepool.serving.sendfile`: no copy through this process) for as long
        as the pages are in the store; the offset it stopped at (``end`` when all was sent; the
        caller reads the rest)."""
        ps = self.page_size
        last = (end - 1) // ps
        pos = start
        while pos < end:
            idx = pos // ps
            opened = self.reader.open_stored(plan.target, idx, last, pos, end, counted=counted)
            if opened is None:
                return pos
            fd, base, pages = opened  # a page file, or a run of pages of one extent
            stop = min(end, (idx + pages) * ps)
            try:
                await send_ranges(sock_fd, [(fd, base + pos - idx * ps, stop - pos)], idle_timeout)
            finally:
                os.close(fd)
            pos = stop
        return pos

    async def read_all(
        self, plan: ReadPlan, start: int, end: int, *, counted: bool = True
    ) -> Chunk:
        """The bytes ``[start, end)`` as one buffer (for reads of one page or a few)."""
        if plan.first is None:
            hit = self.reader.cached_slice(plan.target, start, end, counted=counted)
            if hit is not None:
                return hit
        chunks = [c async for c in self.read(plan, start, end, counted=counted)]
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _prefetch_file(self, path: str) -> int:
        return await self.warm(path, prefetch=True)

    async def warm(
        self,
        path: str,
        on_bytes: Callable[[int], None] | None = None,
        *,
        prefetch: bool = False,
    ) -> int:
        """Fetch every missing page of a file into the cache (load jobs, prefetch), uncounted;
        ``on_bytes`` hears of each page fetched. Bytes fetched."""
        plan = await self.open_read(path, demand=False)
        if prefetch:
            plan = dataclasses.replace(plan, target=dataclasses.replace(plan.target, prefetch=True))
        got = 0
        if plan.first is not None:
            self.reader.adopt(plan.target, 0, plan.first.data, plan.first.source)
            got += len(plan.first.data)
            if on_bytes is not None:
                on_bytes(len(plan.first.data))
        try:
            if plan.target.keep:
                return got + await self.reader.warm(plan.target, on_bytes)
            # another worker owns it: reading it through the pool makes the owner keep it
            async for chunk in self.reader.read(plan.target, got, plan.info["size"], counted=False):
                got += len(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
            return got
        except VersionChangedError:
            self.metadata.forget(plan.info["name"])
            raise

    def batchable(self, info: FileInfo, largest: int) -> bool:
        """Whether a load may warm this file with others (:meth:`warm_batch`): a file of one
        page, at most ``largest`` bytes, of a ``file://`` origin, in a dataset without a pool
        (in a pool each file has its owners, and one at a time finds them; an S3 origin is
        latency-bound, so its files are fetched many at once one by one)."""
        if self.placement is not None or not 0 < info["size"] <= min(largest, self.page_size):
            return False
        route = self.mounts.route(info["name"])
        return route is not None and not route.target.has_etags

    async def warm_batch(self, infos: Sequence[FileInfo]) -> list[int | None]:
        """Warm-up of many small :meth:`batchable` files at once: :meth:`PageReader.warm_whole`.
        Per file the bytes fetched, or None for each file to :meth:`warm` one by one (changed
        since it was listed, unreadable)."""
        results: list[int | None] = [None] * len(infos)
        groups: dict[int, tuple[Origin, list[int], list[tuple[FileInfo, str]]]] = {}
        for i, info in enumerate(infos):
            route = self.mounts.route(info["name"])
            if route is None:
                continue
            group = groups.setdefault(id(route.target), (route.target, [], []))
            group[1].append(i)
            group[2].append((info, route.orel))
        for origin, slots, files in groups.values():
            for i, n in zip(slots, await self.reader.warm_whole(origin, files), strict=True):
                results[i] = n
        return results

    async def copy_from_peer(
        self, peer: Member, info: FileInfo, on_bytes: Callable[[int], None] | None = None
    ) -> int:
        """Copy the pages of ``info`` this worker owns and lacks from ``peer``'s cache (a
        rebalance after a join, :mod:`.rebalance`): asked only if cached, checked like any peer
        answer (version, size, the origin's MD5), and never replaced by the origin's bytes, so
        nothing crosses the WAN. :class:`NotCachedError` when the peer no longer holds them,
        :class:`PeerError` when it cannot answer or its bytes are wrong. Bytes copied."""
        placement = self.placement
        if placement is None:
            raise PeerError(f"{self.name}: this worker is in no pool to copy from")
        rel = info["name"]
        route = self._route(rel)
        if (rel, str(info["version"])) in self._distrusted:
            raise PeerError(
                f"a peer served wrong bytes of {rel} (version {info['version']}) before: it is "
                "read from the origin when asked for, never copied from a peer"
            )
        if self._copy_checked_first(route, info):
            return await self._copy_whole(peer, route, info, on_bytes)

        async def fetch(want: FileInfo, start: int, end: int) -> Fetched:
            got = await placement.read(
                peer, self.name, rel, want["version"], start, end, cached_only=True
            )
            if not self._peer_bytes_ok(route, want, start, got.data, peer.name):
                if self.peer_check.mode(self._origin_key(route), want["version"]) == MD5:
                    self._rejected(want, {peer.name})  # proven wrong: the origin's ETag is MD5
                raise PeerError(f"peer {peer.name} sent bytes of {rel} that fail their checksum")
            return Fetched(got.data, Source.PEER)

        per = self.chunk_pages
        target = ReadTarget(
            info,
            route.target,
            route.orel,
            keep=True,
            peers=fetch,
            chunk_pages=per,
            chunked=(lambda _chunk: (True, fetch))
            if per and info["size"] > per * self.page_size
            else None,
        )
        missing = set(self.reader.missing_pages(info))
        want = [i for i in self.owned_pages(info) if i in missing]
        copied = 0

        async def page(start: int, end: int) -> bytes:
            return (await fetch(info, start, end)).data

        async for batch in self._page_batches(page, want, info["size"]):
            for i, data in batch:
                self.reader.adopt(target, i, data, Source.PEER)
                copied += len(data)
                if on_bytes is not None:
                    on_bytes(len(data))
        await self.reader.flush_writes()
        await self._check_copied(info, peer)
        if self.metadata.known(rel) is None:
            self.metadata.learn(rel, info)  # a read with the link cut needs no origin call
        return copied

    def _copy_checked_first(self, route: Route[Origin], info: FileInfo) -> bool:
        """Whether a copy of ``info`` is checked whole before it is kept: a file of several
        pages, placed whole, of at most :data:`COPY_CHECKED_MAX` bytes, whose origin's ETags
        are known MD5s."""
        size = info["size"]
        return (
            self.page_size < size <= COPY_CHECKED_MAX
            and not (self.chunk_pages and size > self.chunk_pages * self.page_size)
            and self.peer_check.mode(self._origin_key(route), info["version"]) == MD5
        )

    async def _copy_whole(
        self,
        peer: Member,
        route: Route[Origin],
        info: FileInfo,
        on_bytes: Callable[[int], None] | None,
    ) -> int:
        """Copy a multi-page file from ``peer`` checked whole first: every page is fetched into
        memory, the whole compared with the origin's MD5, and only then are the missing pages
        kept, so no reader is ever served a page of a copy that turns out wrong."""
        assert self.placement is not None
        placement = self.placement
        rel, version, size = info["name"], info["version"], info["size"]

        async def page(start: int, end: int) -> bytes:
            got = await placement.read(peer, self.name, rel, version, start, end, cached_only=True)
            return got.data

        pages: list[bytes] = []
        async for batch in self._page_batches(page, range(-(-size // self.page_size)), size):
            pages.extend(data for _, data in batch)
        if not matches(version, size, lambda: pages):
            self._rejected(info, {peer.name})  # the origin's ETags are MD5s: proven wrong
            raise PeerError(f"peer {peer.name} sent bytes of {rel} that fail their checksum")
        self.peer_check.verified += 1
        self.counters.peer_verified.inc()
        target = ReadTarget(info, route.target, route.orel, keep=True)
        missing = set(self.reader.missing_pages(info))
        copied = 0
        for i, data in enumerate(pages):
            if i in missing:
                self.reader.adopt(target, i, data, Source.PEER)
                copied += len(data)
                if on_bytes is not None:
                    on_bytes(len(data))
        await self.reader.flush_writes()
        if self.metadata.known(rel) is None:
            self.metadata.learn(rel, info)  # a read with the link cut needs no origin call
        return copied

    async def _page_batches(
        self,
        page: Callable[[int, int], Awaitable[bytes]],
        indexes: Sequence[int],
        size: int,
    ) -> AsyncIterator[list[tuple[int, bytes]]]:
        """Pages ``indexes`` of a file of ``size`` bytes from ``page(start, end)``, a window of
        :attr:`PageReader.fetch_window` at a time, for a copy from a peer: fetched apart from the
        readers' single flight, so a page the peer no longer has fails this copy only, never a
        reader that would have joined it. The first error of a window is raised once all of
        the window's fetches are done."""
        step = self.reader.fetch_window
        for lo in range(0, len(indexes), step):
            batch = indexes[lo : lo + step]
            done = await asyncio.gather(
                *(page(*page_span(i, self.page_size, size)) for i in batch),
                return_exceptions=True,
            )
            for got in done:
                if isinstance(got, BaseException):
                    raise got
            yield list(zip(batch, cast("list[bytes]", done), strict=True))

    async def _check_copied(self, info: FileInfo, peer: Member) -> None:
        """A copied file of several pages, held whole, checked against the origin's MD5 now
        (also pages an earlier, killed pass wrote: nothing unchecked is left behind)."""
        size, route = info["size"], self._route(info["name"])
        whole = size > self.page_size and not (
            self.chunk_pages and size > self.chunk_pages * self.page_size
        )
        if not whole or self.peer_check.mode(self._origin_key(route), info["version"]) != MD5:
            return
        self._pending_checks.setdefault((info["name"], str(info["version"])), set()).add(peer.name)
        await self._check_complete(info)
        if not self.reader.stored(info, 0, size):
            raise PeerError(f"peer {peer.name}'s copy of {info['name']} failed its checksum")

    async def flush_writes(self) -> None:
        """Wait for pending page writes (tests and shutdown)."""
        await self.reader.flush_writes()
