"""Prometheus metrics of one worker, on a registry of its own (several workers may share a process).

Names follow Prometheus conventions (base units in the name, ``_total`` on counters,
``_timestamp_seconds`` on times) and Fluid's ``cacheStates``: the ``tidepool_dataset_*`` gauges are
``ufsTotal``, ``fileNum``, ``cached``, ``cacheCapacity`` and ``cachedPercentage`` (as a ratio);
Fluid's ``cacheHitRatio`` / ``localHitRatio`` / ``remoteHitRatio`` are rates of the page counters
(see the recording rules shipped in the Helm chart):

    local  = rate(tidepool_cache_hits_total) / rate(hits + misses)
    remote = rate(tidepool_cache_remote_hits_total) / rate(hits + misses)

Counters on the hot path are pre-bound per dataset (``labels()`` once, not per request). Store,
origin, dataset and pool numbers are read at scrape time by collectors, so those layers need no
knowledge of Prometheus.

Metric names are user-facing contracts. Names renamed in 0.1.0 stay exported, with the same
values, until 0.2.0 (:data:`DEPRECATED`); they are copied at scrape time, never counted twice on
the hot path.

Why this module is longer than ~400 lines: it is the list of the worker's Prometheus series with
their help texts (one definition each), not logic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Metric
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

DEPRECATED: dict[str, str] = {
    # old family name -> new family name (removed in 0.2.0)
    "tidepool_bytes_served": "tidepool_served_bytes",
    "tidepool_peer_hits": "tidepool_cache_remote_hits",
    "tidepool_read_seconds": "tidepool_read_duration_seconds",
    "tidepool_origin_down_since_seconds": "tidepool_origin_down_since_timestamp_seconds",
}
"""Old metric names still exported for one release, and the name that replaces each."""


@dataclass
class DatasetCounters:
    """Pre-bound children for one dataset."""

    bytes_cache: Counter
    bytes_origin: Counter
    hits: Counter
    misses: Counter
    peer_hits: Counter
    peer_verified: Counter
    """Peer answers whose bytes matched the origin's checksum (:mod:`tidepool.worker.verify`)."""
    peer_rejected: Counter
    """Peer answers whose bytes did not: dropped, the origin's bytes served instead."""
    origin_requests: Counter
    load_bytes: Counter
    """Bytes warm-up jobs read (cached or fetched)."""
    load_failed_files: Counter
    """Files a warm-up job could not read."""
    loads_complete: Counter
    loads_failed: Counter
    load_latest_bytes: Gauge
    """Deprecated ``tidepool_load_bytes_done``: bytes of the latest finished load job."""
    rebalance_bytes: Counter
    """Bytes copied from pool peers after a join (:mod:`tidepool.worker.rebalance`)."""
    rebalance_files: Counter
    """Files copied from pool peers after a join."""


def counter_value(counter: Counter) -> float:
    """Current value of a bound counter child (public API: its collected ``_total`` sample)."""
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                return sample.value
    return 0.0


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.bytes_served = Counter(
            "tidepool_served_bytes",
            "Bytes sent to readers, by where they came from (cache, or a fetch: origin or peer)",
            ["dataset", "source"],
            registry=r,
        )
        self.page_hits = Counter(
            "tidepool_cache_hits",
            "Pages readers asked for that this worker held (Fluid's local hits)",
            ["dataset"],
            registry=r,
        )
        self.page_misses = Counter(
            "tidepool_cache_misses",
            "Pages readers asked for that this worker lacked (fetched from a peer or the origin)",
            ["dataset"],
            registry=r,
        )
        self.peer_hits = Counter(
            "tidepool_cache_remote_hits",
            "Of the misses, pages another worker of the pool served over the LAN "
            "(Fluid's remote hits)",
            ["dataset"],
            registry=r,
        )
        self.peer_verified = Counter(
            "tidepool_peer_verified",
            "Answers of pool peers whose bytes matched the origin's checksum (its MD5 ETag)",
            ["dataset"],
            registry=r,
        )
        self.peer_rejected = Counter(
            "tidepool_peer_rejected",
            "Answers of pool peers whose bytes did not match the origin's checksum: dropped, "
            "and the origin's bytes served instead",
            ["dataset"],
            registry=r,
        )
        self.origin_requests = Counter(
            "tidepool_origin_requests", "Calls made to the origin", ["dataset", "op"], registry=r
        )
        self.requests = Counter(
            "tidepool_http_requests", "HTTP requests answered", ["route", "status"], registry=r
        )
        self.read_seconds = Histogram(
            "tidepool_read_duration_seconds",
            "Time to answer a file read",
            ["dataset"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
            registry=r,
        )
        self.load_bytes = Counter(
            "tidepool_load_bytes", "Bytes read by warm-up (load) jobs", ["dataset"], registry=r
        )
        self.load_failed_files = Counter(
            "tidepool_load_failed_files",
            "Files a warm-up (load) job could not read",
            ["dataset"],
            registry=r,
        )
        self.load_jobs = Counter(
            "tidepool_load_jobs",
            "Warm-up (load) jobs finished, by result (Complete or Failed)",
            ["dataset", "result"],
            registry=r,
        )
        self.load_bytes_done = Gauge(
            "tidepool_load_bytes_done",
            "DEPRECATED (removed in 0.2.0; use tidepool_load_bytes_total): "
            "bytes read by the latest finished load job",
            ["dataset"],
            registry=r,
        )
        self.rebalance_bytes = Counter(
            "tidepool_rebalance_bytes",
            "Bytes copied from other members of the pool after a change of members (over the "
            "LAN, from their caches; never from the origin)",
            ["dataset"],
            registry=r,
        )
        self.rebalance_files = Counter(
            "tidepool_rebalance_files",
            "Files copied from other members of the pool after a change of members",
            ["dataset"],
            registry=r,
        )
        r.register(_Aliases([self.bytes_served, self.peer_hits, self.read_seconds]))
        self._counters: dict[str, DatasetCounters] = {}

    def dataset(self, name: str) -> DatasetCounters:
        c = self._counters.get(name)
        if c is None:
            c = DatasetCounters(
                bytes_cache=self.bytes_served.labels(name, "cache"),
                bytes_origin=self.bytes_served.labels(name, "origin"),
                hits=self.page_hits.labels(name),
                misses=self.page_misses.labels(name),
                peer_hits=self.peer_hits.labels(name),
                peer_verified=self.peer_verified.labels(name),
                peer_rejected=self.peer_rejected.labels(name),
                origin_requests=self.origin_requests.labels(name, "read"),
                load_bytes=self.load_bytes.labels(name),
                load_failed_files=self.load_failed_files.labels(name),
                loads_complete=self.load_jobs.labels(name, "Complete"),
                loads_failed=self.load_jobs.labels(name, "Failed"),
                load_latest_bytes=self.load_bytes_done.labels(name),
                rebalance_bytes=self.rebalance_bytes.labels(name),
                rebalance_files=self.rebalance_files.labels(name),
            )
            self._counters[name] = c
        return c

    def add_store_collector(self, source: Callable[[], Iterable[StoreSample]]) -> None:
        self.registry.register(_StoreCollector(source))

    def add_origin_collector(self, source: Callable[[], Iterable[OriginSample]]) -> None:
        self.registry.register(_OriginCollector(source))

    def add_dataset_collector(self, source: Callable[[], Iterable[DatasetSample]]) -> None:
        self.registry.register(_DatasetCollector(source))

    def add_pool_collector(self, source: Callable[[], Iterable[MemberSample]]) -> None:
        self.registry.register(_PoolCollector(source))


class _Aliases(Collector):
    """The deprecated names of :data:`DEPRECATED`, copied from the current metrics at scrape."""

    def __init__(self, metrics: list[Counter | Histogram]) -> None:
        self._metrics = metrics
        self._old = {new: old for old, new in DEPRECATED.items()}

    def collect(self) -> Iterator[Metric]:
        for source in self._metrics:
            for fam in source.collect():
                old = self._old.get(fam.name)
                if old is None:
                    continue
                alias = Metric(
                    old,
                    f"DEPRECATED (removed in 0.2.0; use {fam.name}): {fam.documentation}",
                    fam.type,
                )
                for s in fam.samples:
                    alias.add_sample(old + s.name[len(fam.name) :], s.labels, s.value, s.timestamp)
                yield alias


@dataclass
class OriginSample:
    dataset: str
    mount: str
    up: bool
    down_since: float | None
    breaker_opened: int
    fast_failures: int
    retries: int
    stale_served: int
    read_bytes: int = 0
    """Bytes read from the origin (across the WAN)."""


class _OriginCollector(Collector):
    def __init__(self, source: Callable[[], Iterable[OriginSample]]) -> None:
        self._source = source

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        labels = ["dataset", "mount"]
        up = GaugeMetricFamily(
            "tidepool_origin_up",
            "1 when the origin answers, 0 while its breaker is open",
            labels=labels,
        )
        since = GaugeMetricFamily(
            "tidepool_origin_down_since_timestamp_seconds",
            "Unix time the current origin outage began (0 when reachable)",
            labels=labels,
        )
        since_old = GaugeMetricFamily(
            "tidepool_origin_down_since_seconds",
            "DEPRECATED (removed in 0.2.0; use tidepool_origin_down_since_timestamp_seconds): "
            "Unix time the current origin outage began (0 when reachable)",
            labels=labels,
        )
        opened = CounterMetricFamily(
            "tidepool_origin_breaker_opened",
            "Times the origin circuit breaker opened",
            labels=labels,
        )
        fast = CounterMetricFamily(
            "tidepool_origin_fast_failures",
            "Origin calls refused at once because the origin was known to be down",
            labels=labels,
        )
        retries = CounterMetricFamily(
            "tidepool_origin_retries", "Origin calls retried after a retryable error", labels=labels
        )
        wan = CounterMetricFamily(
            "tidepool_origin_read_bytes",
            "Bytes of file data read from the origin (what crossed the WAN)",
            labels=labels,
        )
        stale = CounterMetricFamily(
            "tidepool_stale_metadata_served",
            "Metadata answers given from the last known state while the origin was down",
            labels=["dataset"],
        )
        seen: set[str] = set()
        for s in self._source():
            lv = [s.dataset, s.mount]
            up.add_metric(lv, 1.0 if s.up else 0.0)
            since.add_metric(lv, s.down_since or 0.0)
            since_old.add_metric(lv, s.down_since or 0.0)
            opened.add_metric(lv, s.breaker_opened)
            fast.add_metric(lv, s.fast_failures)
            retries.add_metric(lv, s.retries)
            wan.add_metric(lv, s.read_bytes)
            if s.dataset not in seen:
                seen.add(s.dataset)
                stale.add_metric([s.dataset], s.stale_served)
        yield from (up, since, since_old, opened, fast, retries, wan, stale)


@dataclass
class StoreSample:
    dataset: str
    medium: str
    path: str
    used: int
    capacity: int
    pages: int
    evictions: int
    corrupt: int
    read_errors: int = 0
    high: int = 0
    """High watermark in bytes: crossing it starts eviction."""
    low: int = 0
    """Low watermark in bytes: eviction stops there."""


class _StoreCollector(Collector):
    def __init__(self, source: Callable[[], Iterable[StoreSample]]) -> None:
        self._source = source

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        tier = ["dataset", "tier", "path"]
        used = GaugeMetricFamily(
            "tidepool_cache_used_bytes", "Bytes held by a cache tier", labels=tier
        )
        cap = GaugeMetricFamily(
            "tidepool_cache_capacity_bytes", "Quota of a cache tier", labels=tier
        )
        high = GaugeMetricFamily(
            "tidepool_cache_high_watermark_bytes",
            "Usage of a cache tier above which eviction starts",
            labels=tier,
        )
        low = GaugeMetricFamily(
            "tidepool_cache_low_watermark_bytes",
            "Usage of a cache tier at which eviction stops",
            labels=tier,
        )
        pages = GaugeMetricFamily("tidepool_cache_pages", "Pages held by a cache tier", labels=tier)
        ev = CounterMetricFamily(
            "tidepool_cache_evictions", "Pages evicted from the cache", labels=["dataset"]
        )
        bad = CounterMetricFamily(
            "tidepool_cache_corrupt_pages", "Pages that failed their checksum", labels=["dataset"]
        )
        errors = CounterMetricFamily(
            "tidepool_cache_read_errors",
            "Page reads that failed for a reason that may pass (out of file descriptors, EIO); "
            "the page was kept",
            labels=["dataset"],
        )
        seen: set[str] = set()
        for s in self._source():
            labels = [s.dataset, s.medium, s.path]
            used.add_metric(labels, s.used)
            cap.add_metric(labels, s.capacity)
            high.add_metric(labels, s.high)
            low.add_metric(labels, s.low)
            pages.add_metric(labels, s.pages)
            if s.dataset not in seen:
                seen.add(s.dataset)
                ev.add_metric([s.dataset], s.evictions)
                bad.add_metric([s.dataset], s.corrupt)
                errors.add_metric([s.dataset], s.read_errors)
        yield from (used, cap, high, low, pages, ev, bad, errors)


@dataclass
class DatasetSample:
    """One dataset's Fluid ``cacheStates`` as numbers."""

    dataset: str
    ufs_total_bytes: int | None
    """Size of the dataset at the origin; None until first listed."""
    files: int | None
    cached_bytes: int
    cached_files: int
    capacity_bytes: int


class _DatasetCollector(Collector):
    def __init__(self, source: Callable[[], Iterable[DatasetSample]]) -> None:
        self._source = source

    def collect(self) -> Iterable[GaugeMetricFamily]:
        ds = ["dataset"]
        total = GaugeMetricFamily(
            "tidepool_dataset_ufs_total_bytes",
            "Size of the dataset at the origin (ufsTotal)",
            labels=ds,
        )
        files = GaugeMetricFamily(
            "tidepool_dataset_files", "Files of the dataset at the origin (fileNum)", labels=ds
        )
        cached = GaugeMetricFamily(
            "tidepool_dataset_cached_bytes",
            "Bytes of the dataset this worker holds (cached)",
            labels=ds,
        )
        cached_files = GaugeMetricFamily(
            "tidepool_dataset_cached_files",
            "Files of the dataset with at least one page held by this worker",
            labels=ds,
        )
        capacity = GaugeMetricFamily(
            "tidepool_dataset_cache_capacity_bytes",
            "Quota of the dataset's cache tiers on this worker (cacheCapacity)",
            labels=ds,
        )
        ratio = GaugeMetricFamily(
            "tidepool_dataset_cached_ratio",
            "Fraction of the dataset this worker holds, 0 to 1 (cachedPercentage / 100)",
            labels=ds,
        )
        for s in self._source():
            lv = [s.dataset]
            cached.add_metric(lv, s.cached_bytes)
            cached_files.add_metric(lv, s.cached_files)
            capacity.add_metric(lv, s.capacity_bytes)
            if s.ufs_total_bytes is not None:
                total.add_metric(lv, s.ufs_total_bytes)
                frac = min(1.0, s.cached_bytes / s.ufs_total_bytes) if s.ufs_total_bytes else 1.0
                ratio.add_metric(lv, frac)
            if s.files is not None:
                files.add_metric(lv, s.files)
        yield from (total, files, cached, cached_files, capacity, ratio)


@dataclass
class MemberSample:
    nodepool: str
    member: str
    up: bool


class _PoolCollector(Collector):
    def __init__(self, source: Callable[[], Iterable[MemberSample]]) -> None:
        self._source = source

    def collect(self) -> Iterable[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "tidepool_pool_member_up",
            "1 when this worker's last probe of a pool member succeeded (itself: always 1)",
            labels=["nodepool", "member"],
        )
        for s in self._source():
            up.add_metric([s.nodepool, s.member], 1.0 if s.up else 0.0)
        yield up
