"""The load table's bounds, without servers: slots per dataset, a waiting cap, reaping."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from tidepool.core.errors import TooManyRequestsError
from tidepool.worker.loads import MAX_CONCURRENCY, LoadJob, LoadProgress, LoadTable

_ids = iter(range(1, 10**6))


@dataclass
class _Svc:
    name: str


@dataclass
class _Job:
    """The part of a LoadJob the table uses; ``release`` lets it finish."""

    svc: _Svc
    progress: LoadProgress = field(init=False)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    task: Any = None

    def __post_init__(self) -> None:
        self.progress = LoadProgress(id=f"load-{next(_ids)}", dataset=self.svc.name, paths=[""])

    @property
    def finished(self) -> bool:
        return self.progress.phase in ("Complete", "Failed")

    async def run(self) -> None:
        self.progress.phase = "Executing"
        await self.release.wait()
        self.progress.phase = "Complete"


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_slots_per_dataset_and_waiting_cap() -> None:
    table = LoadTable(max_running=2, max_waiting=1)
    a = [_Job(_Svc("a")) for _ in range(3)]
    for job in a:
        table.start(job)  # type: ignore[arg-type]
    await _settle()
    assert [j.progress.phase for j in a] == ["Executing", "Executing", "Pending"]
    with pytest.raises(TooManyRequestsError, match="'a' has 2 load jobs running and 1 waiting"):
        table.start(_Job(_Svc("a")))  # type: ignore[arg-type]
    other = _Job(_Svc("b"))
    table.start(other)  # type: ignore[arg-type]  # another dataset has its own slots
    await _settle()
    assert other.progress.phase == "Executing"
    a[0].release.set()
    await _settle()
    assert a[2].progress.phase == "Executing"
    for job in [*a, other]:
        job.release.set()
    await table.close()


async def test_finished_jobs_are_reaped_by_count_and_age() -> None:
    clock = _Clock()
    table = LoadTable(keep_finished=3, finished_ttl=100.0, clock=clock)
    jobs = [_Job(_Svc("a")) for _ in range(5)]
    for job in jobs:
        job.release.set()
        table.start(job)  # type: ignore[arg-type]
        await _settle()
    assert [table.get(j.progress.id) is not None for j in jobs] == [False, False, True, True, True]
    clock.now = 101.0
    assert all(table.get(j.progress.id) is None for j in jobs)
    assert len(table) == 0


async def test_close_marks_unfinished_jobs_failed() -> None:
    table = LoadTable(max_running=1)
    running, waiting = _Job(_Svc("a")), _Job(_Svc("a"))
    table.start(running)  # type: ignore[arg-type]
    table.start(waiting)  # type: ignore[arg-type]
    await _settle()
    await table.close()
    assert running.progress.phase == waiting.progress.phase == "Failed"
    assert "stopped" in running.progress.errors[-1]


def test_job_concurrency_is_clamped() -> None:
    job = LoadJob(_Svc("a"), [], concurrency=2_000_000)  # type: ignore[arg-type]
    assert job.concurrency == MAX_CONCURRENCY
