"""Warm-up jobs (Fluid's DataLoad): read every page of the chosen paths into the cache.

A job lists its targets once (a recursive listing per directory, a stat per file), then warms up to
``concurrency`` files at a time; each file's missing pages are fetched a window at a time, so small
files fill the link by number and large files by parallel ranged GETs. Warm-up reads are not
counted as cache hits or misses (those are the programs' reads). Progress (files, bytes,
rate) is kept on the job and polled by ``tidepool load``.

:class:`LoadTable` bounds what jobs may cost: a job fetches at most ``MAX_CONCURRENCY`` files at
once, at most ``max_running`` jobs of one dataset run at a time (the others wait in ``Pending``),
at most ``max_waiting`` more may wait (a further request is refused with 429), and a finished job
is kept for ``finished_ttl`` seconds or until ``keep_finished`` newer jobs have finished,
whichever comes first, so that ``tidepool load`` can read its last progress; then it is forgotten
(its id answers 404). Replication (r > 1) asks peers for one small job per file, which is why
waiting jobs queue instead of being refused at once.
A load is only ``Complete`` when what it read is still in the cache at the end. A dataset larger
than the tiers' quota evicts its own first pages while the last ones arrive; the job then ends
``Incomplete``, saying how much stayed cached (``bytes_cached``, ``files_cached``) and which
setting to change (``message``), so nobody believes a dataset is warm and safe to read offline
when it is not. In a node pool only the files this worker owns are checked (the others are kept
by their owners).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from tidepool.core.errors import TooManyRequestsError, redact
from tidepool.core.fileinfo import FileInfo
from tidepool.core.pages import file_key, page_span
from tidepool.core.paths import normalize
from tidepool.core.quantity import format_bytes
from tidepool.worker.dataset import DatasetService

log = logging.getLogger(__name__)

State = Literal["Pending", "Executing", "Complete", "Incomplete", "Failed"]
MAX_CONCURRENCY = 256
"""Most files one job fetches at once, whatever it asks for."""
BATCH_FILE_MAX = 256 * 1024
"""Files up to this size are loaded many at a time where the dataset allows (no pool, a
``file://`` origin: :meth:`DatasetService.batchable`)."""
BATCH_FILES = 256
BATCH_BYTES = 4 * 1024 * 1024
"""A batch holds at most this many files and bytes (in memory until it is written)."""
BATCH_LANES = 2
"""Batches of one job in flight at once: one reading while the other is written."""
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
    files_checked: int = 0
    """Files whose pages were checked at the end (in a pool: the ones this worker owns)."""
    bytes_checked: int = 0
    files_cached: int = 0
    """Of the checked files, those with every page still in the cache at the end."""
    bytes_cached: int = 0
    """Of the checked bytes, those still in the cache at the end."""
    message: str = ""
    """Why the load is Incomplete or Failed, and what to change."""
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
        self.concurrency = max(1, min(concurrency, MAX_CONCURRENCY))
        self.task: asyncio.Task[None] | None = None

    def _progress(self, nbytes: int) -> None:
        self.progress.bytes_done += nbytes
        self.svc.counters.load_bytes.inc(nbytes)

    @property
    def finished(self) -> bool:
        return self.progress.phase in ("Complete", "Incomplete", "Failed")

    async def _roots(self) -> list[FileInfo]:
        """The requested paths, stat'ed, each once; a path below a requested directory is left
        out (that directory's listing holds it), so no file is listed twice."""
        infos: dict[str, FileInfo] = {}
        for path in sorted(set(self.progress.paths)):
            info = await self.svc.stat(path)
            infos[info["name"]] = info
        dirs = [name for name, info in infos.items() if info["type"] == "directory"]

        def below(name: str) -> bool:
            return any(name != d and (d == "" or name.startswith(f"{d}/")) for d in dirs)

        return [info for name, info in infos.items() if not below(name)]

    async def _files(self, roots: list[FileInfo], *, listed: bool) -> AsyncIterator[list[FileInfo]]:
        """The job's files, a listing page at a time (a million files are never in memory at
        once), in path order under each root. ``listed``: the roots' listings are in the
        metadata store already (the job's first pass made them), read as stored: every pass of
        one job sees the same files, whatever the metadata TTL."""
        metadata = self.svc.metadata
        for info in roots:
            if info["type"] != "directory":
                yield [info]
                continue
            rel = info["name"]
            pages = metadata.stored_find_pages(rel) if listed else metadata.find_pages(rel)
            async for page in pages:
                files = [f for f in page if f["type"] == "file"]  # not folder markers
                if files:
                    yield files

    async def _count(self, roots: list[FileInfo]) -> None:
        """The job's totals (files, bytes), listing its roots at the origin if their listing is
        older than the TTL. A load of the whole dataset takes them from the listing just made
        (what it counted as it wrote the rows) instead of a pass over a million rows."""
        p, metadata = self.progress, self.svc.metadata
        if [r["name"] for r in roots] == [""] and roots[0]["type"] == "directory":
            await metadata.ensure_found("")
            if metadata.ufs_total is not None:
                p.bytes_total, p.files_total = metadata.ufs_total[0], metadata.ufs_total[1]
                return
        async for page in self._files(roots, listed=False):
            p.files_total += len(page)
            p.bytes_total += sum(f["size"] for f in page)

    async def run(self) -> None:
        p = self.progress
        p.started_at = time.time()
        p.phase = "Executing"
        try:
            roots = await self._roots()
            await self._count(roots)
            singles: asyncio.Queue[FileInfo | None] = asyncio.Queue(maxsize=4 * self.concurrency)
            batches: asyncio.Queue[list[FileInfo] | None] = asyncio.Queue(maxsize=2 * BATCH_LANES)
            counters = self.svc.counters

            async def produce() -> None:
                try:
                    async for page in self._files(roots, listed=True):
                        small: list[FileInfo] = []
                        for info in page:
                            if self.svc.batchable(info, BATCH_FILE_MAX):
                                small.append(info)
                            else:
                                await singles.put(info)
                        for batch in _batches(small):
                            await batches.put(batch)
                finally:
                    for _ in range(BATCH_LANES):
                        await batches.put(None)
                    for _ in range(self.concurrency):
                        await singles.put(None)

            def done(info: FileInfo, fetched: int) -> None:
                cached = max(0, info["size"] - fetched)  # what was cached already
                p.bytes_done += cached
                counters.load_bytes.inc(cached)
                p.files_done += 1

            async def one(info: FileInfo) -> None:
                try:
                    done(info, await self.svc.warm(info["name"], on_bytes=self._progress))
                except Exception as exc:  # one bad file must not stop the job
                    p.error_count += 1
                    p.files_done += 1
                    counters.load_failed_files.inc()
                    if len(p.errors) < 20:
                        p.errors.append(redact(f"{info['name']}: {exc}"))

            async def worker() -> None:
                while (info := await singles.get()) is not None:
                    await one(info)

            async def lane() -> None:
                while (batch := await batches.get()) is not None:
                    try:
                        got = await self.svc.warm_batch(batch)
                    except Exception as exc:  # the files are then loaded one by one
                        log.debug("load %s: batch of %d files failed: %s", p.id, len(batch), exc)
                        got = [None] * len(batch)
                    for info, fetched in zip(batch, got, strict=True):
                        if fetched is None:
                            await one(info)
                        else:
                            self._progress(fetched)
                            done(info, fetched)

            await asyncio.gather(
                produce(),
                *(worker() for _ in range(self.concurrency)),
                *(lane() for _ in range(BATCH_LANES)),
            )
            await self.svc.flush_writes()
            async for page in self._files(roots, listed=True):
                self._check_cached(page)
            # a load leaves the databases' logs long (up to 32 MiB each): fold them in now
            await asyncio.to_thread(self.svc.store.checkpoint)
            await asyncio.to_thread(self.svc.meta.checkpoint)
            if p.error_count:
                p.phase = "Failed"
                p.message = f"{p.error_count} file(s) could not be read; see errors"
            elif p.bytes_cached < p.bytes_checked:
                p.phase = "Incomplete"
                p.message = self._does_not_fit()
                log.warning("load %s of %s incomplete: %s", p.id, p.dataset, p.message)
            else:
                p.phase = "Complete"
            (counters.loads_complete if p.phase == "Complete" else counters.loads_failed).inc()
            counters.load_latest_bytes.set(p.bytes_done)
        except Exception as exc:
            p.phase = "Failed"
            p.errors.append(redact(str(exc)))
            p.message = redact(str(exc))
            log.warning("load %s of %s failed: %s", p.id, p.dataset, redact(str(exc)))
        finally:
            p.finished_at = time.time()

    def _check_cached(self, targets: list[FileInfo]) -> None:
        """Count what of the loaded files is still cached (eviction may have taken some)."""
        p, svc = self.progress, self.svc
        ps = svc.page_size
        keys = [file_key(svc.name, f["name"], f["version"]) for f in targets]
        cached_pages = svc.store.pages_of_files(svc.name, keys)  # one query, not one a file
        for f, fkey in zip(targets, keys, strict=True):
            mine = svc.owned_pages(f)  # in a pool: the pages of the chunks this worker owns
            if not mine:
                continue
            size = f["size"]
            held = cached_pages.get(fkey, set())
            want = sum(max(0, page_span(i, ps, size)[1] - i * ps) for i in mine)
            cached = sum(max(0, page_span(i, ps, size)[1] - i * ps) for i in mine if i in held)
            p.files_checked += 1
            p.bytes_checked += want
            p.bytes_cached += min(cached, want)
            if all(i in held for i in mine) or size == 0:
                p.files_cached += 1

    def _does_not_fit(self) -> str:
        """How much fitted, and the setting that would make the rest fit."""
        p = self.progress
        tiers = self.svc.cfg.runtime.tiers
        quota = sum(t.quota for t in tiers)
        shown = ", ".join(
            f"{t.medium} {format_bytes(t.quota)} (high {t.high:.0%}, low {t.low:.0%})"
            for t in tiers
        )
        return (
            f"only {format_bytes(p.bytes_cached)} of {format_bytes(p.bytes_checked)} "
            f"({p.files_cached}/{p.files_checked} files) stayed in the cache: the data does not "
            f"fit under the cache quota ({shown}; {format_bytes(quota)} in all). Raise the "
            "runtime's tieredstore.levels[].quota (and its high watermark) to more than "
            f"{format_bytes(p.bytes_checked)}, or load fewer paths"
        )


def _batches(files: list[FileInfo]) -> Iterator[list[FileInfo]]:
    """``files`` in runs of at most :data:`BATCH_FILES` files and :data:`BATCH_BYTES` bytes."""
    batch: list[FileInfo] = []
    size = 0
    for info in files:
        if batch and (len(batch) >= BATCH_FILES or size + info["size"] > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(info)
        size += info["size"]
    if batch:
        yield batch


class LoadTable:
    """The worker's load jobs: started through a per-dataset slot, reaped when old.

    ``clock`` is monotonic seconds (injectable for tests). Finished jobs are kept for
    ``finished_ttl`` seconds *and* at most ``keep_finished`` of them (the oldest go first).
    """

    def __init__(
        self,
        *,
        max_running: int = 4,
        max_waiting: int = 256,
        keep_finished: int = 256,
        finished_ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.keep_finished = keep_finished
        self.finished_ttl = finished_ttl
        self.clock = clock
        self._active: dict[str, LoadJob] = {}
        self._finished: OrderedDict[str, tuple[float, LoadJob]] = OrderedDict()
        self._slots: dict[str, asyncio.Semaphore] = {}

    def __len__(self) -> int:
        return len(self._active) + len(self._finished)

    def active(self, dataset: str) -> int:
        """Jobs of ``dataset`` running or waiting for a slot."""
        return sum(1 for j in self._active.values() if j.svc.name == dataset)

    def start(self, job: LoadJob) -> None:
        """Run ``job`` when a slot of its dataset is free; :class:`TooManyRequestsError` when
        ``max_running + max_waiting`` jobs of that dataset are already there."""
        self.reap()
        dataset = job.svc.name
        if self.active(dataset) >= self.max_running + self.max_waiting:
            raise TooManyRequestsError(
                f"dataset {dataset!r} has {self.max_running} load jobs running and "
                f"{self.max_waiting} waiting, the most allowed; try again when one finished"
            )
        slot = self._slots.setdefault(dataset, asyncio.Semaphore(self.max_running))
        self._active[job.progress.id] = job
        job.task = asyncio.get_running_loop().create_task(self._run(job, slot))

    async def _run(self, job: LoadJob, slot: asyncio.Semaphore) -> None:
        try:
            async with slot:
                await job.run()
        finally:
            if not job.finished:  # cancelled while waiting or running
                job.progress.phase = "Failed"
                job.progress.errors.append("the worker stopped before the load finished")
                job.progress.finished_at = time.time()
            self._active.pop(job.progress.id, None)
            self._finished[job.progress.id] = (self.clock(), job)
            self.reap()

    def jobs(self) -> list[LoadJob]:
        """Every job kept: running and waiting first, then the finished ones, oldest first."""
        self.reap()
        return [*self._active.values(), *(job for _, job in self._finished.values())]

    def get(self, job_id: str) -> LoadJob | None:
        self.reap()
        job = self._active.get(job_id)
        if job is not None:
            return job
        kept = self._finished.get(job_id)
        return kept[1] if kept is not None else None

    def reap(self) -> None:
        """Forget finished jobs older than ``finished_ttl`` or beyond ``keep_finished``."""
        now = self.clock()
        while self._finished:
            job_id, (done, _) = next(iter(self._finished.items()))
            if len(self._finished) > self.keep_finished or now - done > self.finished_ttl:
                del self._finished[job_id]
            else:
                break

    async def close(self) -> None:
        """Cancel every job (the worker is stopping)."""
        tasks = [j.task for j in self._active.values() if j.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
