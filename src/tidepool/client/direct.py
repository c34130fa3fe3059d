"""Reading a dataset straight from its origin, for a client whose node pool may not cache it.

A dataset's ``nodeAffinity`` confines its cache to some node pools. A client in another pool must
not reach across the WAN into another pool's cache; it reads the origin directly instead — through
the same funnel the workers use (timeouts, retries, breaker) — and says so once in its log. This
needs the dataset's spec (and its secrets) on the client, given as ``TidepoolFileSystem(spec=...)``
or ``TIDEPOOL_SPEC``.
"""

from __future__ import annotations

import errno
from typing import Any

from tidepool.core.fileinfo import FileInfo, dir_info
from tidepool.core.mounts import MountTable, Route
from tidepool.core.paths import normalize
from tidepool.origin.funnel import Origin
from tidepool.spec.config import DatasetConfig


class DirectDataset:
    """One dataset read from its origin mounts, with no cache (routed as the worker routes)."""

    def __init__(self, cfg: DatasetConfig) -> None:
        self.cfg = cfg
        self.mounts = MountTable((m.path, Origin(cfg.name, m)) for m in cfg.mounts)
        self._started = False

    async def _start(self) -> None:
        if not self._started:
            for origin in self.mounts.targets():
                await origin.start()
            self._started = True

    def _route(self, rel: str) -> Route[Origin]:
        route = self.mounts.route(rel)
        if route is None:
            raise FileNotFoundError(errno.ENOENT, f"no such path in dataset {self.cfg.name!r}", rel)
        return route

    @staticmethod
    def _named(route: Route[Origin], entry: FileInfo) -> dict[str, Any]:
        out: dict[str, Any] = dict(entry)
        out["name"] = route.to_dataset(entry["name"])
        return out

    async def info(self, rel: str) -> dict[str, Any]:
        await self._start()
        rel = normalize(rel)
        if self.mounts.is_virtual_dir(rel):
            return dict(dir_info(rel))
        route = self._route(rel)
        entry = self._named(route, await route.target.info(route.orel))
        entry["name"] = rel
        return entry

    async def ls(self, rel: str) -> list[dict[str, Any]]:
        await self._start()
        rel = normalize(rel)
        if self.mounts.is_virtual_dir(rel):
            return [dict(e) for e in self.mounts.virtual_children(rel)]
        route = self._route(rel)
        out = [self._named(route, e) for e in await route.target.ls(route.orel)]
        names = {e["name"] for e in out}
        out += [dict(e) for e in self.mounts.virtual_children(rel) if e["name"] not in names]
        return out

    async def find(self, rel: str) -> list[dict[str, Any]]:
        await self._start()
        rel = normalize(rel)
        if self.mounts.is_virtual_dir(rel):
            out: list[dict[str, Any]] = []
            for child in self.mounts.virtual_children(rel):
                out.extend(await self.find(child["name"]))
            return out
        route = self._route(rel)
        return [self._named(route, e) for e in await route.target.find(route.orel)]

    async def read(self, rel: str, version: str | None, start: int, end: int) -> bytes:
        await self._start()
        route = self._route(normalize(rel))
        return await route.target.read(route.orel, start, end, version)

    async def close(self) -> None:
        for origin in self.mounts.targets():
            await origin.close()
