"""Reading ahead of the program: one prefetch scheduler per dataset, so the first epoch runs at the
speed of the link instead of one WAN round trip per file.

A cold read costs a round trip (~70 ms for 100 KiB at 40 ms RTT) and the link carries ten or so
such objects at once, so the first epoch is fast only when the cache knows what comes next and
keeps the link full. Three sources say what comes next, in this order of priority:

1. **hints** — an ordered list of paths the program sends (``POST …/prefetch``; the fsspec
   client's ``fs.prefetch`` and :mod:`tidepool.torch` send a sampler's epoch order);
2. **patterns** — a reader walking a directory in listing order (``for f in sorted(ls)``,
   ``md5sum *``, ``tar``, an S3 client paging a listing): after a few neighbouring reads the
   next files of that directory are fetched, ever further ahead, until the walk breaks;
3. **warm on first touch** (policy ``dataset``) — when the dataset fits in the cache, its first
   read starts a background pull of all of it (of the files this worker owns, in a pool).

A read a program waits for never waits for prefetch: it fetches its pages itself at once (and
joins a prefetch already fetching them). Prefetch keeps just enough requests in flight to fill
the link (:class:`LinkGauge`, a BBR-like estimate of the bandwidth-delay product), stops when the
cache is full (it never evicts to make room), pauses while the origin is unreachable and resumes
when it answers, fetches only the files this worker owns, and never fails a reader: a prefetch
error is counted and forgotten.

Policies (``spec.prefetch.policy`` of the runtime): ``off``, ``pattern`` (hints and patterns),
``dataset`` (the default: hints, patterns and the whole dataset when it fits).

Limits: the pattern detector looks at one directory's listing order (a walk that crosses into
the next directory starts a new run there); a hint list is capped (:data:`MAX_QUEUED`); the
statistics of pages prefetched and later read are kept for a bounded number of pages.

Why this module is longer than ~400 lines: the scheduler, its queue and the link gauge decide
together what to fetch next and how much to keep in flight; apart, each would need the others'
state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from tidepool.core.errors import OriginUnavailableError
from tidepool.core.fileinfo import FileInfo
from tidepool.core.paths import parent

log = logging.getLogger(__name__)

Policy = Literal["off", "pattern", "dataset"]
POLICIES: tuple[Policy, ...] = ("off", "pattern", "dataset")
MAX_QUEUED = 1_000_000
"""Most paths waiting to be prefetched for one dataset (hints beyond are ignored)."""
MAX_HINT = 100_000
"""Most paths one hint request may carry."""
MAX_ORDERS = 64
"""Directories whose listing order is kept for the walk detector."""
HELD_BATCH = 64
"""Held files skipped before the scheduler yields to the event loop (a dataset warm over a
cached dataset queues every file)."""
PAUSE_POLL = 0.5
"""Seconds between checks of a paused scheduler (origin unreachable, cache full)."""


# ---- pure policy ---------------------------------------------------------------------------


class LinkGauge:
    """How many prefetch requests to keep in flight: twice the bandwidth-delay product of the
    link in objects (BBR's estimate), from the best delivery rate of the last ``rate_window``
    seconds and the shortest request time of the last ``delay_window`` seconds. Starting at
    ``start``, it roughly doubles per window while the rate still grows, and stops growing when
    the link is full (more requests then only queue). Time is passed in: no clock inside."""

    def __init__(
        self,
        *,
        start: int = 4,
        lo: int = 2,
        hi: int = 32,
        rate_window: float = 2.0,
        delay_window: float = 30.0,
    ) -> None:
        self.start, self.lo, self.hi = start, lo, hi
        self.rate_window, self.delay_window = rate_window, delay_window
        self._done: deque[tuple[float, int]] = deque()  # (finished at, bytes)
        self._done_bytes = 0  # the sum of _done's bytes
        # sliding-window extremes as monotonic deques (each sample pushed and popped once):
        # _delays rises from its shortest request time, _best_rate falls from its best rate
        self._delays: deque[tuple[float, float]] = deque()  # (finished at, seconds)
        self._best_rate: deque[tuple[float, float]] = deque()  # (at, bytes/s)
        self._objects = 0
        self._object_bytes = 0

    def sample(self, nbytes: int, seconds: float, now: float) -> None:
        """One request finished: ``nbytes`` in ``seconds``, at ``now``."""
        if nbytes <= 0:
            return
        self._objects += 1
        self._object_bytes += nbytes
        self._done.append((now, nbytes))
        self._done_bytes += nbytes
        while self._done and now - self._done[0][0] > self.rate_window:
            self._done_bytes -= self._done.popleft()[1]
        if len(self._done) > 1:  # delivered since the window's first completion, over that span
            span = max(now - self._done[0][0], 1e-3)
            rate = (self._done_bytes - self._done[0][1]) / span
            while self._best_rate and self._best_rate[-1][1] <= rate:
                self._best_rate.pop()
            self._best_rate.append((now, rate))
        while self._best_rate and now - self._best_rate[0][0] > self.rate_window * 2:
            self._best_rate.popleft()
        delay = max(seconds, 1e-4)
        while self._delays and self._delays[-1][1] >= delay:
            self._delays.pop()
        self._delays.append((now, delay))
        while self._delays and now - self._delays[0][0] > self.delay_window:
            self._delays.popleft()

    def target(self) -> int:
        """Called before every prefetch is started: constant time."""
        if self._objects < 2 or not self._best_rate:
            return self.start
        rate = self._best_rate[0][1]
        delay = self._delays[0][1]
        mean = self._object_bytes / self._objects
        bdp = rate * delay / mean
        return max(self.lo, min(self.hi, math.ceil(2 * bdp)))

    def describe(self) -> dict[str, float]:
        rate = self._best_rate[0][1] if self._best_rate else 0.0
        delay = self._delays[0][1] if self._delays else 0.0
        return {"rate_bytes_s": round(rate, 1), "min_delay_s": round(delay, 4)}


class WalkDetector:
    """Whether reads walk a directory in listing order, and how far ahead to fetch.

    ``read(directory, position)`` is told the position of each read in its directory's listing
    order; a read at most ``slack`` positions after the previous one continues the walk (reads
    of one walker may arrive slightly out of order), anything else breaks it. After ``min_run``
    steps it answers how many following files to have fetched: doubling with each step, up to
    ``max_ahead``. Pure; remembers ``max_dirs`` directories."""

    def __init__(
        self, *, min_run: int = 2, slack: int = 3, max_ahead: int = 256, max_dirs: int = 64
    ) -> None:
        self.min_run, self.slack, self.max_ahead, self.max_dirs = (
            min_run,
            slack,
            max_ahead,
            max_dirs,
        )
        self._walks: OrderedDict[str, tuple[int, int]] = OrderedDict()  # dir -> (position, run)

    def read(self, directory: str, position: int) -> int:
        last = self._walks.get(directory)
        run = 0
        if last is not None and last[0] < position <= last[0] + self.slack:
            run = last[1] + 1
        elif last is not None and last[0] - self.slack <= position <= last[0]:
            run = last[1]  # a late read of a walk already past it: neither step nor break
            position = last[0]
        self._walks[directory] = (position, run)
        self._walks.move_to_end(directory)
        while len(self._walks) > self.max_dirs:
            self._walks.popitem(last=False)
        if run < self.min_run:
            return 0
        return min(self.max_ahead, 2 << run)

    def broken(self, directory: str) -> bool:
        walk = self._walks.get(directory)
        return walk is None or walk[1] < self.min_run


# ---- the scheduler -------------------------------------------------------------------------


@dataclass
class PrefetchStats:
    files: int = 0
    """Files prefetched (at least one page fetched)."""
    bytes: int = 0
    """Bytes prefetched."""
    used_bytes: int = 0
    """Of ``bytes``: read by a program afterwards."""
    failed: int = 0
    """Prefetches that failed (never a reader's error)."""
    hinted: int = 0
    """Paths accepted from hints."""
    held: int = 0
    """Queued files skipped because this worker already held them."""


Warm = Callable[[str], Awaitable[int]]
"""Fetch every missing page of a file into the cache; the bytes fetched."""


class Prefetcher:
    """The prefetch scheduler of one dataset on one worker (see the module docstring)."""

    def __init__(
        self,
        dataset: str,
        *,
        policy: Policy,
        warm: Warm,
        owned: Callable[[str], bool],
        listing: Callable[[str], Awaitable[list[FileInfo]]],
        everything: Callable[[], Awaitable[list[FileInfo]]],
        room: Callable[[], int],
        size_of: Callable[[str], int],
        reachable: Callable[[], bool],
        held: Callable[[str], bool] | None = None,
        max_inflight: int = 32,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dataset = dataset
        self._held = held
        """Whether this worker already holds a file (every page it keeps, of the version it
        knows): such a file is skipped before it costs a task, a room check and a lookup. On a
        warm dataset a walk queues only cached files, and fetching each again for nothing took
        about a sixth of the event loop's time of a warm small-file epoch."""
        self.policy: Policy = policy
        self._warm = warm
        self._owned = owned
        self._listing = listing
        self._everything = everything
        self._room = room
        self._size_of = size_of
        self._reserved: dict[str, int] = {}
        """Bytes expected from each file in flight: room is kept for them."""
        self._reachable = reachable
        self._clock = clock
        hi = max(1, max_inflight)
        self.gauge = LinkGauge(start=min(4, hi), lo=min(2, hi), hi=hi)
        self.walks = WalkDetector()
        self.stats = PrefetchStats()
        self._queues: tuple[deque[str], deque[str], deque[str]] = (deque(), deque(), deque())
        """hinted, pattern, background — taken in that order."""
        self._queued: set[str] = set()
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._warmed_at: float | None = None
        self._orders: OrderedDict[str, tuple[list[str], dict[str, int]]] = OrderedDict()
        """Listing order (and positions) of the owned files of recently read directories."""
        self._frontier: OrderedDict[str, int] = OrderedDict()
        """Per directory walk: the position up to which its files were queued (each once)."""
        self._ordering: set[str] = set()
        self._background: set[asyncio.Future[None]] = set()
        self.state = "idle"
        """idle, running, paused: origin unreachable, stopped: cache full, off."""

    # ---- inputs ----------------------------------------------------------------------------

    def hint(self, paths: Iterable[str]) -> int:
        """Queue a program's announced order (replacing an older hint list); paths this worker
        does not own are left to their owners. Returns how many were queued."""
        if self.policy == "off":
            return 0
        hinted = self._queues[0]
        for rel in hinted:
            self._queued.discard(rel)
        hinted.clear()
        accepted = 0
        for rel in paths:
            if len(self._queued) >= MAX_QUEUED:
                break
            if not rel or rel in self._queued or rel in self._inflight or not self._owned(rel):
                continue
            hinted.append(rel)
            self._queued.add(rel)
            accepted += 1
        self.stats.hinted += accepted
        self._kick()
        return accepted

    def touched(self, rel: str) -> None:
        """A program read ``rel``: follow its walk, and warm the dataset on first touch.

        Called on every read, hits included, so it does no I/O: a directory whose listing order
        is not known yet is looked up in the background and followed from the next read on."""
        if self.policy == "off":
            return
        if self.policy == "dataset" and self._warm_due():
            self._warmed_at = self._clock()
            self._spawn(self._warm_dataset())
        directory = parent(rel)
        order = self._orders.get(directory)
        if order is None:
            if directory not in self._ordering:
                self._ordering.add(directory)
                self._spawn(self._learn_order(directory))
            return
        names, positions = order
        position = positions.get(rel)
        if position is None:
            return
        ahead = self.walks.read(directory, position)
        pattern = self._queues[1]
        if ahead == 0:
            self._frontier.pop(directory, None)
            if pattern and self.walks.broken(directory):  # the walk broke: stop following it
                kept = [p for p in pattern if parent(p) != directory]
                for dropped in set(pattern) - set(kept):
                    self._queued.discard(dropped)
                pattern.clear()
                pattern.extend(kept)
            return
        # each file of a walk is queued once: from past what this walk queued already
        first = max(position + 1, self._frontier.get(directory, -1) + 1)
        last = position + ahead
        added = False
        for name in names[first : last + 1]:
            if name not in self._queued and name not in self._inflight:
                pattern.append(name)
                self._queued.add(name)
                added = True
        if last >= first:
            self._frontier[directory] = last
            self._frontier.move_to_end(directory)
            while len(self._frontier) > MAX_ORDERS:
                self._frontier.popitem(last=False)
        if added:
            self._kick()

    async def _learn_order(self, directory: str) -> None:
        """The listing order of the files this worker owns in ``directory``."""
        try:
            entries = await self._listing(directory)
        except (OSError, ValueError) as exc:
            log.debug("no listing of %s/%s to follow a walk: %s", self.dataset, directory, exc)
            return
        finally:
            self._ordering.discard(directory)
        names = sorted(e["name"] for e in entries if e["type"] == "file" and self._owned(e["name"]))
        self._orders[directory] = (names, {n: i for i, n in enumerate(names)})
        while len(self._orders) > MAX_ORDERS:
            self._orders.popitem(last=False)

    def _warm_due(self) -> bool:
        return self._warmed_at is None or self._clock() - self._warmed_at > 300.0

    async def _warm_dataset(self) -> None:
        while True:
            try:
                files = await self._everything()
                break
            except OriginUnavailableError as exc:  # list it when the origin is back
                log.debug("no listing of %s to warm it yet: %s", self.dataset, exc)
                self.state = "paused: origin unreachable"
                while not self._reachable():
                    await asyncio.sleep(PAUSE_POLL)
            except (OSError, ValueError) as exc:
                log.debug("no listing of %s to warm it: %s", self.dataset, exc)
                self._warmed_at = None
                return
        mine = [f for f in files if self._owned(f["name"])]
        need = sum(f["size"] for f in mine)
        room = self._room()
        if need > room:
            log.info(
                "dataset %r (%d bytes here) does not fit in the free cache (%d bytes): "
                "prefetching by hints and patterns only",
                self.dataset,
                need,
                room,
            )
            return
        background = self._queues[2]
        for f in sorted(mine, key=lambda f: f["name"]):
            name = f["name"]
            if name not in self._queued and name not in self._inflight:
                background.append(name)
                self._queued.add(name)
        log.info("warming dataset %r: %d files queued", self.dataset, len(background))
        self._kick()

    # ---- the loop --------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _kick(self) -> None:
        self._wake.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._run())

    def _next(self) -> str | None:
        for queue in self._queues:
            while queue:
                rel = queue.popleft()
                self._queued.discard(rel)
                if rel not in self._inflight:
                    return rel
        return None

    def queued(self) -> int:
        return sum(len(q) for q in self._queues)

    async def _run(self) -> None:
        while True:
            if not self.queued():
                self.state = "idle"
                self._wake.clear()
                if not self._inflight:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), 30.0)
                    if not self.queued():
                        return
                else:
                    await asyncio.wait(list(self._inflight.values()), timeout=PAUSE_POLL)
                continue
            if not self._reachable():
                self.state = "paused: origin unreachable"
                await asyncio.sleep(PAUSE_POLL)
                continue
            if len(self._inflight) >= self.gauge.target():
                self.state = "running"
                await asyncio.wait(
                    list(self._inflight.values()), return_when=asyncio.FIRST_COMPLETED
                )
                continue
            rel = self._next()
            if rel is None:
                continue
            if self._held is not None and self._held(rel):
                self.stats.held += 1
                if self.stats.held % HELD_BATCH == 0:
                    await asyncio.sleep(0)  # a long run of held files: let requests in
                continue
            need = self._size_of(rel)
            if self._room() - sum(self._reserved.values()) < need:
                self._queues[0].appendleft(rel)  # it waits for the files in flight
                self._queued.add(rel)
                if self._inflight:
                    await asyncio.wait(
                        list(self._inflight.values()), return_when=asyncio.FIRST_COMPLETED
                    )
                    continue
                self.state = "stopped: cache full"  # never evict to make room for a guess
                self._drop_queued()
                continue
            self.state = "running"
            self._reserved[rel] = need
            self._inflight[rel] = asyncio.get_running_loop().create_task(self._fetch(rel))

    def _drop_queued(self) -> None:
        for queue in self._queues:
            queue.clear()
        self._queued.clear()

    async def _fetch(self, rel: str) -> None:
        started = self._clock()
        try:
            got = await self._warm(rel)
        except OriginUnavailableError:
            # back to the front: it is fetched when the origin answers again
            self._queues[0].appendleft(rel)
            self._queued.add(rel)
        except (FileNotFoundError, IsADirectoryError) as exc:
            log.debug("prefetch of %s/%s: nothing to fetch (%s)", self.dataset, rel, exc)
        except Exception as exc:  # a prefetch never fails a reader: count and forget it
            self.stats.failed += 1
            log.debug("prefetch of %s/%s failed: %s", self.dataset, rel, exc)
        else:
            if got:
                self.stats.files += 1
                self.stats.bytes += got
                self.gauge.sample(got, self._clock() - started, self._clock())
        finally:
            self._inflight.pop(rel, None)
            self._reserved.pop(rel, None)

    def used(self, nbytes: int) -> None:
        """A program read ``nbytes`` of prefetched pages."""
        self.stats.used_bytes += nbytes

    def status(self) -> dict[str, object]:
        return {
            "policy": self.policy,
            "state": self.state,
            "inflight": len(self._inflight),
            "inflight_target": self.gauge.target(),
            "queued": self.queued(),
            "files": self.stats.files,
            "bytes": self.stats.bytes,
            "used_bytes": self.stats.used_bytes,
            "wasted_bytes": 0,
            "failed": self.stats.failed,
            "hinted": self.stats.hinted,
            "held": self.stats.held,
            **self.gauge.describe(),
        }

    async def close(self) -> None:
        tasks = [
            t for t in (self._runner, *self._inflight.values(), *self._background) if t is not None
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
