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
from tidepool.core.paths import normalize
from tidepool.origin.funnel import Origin
from tidepool.spec.config import DatasetConfig


class DirectDataset:
    """One dataset read from its origin mounts, with no cache."""

    def __init__(self, cfg: DatasetConfig) -> None:
        self.cfg = cfg
        self.mounts = sorted(
            ((m.path, Origin(cfg.name, m)) for m in cfg.mounts),
            key=lambda item: len(item[0]),
            reverse=True,
        )
        self._started = False

    async def _start(self) -> None:
        if not self._started:
            for _, origin in self.mounts:
                await origin.start()
            self._started = True

    def _route(self, rel: str) -> tuple[Origin, str, str]:
        for mpath, origin in self.mounts:
            if mpath == "":
                return origin, rel, ""
            if rel == mpath or rel.startswith(mpath + "/"):
                return origin, rel[len(mpath) + 1 :], mpath
        raise FileNotFoundError(errno.ENOENT, f"no such path in dataset {self.cfg.name!r}", rel)

    @staticmethod
    def _named(prefix: str, entry: FileInfo) -> dict[str, Any]:
        out: dict[str, Any] = dict(entry)
        if prefix:
            out["name"] = prefix + ("/" + entry["name"] if entry["name"] else "")
        return out

    async def info(self, rel: str) -> dict[str, Any]:
        await self._start()
        rel = normalize(rel)
        if rel == "":
            return dict(dir_info(""))
        origin, orel, prefix = self._route(rel)
        entry = self._named(prefix, await origin.info(orel))
        entry["name"] = rel
        return entry

    async def ls(self, rel: str) -> list[dict[str, Any]]:
        await self._start()
        origin, orel, prefix = self._route(normalize(rel))
        return [self._named(prefix, e) for e in await origin.ls(orel)]

    async def find(self, rel: str) -> list[dict[str, Any]]:
        await self._start()
        origin, orel, prefix = self._route(normalize(rel))
        return [self._named(prefix, e) for e in await origin.find(orel)]

    async def read(self, rel: str, version: str | None, start: int, end: int) -> bytes:
        await self._start()
        origin, orel, _ = self._route(normalize(rel))
        return await origin.read(orel, start, end, version)

    async def close(self) -> None:
        for _, origin in self.mounts:
            await origin.close()
