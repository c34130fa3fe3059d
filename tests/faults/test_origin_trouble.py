"""Origin trouble (throttling, 5xx, resets, a slow or silent origin) through the faulty proxy.

The proxy of :mod:`tidepool_lab.testbed.faulty` sits between the worker and the real S3 origin and
decides per request whether to pass it on or to inject a fault; it also counts requests, which is
how the single-flight test proves that readers never multiply origin GETs.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tidepool.core.errors import OriginUnavailableError
from tidepool.origin.funnel import OriginSettings
from tidepool_lab.testbed.faulty import Fault, FaultyProxy

from .conftest import client, metric

pytestmark = pytest.mark.integration

PAGE = 64 * 1024


def _gets(proxy: FaultyProxy, key: str) -> list[Any]:
    return [r for r in proxy.records() if r.method == "GET" and key in r.target and r.range]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["slowdown", "internal", "reset"])
def test_intermittent_faults_are_retried_and_reads_succeed(
    kind: str, make_dataset: Any, start_worker: Any, proxy: FaultyProxy
) -> None:
    """Every other origin request fails (503 SlowDown, 500 InternalError or a connection reset):
    each is retried with capped backoff and every read returns the right bytes — nothing lost,
    no error reaches the reader, and the breaker never opens on an origin that answers."""
    files = {f"f{i:02d}.bin": os.urandom(3 * PAGE + 1000 * i) for i in range(6)}
    cfg = make_dataset(files, page_size=PAGE, endpoint=proxy.endpoint)
    w = start_worker([cfg], origin=OriginSettings(retries=4, retry_budget=3.0, seed=7))
    fs = client(w.endpoint)
    proxy.inject(Fault(kind, times=-1, every=2))
    for name, data in files.items():
        assert fs.cat_file(f"ds/{name}") == data, name
    records = proxy.records()
    faulted = [i for i, r in enumerate(records) if r.fault == kind]
    assert len(faulted) >= 6, "the faults were not injected"
    for i in faulted:  # each faulted request was tried again, and that answer was good
        r = records[i]
        assert any(
            (o.method, o.target, o.range) == (r.method, r.target, r.range)
            and o.status is not None
            and o.status < 300
            for o in records[i + 1 :]
        ), r
    if kind != "reset":
        # the funnel is the one retry layer (botocore must not retry underneath it); a reset of
        # a reused keep-alive connection is also retried once by aiohttp itself, which is fine
        assert metric(fs, "tidepool_origin_retries_total") >= len(faulted)
    assert metric(fs, "tidepool_origin_breaker_opened_total") == 0
    assert metric(fs, "tidepool_origin_up") == 1


def test_slow_origin_is_waited_for(
    make_dataset: Any, start_worker: Any, proxy: FaultyProxy
) -> None:
    """A slow origin (every request delayed 0.4 s) is slow, not down: reads succeed with the right
    bytes and the breaker stays closed."""
    files = {"slow.bin": os.urandom(4 * PAGE)}
    cfg = make_dataset(files, page_size=PAGE, endpoint=proxy.endpoint)
    w = start_worker([cfg], origin=OriginSettings(seed=3))
    fs = client(w.endpoint)
    proxy.inject(Fault("delay", delay=0.4, times=-1))
    assert fs.cat_file("ds/slow.bin") == files["slow.bin"]
    assert metric(fs, "tidepool_origin_breaker_opened_total") == 0


def test_throttling_that_persists_fails_cleanly_within_the_bound(
    make_dataset: Any, start_worker: Any, proxy: FaultyProxy
) -> None:
    """An origin that throttles every request: the retries are bounded by the retry budget, so the
    read fails (an OSError naming the dataset and path), well within the bound — no hang."""
    files = {"t.bin": os.urandom(PAGE)}
    cfg = make_dataset(files, page_size=PAGE, endpoint=proxy.endpoint)
    w = start_worker([cfg], origin=OriginSettings(seed=5))
    fs = client(w.endpoint)
    fs.info("ds/t.bin")
    proxy.inject(Fault("slowdown", times=-1))
    t0 = time.monotonic()
    with pytest.raises(OSError) as err:
        fs.cat_file("ds/t.bin")
    assert time.monotonic() - t0 < 5
    assert "t.bin" in str(err.value) and "ds" in str(err.value)
    proxy.clear()
    assert fs.cat_file("ds/t.bin") == files["t.bin"]


@pytest.mark.slow
def test_silent_origin_fails_within_the_bound(
    make_dataset: Any, start_worker: Any, proxy: FaultyProxy
) -> None:
    """An origin that accepts requests and never answers (a black-holed link: pooled connections
    stay open, nothing comes back) must not hang an uncached read: it fails within the bound with
    OriginUnavailableError, and the read succeeds once the origin answers again."""
    files = {"cached.bin": os.urandom(2 * PAGE), "cold.bin": os.urandom(2 * PAGE)}
    cfg = make_dataset(files, page_size=PAGE, endpoint=proxy.endpoint)
    w = start_worker([cfg], origin=OriginSettings(probe_interval=0.5, seed=2))
    fs = client(w.endpoint)
    fs.find("ds")
    assert fs.cat_file("ds/cached.bin") == files["cached.bin"]
    proxy.inject(Fault("hang", times=-1))
    took = []
    for _ in range(3):
        t0 = time.monotonic()
        with pytest.raises(OriginUnavailableError) as err:
            fs.cat_file("ds/cold.bin")
        took.append(time.monotonic() - t0)
        assert "origin unreachable" in str(err.value) and "cold.bin" in str(err.value)
    assert max(took) < 5, took
    assert fs.cat_file("ds/cached.bin") == files["cached.bin"]
    proxy.clear()
    deadline = time.monotonic() + 15
    while True:
        try:
            assert fs.cat_file("ds/cold.bin") == files["cold.bin"]
            break
        except OriginUnavailableError:
            assert time.monotonic() < deadline, "origin not back within 15 s"
            time.sleep(0.1)


def test_64_readers_of_one_cold_file_cause_one_get_per_page(
    make_dataset: Any, start_worker: Any, proxy: FaultyProxy
) -> None:
    """64 concurrent readers of one cold multi-page file (each origin GET slowed down so they all
    overlap): every reader gets the right bytes and the origin sees exactly one ranged GET per page
    (counted at the proxy) — readers never multiply origin requests."""
    pages = 12
    data = os.urandom(pages * PAGE - 123)
    cfg = make_dataset({"hot.bin": data}, page_size=PAGE, endpoint=proxy.endpoint)
    w = start_worker([cfg], origin=OriginSettings(seed=4))
    fs = client(w.endpoint)
    proxy.inject(Fault("delay", delay=0.2, times=-1, method="GET", ranged=True))
    barrier = threading.Barrier(64)

    def read(_: int) -> bytes:
        barrier.wait()
        return bytes(fs.cat_file("ds/hot.bin"))

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(read, range(64)))
    assert all(r == data for r in results)
    gets = _gets(proxy, "hot.bin")
    per_range = Counter(r.range for r in gets)
    assert len(per_range) == pages, per_range
    assert set(per_range.values()) == {1}, per_range
    heads = [r for r in proxy.records() if r.method == "HEAD" and "hot.bin" in r.target]
    assert len(heads) <= 1
