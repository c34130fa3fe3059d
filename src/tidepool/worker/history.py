"""The last minutes of a worker's activity, kept in memory for the dashboard's charts.

An operator next to the rack, with the cloud link down, has no Prometheus to ask what happened a
minute ago; the worker keeps a short, bounded history itself. Every ``interval`` seconds the
sampler reads the worker's cumulative totals (bytes served, bytes read from the origin, page hits
and misses) and :class:`History` stores the rates between two samples: read throughput, WAN
throughput and hit ratio over that interval.

Limits: ``seconds / interval`` points at most (the oldest fall off), one series for the whole worker
(not per dataset), lost on restart, and only as precise as the sampling interval. ``History`` is
pure (the time is passed in); :class:`HistorySampler` is the asyncio loop around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypedDict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Totals:
    """Cumulative counts of a worker at one moment (they only grow while it runs)."""

    served_bytes: int = 0
    """Bytes sent to readers, from the cache or from a fetch."""
    wan_bytes: int = 0
    """Bytes of file data read from the origin, across the WAN."""
    hits: int = 0
    """Pages readers asked for that this worker held."""
    misses: int = 0
    """Pages readers asked for that this worker lacked."""
    remote_hits: int = 0
    """Of the misses, pages another worker of the pool served (no WAN)."""


class Point(TypedDict):
    """One interval of the history (rates are over the interval that ends at ``t``)."""

    t: float
    """End of the interval, Unix time."""
    read_bytes_per_s: float
    wan_bytes_per_s: float
    hit_ratio: float | None
    """(hits + remote hits) / lookups over the interval; None when nothing was read."""
    lookups_per_s: float
    served_bytes: int
    """Cumulative, at ``t``."""
    wan_bytes: int
    """Cumulative, at ``t``."""
    saved_bytes: int
    """Cumulative bytes readers got without crossing the WAN (served - WAN, at least 0)."""


def wan_saved(served_bytes: int, wan_bytes: int) -> int:
    """Bytes readers got that did not cross the WAN; read-ahead can run ahead of the readers,
    so the difference is clamped at zero rather than shown negative."""
    return max(0, served_bytes - wan_bytes)


class History:
    """A bounded series of :class:`Point`, one per :meth:`add` after the first."""

    def __init__(self, seconds: float = 600.0, interval: float = 2.0) -> None:
        if not (interval > 0 and seconds >= interval):
            raise ValueError(
                f"history of {seconds!r}s sampled every {interval!r}s: need interval > 0 and "
                "seconds >= interval"
            )
        self.seconds = seconds
        self.interval = interval
        self._points: deque[Point] = deque(maxlen=math.ceil(seconds / interval))
        self._last: tuple[float, Totals] | None = None

    def add(self, now: float, totals: Totals) -> Point | None:
        """Record the totals seen at ``now``; returns the new point (None for the first sample,
        which only sets the baseline, or when the clock did not move forward)."""
        last = self._last
        if last is not None and now <= last[0]:
            return None
        self._last = (now, totals)
        if last is None:
            return None
        then, prev = last
        dt = now - then

        def rate(a: int, b: int) -> float:
            return max(0, b - a) / dt  # a counter never shrinks while the worker runs

        lookups = max(0, (totals.hits + totals.misses) - (prev.hits + prev.misses))
        found = max(0, (totals.hits + totals.remote_hits) - (prev.hits + prev.remote_hits))
        point: Point = {
            "t": round(now, 3),
            "read_bytes_per_s": round(rate(prev.served_bytes, totals.served_bytes), 1),
            "wan_bytes_per_s": round(rate(prev.wan_bytes, totals.wan_bytes), 1),
            "hit_ratio": round(min(1.0, found / lookups), 4) if lookups else None,
            "lookups_per_s": round(lookups / dt, 2),
            "served_bytes": totals.served_bytes,
            "wan_bytes": totals.wan_bytes,
            "saved_bytes": wan_saved(totals.served_bytes, totals.wan_bytes),
        }
        self._points.append(point)
        return point

    def points(self, since: float | None = None) -> list[Point]:
        """The points after ``since`` (all when None), oldest first."""
        if since is None:
            return list(self._points)
        return [p for p in self._points if p["t"] > since]

    def as_dict(self, since: float | None = None) -> dict[str, object]:
        return {
            "interval_s": self.interval,
            "seconds": self.seconds,
            "points": self.points(since),
        }


class HistorySampler:
    """Feeds a :class:`History` from ``totals()`` every ``history.interval`` seconds."""

    def __init__(
        self,
        history: History,
        totals: Callable[[], Totals],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.history = history
        self._totals = totals
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> Point | None:
        return self.history.add(self._clock(), self._totals())

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # a bad sample must not end the history
                log.exception("sampling the worker's history failed")
            await asyncio.sleep(self.history.interval)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
