"""Prometheus metrics of one worker, on a registry of its own (several workers may share a process).

Counters on the hot path are pre-bound per dataset (``labels()`` once, not per request). Store-level
numbers (used bytes, evictions) are read from the page stores at scrape time by a collector, so the
store needs no knowledge of Prometheus.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


@dataclass
class DatasetCounters:
    """Pre-bound children for one dataset."""

    bytes_cache: Counter
    bytes_origin: Counter
    hits: Counter
    misses: Counter
    peer_hits: Counter
    origin_requests: Counter


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.bytes_served = Counter(
            "tidepool_bytes_served",
            "Bytes sent to readers, by where they came from",
            ["dataset", "source"],
            registry=r,
        )
        self.page_hits = Counter(
            "tidepool_cache_hits", "Pages served from the cache", ["dataset"], registry=r
        )
        self.page_misses = Counter(
            "tidepool_cache_misses",
            "Pages that had to be fetched from the origin",
            ["dataset"],
            registry=r,
        )
        self.peer_hits = Counter(
            "tidepool_peer_hits",
            "Missed pages fetched from another worker of the pool (LAN), not the origin",
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
            "tidepool_read_seconds",
            "Time to answer a file read",
            ["dataset"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
            registry=r,
        )
        self.load_bytes = Gauge(
            "tidepool_load_bytes_done",
            "Bytes warmed by the latest load job",
            ["dataset"],
            registry=r,
        )
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
                origin_requests=self.origin_requests.labels(name, "read"),
            )
            self._counters[name] = c
        return c

    def add_store_collector(self, source: Callable[[], Iterable[StoreSample]]) -> None:
        self.registry.register(_StoreCollector(source))

    def add_origin_collector(self, source: Callable[[], Iterable[OriginSample]]) -> None:
        self.registry.register(_OriginCollector(source))


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
            "tidepool_origin_down_since_seconds",
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
            opened.add_metric(lv, s.breaker_opened)
            fast.add_metric(lv, s.fast_failures)
            retries.add_metric(lv, s.retries)
            if s.dataset not in seen:
                seen.add(s.dataset)
                stale.add_metric([s.dataset], s.stale_served)
        yield from (up, since, opened, fast, retries, stale)


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


class _StoreCollector(Collector):
    def __init__(self, source: Callable[[], Iterable[StoreSample]]) -> None:
        self._source = source

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        used = GaugeMetricFamily(
            "tidepool_cache_used_bytes",
            "Bytes held by a cache tier",
            labels=["dataset", "tier", "path"],
        )
        cap = GaugeMetricFamily(
            "tidepool_cache_capacity_bytes",
            "Quota of a cache tier",
            labels=["dataset", "tier", "path"],
        )
        pages = GaugeMetricFamily(
            "tidepool_cache_pages", "Pages held by a cache tier", labels=["dataset", "tier", "path"]
        )
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
            pages.add_metric(labels, s.pages)
            if s.dataset not in seen:
                seen.add(s.dataset)
                ev.add_metric([s.dataset], s.evictions)
                bad.add_metric([s.dataset], s.corrupt)
                errors.add_metric([s.dataset], s.read_errors)
        yield from (used, cap, pages, ev, bad, errors)
