"""Balancing a node pool after a join: the files a worker now owns are copied to it from the
members that hold them, in the background, over the LAN only.

Two halves, one per side of the LAN:

* :func:`~tidepool.worker.held.held_page` answers a peer's ``GET /v1/datasets/{ds}/held?member=
  NAME``: one page (sorted by path, after ``start_after``, at most ``limit``) of the files this
  worker holds cached — the current version, every page that ``NAME`` owns under the current
  ring — with path, version, size and mtime.
* :class:`Rebalancer` runs a pass at start and whenever the members change (a newer change
  restarts the pass): for each dataset it pages through every other member's answer and copies
  what it lacks through the ordinary peer read, asked only if cached
  (:meth:`~tidepool.worker.dataset.DatasetService.copy_from_peer`), so peer bytes get the usual
  checks (version ``If-Match``, size, the origin's MD5) and nothing is ever fetched from the
  origin: a file the peer no longer holds is skipped. At most :data:`CONCURRENCY` files at once,
  at most ``rate`` bytes a second (:class:`RateLimit`; a worker started with rate 0 runs no
  passes, its status says ``off``), and a pass stops (``stopped-full``) when
  the next file would not fit under the tiers' high watermark, rather than evicting the dataset's
  own hot data for it.

A worker killed in the middle of a pass runs it again when it starts: the page store writes each
page atomically and indexes it before it is visible (a killed put leaves a temp file that
startup removes), so what is in the store is whole and checked, and the new pass skips it. A file
of several pages copied partly before the kill is checked against the origin's MD5 once the new
pass completed it.

Limits: the metadata of a copied file is taken from its holder and counts as fresh from the copy
on; a file whose version changed at the origin since its holder read it is copied as that older
version (as a lazy read from the holder would be).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from tidepool.core.errors import BadRequestError, NotCachedError, redact
from tidepool.core.fileinfo import FileInfo
from tidepool.core.pages import HEADER_SIZE, page_count
from tidepool.core.paths import normalize
from tidepool.core.ring import Member
from tidepool.worker.dataset import DatasetService
from tidepool.worker.placement import Placement

log = logging.getLogger(__name__)

LISTING_PAGE = 1000
"""Entries the rebalancer asks a peer for at once (one page of the listing in memory)."""
CONCURRENCY = 4
"""Files copied at once per dataset."""
QUEUED = 64
"""Entries waiting for a copier (the listing is paged, never held whole)."""
LIST_ATTEMPTS = 6
"""Times a member's listing is asked for before the pass goes on without it (a member that
joined a moment ago is refused until the others' view of the pool has it: about 30 s)."""
WATCH_INTERVAL = 1.0
"""Seconds between two looks at the members."""
MAX_ERRORS_KEPT = 10

State = Literal["idle", "running", "done", "stopped-full", "off"]


class RateLimit:
    """At most ``rate`` bytes a second on average (0: no bound): each take waits for the time
    its bytes take at that rate after the bytes taken before it. ``clock``/``sleep`` are
    injectable for tests."""

    def __init__(
        self,
        rate: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._free_at = float("-inf")

    def reserve(self, nbytes: int) -> float:
        """Book ``nbytes``; the seconds to wait before using them."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        start = max(now, self._free_at)
        self._free_at = start + nbytes / self.rate
        return start - now

    async def take(self, nbytes: int) -> None:
        wait = self.reserve(nbytes)
        if wait > 0:
            await self._sleep(wait)


@dataclass
class RebalanceProgress:
    """One dataset's pass, as ``raw.rebalance`` of its status shows it."""

    state: State = "idle"
    files_total: int = 0
    """Files the peers listed for this worker so far (the listings are paged)."""
    files_done: int = 0
    """Files copied."""
    bytes_done: int = 0
    files_skipped: int = 0
    """Files already held, or that the peer no longer held (never fetched from the origin)."""
    errors: int = 0
    last_errors: list[str] = field(default_factory=list)
    peers: dict[str, int] = field(default_factory=dict)
    """Files copied from each member."""
    members: list[str] = field(default_factory=list)
    """The members of the pool the pass started with."""
    message: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    rate_bytes_s: int = 0
    """The byte-rate bound (0: none)."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def error(self, text: str) -> None:
        self.errors += 1
        self.last_errors = [*self.last_errors, redact(text)][-MAX_ERRORS_KEPT:]


class CacheFull(Exception):
    """The next file would not fit under the high watermark: the pass stops."""


class Rebalancer:
    """Copies to this worker what it owns and its peers hold, after every change of members."""

    def __init__(
        self,
        services: dict[str, DatasetService],
        placement: Placement,
        *,
        rate: int = 64 << 20,
        interval: float = WATCH_INTERVAL,
    ) -> None:
        self.services = services
        self.placement = placement
        self.limit = RateLimit(rate)
        self.interval = interval
        self.progress = {name: RebalanceProgress(rate_bytes_s=rate) for name in services}
        for name, svc in services.items():
            svc.rebalance_status = self.progress[name].as_dict
        self._watcher: asyncio.Task[None] | None = None
        self._pass: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        for task in (self._watcher, self._pass):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _watch(self) -> None:
        """A pass at start, and a new one (the old one cancelled) when the members change."""
        seen: frozenset[str] | None = None
        while True:
            members = self.placement.members()
            view = frozenset(m.name for m in members)
            if view != seen:
                seen = view
                if self._pass is not None:
                    self._pass.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._pass
                self._pass = asyncio.get_running_loop().create_task(self._run(members))
            await asyncio.sleep(self.interval)

    async def _run(self, members: list[Member]) -> None:
        me = self.placement.me.name
        peers = [m for m in members if m.name != me]
        for name, svc in sorted(self.services.items()):
            p = self.progress[name] = RebalanceProgress(
                state="running",
                members=sorted(m.name for m in members),
                started_at=time.time(),
                rate_bytes_s=self.limit.rate,
            )
            svc.rebalance_status = p.as_dict
            try:
                await self._dataset(svc, peers, p)
                p.state = "done"
            except CacheFull as exc:
                p.state = "stopped-full"
                p.message = str(exc)
                log.warning("rebalance of %s stopped: %s", name, exc)
            except asyncio.CancelledError:
                p.state = "idle"
                p.message = "restarted: the members changed"
                raise
            except Exception as exc:  # a bug here must not leave the status "running"
                log.exception("rebalance of %s failed", name)
                p.error(f"{type(exc).__name__}: {exc}")
                p.state = "done"
                p.message = "the pass ended early on an error; it runs again when members change"
            finally:
                p.finished_at = time.time()
            log.info(
                "rebalance of %s %s: %d files copied (%d bytes), %d skipped, %d errors",
                name,
                p.state,
                p.files_done,
                p.bytes_done,
                p.files_skipped,
                p.errors,
            )

    async def _dataset(
        self, svc: DatasetService, peers: list[Member], p: RebalanceProgress
    ) -> None:
        """Page through each peer's listing; copiers take the entries from a bounded queue."""
        queue: asyncio.Queue[tuple[Member, FileInfo] | None] = asyncio.Queue(QUEUED)
        state = _Copying(svc, p, self.limit)
        copiers = [
            asyncio.get_running_loop().create_task(state.copier(queue)) for _ in range(CONCURRENCY)
        ]
        listers = [
            asyncio.get_running_loop().create_task(self._list(svc, peer, p, queue, copiers))
            for peer in peers
        ]
        try:
            await asyncio.gather(*listers)
            for _ in copiers:
                await _put(queue, None, copiers)
            await asyncio.gather(*copiers)
        finally:  # a full cache (or a newer pass) stops every lister and copier
            for task in (*listers, *copiers):
                task.cancel()
            await asyncio.gather(*listers, *copiers, return_exceptions=True)

    async def _list(
        self,
        svc: DatasetService,
        peer: Member,
        p: RebalanceProgress,
        queue: asyncio.Queue[tuple[Member, FileInfo] | None],
        copiers: list[asyncio.Task[None]],
    ) -> None:
        cursor: str | None = ""
        failures = 0
        while cursor is not None:
            try:
                page = await self.placement.list_held(peer, svc.name, cursor, LISTING_PAGE)
            except Exception as exc:  # one member that cannot answer does not stop the pass
                failures += 1
                if failures < LIST_ATTEMPTS:  # it may not see us as a member yet
                    log.debug("listing of %s failed (%s); asking again", peer.name, exc)
                    await asyncio.sleep(min(8.0, 0.5 * 2**failures))
                    continue
                p.error(f"listing of {peer.name}: {exc}")
                return
            failures = 0
            for entry in page["files"]:
                info = _entry_info(entry)
                if info is None:
                    p.error(f"{peer.name} listed a malformed entry")
                    continue
                p.files_total += 1
                await _put(queue, (peer, info), copiers)
            nxt = page.get("next")
            cursor = nxt if isinstance(nxt, str) and nxt > (cursor or "") else None


class _Copying:
    """The copiers of one dataset's pass, sharing its progress and the room they booked."""

    def __init__(self, svc: DatasetService, p: RebalanceProgress, limit: RateLimit) -> None:
        self.svc = svc
        self.p = p
        self.limit = limit
        self.booked = 0
        """Bytes on disk of copies in flight (not yet counted by the store)."""

    async def copier(self, queue: asyncio.Queue[tuple[Member, FileInfo] | None]) -> None:
        while (item := await queue.get()) is not None:
            await self._one(*item)

    async def _one(self, peer: Member, info: FileInfo) -> None:
        svc, p = self.svc, self.p
        rel = info["name"]
        known = svc.metadata.known(rel)
        if known is not None and (known[0] is None or known[0]["version"] != info["version"]):
            p.files_skipped += 1  # this worker knows another version (or none): not that copy
            return
        missing = set(svc.reader.missing_pages(info))
        want = [i for i in svc.owned_pages(info) if i in missing]
        if not want:
            p.files_skipped += 1
            return
        need = info["size"] + page_count(info["size"], svc.page_size) * HEADER_SIZE
        if svc.free_room() - self.booked < need:
            raise CacheFull(
                f"the cache of {svc.name} is full up to its high watermark: {rel} "
                f"({info['size']} bytes) and the files after it were not copied (raise the "
                "tier quota, or they are read from their holders when asked)"
            )
        self.booked += need
        try:
            await self.limit.take(info["size"])
            got = await svc.copy_from_peer(peer, info)
        except NotCachedError:
            p.files_skipped += 1  # the peer evicted it meanwhile: not fetched from the origin
            return
        except Exception as exc:
            p.error(f"{rel} from {peer.name}: {exc}")
            return
        finally:
            self.booked -= need
        p.files_done += 1
        p.bytes_done += got
        p.peers[peer.name] = p.peers.get(peer.name, 0) + 1
        svc.counters.rebalance_bytes.inc(got)
        svc.counters.rebalance_files.inc()


async def _put(
    queue: asyncio.Queue[tuple[Member, FileInfo] | None],
    item: tuple[Member, FileInfo] | None,
    copiers: list[asyncio.Task[None]],
) -> None:
    """Queue ``item`` for the copiers; raises what stopped one of them (the cache is full)."""
    while True:
        for task in copiers:
            if task.done():
                task.result()
        try:
            await asyncio.wait_for(queue.put(item), 1.0)
            return
        except TimeoutError:
            continue


def _entry_info(entry: Any) -> FileInfo | None:
    """An entry of a peer's ``held`` answer as file metadata, or None when malformed."""
    if not isinstance(entry, dict):
        return None
    path, version, size = entry.get("path"), entry.get("version"), entry.get("size")
    mtime = entry.get("mtime")
    if (
        not isinstance(path, str)
        or not isinstance(version, str)
        or not version
        or isinstance(size, bool)
        or not isinstance(size, int)
        or size < 0
        or isinstance(mtime, bool)
        or not (mtime is None or isinstance(mtime, (int, float)))
    ):
        return None
    try:
        rel = normalize(path)
    except BadRequestError:
        return None
    if not rel or rel != path:
        return None
    return {"name": rel, "type": "file", "size": size, "version": version, "mtime": mtime}


__all__ = ["RateLimit", "RebalanceProgress", "Rebalancer"]
