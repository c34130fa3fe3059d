"""A dataset's metadata in the worker: stat, listings and recursive finds, with a TTL, kept offline.

``stat`` answers from the metadata store while the entry is younger than the dataset's TTL
(``metadataSyncPolicy``; never expires in immutable mode); a stale or missing entry is asked of
the origin once however many requests want it (single flight). A missing path is remembered as
missing for the TTL too, so a stream of 404s does not become a stream of origin calls. A read of
a file whose metadata is unknown does not stat first: :meth:`MetadataService.learn` records what
the read's own answer said (size, ETag, mtime), so a cold read costs one origin round trip.

Freshness is the age of an entry by the wall clock, and an entry whose age is negative (written
by a clock that ran fast) counts as stale, so a clock that jumped forward and back never freezes
an entry. If the origin cannot be reached the last known entry is served (edge autonomy) and
counted in ``stale_served``.

A recursive ``find`` is streamed into the store a page at a time (:mod:`tidepool.worker.findwriter`:
one origin page of ~1,000 keys in memory, plus the listings of the directories still open) and
recorded as complete with its time; pages are then answered by indexed queries of the stored rows
(:meth:`MetadataService.find_page`), also after a restart, until the TTL says list again.

Limits: the first page of a find that must be listed waits for the whole listing (pages are
served from a complete one). A find covering a path whose origin object changed under a read is
forgotten (listed again next time).
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from tidepool.core.clock import steady_time
from tidepool.core.errors import BadRequestError, OriginUnavailableError
from tidepool.core.fileinfo import FileInfo, dir_info
from tidepool.core.mounts import MountTable, Route
from tidepool.core.paths import normalize, parent
from tidepool.origin.funnel import Origin
from tidepool.store.metadata import MetadataStore
from tidepool.worker.findwriter import FindWriter

log = logging.getLogger(__name__)
T = TypeVar("T")

AskPool = Callable[[str, str, "dict[str, str] | None"], Awaitable[Any]]
"""``(kind, rel, query) -> answer``: ``info``, ``list`` or ``find`` of ``rel`` from the member of
the pool that fetches it from the origin for everyone (``query``: a page of a find, e.g.
``{"limit": "5000", "start_after": "a/b"}``); ``None`` when that is this worker (or it cannot be
asked: the origin is asked then)."""
FIND_PAGE = 1000
"""Entries per page where the caller does not say."""
POOL_PAGE = 5000
"""Entries per page asked of the pool member that owns a find."""
KNOWN_BATCH = 512
"""Rows of the metadata store read at a time by :meth:`MetadataService.known_from`."""


class MetadataService:
    def __init__(
        self,
        dataset: str,
        mounts: MountTable[Origin],
        store: MetadataStore,
        *,
        ttl: float,
        immutable: bool,
        clock: Callable[[], float] = steady_time,
        ask_pool: AskPool | None = None,
    ) -> None:
        self.dataset = dataset
        self.mounts = mounts
        self.store = store
        self.ttl = ttl
        self.immutable = immutable
        self._clock = clock
        self._ask_pool = ask_pool
        self._inflight: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self.stale_served = 0
        """Answers given from the last known state because the origin was down."""
        self.ufs_total: tuple[int, int, float] | None = None
        """(bytes, files, when) of the whole dataset, from the last ``find("")``."""

    # ---- helpers ---------------------------------------------------------------------------

    def fresh(self, fetched_at: float) -> bool:
        if self.immutable:
            return True
        age = self._clock() - fetched_at
        return 0 <= age < self.ttl

    async def _once(self, kind: str, key: str, make: Callable[[], Awaitable[T]]) -> T:
        fut = self._inflight.get((kind, key))
        if fut is None:
            fut = asyncio.ensure_future(make())
            self._inflight[(kind, key)] = fut
            fut.add_done_callback(lambda _f: self._inflight.pop((kind, key), None))
        return await asyncio.shield(fut)

    def _missing(self, rel: str) -> FileNotFoundError:
        return FileNotFoundError(errno.ENOENT, f"no such path in dataset {self.dataset!r}", rel)

    def _checked(self, info: dict[str, Any], rel: str) -> FileInfo:
        if info.get("missing"):
            raise self._missing(rel)
        return info  # type: ignore[return-value]

    def route(self, rel: str) -> Route[Origin] | None:
        return self.mounts.route(rel)

    # ---- what is known ---------------------------------------------------------------------

    def known(self, rel: str) -> tuple[FileInfo | None, bool] | None:
        """``(info or None if known missing, fresh)`` from the store, or None when unknown."""
        cached = self.store.get_info(self.dataset, rel)
        if cached is None:
            return None
        info = None if cached[0].get("missing") else cached[0]
        return info, self.fresh(cached[1])  # type: ignore[return-value]

    def known_from(
        self, start: str, *, strict: bool = False
    ) -> Iterator[tuple[str, FileInfo | None, bool]]:
        """Every path the store knows, in path order from ``start`` on (``strict``: after it):
        ``(path, info, fresh)``, ``info`` None for what is not a file (a directory, a path known
        missing). Read :data:`KNOWN_BATCH` rows at a time, never whole."""
        after, strict_now = start, strict
        while True:
            rows = self.store.rows_from(self.dataset, after, KNOWN_BATCH, strict=strict_now)
            for path, info, fetched_at in rows:
                is_file = info.get("type") == "file" and not info.get("missing")
                yield path, (info if is_file else None), self.fresh(fetched_at)
            if len(rows) < KNOWN_BATCH:
                return
            after, strict_now = rows[-1][0], True

    def learn(self, rel: str, info: FileInfo) -> None:
        """Record metadata that came with a read's answer."""
        self.store.put_info(self.dataset, rel, dict(info), self._clock())

    def learn_missing(self, rel: str) -> None:
        self.store.put_info(self.dataset, rel, {"name": rel, "missing": True}, self._clock())

    def forget(self, rel: str) -> None:
        """Drop what is known of a path (its origin object changed under a read), and the finds
        that listed it: the next find lists again."""
        self.store.delete_info(self.dataset, rel)
        self.store.drop_found(self.dataset, rel)

    # ---- stat, ls, find --------------------------------------------------------------------

    async def _from_pool(self, kind: str, rel: str, forward: bool) -> Any:
        """The pool's answer when another member owns this metadata, else None."""
        if not forward or self._ask_pool is None:
            return None
        return await self._ask_pool(kind, rel, None)

    async def stat(self, path: str, *, forward: bool = True, full: bool = False) -> FileInfo:
        """Metadata of a file or directory, from the store when fresh, else from the member of
        the pool that owns it (``forward``: False when a peer asked), else from the origin.

        ``full``: a file's own HTTP metadata (``headers``) is wanted too; an S3 file known only
        from a listing is then asked of the origin (one HEAD), once per TTL."""
        rel = normalize(path)
        route = self.route(rel)
        if route is None:
            if self.mounts.is_virtual_dir(rel):
                return dir_info(rel)
            raise self._missing(rel)
        cached = self.store.get_info(self.dataset, rel)
        lacking = full and cached is not None and _lacks_headers(cached[0], route)
        if cached is not None and self.fresh(cached[1]) and not lacking:
            return self._checked(cached[0], rel)
        try:
            if lacking:
                return await self._once("stat!", rel, lambda: self._stat_origin(rel, route))
            return await self._once("stat", rel, lambda: self._stat_fetch(rel, route, forward))
        except OriginUnavailableError:
            if cached is not None:
                log.debug("origin unreachable; last known stat of %s/%s", self.dataset, rel)
                self.stale_served += 1
                return self._checked(cached[0], rel)
            raise

    async def _stat_fetch(self, rel: str, route: Route[Origin], forward: bool) -> FileInfo:
        try:
            answer = await self._from_pool("info", rel, forward)
        except FileNotFoundError:
            self.learn_missing(rel)
            raise
        if answer is not None:
            info = dict(answer)
            info["name"] = rel
            self.store.put_info(self.dataset, rel, info, self._clock())
            return info  # type: ignore[return-value]
        return await self._stat_origin(rel, route)

    async def _stat_origin(self, rel: str, route: Route[Origin]) -> FileInfo:
        try:
            info = await route.target.info(route.orel)
        except FileNotFoundError:
            self.learn_missing(rel)
            raise
        out = dict(info)
        out["name"] = rel
        self.store.put_info(self.dataset, rel, out, self._clock())
        return out  # type: ignore[return-value]

    async def _list_fetch(self, rel: str, route: Route[Origin], forward: bool) -> list[FileInfo]:
        answer = await self._from_pool("list", rel, forward)
        if answer is None:
            return await self._list_origin(rel, route)
        entries: list[dict[str, Any]] = list(answer["entries"])
        self.store.put_listing(self.dataset, rel, entries, self._clock())
        return entries  # type: ignore[return-value]

    async def _list_origin(self, rel: str, route: Route[Origin]) -> list[FileInfo]:
        now = self._clock()
        entries = await route.target.ls(route.orel)
        out: list[FileInfo] = []
        for e in entries:
            entry = dict(e)
            entry["name"] = route.to_dataset(e["name"])
            out.append(entry)  # type: ignore[arg-type]
        names = {e["name"] for e in out}
        out.extend(e for e in self.mounts.virtual_children(rel) if e["name"] not in names)
        self.store.put_listing(self.dataset, rel, [dict(e) for e in out], now)
        return out

    async def ls(self, path: str, *, forward: bool = True) -> list[FileInfo]:
        """Direct children of a directory (asked of the pool's owner of the directory first)."""
        rel = normalize(path)
        route = self.route(rel)
        if route is None:
            if not self.mounts.is_virtual_dir(rel):
                raise self._missing(rel)
            return self.mounts.virtual_children(rel)
        cached = self.store.get_listing(self.dataset, rel)
        if cached is not None and self.fresh(cached[1]):
            return cached[0]  # type: ignore[return-value]
        try:
            entries = await self._once("ls", rel, lambda: self._list_fetch(rel, route, forward))
        except OriginUnavailableError:
            if cached is not None:
                self.stale_served += 1
                return cached[0]  # type: ignore[return-value]
            raise
        if not entries and rel:
            try:
                info = await self.stat(rel)  # an empty listing of a missing dir is a 404
            except FileNotFoundError:
                self.store.delete_listing(self.dataset, rel)
                raise
            if info["type"] == "file":
                self.store.delete_listing(self.dataset, rel)
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", rel)
        return entries

    async def find(self, path: str = "", *, forward: bool = True) -> list[FileInfo]:
        """Every file below ``path`` (recursive) and the folder markers below it (directories
        with ``marker`` set, see :mod:`tidepool.core.keys`), in path order, as one list: for
        callers that need it whole; :meth:`find_pages` walks it a page at a time."""
        out: list[FileInfo] = []
        async for page in self.find_pages(path, forward=forward):
            out.extend(page)
        return out

    async def find_pages(
        self, path: str = "", *, forward: bool = True, size: int = FIND_PAGE
    ) -> AsyncIterator[list[FileInfo]]:
        """:meth:`find` in pages of at most ``size`` entries (the whole listing never in memory)."""
        rel = normalize(path)
        await self.ensure_found(rel, forward=forward)
        async for page in self.stored_find_pages(rel, size=size):
            yield page

    async def stored_find_pages(
        self, rel: str, *, size: int = FIND_PAGE
    ) -> AsyncIterator[list[FileInfo]]:
        """:meth:`find_pages` of what the store holds for ``rel`` now, without listing again
        however old it is (a second pass over a find just made)."""
        after = ""
        while True:
            page = self.found_page(normalize(rel), after, size)
            if page.files:
                yield page.files
            if page.next is None:
                return
            after = page.next

    async def find_page(
        self, path: str, *, start_after: str = "", limit: int = FIND_PAGE, forward: bool = True
    ) -> FoundPage:
        """At most ``limit`` entries of :meth:`find` after the path ``start_after``, and the
        cursor of the next page when more follow.

        Only a first page (no ``start_after``) lists the origin again when the stored find is
        older than the TTL; a later page continues the stored find however old it has grown
        meanwhile, as a cursor into one listing. Otherwise a listing that takes longer than
        the TTL to page through (a million keys, or a TTL of seconds) listed the origin again
        for every page after that: 100,000 files with a 1 s TTL took 48 s to find, not 2."""
        rel = normalize(path)
        if not start_after or self._found_at(rel) is None:
            await self.ensure_found(rel, forward=forward)
        return self.found_page(rel, normalize(start_after), limit)

    async def ensure_found(self, rel: str, *, forward: bool = True) -> None:
        """Make the store hold a find of ``rel``: listed at the origin at most once per TTL and
        once per pool (by the member that owns the directory, which the others ask, a page at
        a time); concurrent callers share one listing. With the origin unreachable, what is
        known (an older find, the per-directory listings of an older version) is served."""
        route = self.route(rel)
        if route is None:
            for child in self.mounts.virtual_children(rel):
                await self.ensure_found(child["name"], forward=forward)
            return
        found_at = self._found_at(rel)
        if found_at is not None and self.fresh(found_at):
            if rel == "" and self.ufs_total is None:  # listed before a restart
                await self._restarted_total(route)
            return
        try:
            await self._once("find", rel, lambda: self._find_fetch(rel, route, forward))
        except OriginUnavailableError:
            if found_at is None and self.store.get_listing(self.dataset, rel) is None:
                raise
            log.debug("origin unreachable; last known find of %s/%s", self.dataset, rel)
            self.stale_served += 1

    async def _restarted_total(self, route: Route[Origin]) -> None:
        """Whether the origin answers (one 1-key listing, not a whole one), and then the total
        stored with the listing as this process's: what a status after a restart reports (an
        origin that does not answer leaves it the last known, from the store)."""
        try:
            await route.target.sample()
        except OriginUnavailableError:
            self.stale_served += 1
            return
        self.ufs_total = self.store.get_total(self.dataset)

    def _found_at(self, rel: str) -> float | None:
        """When the latest find covering ``rel`` (its own or an ancestor's) was listed."""
        best: float | None = None
        d: str | None = rel
        while d is not None:
            at = self.store.found_at(self.dataset, d)
            if at is not None and (best is None or at > best):
                best = at
            d = parent(d) if d else None
        return best

    def found_page(self, rel: str, start_after: str, limit: int) -> FoundPage:
        """A page of the stored find of ``rel``, by indexed queries of the store's rows (files and
        folder markers; plain directories and paths known missing are skipped)."""
        out: list[FileInfo] = []
        cursor = start_after
        while len(out) <= limit:
            want = limit + 1 - len(out)
            rows = self.store.info_rows(self.dataset, rel, cursor, max(want, 64))
            for name, info in rows:
                cursor = name
                if _is_found(info):
                    info.pop("headers", None)  # a HEAD's object headers: not part of a listing
                    out.append(info)  # type: ignore[arg-type]
                    if len(out) > limit:
                        break
            if len(rows) < max(want, 64):
                break
        if len(out) > limit:
            del out[limit:]
            return FoundPage(out, out[-1]["name"])
        return FoundPage(out, None)

    async def _find_fetch(self, rel: str, route: Route[Origin], forward: bool) -> None:
        now = self._clock()
        writer = FindWriter(self.store, self.dataset, rel, now)
        async for page in self._find_source(rel, route, forward):
            writer.add(page)  # type: ignore[arg-type]
        writer.finish()
        # off the event loop: a million rows take a while to commit, and the range to scan
        await asyncio.to_thread(self.store.drop_older, self.dataset, rel, now)  # gone upstream
        await asyncio.to_thread(self.store.put_found, self.dataset, rel, now)
        if rel == "":
            self.ufs_total = (writer.bytes, writer.files, now)
            total = (self.dataset, writer.bytes, writer.files, now)
            await asyncio.to_thread(self.store.put_total, *total)

    async def _find_source(
        self, rel: str, route: Route[Origin], forward: bool
    ) -> AsyncIterator[list[FileInfo]]:
        """The pages of a find: from the pool member that owns ``rel`` when there is one that
        answers (a page at a time), else from the origin."""
        after = ""
        while forward and self._ask_pool is not None:
            query = {"limit": str(POOL_PAGE)} | ({"start_after": after} if after else {})
            try:
                answer = await self._ask_pool("find", rel, query)
            except BadRequestError:  # an owner that does not page: list at the origin
                answer = None
            if answer is None:
                if after:
                    log.debug("find %s/%s: the owner stopped answering", self.dataset, rel)
                break
            yield list(answer["files"])
            after = answer.get("next") or ""
            if not after:
                return
        async for page in route.target.find_pages(route.orel):
            files: list[FileInfo] = []
            for e in page:
                entry = dict(e)
                entry["name"] = route.to_dataset(e["name"])
                files.append(entry)  # type: ignore[arg-type]
            yield files


@dataclass(frozen=True)
class FoundPage:
    """One page of a find."""

    files: list[FileInfo]
    next: str | None
    """The path to ask after for the next page (None: this was the last)."""


def _is_found(info: dict[str, Any]) -> bool:
    """A row that a find lists: a file, or a folder marker (a directory the origin holds)."""
    if info.get("missing"):
        return False
    return info.get("type") == "file" or bool(info.get("marker"))


def _lacks_headers(info: dict[str, Any], route: Route[Origin]) -> bool:
    """A file of an S3 origin whose object headers were never seen (it came from a listing)."""
    return info.get("type") == "file" and "headers" not in info and route.target._s3() is not None
