"""Warm-up jobs (Fluid's DataLoad): read every page of the chosen paths into the cache.

A job lists its targets once (a recursive listing per directory, a stat per file), then warms up to
``concurrency`` files at a time; each file's pages are fetched with the dataset's own read-ahead, so
small files fill the link by number and large files by parallel ranged GETs. Progress (files, bytes,
rate) is kept on the job and polled by ``tidepool load``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from tidepool.core.errors import redact
from tidepool.core.fileinfo import FileInfo
from tidepool.core.paths import normalize
from tidepool.worker.dataset import DatasetService

log = logging.getLogger(__name__)

State = Literal["Pending", "Executing", "Complete", "Failed"]
_ids = itertools.count(1)


@dataclass
class LoadProgress:
    id: str
    dataset: str
    paths: list[str]
    phase: State = "Pending"
    files_total: int = 0
    files_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    started_at: float = 0.0
    finished_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        end = self.finished_at or time.time()
        elapsed = max(end - self.started_at, 1e-9) if self.started_at else 0.0
        out["elapsed_s"] = round(elapsed, 3)
        out["rate_bytes_s"] = round(self.bytes_done / elapsed, 1) if elapsed else 0.0
        out["percent"] = (
            round(100.0 * self.bytes_done / self.bytes_total, 2) if self.bytes_total else 100.0
        )
        return out


class LoadJob:
    def __init__(self, svc: DatasetService, paths: list[str], concurrency: int = 32) -> None:
        self.svc = svc
        self.progress = LoadProgress(
            id=f"load-{next(_ids)}", dataset=svc.name, paths=[normalize(p) for p in paths] or [""]
        )
        self.concurrency = max(1, concurrency)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def _targets(self) -> list[FileInfo]:
        files: dict[str, FileInfo] = {}
        for path in self.progress.paths:
            info = await self.svc.stat(path)
            if info["type"] == "directory":
                for f in await self.svc.find(path):
                    files[f["name"]] = f
            else:
                files[info["name"]] = info
        return list(files.values())

    async def run(self) -> None:
        p = self.progress
        p.started_at = time.time()
        p.phase = "Executing"
        try:
            targets = await self._targets()
            p.files_total = len(targets)
            p.bytes_total = sum(f["size"] for f in targets)
            queue = iter(sorted(targets, key=lambda f: f["name"]))

            counters = self.svc.counters

            async def worker() -> None:
                for info in queue:
                    try:
                        async for chunk in self.svc.read(info, 0, info["size"]):
                            p.bytes_done += len(chunk)
                            counters.load_bytes.inc(len(chunk))
                    except Exception as exc:  # one bad file must not stop the job
                        p.error_count += 1
                        counters.load_failed_files.inc()
                        if len(p.errors) < 20:
                            p.errors.append(redact(f"{info['name']}: {exc}"))
                    p.files_done += 1

            await asyncio.gather(*(worker() for _ in range(self.concurrency)))
            await self.svc.flush_writes()
            p.phase = "Failed" if p.error_count else "Complete"
        except Exception as exc:
            p.phase = "Failed"
            p.errors.append(redact(str(exc)))
            log.warning("load %s of %s failed: %s", p.id, p.dataset, redact(str(exc)))
        finally:
            p.finished_at = time.time()
            c = self.svc.counters
            (c.loads_complete if p.phase == "Complete" else c.loads_failed).inc()
            c.load_latest_bytes.set(p.bytes_done)
