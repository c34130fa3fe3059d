"""What this worker holds whole, listed by path: for the pool's rebalancing peers and for clients on
this host.

* :func:`held_page` answers a peer's ``GET /v1/datasets/{ds}/held?member=NAME``
  (:mod:`tidepool.worker.rebalance`): one page, sorted by path after ``start_after``, of the
  files this worker holds cached — the current version, every page that ``NAME`` owns under the
  current ring — with path, version, size and mtime.
* :func:`cached_window` answers a same-host client's ``GET /v1/datasets/{ds}/cached?start_at=P``:
  the files from ``P`` on that this worker holds whole (every page) with metadata still fresh,
  and how far the answer reaches (``through``). A client that reads files it never listed (a
  first epoch without a ``find``) learns their version this way, a window of paths per request,
  and reads the ones held here from the page files itself instead of asking for each over HTTP
  (:mod:`tidepool.client.local`); a path in the window that is not listed is not held here.

Both are binary searches into one snapshot of the sorted ``(path, version)`` rows of the
dataset's cached files (:func:`_held_rows`), taken at most every :data:`HELD_SNAPSHOT_TTL`
seconds, or at the first page of a peer's pass: a file cached since the snapshot may be missed
(a client then reads it over HTTP, a peer's next pass copies it), never listed twice. Limit:
the snapshot costs O(N log N) for N cached files, on the event loop.
"""

from __future__ import annotations

import bisect
import itertools
import time
import weakref
from typing import Any, TypedDict

from tidepool.core.pages import file_key, page_count
from tidepool.worker.dataset import DatasetService


class HeldFile(TypedDict):
    """One entry of a ``held`` answer."""

    path: str
    version: str
    size: int
    mtime: float | None


HELD_SNAPSHOT_TTL = 10.0
"""Seconds the sorted list of held files is reused by the pages of one pass that follow."""
_held_snapshots: weakref.WeakKeyDictionary[DatasetService, tuple[float, list[tuple[str, str]]]] = (
    weakref.WeakKeyDictionary()
)
SCAN_FACTOR = 4
"""A ``cached`` window looks at most this many cached files per entry it may return (files not
held whole, or whose metadata is stale, are skipped), so one answer's cost stays bounded."""


def _held_rows(svc: DatasetService, fresh: bool) -> list[tuple[str, str]]:
    """``(path, version)`` of every file with a cached page, sorted by path: sorted once per
    pass (the first page, ``fresh``, or after :data:`HELD_SNAPSHOT_TTL`) and reused by the
    pages after it, instead of sorting the whole dataset on the event loop for every page."""
    now = time.monotonic()
    snap = _held_snapshots.get(svc)
    if fresh or snap is None or now - snap[0] > HELD_SNAPSHOT_TTL:
        rows = sorted((r.path, r.version) for r in svc.store.file_rows(svc.name))
        snap = _held_snapshots[svc] = (now, rows)
    return snap[1]


def held_page(svc: DatasetService, member: str, start_after: str, limit: int) -> dict[str, Any]:
    """The files ``svc`` holds whole (every page ``member`` owns, current version), sorted by
    path after ``start_after``, at most ``limit``; ``next`` is the cursor of the next page (None
    when this is the last)."""
    rows = _held_rows(svc, fresh=not start_after)
    files: list[HeldFile] = []
    first = bisect.bisect_right(rows, start_after, key=lambda r: r[0])
    for path, version in itertools.islice(rows, first, None):
        if len(files) >= limit:
            return {"files": files, "next": files[-1]["path"]}
        known = svc.metadata.known(path)
        info = known[0] if known is not None else None
        if info is None or info["version"] != version:
            continue  # not the version this worker serves now
        wanted = svc.owned_pages(info, member)
        held = svc.store.pages_of(svc.name, file_key(svc.name, path, version))
        if wanted and all(i in held for i in wanted):
            files.append(
                {"path": path, "version": version, "size": info["size"], "mtime": info["mtime"]}
            )
    return {"files": files, "next": None}


def cached_window(svc: DatasetService, start_at: str, limit: int) -> dict[str, Any]:
    """The files from ``start_at`` on (sorted by path) that ``svc`` holds whole, at the version
    its metadata names while that metadata is fresh, as file infos (``name`` relative to the
    dataset), at most ``limit``; ``through`` is the last path the answer covers (every path in
    ``[start_at, through]`` that is not listed is not held whole here; None: to the end).
    At most ``SCAN_FACTOR * limit`` cached files are looked at."""
    rows = _held_rows(svc, fresh=False)
    files: list[dict[str, Any]] = []
    first = bisect.bisect_left(rows, start_at, key=lambda r: r[0])
    budget, last = SCAN_FACTOR * limit, start_at
    for path, version in itertools.islice(rows, first, None):
        if len(files) >= limit or budget == 0:
            return {"files": files, "through": last}
        budget, last = budget - 1, path
        known = svc.metadata.known(path)
        if known is None or known[0] is None or not known[1]:
            continue  # unknown, missing or stale: a read asks the worker (and the origin)
        info = known[0]
        if info["type"] != "file" or info["version"] != version or info["size"] <= 0:
            continue
        held = svc.store.pages_of(svc.name, file_key(svc.name, path, version))
        if len(held) == page_count(info["size"], svc.page_size):
            files.append(
                {
                    "name": path,
                    "type": "file",
                    "size": info["size"],
                    "version": version,
                    "mtime": info.get("mtime"),
                }
            )
    return {"files": files, "through": None}


__all__ = ["HeldFile", "cached_window", "held_page"]
