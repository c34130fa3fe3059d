"""The prefetch scheduler's pure parts with plain values: the link gauge and the walk detector."""

from __future__ import annotations

import math
import random

from tidepool.worker.prefetch import LinkGauge, WalkDetector

KiB = 1024


def test_gauge_starts_small_then_tracks_twice_the_bandwidth_delay_product() -> None:
    g = LinkGauge(start=4, lo=2, hi=32)
    assert g.target() == 4
    # 100 KiB objects taking 68 ms each at 11 MB/s delivered: BDP ~ 7.3 objects
    now = 0.0
    for _ in range(40):
        now += 100 * KiB / 11e6
        g.sample(100 * KiB, 0.068, now)
    assert 12 <= g.target() <= 17


def test_gauge_does_not_grow_when_more_requests_only_queue() -> None:
    g = LinkGauge()
    now = 0.0
    for i in range(200):  # the link is full: each request waits longer, the rate stays
        now += 100 * KiB / 11e6
        g.sample(100 * KiB, 0.068 + i * 0.01, now)
    assert g.target() <= 17  # the shortest delay seen, not the inflated ones, sets the BDP


def test_gauge_is_bounded() -> None:
    g = LinkGauge(lo=2, hi=8)
    for i in range(50):
        g.sample(100 * KiB, 0.1, i * 0.1)  # one object at a time: 1 MB/s x 0.1 s = 1 object
    assert g.target() <= 3  # about twice one object in flight
    h = LinkGauge(lo=2, hi=8)
    for i in range(50):
        h.sample(1 << 20, 0.5, i * 0.001)  # a fast one
    assert h.target() == 8


def _naive_target(samples: list[tuple[int, float, float]], g: LinkGauge) -> int:
    """The gauge's estimate recomputed from every sample by its definition (windows kept as
    of the last sample), to check the constant-time bookkeeping against."""
    if len(samples) < 2:
        return g.start
    last = samples[-1][2]
    rates = []
    for k, (_, _, at) in enumerate(samples):
        done = [(t, n) for n, _, t in samples[: k + 1] if at - t <= g.rate_window]
        if len(done) > 1:
            span = max(at - done[0][0], 1e-3)
            rates.append((at, (sum(n for _, n in done) - done[0][1]) / span))
    best = [r for t, r in rates if last - t <= g.rate_window * 2]
    delays = [max(s, 1e-4) for _, s, t in samples if last - t <= g.delay_window]
    if not best:
        return g.start
    mean = sum(n for n, _, _ in samples) / len(samples)
    return max(g.lo, min(g.hi, math.ceil(2 * max(best) * min(delays) / mean)))


def test_gauge_matches_its_definition_over_random_samples() -> None:
    """Sliding-window best rate and shortest delay kept in monotonic deques give the same
    target as recomputing them from every sample (bursts, gaps longer than the windows)."""
    rng = random.Random(7)
    for _ in range(20):
        g = LinkGauge(start=4, lo=1, hi=10_000, rate_window=1.0, delay_window=5.0)
        samples: list[tuple[int, float, float]] = []
        now = 0.0
        for _ in range(300):
            now += rng.choice([0.0005, 0.01, 0.2, 1.5, 7.0]) * rng.random()
            n, secs = rng.randint(1, 1 << 20), rng.uniform(0.001, 0.5)
            g.sample(n, secs, now)
            samples.append((n, secs, now))
            assert g.target() == _naive_target(samples, g)


def test_walk_in_order_is_followed_further_and_further() -> None:
    w = WalkDetector(min_run=2, max_ahead=64)
    assert [w.read("d", p) for p in range(6)] == [0, 0, 8, 16, 32, 64]
    assert w.read("d", 6) == 64  # capped


def test_a_jump_breaks_the_walk_and_random_reads_never_start_one() -> None:
    w = WalkDetector()
    for p in range(4):
        w.read("d", p)
    assert w.read("d", 40) == 0 and w.broken("d")
    r = WalkDetector()
    assert all(r.read("d", p) == 0 for p in (17, 3, 88, 41, 5, 60))


def test_slightly_out_of_order_reads_keep_a_walk() -> None:
    w = WalkDetector(slack=3)
    ahead = [w.read("d", p) for p in (0, 2, 1, 3, 5, 4, 6)]
    assert ahead[-1] > 0 and not w.broken("d")


def test_directories_are_separate_and_bounded() -> None:
    w = WalkDetector(max_dirs=2)
    for p in range(4):
        w.read("a", p)
    w.read("b", 0)
    w.read("c", 0)  # "a" is forgotten
    assert w.read("a", 4) == 0


def test_a_jump_backwards_breaks_the_walk_too() -> None:
    w = WalkDetector()
    assert [w.read("d", p) for p in (11, 3, 19, 7, 12, 13, 14)] == [0, 0, 0, 0, 0, 0, 8]
