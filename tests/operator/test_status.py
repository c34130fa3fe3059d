"""Dataset.status from worker reports: Fluid's names, per pool, stale pools marked."""

from __future__ import annotations

from tidepool.operator.reporter import lease_body
from tidepool.operator.status import Report, aggregate, dump, parse_reports, report_from_worker

NOW = 1_000_000.0


def _r(pool: str, node: str, age: float, cached: int, hits: int = 0, misses: int = 0) -> Report:
    return Report(
        dataset="images",
        pool=pool,
        node=node,
        time=NOW - age,
        ufs_total_bytes=1000,
        file_num=4,
        cached_bytes=cached,
        capacity_bytes=2000,
        page_hits=hits,
        page_misses=misses,
    )


def test_fresh_pools_are_summed_and_stale_ones_marked() -> None:
    reports = [
        _r("a", "n1", 5, 300, hits=3, misses=1),
        _r("a", "n2", 5, 200),
        _r("a", "n1", 50, 999),  # an older report of the same node is ignored
        _r("b", "m1", 500, 700),
    ]
    status = aggregate(["a", "b", "c"], reports, NOW, present={"a", "b"}, stale_after=120)
    assert status.phase == "Bound"
    assert status.cache_states.cached_percentage == "50.0%"  # pool b's old numbers left out
    assert status.cache_states.cache_hit_ratio == "75.0%"
    pools = {p.name: p for p in status.pools}
    assert pools["a"].phase == "Ready" and pools["a"].workers == 2
    assert pools["b"].phase == "Stale" and pools["b"].age_seconds == 500
    assert pools["b"].cache_states.cached_percentage == "70.0%"
    assert pools["c"].phase == "Absent"
    assert "b" in status.message
    wire = dump(status)
    assert set(wire["cacheStates"]) == {
        "cached",
        "cacheCapacity",
        "cachedPercentage",
        "cacheHitRatio",
        "localHitRatio",
        "remoteHitRatio",
    }
    assert wire["ufsTotal"] == "1000 B" and wire["fileNum"] == "4"


def test_no_fresh_reports_is_not_bound() -> None:
    status = aggregate(["a"], [_r("a", "n1", 999, 10)], NOW, stale_after=60)
    assert status.phase == "NotBound"
    assert status.cache_states.cached == "0 B"


def test_reports_round_trip_through_a_lease() -> None:
    worker = {
        "dataset": "images",
        "raw": {"ufs_total_bytes": 10, "file_num": 1, "cached_bytes": 5, "page_hits": 1},
    }
    report = report_from_worker(worker, pool="a", node="n1", now=NOW)
    lease = lease_body(report, "default", 15)
    assert lease["spec"]["holderIdentity"] == "n1"
    (back,) = parse_reports([lease["metadata"]["annotations"], {"tidepool.io/report": "{bad"}])
    assert back == report


def test_remote_hits_are_misses_another_worker_answered() -> None:
    # n1: 6 local hits, 4 misses of which 3 came from n2 over the LAN; n2 served them uncounted
    r1 = _r("a", "n1", 1, 0, hits=6, misses=4).model_copy(update={"peer_hits": 3})
    states = aggregate(["a"], [r1, _r("a", "n2", 1, 0)], NOW).cache_states
    assert (states.cache_hit_ratio, states.local_hit_ratio, states.remote_hit_ratio) == (
        "90.0%",
        "60.0%",
        "30.0%",
    )


def test_an_incomplete_load_carries_what_fitted_and_why() -> None:
    from tidepool.cli import EXIT_INCOMPLETE
    from tidepool.operator.dataload import LOAD_INCOMPLETE_EXIT
    from tidepool.operator.status import job_progress_from_load, load_progress

    assert LOAD_INCOMPLETE_EXIT == EXIT_INCOMPLETE
    running = job_progress_from_load(
        {"phase": "Executing", "bytes_done": 10, "bytes_total": 100, "bytes_cached": 0}, now=NOW
    )
    assert running.bytes_cached is None  # only known at the end
    done = job_progress_from_load(
        {
            "phase": "Incomplete",
            "files_done": 4,
            "files_total": 4,
            "bytes_done": 100,
            "bytes_total": 100,
            "bytes_cached": 40,
            "message": "only 40 B of 100 B stayed in the cache",
        },
        now=NOW,
    )
    assert (done.phase, done.bytes_cached, done.message) == (
        "Incomplete",
        40,
        "only 40 B of 100 B stayed in the cache",
    )
    folded = load_progress([done, None], expected=2)
    assert folded.bytes_cached == 40 and folded.percent == "50.0%"
