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

Limits: a ``find`` result is remembered in memory (per path, for the TTL) on top of the
persisted per-directory listings it writes; after a restart the first ``find`` lists again.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tidepool.core.clock import steady_time
from tidepool.core.errors import OriginUnavailableError
from tidepool.core.fileinfo import FileInfo, dir_info
from tidepool.core.mounts import MountTable, Route
from tidepool.core.paths import normalize, parent
from tidepool.origin.funnel import Origin
from tidepool.store.metadata import MetadataStore

log = logging.getLogger(__name__)
T = TypeVar("T")

AskPool = Callable[[str, str], Awaitable[Any]]
"""``(kind, rel) -> answer``: ``info``, ``list`` or ``find`` of ``rel`` from the member of the
pool that fetches it from the origin for everyone; ``None`` when that is this worker (or it
cannot be asked: the origin is asked then)."""


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
        self._found: dict[str, float] = {}
        """When each ``find`` was last answered by the origin (in this process)."""
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

    def learn(self, rel: str, info: FileInfo) -> None:
        """Record metadata that came with a read's answer."""
        self.store.put_info(self.dataset, rel, dict(info), self._clock())

    def learn_missing(self, rel: str) -> None:
        self.store.put_info(self.dataset, rel, {"name": rel, "missing": True}, self._clock())

    def forget(self, rel: str) -> None:
        """Drop what is known of a path (its origin object changed under a read)."""
        self.store.delete_info(self.dataset, rel)

    # ---- stat, ls, find --------------------------------------------------------------------

    async def _from_pool(self, kind: str, rel: str, forward: bool) -> Any:
        """The pool's answer when another member owns this metadata, else None."""
        if not forward or self._ask_pool is None:
            return None
        return await self._ask_pool(kind, rel)

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
        with ``marker`` set, see :mod:`tidepool.core.keys`), listed at the origin at most once per
        TTL and once per pool: by the member that owns the directory, which the others ask."""
        rel = normalize(path)
        route = self.route(rel)
        if route is None:
            out: list[FileInfo] = []
            for child in self.mounts.virtual_children(rel):
                out.extend(await self.find(child["name"], forward=forward))
            return out
        found_at = self._found.get(rel)
        if found_at is not None and self.fresh(found_at):
            cached = self._find_cached(rel)
            if cached is not None:
                return cached
        try:
            return await self._once("find", rel, lambda: self._find_fetch(rel, route, forward))
        except OriginUnavailableError:
            cached = self._find_cached(rel)
            if cached is None:
                raise
            self.stale_served += 1
            return cached

    async def _find_fetch(self, rel: str, route: Route[Origin], forward: bool) -> list[FileInfo]:
        answer = await self._from_pool("find", rel, forward)
        if answer is None:
            return await self._find_origin(rel, route)
        return self._keep_found(rel, list(answer["files"]), self._clock())

    async def _find_origin(self, rel: str, route: Route[Origin]) -> list[FileInfo]:
        now = self._clock()
        found = await route.target.find(route.orel)
        files: list[FileInfo] = []
        for e in found:
            entry = dict(e)
            entry["name"] = route.to_dataset(e["name"])
            files.append(entry)  # type: ignore[arg-type]
        return self._keep_found(rel, files, now)

    def _keep_found(self, rel: str, files: list[FileInfo], now: float) -> list[FileInfo]:
        """Persist a find's answer as listings per directory, so offline ls/stat of every file
        works. ``files`` may hold folder markers (directories with ``marker`` set): each is listed
        once in its parent, as the directory it is, and gets a listing of its own."""
        by_dir: dict[str, dict[str, dict[str, Any]]] = {rel: {}}
        for f in files:
            by_dir.setdefault(parent(f["name"]), {})[f["name"]] = dict(f)
            if f["type"] == "directory":
                by_dir.setdefault(f["name"], {})
        for d in list(by_dir):
            while d and d != rel:  # make sure intermediate directories appear in their parents
                up = parent(d)
                by_dir.setdefault(up, {}).setdefault(d, dict(dir_info(d)))
                d = up
        for d, entries in by_dir.items():
            if d == rel or d.startswith(rel + "/") or not rel:
                self.store.put_listing(self.dataset, d, list(entries.values()), now)
        self._found[rel] = now
        if rel == "":
            plain = [f for f in files if f["type"] == "file"]
            self.ufs_total = (sum(f["size"] for f in plain), len(plain), now)
        return files

    def _find_cached(self, rel: str) -> list[FileInfo] | None:
        listing = self.store.get_listing(self.dataset, rel)
        if listing is None:
            return None
        out: list[FileInfo] = []
        for e in listing[0]:
            if e["type"] == "directory":
                if e.get("marker"):  # a folder marker is an object of its own
                    out.append(e)  # type: ignore[arg-type]
                sub = self._find_cached(e["name"])
                if sub is not None:
                    out.extend(sub)
            else:
                out.append(e)  # type: ignore[arg-type]
        return out


def _lacks_headers(info: dict[str, Any], route: Route[Origin]) -> bool:
    """A file of an S3 origin whose object headers were never seen (it came from a listing)."""
    return info.get("type") == "file" and "headers" not in info and route.target._s3() is not None
