"""The worker's bounded history: rates between samples, hit ratio, bounds. Pure, no server."""

from __future__ import annotations

import pytest

from tidepool.worker.history import History, Totals, wan_saved


def test_first_sample_is_only_a_baseline() -> None:
    h = History(seconds=10, interval=1)
    assert h.add(100.0, Totals(served_bytes=500)) is None
    assert h.points() == []


def test_rates_and_hit_ratio_over_each_interval() -> None:
    h = History(seconds=60, interval=2)
    h.add(100.0, Totals(served_bytes=1000, wan_bytes=1000, hits=0, misses=10))
    p = h.add(102.0, Totals(served_bytes=5000, wan_bytes=2000, hits=6, misses=12, remote_hits=1))
    assert p is not None
    assert p["read_bytes_per_s"] == 2000.0
    assert p["wan_bytes_per_s"] == 500.0
    # 8 lookups in the interval: 6 local hits + 1 of the 2 misses answered by a peer
    assert p["hit_ratio"] == pytest.approx(7 / 8, abs=1e-4)
    assert p["lookups_per_s"] == 4.0
    assert p["saved_bytes"] == 3000
    idle = h.add(104.0, Totals(served_bytes=5000, wan_bytes=2000, hits=6, misses=12))
    assert idle is not None and idle["hit_ratio"] is None and idle["read_bytes_per_s"] == 0


def test_bounded_to_seconds_over_interval() -> None:
    h = History(seconds=10, interval=2)
    for i in range(50):
        h.add(float(i * 2), Totals(served_bytes=i * 100))
    pts = h.points()
    assert len(pts) == 5
    assert [p["t"] for p in pts] == [90.0, 92.0, 94.0, 96.0, 98.0]
    assert [p["t"] for p in h.points(since=94.0)] == [96.0, 98.0]


def test_clock_that_does_not_move_adds_nothing() -> None:
    h = History(seconds=10, interval=1)
    h.add(5.0, Totals())
    assert h.add(5.0, Totals(served_bytes=10)) is None
    assert h.add(4.0, Totals(served_bytes=10)) is None
    assert h.points() == []


def test_saved_bytes_never_negative() -> None:
    assert wan_saved(100, 300) == 0  # read-ahead fetched more than readers took so far
    assert wan_saved(300, 100) == 200


@pytest.mark.parametrize(("seconds", "interval"), [(10, 0), (10, -1), (1, 2)])
def test_bad_bounds_are_refused(seconds: float, interval: float) -> None:
    with pytest.raises(ValueError, match="need interval > 0"):
        History(seconds, interval)
