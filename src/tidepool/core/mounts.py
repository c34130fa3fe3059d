"""Which mount of a dataset serves a path: one pure routing table for the worker and the client.

A dataset has one or more mounts, each at a path inside the dataset (``""`` is the root). A path
is served by the mount with the longest mount path that contains it; the directories above mount
points that no mount covers exist only virtually (their children are the next components of the
mount paths below them). The worker (read-through service) and the client reading an origin
directly (a dataset its node pool may not cache) route with this same table, so ``ls`` of a
parent of a mount point answers the same everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from tidepool.core.fileinfo import FileInfo, dir_info

T = TypeVar("T")


@dataclass(frozen=True)
class Route(Generic[T]):
    """Where a dataset path lives: ``target`` (the mount's origin) at ``orel`` below its root."""

    target: T
    orel: str
    """The path relative to the mount's root."""
    prefix: str
    """The mount's path inside the dataset (``""`` for the root mount)."""

    def to_dataset(self, origin_rel: str) -> str:
        """A mount-relative name back in dataset terms."""
        if not self.prefix:
            return origin_rel
        return self.prefix + ("/" + origin_rel if origin_rel else "")


class MountTable(Generic[T]):
    """Mount paths of one dataset, longest first, each with its target (an origin)."""

    def __init__(self, mounts: Iterable[tuple[str, T]]) -> None:
        self._mounts = sorted(mounts, key=lambda item: len(item[0]), reverse=True)
        paths = [p for p, _ in self._mounts]
        if len(set(paths)) != len(paths):
            raise ValueError(f"two mounts share one path: {sorted(paths)}")

    def targets(self) -> list[T]:
        return [t for _, t in self._mounts]

    def route(self, rel: str) -> Route[T] | None:
        """The mount serving a normalised dataset path; None for a virtual directory."""
        for mpath, target in self._mounts:
            if mpath == "":
                return Route(target, rel, "")
            if rel == mpath:
                return Route(target, "", mpath)
            if rel.startswith(mpath + "/"):
                return Route(target, rel[len(mpath) + 1 :], mpath)
        return None

    def virtual_children(self, rel: str) -> list[FileInfo]:
        """Directories that exist below ``rel`` only because mounts live under them."""
        prefix = rel + "/" if rel else ""
        names = set()
        for mpath, _ in self._mounts:
            if mpath and mpath.startswith(prefix) and mpath != rel:
                names.add(prefix + mpath[len(prefix) :].split("/", 1)[0])
        return [dir_info(n) for n in sorted(names)]

    def is_virtual_dir(self, rel: str) -> bool:
        """Whether ``rel`` is the root or a directory above a mount point (no origin of its own)."""
        return self.route(rel) is None and (rel == "" or bool(self.virtual_children(rel)))
