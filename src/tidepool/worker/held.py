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

Both walk the dataset's metadata in path order
(:meth:`~tidepool.worker.metadata.MetadataService.known_from`: the version each file is served
at now) and ask the page index for the pages of each file's key
(the index keeps no table of files since its schema 6, :mod:`tidepool.store.index`). An answer
looks at no more than :data:`SCAN_FACTOR` times the entries it may return, whatever the number of
files, and nothing is sorted or held whole in memory; one that stops there says how far it
looked (``next``, ``through``).
"""

from __future__ import annotations

from typing import Any, TypedDict

from tidepool.core.pages import file_key, page_count
from tidepool.worker.dataset import DatasetService


class HeldFile(TypedDict):
    """One entry of a ``held`` answer."""

    path: str
    version: str
    size: int
    mtime: float | None


SCAN_FACTOR = 4
"""An answer looks at most this many known paths per entry it may return (directories, files not
held, or whose metadata is stale, are skipped), so one answer's cost stays bounded."""


def held_page(svc: DatasetService, member: str, start_after: str, limit: int) -> dict[str, Any]:
    """The files ``svc`` holds whole (every page ``member`` owns, current version), sorted by
    path after ``start_after``, at most ``limit``; ``next`` is the cursor of the next page (None
    when this is the last): the last path looked at, so a page may be short, even empty, and
    still have a next."""
    files: list[HeldFile] = []
    budget = SCAN_FACTOR * max(1, limit)
    last = start_after
    for path, info, _fresh in svc.metadata.known_from(start_after, strict=bool(start_after)):
        if len(files) >= limit or budget == 0:
            return {"files": files, "next": last}
        budget, last = budget - 1, path
        if info is None:
            continue  # a directory, or known missing
        version = info["version"]
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
    At most ``SCAN_FACTOR * limit`` known paths are looked at."""
    files: list[dict[str, Any]] = []
    budget, last = SCAN_FACTOR * max(1, limit), start_at
    for path, info, fresh in svc.metadata.known_from(start_at):
        if len(files) >= limit or budget == 0:
            return {"files": files, "through": last}
        budget, last = budget - 1, path
        if info is None or not fresh or info["size"] <= 0:
            continue  # not a file, missing or stale: a read asks the worker (and the origin)
        version = info["version"]
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
