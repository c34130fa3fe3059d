"""The mount's inode table: stable inode numbers for paths, and attribute/listing caches with TTLs.

FUSE speaks in inode numbers; the Tidepool client speaks in paths (``<dataset>/<path>``). This
table is the translation, and the place where the mount remembers what it learned so that
``ls -R``, ``find`` and ``cp -r`` cost one listing per directory and no round trip per file:

* a path gets an inode number the first time it is seen and keeps it for the life of the mount,
  so the kernel's dentries stay valid however often a directory is listed again;
* each entry carries its attributes (type, size, version, mtime) and a deadline after which they
  must be revalidated (the dataset's metadata TTL);
* each directory may carry a listing snapshot with its own deadline; while it is valid a name that
  is not in it is known to be absent (a negative lookup with no round trip);
* :meth:`InodeTable.note_open` decides FUSE's ``keep_cache``: the kernel page cache of a file is
  kept across opens only while the version the kernel cached is still the current one.

Pure: no I/O; the clock is an argument so tests drive time by hand.

Limits: inode numbers are never reused and entries are never dropped (``forget`` is a no-op), so
memory grows with the number of distinct paths seen (~300 bytes each: a few million paths per GiB).
A path whose type changes (file -> directory) keeps its inode number and takes the new type.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

ROOT_INODE = 1

Kind = Literal["file", "directory"]


@dataclass
class Entry:
    """What the mount knows about one path."""

    ino: int
    path: str
    """Client path: ``""`` (all datasets), ``ds`` or ``ds/rel``."""
    kind: Kind
    size: int = 0
    version: str = ""
    mtime: float | None = None
    expires: float = float("inf")
    """Monotonic deadline after which the attributes must be revalidated."""
    cached_version: str | None = None
    """Version whose bytes the kernel page cache may hold (set when the file is opened)."""

    @property
    def is_dir(self) -> bool:
        return self.kind == "directory"


@dataclass
class Listing:
    """A directory's children (names in order) and the deadline of that snapshot."""

    names: list[str]
    expires: float
    members: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.members = frozenset(self.names)


def child_path(parent: str, name: str) -> str:
    """The client path of ``name`` inside the directory at ``parent``."""
    return f"{parent}/{name}" if parent else name


def basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


class InodeTable:
    """Paths <-> inode numbers, with per-entry and per-listing expiry."""

    def __init__(self, root_path: str, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._by_ino: dict[int, Entry] = {}
        self._by_path: dict[str, Entry] = {}
        self._listings: dict[str, Listing] = {}
        self._next_ino = ROOT_INODE + 1
        self.root = Entry(ROOT_INODE, root_path, "directory")
        self._by_ino[ROOT_INODE] = self.root
        self._by_path[root_path] = self.root

    def __len__(self) -> int:
        return len(self._by_ino)

    def get(self, ino: int) -> Entry:
        """The entry of an inode number; ``KeyError`` if the mount never handed it out."""
        return self._by_ino[ino]

    def by_path(self, path: str) -> Entry | None:
        return self._by_path.get(path)

    def fresh(self, entry: Entry) -> bool:
        """True while the entry's attributes are within their TTL."""
        return entry.expires > self._now()

    def upsert(self, path: str, info: Mapping[str, Any], ttl: float) -> Entry:
        """Record ``info`` (a client ``info()`` dict) for ``path``; returns its entry."""
        kind: Kind = "directory" if info.get("type") == "directory" else "file"
        entry = self._by_path.get(path)
        if entry is None:
            entry = Entry(self._next_ino, path, kind)
            self._next_ino += 1
            self._by_ino[entry.ino] = entry
            self._by_path[path] = entry
        entry.kind = kind
        entry.size = int(info.get("size") or 0) if kind == "file" else 0
        entry.version = str(info.get("version") or "")
        mtime = info.get("mtime")
        entry.mtime = float(mtime) if mtime is not None else None
        entry.expires = self._now() + ttl if entry is not self.root else float("inf")
        return entry

    def set_listing(
        self, dir_path: str, children: Iterable[Mapping[str, Any]], ttl: float
    ) -> list[Entry]:
        """Record a directory listing (client ``ls(detail=True)`` entries with full names)."""
        entries = [self.upsert(str(c["name"]), c, ttl) for c in children]
        self._listings[dir_path] = Listing([basename(e.path) for e in entries], self._now() + ttl)
        return entries

    def listing(self, dir_path: str, *, stale: bool = False) -> list[Entry] | None:
        """The cached children of a directory, or None when absent or expired (``stale``: the
        last one known however old, for when the worker cannot be asked)."""
        snap = self._listings.get(dir_path)
        if snap is None or (snap.expires <= self._now() and not stale):
            return None
        out = []
        for name in snap.names:
            entry = self._by_path.get(child_path(dir_path, name))
            if entry is not None:
                out.append(entry)
        return out

    def known_absent(self, dir_path: str, name: str, *, stale: bool = False) -> bool:
        """True when a valid (``stale``: any) listing of ``dir_path`` exists and does not
        contain ``name``."""
        snap = self._listings.get(dir_path)
        if snap is None or (snap.expires <= self._now() and not stale):
            return False
        return name not in snap.members

    def forget_path(self, path: str) -> None:
        """The path no longer exists at the origin: drop it from its parent's listing."""
        entry = self._by_path.get(path)
        if entry is not None and entry is not self.root:
            entry.expires = 0.0
        parent, _, name = path.rpartition("/")
        snap = self._listings.get(parent)
        if snap is not None and name in snap.members:
            self._listings[parent] = Listing([n for n in snap.names if n != name], snap.expires)

    def note_open(self, entry: Entry) -> bool:
        """Record that the kernel will cache ``entry.version``; True if it already held it.

        The answer is FUSE's ``keep_cache`` for this open: True keeps the pages the kernel
        already has (same version), False makes the kernel drop them (first open, or the origin
        object changed since the pages were cached).
        """
        keep = entry.cached_version is not None and entry.cached_version == entry.version
        entry.cached_version = entry.version
        return keep
