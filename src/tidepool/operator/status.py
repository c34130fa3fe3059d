"""Status of the custom resources, and the aggregation of worker reports into ``Dataset.status``.

Status flows edge to cloud: each worker's reporter (:mod:`.reporter`) writes a :class:`Report` to
the API server (a Lease per worker, through YurtHub at the edge), and the operator folds the reports
into ``Dataset.status`` with Fluid's field names (``phase``, ``ufsTotal``, ``fileNum``,
``cacheStates.{cached, cacheCapacity, cachedPercentage, cacheHitRatio, localHitRatio,
remoteHitRatio}``), overall and per pool. The cloud never calls into the edge, so this works
behind NAT without a tunnel.

A pool whose newest report is older than ``stale_after`` is marked ``Stale`` and its numbers are
shown with their age; they are not mixed into the dataset totals as if current.

The status models are the schema of the CRDs' ``status`` (:mod:`.crds`), so the written status and
the schema cannot drift. Everything here is pure: time is passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from tidepool.core.quantity import format_bytes

REPORT_ANNOTATION = "tidepool.io/report"
"""Lease annotation holding a worker's :class:`Report` as JSON."""
LOAD_PROGRESS_ANNOTATION = "tidepool.io/load-progress"
"""Job annotation holding a load's :class:`JobProgress` as JSON."""
DEFAULT_STALE_AFTER = 120.0
"""Seconds without a report after which a pool's numbers are called stale."""


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Report(_Wire):
    """One worker's numbers for one dataset, as its reporter writes them."""

    dataset: str
    pool: str = ""
    node: str
    time: float
    """Unix time the numbers were read from the worker."""
    ufs_total_bytes: int | None = None
    file_num: int | None = None
    cached_bytes: int = 0
    cached_files: int = 0
    capacity_bytes: int = 0
    page_hits: int = 0
    """Pages readers asked for that were in the worker's store (local hits)."""
    page_misses: int = 0
    """Pages the worker lacked; ``peer_hits`` of them came from another worker of the pool."""
    peer_hits: int = 0
    """Misses answered by another worker of the pool over the LAN (remote hits)."""
    origin_reachable: bool = True


class CacheStates(_Wire):
    """Fluid's ``cacheStates`` (strings, as Fluid prints them)."""

    cached: str = "0 B"
    cache_capacity: str = "0 B"
    cached_percentage: str = "0.0%"
    cache_hit_ratio: str = "0.0%"
    local_hit_ratio: str = "0.0%"
    remote_hit_ratio: str = "0.0%"


PoolPhase = Literal["Ready", "Stale", "NoReports", "Absent"]


class PoolStatus(_Wire):
    """One node pool's share of a dataset."""

    name: str
    phase: PoolPhase
    workers: int = 0
    """Workers that have reported at least once."""
    last_report: str | None = None
    """RFC 3339 time of the newest report."""
    age_seconds: int | None = None
    ufs_total: str | None = None
    file_num: str | None = None
    cache_states: CacheStates = Field(default_factory=CacheStates)


class Condition(_Wire):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str = ""


class DatasetStatus(_Wire):
    """``Dataset.status`` with Fluid's names, plus ``pools`` (per node pool) and ``message``."""

    phase: Literal["Pending", "Bound", "NotBound", "Failed"] = "Pending"
    ufs_total: str = "[Calculating]"
    file_num: str = "[Calculating]"
    cache_states: CacheStates = Field(default_factory=CacheStates)
    pools: list[PoolStatus] = Field(default_factory=list)
    message: str = ""
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None


class RuntimeStatus(_Wire):
    """Runtime status with Fluid's worker counters; ``selector`` backs the scale subresource."""

    worker_phase: Literal["NotReady", "PartialReady", "Ready", "Failed"] = "NotReady"
    desired_worker_number_scheduled: int = 0
    current_worker_number_scheduled: int = 0
    worker_number_ready: int = 0
    selector: str = ""
    pools: list[str] = Field(default_factory=list)
    message: str = ""


LoadPhase = Literal["Pending", "Executing", "Complete", "Incomplete", "Failed"]
"""``Incomplete``: every file was read, but the data does not fit under the cache quota."""


class JobProgress(_Wire):
    """One load Job's progress, as ``tidepool load --report-job`` writes it onto its Job."""

    phase: LoadPhase = "Executing"
    files: int = 0
    files_total: int = 0
    bytes: int = 0
    bytes_total: int = 0
    errors: int = 0
    bytes_cached: int | None = None
    """Of the loaded bytes, those still cached when the load ended (None while it runs)."""
    message: str = ""
    """Why the load is Incomplete or Failed, and what to change."""
    time: float = 0.0
    """Unix time of the reading."""

    def fraction(self) -> float:
        if self.bytes_total:
            return min(1.0, self.bytes / self.bytes_total)
        return 1.0 if self.phase == "Complete" else 0.0


class LoadProgress(_Wire):
    """Warm-up progress (a field Fluid's users ask for): files and bytes loaded so far.

    Summed over the DataLoad's Jobs (one per pool); ``percent`` is the mean of the Jobs' byte
    fractions, a Job that has not reported yet counting as 0, so one finished pool out of two
    reads 50%, not 100%."""

    files: int = 0
    files_total: int = 0
    bytes: int = 0
    bytes_total: int = 0
    percent: str = "0.0%"
    errors: int = 0
    bytes_cached: int | None = None
    """Of the loaded bytes, those still cached at the end (summed over the Jobs that ended)."""
    reporting: int = 0
    """Jobs that have reported progress."""


class DataLoadStatus(_Wire):
    phase: LoadPhase = "Pending"
    duration: str = ""
    jobs: list[str] = Field(default_factory=list)
    """Jobs or CronJobs running the load, one per target pool."""
    progress: LoadProgress = Field(default_factory=LoadProgress)
    message: str = ""
    conditions: list[Condition] = Field(default_factory=list)


def dump(model: BaseModel) -> dict[str, Any]:
    """A status model as the JSON the API server stores (camelCase)."""
    return model.model_dump(by_alias=True, mode="json")


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_reports(annotations: Iterable[dict[str, str]]) -> list[Report]:
    """Reports from Lease annotations; unreadable ones are skipped (a bad edge must not stop us)."""
    out = []
    for ann in annotations:
        text = ann.get(REPORT_ANNOTATION)
        if not text:
            continue
        try:
            out.append(Report.model_validate_json(text))
        except ValidationError:
            continue
    return out


def _pct(x: float) -> str:
    return f"{100.0 * x:.1f}%"


def _states(reports: Sequence[Report]) -> tuple[CacheStates, int | None, int | None]:
    cached = sum(r.cached_bytes for r in reports)
    capacity = sum(r.capacity_bytes for r in reports)
    totals = [r.ufs_total_bytes for r in reports if r.ufs_total_bytes is not None]
    files = [r.file_num for r in reports if r.file_num is not None]
    total = max(totals) if totals else None  # every worker sees the same origin
    hits = sum(r.page_hits for r in reports)
    lookups = hits + sum(r.page_misses for r in reports)
    peer = sum(r.peer_hits for r in reports)
    pct = min(1.0, cached / total) if total else (1.0 if total == 0 else 0.0)
    states = CacheStates(
        cached=format_bytes(cached),
        cache_capacity=format_bytes(capacity),
        cached_percentage=_pct(pct),
        cache_hit_ratio=_pct((hits + peer) / lookups if lookups else 0.0),
        local_hit_ratio=_pct(hits / lookups if lookups else 0.0),
        remote_hit_ratio=_pct(peer / lookups if lookups else 0.0),
    )
    return states, total, (max(files) if files else None)


def pool_status(
    name: str, reports: Sequence[Report], now: float, stale_after: float, present: bool = True
) -> PoolStatus:
    """One pool's status from its workers' reports (newest per node)."""
    if not present:
        return PoolStatus(name=name, phase="Absent")
    newest: dict[str, Report] = {}
    for r in reports:
        if r.node not in newest or r.time > newest[r.node].time:
            newest[r.node] = r
    if not newest:
        return PoolStatus(name=name, phase="NoReports")
    latest = max(r.time for r in newest.values())
    states, total, files = _states(list(newest.values()))
    return PoolStatus(
        name=name,
        phase="Stale" if now - latest > stale_after else "Ready",
        workers=len(newest),
        last_report=rfc3339(latest),
        age_seconds=max(0, int(now - latest)),
        ufs_total=format_bytes(total) if total is not None else None,
        file_num=str(files) if files is not None else None,
        cache_states=states,
    )


def aggregate(
    pools: Sequence[str],
    reports: Sequence[Report],
    now: float,
    *,
    present: Iterable[str] | None = None,
    stale_after: float = DEFAULT_STALE_AFTER,
    generation: int | None = None,
    message: str = "",
) -> DatasetStatus:
    """``Dataset.status`` from the workers' reports of the given pools.

    ``present`` are the pools that exist in the cluster (``None``: all of ``pools``). Totals are
    summed over fresh pools only; the phase is ``Bound`` once some pool reports freshly.
    """
    existing = set(pools if present is None else present)
    by_pool: dict[str, list[Report]] = {p: [] for p in pools}
    for r in reports:
        if r.pool in by_pool:
            by_pool[r.pool].append(r)
    statuses = [pool_status(p, by_pool[p], now, stale_after, present=p in existing) for p in pools]
    fresh_names = {s.name for s in statuses if s.phase == "Ready"}
    fresh = [r for p in fresh_names for r in by_pool[p]]
    newest: dict[tuple[str, str], Report] = {}
    for r in fresh:
        key = (r.pool, r.node)
        if key not in newest or r.time > newest[key].time:
            newest[key] = r
    states, total, files = _states(list(newest.values()))
    stale = sorted(s.name for s in statuses if s.phase == "Stale")
    notes = [message] if message else []
    if stale:
        notes.append(f"no recent reports from pool(s) {', '.join(stale)}; their numbers are old")
    return DatasetStatus(
        phase="Bound" if fresh_names else "NotBound",
        ufs_total=format_bytes(total) if total is not None else "[Calculating]",
        file_num=str(files) if files is not None else "[Calculating]",
        cache_states=states,
        pools=statuses,
        message="; ".join(notes),
        observed_generation=generation,
    )


def report_from_worker(status: dict[str, Any], *, pool: str, node: str, now: float) -> Report:
    """A :class:`Report` from a worker's ``GET /v1/datasets/{ds}/status`` answer (its ``raw``)."""
    raw = status.get("raw") or {}
    return Report(
        dataset=str(status.get("dataset", "")),
        pool=pool,
        node=node,
        time=now,
        ufs_total_bytes=raw.get("ufs_total_bytes"),
        file_num=raw.get("file_num"),
        cached_bytes=int(raw.get("cached_bytes") or 0),
        cached_files=int(raw.get("cached_files") or 0),
        capacity_bytes=int(raw.get("cache_capacity_bytes") or 0),
        page_hits=int(raw.get("page_hits") or 0),
        page_misses=int(raw.get("page_misses") or 0),
        peer_hits=int(raw.get("peer_hits") or 0),
        origin_reachable=bool(raw.get("origin_reachable", True)),
    )


def job_progress_from_load(load: dict[str, Any], *, now: float) -> JobProgress:
    """A :class:`JobProgress` from a worker's load job answer (``GET /v1/loads/{id}``)."""
    return JobProgress(
        phase=load.get("phase") or "Executing",
        files=int(load.get("files_done") or 0),
        files_total=int(load.get("files_total") or 0),
        bytes=int(load.get("bytes_done") or 0),
        bytes_total=int(load.get("bytes_total") or 0),
        errors=int(load.get("error_count") or 0),
        bytes_cached=(
            int(load.get("bytes_cached") or 0)
            if load.get("phase") in ("Complete", "Incomplete")
            else None
        ),
        message=str(load.get("message") or ""),
        time=now,
    )


def parse_job_progress(annotations: dict[str, str] | None) -> JobProgress | None:
    """The progress a load Job carries, or None (none yet, or unreadable: never fatal)."""
    text = (annotations or {}).get(LOAD_PROGRESS_ANNOTATION)
    if not text:
        return None
    try:
        return JobProgress.model_validate_json(text)
    except ValidationError:
        return None


def load_progress(jobs: Sequence[JobProgress | None], expected: int) -> LoadProgress:
    """A DataLoad's progress from its Jobs' reports (``expected`` Jobs, one per pool)."""
    found = [j for j in jobs if j is not None]
    share = sum(j.fraction() for j in found) / max(expected, len(found), 1)
    return LoadProgress(
        files=sum(j.files for j in found),
        files_total=sum(j.files_total for j in found),
        bytes=sum(j.bytes for j in found),
        bytes_total=sum(j.bytes_total for j in found),
        percent=_pct(share),
        errors=sum(j.errors for j in found),
        bytes_cached=(
            sum(j.bytes_cached or 0 for j in found)
            if any(j.bytes_cached is not None for j in found)
            else None
        ),
        reporting=len(found),
    )
