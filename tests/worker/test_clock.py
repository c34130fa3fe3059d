"""Freshness survives a wall clock that ran fast (issue 15, item 9).

Metadata entries carry the wall-clock time they were fetched, stored in SQLite so they outlive a
restart. The review found that an entry written while the clock ran fast (an NTP step back
later) stayed "fresh" until the clock caught up: a changed origin file was not noticed again.
An entry whose age is negative is now stale. The test writes entries through a metadata service
whose clock runs a day fast, on the worker's real origin and real metadata store, then asks the
worker's own service (the true clock) after the origin object changed.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tidepool.worker.metadata import MetadataService
from tidepool_lab.testbed.s3util import upload

pytestmark = pytest.mark.integration

DAY = 86_400.0


def test_an_entry_from_a_clock_that_ran_fast_is_stale(
    make_dataset: Any, start_worker: Any, s3_server: Any
) -> None:
    cfg = make_dataset({"a.txt": b"old"}, ttl=600.0)
    w = start_worker([cfg])
    svc = w.worker.services["ds"]
    fast = MetadataService(
        "ds", svc.mounts, svc.meta, ttl=600.0, immutable=False, clock=lambda: time.time() + DAY
    )
    assert w.call(fast.stat("a.txt"))["size"] == 3  # written a day in the future
    assert w.call(fast.ls(""))[0]["size"] == 3
    upload(s3_server, make_dataset.bucket, [("data/a.txt", b"changed!")])
    # the clock is right again: the future entries count as stale, the change is seen at once
    assert w.call(svc.metadata.stat("a.txt"))["size"] == 8
    assert w.call(svc.metadata.ls(""))[0]["size"] == 8
    # and a fresh entry written by the right clock is trusted again for the TTL
    upload(s3_server, make_dataset.bucket, [("data/a.txt", b"x")])
    assert w.call(svc.metadata.stat("a.txt"))["size"] == 8


def test_freshness_bounds_with_plain_values() -> None:
    now = [1000.0]
    meta = MetadataService("ds", None, None, ttl=60.0, immutable=False, clock=lambda: now[0])  # type: ignore[arg-type]
    assert meta.fresh(1000.0) and meta.fresh(941.0)
    assert not meta.fresh(940.0)  # as old as the TTL
    assert not meta.fresh(1000.5)  # from the future: a clock that ran fast wrote it


def test_within_a_process_ages_follow_real_time_whatever_the_wall_clock_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The service's default clock is :func:`tidepool.core.clock.steady_time`: a wall clock
    stepped back a day (or forward) changes no age within the process."""
    from tidepool.core import clock

    meta = MetadataService("ds", None, None, ttl=60.0, immutable=False)  # type: ignore[arg-type]
    stamped = clock.steady_time()
    assert meta.fresh(stamped)
    real = time.time
    for step in (-DAY, +DAY):
        monkeypatch.setattr(time, "time", lambda step=step: real() + step)
        assert abs(clock.steady_time() - real()) < 5.0  # the step is not seen
        assert meta.fresh(stamped)  # neither younger nor older than it is
    ticks = [time.monotonic()]
    monkeypatch.setattr(time, "monotonic", lambda: ticks[0])
    ticks[0] += 61.0  # real time passes: the entry ages out
    assert not meta.fresh(stamped)
