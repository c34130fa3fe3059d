"""A recursive find streamed into the metadata store: pages of entries in, rows and listings out.

A find of a million keys arrives a page at a time (from the origin, or from the pool member that
lists it for everyone). Each page becomes ``info`` rows at once, which is what paged finds are
served from (:meth:`tidepool.store.metadata.MetadataStore.info_rows`); the per-directory listings
that let ``ls`` and ``stat`` answer offline are written as each directory is left behind. Entries
come in path order, so the directories still open are the ancestors of the last entry: only
their listings are held in memory.

The rules are those of a whole find (``S3Tree.find``): a folder marker (a directory with
``marker`` set) is listed once in its parent, as the directory it is, and gets a listing of its
own; every directory between the find's root and an entry appears in its parent; a file whose
path is also a directory (key ``a/b`` beside ``a/b/c``) moves to its escaped name
(:func:`tidepool.core.keys.escaped`).

Limits: memory is bounded by the entries of the open directories, so by the largest directory
(a flat prefix of a million keys holds its one listing whole, as its ``ls`` answer would). An
entry out of path order (an escaped name) re-opens a directory already written: its listing is
read back and extended, never lost.
"""

from __future__ import annotations

from typing import Any

from tidepool.core.fileinfo import dir_info
from tidepool.core.keys import escaped
from tidepool.core.paths import parent
from tidepool.store.metadata import MetadataStore

__all__ = ["FindWriter"]


def _below(path: str, root: str) -> bool:
    """``path`` lies strictly below the directory ``root``."""
    return path != root and (not root or path.startswith(root + "/"))


class FindWriter:
    """Writes one find of ``rel`` (everything stamped ``fetched_at``); call :meth:`add` per page
    and :meth:`finish` once."""

    def __init__(self, store: MetadataStore, dataset: str, rel: str, fetched_at: float) -> None:
        self.store = store
        self.dataset = dataset
        self.rel = rel
        self.fetched_at = fetched_at
        self._open: dict[str, dict[str, dict[str, Any]]] = {rel: {}}
        self._stack = [rel]
        self._written: set[str] = set()
        self.files = 0
        """Files written (folder markers not counted)."""
        self.bytes = 0
        """Their total size."""

    def add(self, page: list[dict[str, Any]]) -> None:
        """Record one page of the find (entries named by dataset path)."""
        rows: dict[str, dict[str, Any]] = {}
        for found in page:
            name = found["name"]
            if not _below(name, self.rel):
                continue
            entry = dict(found)
            folder = parent(name)
            self._enter(folder, rows)
            listing = self._open[folder]
            if entry["type"] == "directory":
                listing[name] = entry  # a folder marker replaces a plain directory entry
                rows[name] = entry
                self._enter(name, rows)
                continue
            if listing.get(name, {}).get("type") == "directory" or name in self._open:
                entry["name"] = escaped(name)  # a file that is also a directory
            listing[entry["name"]] = entry
            rows[entry["name"]] = entry
            self.files += 1
            self.bytes += int(entry.get("size") or 0)
        if rows:
            self.store.put_infos(self.dataset, list(rows.values()), self.fetched_at)

    def finish(self) -> None:
        """Write the listings of the directories still open (the find's root last)."""
        while self._stack:
            self._close(self._stack.pop())

    def _enter(self, folder: str, rows: dict[str, dict[str, Any]]) -> None:
        """Make ``folder`` the innermost open directory: leave (and write) those not above it,
        open those between the innermost one and it."""
        while self._stack[-1] != folder and not _below(folder, self._stack[-1]):
            self._close(self._stack.pop())
        top = self._stack[-1]
        chain = []
        d = folder
        while d != top:
            chain.append(d)
            d = parent(d)
        for d in reversed(chain):
            listing = self._open[parent(d)]
            known = listing.get(d)
            if known is None or known["type"] != "directory":
                if known is not None:  # a file of that name was listed: it moves aside
                    moved = dict(known)
                    moved["name"] = escaped(d)
                    del listing[d]
                    listing[moved["name"]] = moved
                    rows[moved["name"]] = moved
                listing[d] = dict(dir_info(d))
                rows[d] = listing[d]  # (replaces the file's row of that name)
            self._open[d] = self._reopened(d)
            self._stack.append(d)

    def _reopened(self, folder: str) -> dict[str, dict[str, Any]]:
        if folder not in self._written:
            return {}
        known = self.store.get_listing(self.dataset, folder)
        if known is None or known[1] != self.fetched_at:
            return {}
        return {e["name"]: e for e in known[0]}

    def _close(self, folder: str) -> None:
        entries = self._open.pop(folder)
        self.store.put_listing(
            self.dataset, folder, list(entries.values()), self.fetched_at, infos=False
        )
        self._written.add(folder)
