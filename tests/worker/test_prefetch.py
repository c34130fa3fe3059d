"""The prefetch scheduler against a real S3 origin: what the origin is asked, in which order.

The origin sits behind a fault-injecting proxy that records every request (and can slow them),
or behind the WAN relay (to cut the link). Behaviour only: which files are fetched, in what
order, that a program's read goes first, that the cache is never filled or evicted by prefetch,
that prefetch pauses with the origin and resumes after it, and that bad hints are refused or
ignored without harm.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tidepool.client import TidepoolFileSystem
from tidepool.origin.funnel import OriginSettings
from tidepool.spec.config import TierConfig
from tidepool_lab.testbed.faulty import Fault, FaultyProxy
from tidepool_lab.testbed.s3server import S3Server
from tidepool_lab.testbed.wan import WanRelay

pytestmark = pytest.mark.integration

FILES = {f"d/f{i:02d}.bin": os.urandom(20_000 + i) for i in range(24)}
NAMES = sorted(FILES)
FAST = OriginSettings(retry_budget=1.0, probe_interval=0.3, seed=1)


def _address(server: S3Server) -> tuple[str, int]:
    host, port = server.endpoint.rsplit("//", 1)[1].rsplit(":", 1)
    return host, int(port)


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[FaultyProxy]:
    with FaultyProxy.start(_address(s3_server)) as p:
        yield p


@pytest.fixture
def relay(s3_server: S3Server) -> Iterator[WanRelay]:
    with WanRelay.start(_address(s3_server), rtt_ms=10, rate_mbit=200) as r:
        yield r


def gets(proxy: FaultyProxy) -> list[str]:
    """Files the origin was asked for (GET), in the order the requests arrived."""
    out = []
    for r in proxy.records():
        if r.method == "GET" and "/data/d/" in r.target:
            out.append("d/" + r.target.split("/data/d/", 1)[1].split("?", 1)[0])
    return out


def with_prefetch(cfg: Any, policy: str, inflight: int = 32) -> Any:
    runtime = dataclasses.replace(cfg.runtime, prefetch=policy, prefetch_inflight=inflight)
    return dataclasses.replace(cfg, runtime=runtime)


def client(endpoint: str) -> TidepoolFileSystem:
    return TidepoolFileSystem(endpoint, local_reads=False, skip_instance_cache=True)


def prefetch_status(fs: TidepoolFileSystem) -> dict[str, Any]:
    return dict(fs.status("ds", refresh=False)["raw"]["prefetch"])


def settled(fs: TidepoolFileSystem, files: int, timeout: float = 30.0) -> dict[str, Any]:
    """Wait until the worker prefetched ``files`` files and has nothing left to do."""
    deadline = time.monotonic() + timeout
    st = prefetch_status(fs)
    while time.monotonic() < deadline:
        st = prefetch_status(fs)
        if st["files"] >= files and st["queued"] == 0 and st["inflight"] == 0:
            return st
        time.sleep(0.05)
    raise AssertionError(f"prefetch did not settle at {files} files: {st}")


def post_hint(endpoint: str, body: Any) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if not isinstance(body, bytes) else body
    req = urllib.request.Request(
        f"{endpoint}/v1/datasets/ds/prefetch",
        data=data,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_first_touch_warms_the_whole_dataset_once(
    make_dataset: Any, start_worker: Any, proxy: FaultyProxy
) -> None:
    cfg = with_prefetch(make_dataset(FILES, endpoint=proxy.endpoint), "dataset")
    w = start_worker([cfg])
    fs = client(w.endpoint)
    assert fs.cat_file(f"ds/{NAMES[0]}") == FILES[NAMES[0]]
    st = settled(fs, len(NAMES) - 1)
    assert sorted(gets(proxy)) == NAMES, "every file fetched exactly once"
    assert st["bytes"] == sum(len(FILES[n]) for n in NAMES[1:])
    proxy.reset_records()
    for n in NAMES:  # the epoch: all from the cache
        assert fs.cat_file(f"ds/{n}") == FILES[n]
    assert gets(proxy) == []
    st = prefetch_status(fs)
    assert st["used_bytes"] == st["bytes"] and st["wasted_bytes"] == 0


def test_hints_are_fetched_in_their_order(
    make_dataset: Any, start_worker: Any, proxy: FaultyProxy
) -> None:
    cfg = with_prefetch(make_dataset(FILES, endpoint=proxy.endpoint), "pattern", inflight=1)
    w = start_worker([cfg])
    fs = client(w.endpoint)
    order = [NAMES[i] for i in (17, 3, 22, 9, 0, 13)]
    assert fs.prefetch([f"ds/{n}" for n in order]) == len(order)
    settled(fs, len(order))
    assert gets(proxy) == order


def test_a_programs_read_overtakes_queued_prefetch(
    make_dataset: Any, start_worker: Any, proxy: FaultyProxy
) -> None:
    cfg = with_prefetch(make_dataset(FILES, endpoint=proxy.endpoint), "pattern", inflight=1)
    w = start_worker([cfg])
    fs = client(w.endpoint)
    proxy.inject(Fault("delay", delay=0.3, times=-1, method="GET", path_contains="/data/d/"))
    assert fs.prefetch([f"ds/{n}" for n in NAMES]) == len(NAMES)
    last = NAMES[-1]
    t0 = time.monotonic()
    assert fs.cat_file(f"ds/{last}") == FILES[last]
    assert time.monotonic() - t0 < 0.3 * 5, "the read waited behind the prefetch queue"
    order = gets(proxy)
    assert order.index(last) <= 2, f"the demanded file was fetched late: {order}"
    proxy.clear()
    settled(fs, len(NAMES) - 1)
    assert sorted(gets(proxy)) == NAMES  # and never twice


def test_a_directory_walk_is_followed_and_a_random_one_is_not(
    make_dataset: Any, start_worker: Any, proxy: FaultyProxy
) -> None:
    cfg = with_prefetch(make_dataset(FILES, endpoint=proxy.endpoint), "pattern")
    w = start_worker([cfg])
    fs = client(w.endpoint)
    for i in (11, 3, 19, 7):  # random: no walk
        assert fs.cat_file(f"ds/{NAMES[i]}") == FILES[NAMES[i]]
        time.sleep(0.1)  # the directory's order is learnt in the background
    assert sorted(gets(proxy)) == sorted(NAMES[i] for i in (11, 3, 19, 7))
    proxy.reset_records()
    for i in range(12, 16):  # a walk in listing order
        assert fs.cat_file(f"ds/{NAMES[i]}") == FILES[NAMES[i]]
        time.sleep(0.05)
    ahead = {NAMES[i] for i in (16, 17, 18, 20, 21)}  # f19 was read (and cached) before
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not ahead <= set(gets(proxy)):
        time.sleep(0.05)
    assert ahead <= set(gets(proxy)), gets(proxy)


def test_prefetch_never_evicts_and_stops_when_the_cache_is_full(
    make_dataset: Any, start_worker: Any, proxy: FaultyProxy, tmp_path: Any
) -> None:
    page = 64 * 1024
    quota = 12 * (20_100 + 64)  # about 10 of the 24 files under the high watermark
    tiers = (TierConfig("SSD", str(tmp_path / "small"), quota, high=0.9, low=0.5),)
    cfg = make_dataset(FILES, endpoint=proxy.endpoint, page_size=page, tiers=tiers)
    w = start_worker([with_prefetch(cfg, "dataset")])
    fs = client(w.endpoint)
    first = NAMES[0]
    assert fs.cat_file(f"ds/{first}") == FILES[first]  # does not fit: no warm-up
    time.sleep(1.0)
    assert gets(proxy) == [first]
    fs.prefetch([f"ds/{n}" for n in NAMES[1:]])  # hints: fetched while there is room
    time.sleep(2.0)
    store = w.worker.stores["ds"]
    used = sum(t.used for t in store.usage())
    assert used <= 0.9 * quota
    assert store.stats().evictions == 0, "prefetch evicted pages"
    assert prefetch_status(fs)["state"].startswith(("stopped: cache full", "idle"))
    proxy.reset_records()
    assert fs.cat_file(f"ds/{first}") == FILES[first]
    assert gets(proxy) == [], "the page read before the hints was evicted"


def test_prefetch_pauses_while_the_origin_is_down_and_resumes(
    make_dataset: Any, start_worker: Any, relay: WanRelay
) -> None:
    files = {f"d/f{i:03d}.bin": os.urandom(50_000) for i in range(80)}
    relay.set_shape(rtt_ms=10, rate_mbit=4)  # 4 MB take 8 s: the cut lands mid-prefetch
    cfg = with_prefetch(make_dataset(files, endpoint=relay.endpoint), "dataset", inflight=2)
    w = start_worker([cfg], origin=FAST)
    fs = client(w.endpoint)
    names = sorted(files)
    fs.find("ds")
    assert fs.cat_file(f"ds/{names[0]}") == files[names[0]]
    deadline = time.monotonic() + 15
    while prefetch_status(fs)["files"] < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    relay.set_link(False)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if prefetch_status(fs)["state"] == "paused: origin unreachable":
                break
            time.sleep(0.05)
        st = prefetch_status(fs)
        assert st["state"] == "paused: origin unreachable", st
        assert fs.cat_file(f"ds/{names[0]}") == files[names[0]]  # the cache still serves
    finally:
        relay.set_link(True)
        relay.set_shape(rtt_ms=10, rate_mbit=200)
    back = time.monotonic()
    done = settled(fs, len(names) - 1, timeout=60)
    assert done["files"] >= len(names) - 1
    assert time.monotonic() - back < 30
    for n in names:
        assert fs.cat_file(f"ds/{n}") == files[n]


def test_bad_hints_are_refused_or_ignored(
    make_dataset: Any, start_worker: Any, proxy: FaultyProxy
) -> None:
    cfg = with_prefetch(make_dataset(FILES, endpoint=proxy.endpoint), "pattern")
    w = start_worker([cfg])
    status, body = post_hint(w.endpoint, {"paths": ["d/../../etc/passwd"]})
    assert status == 400 and "paths" in body["message"]
    status, body = post_hint(w.endpoint, {"paths": ["x"] * 100_001})
    assert status == 400 and "100000" in body["message"].replace(",", "")
    status, body = post_hint(w.endpoint, {"paths": "d/f00.bin"})
    assert status == 400
    status, body = post_hint(w.endpoint, b"[")
    assert status == 400
    hint = [NAMES[1], NAMES[1], "d/nope.bin", NAMES[2], "", NAMES[2]]
    status, body = post_hint(w.endpoint, {"paths": hint})
    assert status == 202 and body["accepted"] == 3  # duplicates dropped, the unknown one kept
    fs = client(w.endpoint)
    settled(fs, 2)
    assert sorted(gets(proxy)) == [NAMES[1], NAMES[2], "d/nope.bin"]  # asked once, then skipped
    assert prefetch_status(fs)["failed"] == 0  # an unknown file is skipped, not an error
    assert fs.cat_file(f"ds/{NAMES[3]}") == FILES[NAMES[3]]  # still serving


def test_a_walk_over_cached_files_fetches_nothing_again(
    make_dataset: Any, start_worker: Any, proxy: FaultyProxy
) -> None:
    """Warm: the walk's files ahead are all held already, so each is skipped once before any
    work (counted as held; not once per read of the walk), and the origin sees nothing."""
    cfg = with_prefetch(make_dataset(FILES, endpoint=proxy.endpoint), "pattern")
    w = start_worker([cfg])
    fs = client(w.endpoint)
    for name in NAMES:  # every file read once (some fetched ahead by the walk): all cached
        assert fs.cat_file(f"ds/{name}") == FILES[name]
    w.call(w.worker.services["ds"].flush_writes())
    before = prefetch_status(fs)
    proxy.reset_records()
    for name in NAMES:  # a walk in listing order over cached files
        assert fs.cat_file(f"ds/{name}") == FILES[name]
        time.sleep(0.02)
    deadline = time.monotonic() + 20
    st = prefetch_status(fs)
    while time.monotonic() < deadline and (st["held"] == 0 or st["queued"] or st["inflight"]):
        time.sleep(0.05)
        st = prefetch_status(fs)
    assert 0 < st["held"] <= len(NAMES), st  # each file of the walk looked at once, not per read
    assert st["files"] == before["files"] and st["failed"] == 0, st
    assert [r for r in proxy.records() if r.method == "GET"] == []
