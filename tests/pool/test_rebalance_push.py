"""After a join, the newcomer copies the files it now owns from the members that hold them, in
the background and over the LAN only (real worker processes, etcd membership, the origin behind a
WAN relay that counts its bytes and can be cut).

Nobody reads through the newcomer: its rebalance pass alone fills its cache, no byte crosses the
WAN, and with the link cut it serves every file. A newcomer killed (SIGKILL) in the middle of its
pass runs it again when it restarts on the same tiers and state, skips what it kept, and serves
every file right with the link cut. The listing the pass reads is for pool peers only.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

from tidepool.core.ring import Member, chunk_key, ranked
from tidepool.worker.placement import PEER_HEADER

from . import test_rebalance
from .test_etcd_membership import members_seen, wait_for
from .test_rebalance import FILES, PEER_TOKEN, raw_status, read_all

pool = test_rebalance.pool  # the fixture: workers a, b, c of pool-b, etcd, the WAN relay

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ALL = {"a", "b", "c"}


def owned_by(name: str, members: set[str]) -> dict[str, bytes]:
    """The files of ``FILES`` that ``name`` owns in a pool of ``members`` (one copy each)."""
    ring = [Member(m, "", "pool-b") for m in members]
    return {p: d for p, d in FILES.items() if ranked(chunk_key("ds", p, 0), ring)[0].name == name}


def rebalance(endpoint: str) -> dict[str, Any]:
    out: dict[str, Any] = raw_status(endpoint, refresh=False)["rebalance"]
    return out


def finished_for_all(endpoint: str) -> bool:
    r = rebalance(endpoint)
    return r["state"] == "done" and set(r["members"]) == ALL


def two_members_holding_everything(start: Any) -> tuple[Any, Any]:
    a, b = start("a"), start("b")
    for w in (a, b):
        assert wait_for(lambda w=w: members_seen(w.endpoint) == {"a", "b"})
    read_all(a.endpoint)  # the pool of two holds everything
    return a, b


def test_newcomer_copies_what_it_owns_without_a_reader_and_without_the_wan(pool: Any) -> None:
    relay, start = pool
    a, b = two_members_holding_everything(start)

    c = start("c")
    before = relay.stats()["bytes_down"]  # after c's start (and its check of the origin)
    for w in (a, b, c):
        assert wait_for(lambda w=w: members_seen(w.endpoint) == ALL, timeout=20)
    assert wait_for(lambda: finished_for_all(c.endpoint), timeout=60), rebalance(c.endpoint)

    mine = owned_by("c", ALL)
    assert mine, "c owns none of the files: pick other names"
    r = rebalance(c.endpoint)
    assert r["errors"] == 0, r["last_errors"]
    assert r["files_total"] == r["files_done"] + r["files_skipped"] >= len(mine)
    assert set(r["peers"]) <= {"a", "b"}
    raw = raw_status(c.endpoint, refresh=False)
    assert raw["cached_files"] == len(mine)
    assert raw["cached_bytes"] == sum(len(d) for d in mine.values())
    assert raw["origin_read_bytes"] == 0
    assert raw["peer_check"]["verified"] >= len(mine)  # every copied file matched its MD5
    assert raw["page_misses"] == 0  # nobody read through c
    assert relay.stats()["bytes_down"] == before, "the rebalance moved bytes across the WAN"
    with urllib.request.urlopen(f"{c.endpoint}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    # every pass together (c may have seen fewer members for a moment) copied each file once
    size = sum(len(d) for d in mine.values())
    assert f'tidepool_rebalance_files_total{{dataset="ds"}} {float(len(mine))}' in metrics
    assert f'tidepool_rebalance_bytes_total{{dataset="ds"}} {float(size)}' in metrics

    relay.set_link(False)  # the cloud link is cut right after the join
    read_all(c.endpoint)
    after = raw_status(c.endpoint, refresh=False)
    assert after["origin_read_bytes"] == 0
    assert after["store"]["corrupt"] == 0


def test_rebalance_killed_mid_pass_resumes_without_corrupt_pages(pool: Any) -> None:
    relay, start = pool
    a, b = two_members_holding_everything(start)
    mine = owned_by("c", ALL)

    c = start("c", "--rebalance-rate", "16Ki")  # about one file a second: slow enough to kill
    for w in (a, b, c):
        assert wait_for(lambda w=w: members_seen(w.endpoint) == ALL, timeout=20)

    def mid_pass() -> bool:
        r = rebalance(c.endpoint)
        return (
            r["state"] == "running"
            and set(r["members"]) == ALL
            and 2 <= r["files_done"] < len(mine)
        )

    assert wait_for(mid_pass, timeout=60), rebalance(c.endpoint)
    kept = rebalance(c.endpoint)["files_done"]
    assert kept < len(mine)
    c.kill()  # SIGKILL in the middle of the pass

    relay.set_link(False)  # the restart must finish the pass over the LAN alone
    c = start("c")  # same tiers and state directory
    for w in (a, b, c):
        assert wait_for(lambda w=w: members_seen(w.endpoint) == ALL, timeout=30)
    assert wait_for(lambda: finished_for_all(c.endpoint), timeout=60), rebalance(c.endpoint)
    r = rebalance(c.endpoint)
    assert r["errors"] == 0, r["last_errors"]
    assert r["files_skipped"] >= kept  # what the killed pass wrote is kept, not copied again
    assert r["files_done"] + r["files_skipped"] == r["files_total"]
    raw = raw_status(c.endpoint, refresh=False)
    assert raw["cached_files"] == len(mine)
    assert raw["cached_bytes"] == sum(len(d) for d in mine.values())

    read_all(c.endpoint)  # every byte, with the link cut: from c's pages and its peers'
    after = raw_status(c.endpoint, refresh=False)
    assert after["origin_read_bytes"] == 0
    assert after["store"]["corrupt"] == 0
    assert after["peer_check"]["rejected"] == 0


def test_rebalance_stops_when_the_cache_is_full_instead_of_evicting(pool: Any) -> None:
    _, start = pool
    a, b = two_members_holding_everything(start)
    mine = owned_by("c", ALL)
    room = sum(sorted(len(d) for d in mine.values())[:5]) + 5 * 64  # about five files
    c = start("c", quota=str(room * 100 // 95))  # the high watermark is 95 % of the quota
    for w in (a, b, c):
        assert wait_for(lambda w=w: members_seen(w.endpoint) == ALL, timeout=20)

    def stopped() -> bool:
        r = rebalance(c.endpoint)
        return r["state"] == "stopped-full" and set(r["members"]) == ALL

    assert wait_for(stopped, timeout=60), rebalance(c.endpoint)
    r = rebalance(c.endpoint)
    assert "full" in r["message"] and "quota" in r["message"]
    raw = raw_status(c.endpoint, refresh=False)
    assert raw["store"]["evictions"] == 0  # nothing was pushed out to make room for a copy
    # an earlier pass (c saw fewer members for a moment) may have copied some: they count here
    assert 0 < raw["cached_files"] < len(mine)
    assert r["files_done"] <= raw["cached_files"]
    assert raw["cached_bytes"] <= room
    assert raw["origin_read_bytes"] == 0


def _get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_held_listing_is_for_peers_paged_and_bounded(pool: Any) -> None:
    _, start = pool
    a, _ = two_members_holding_everything(start)
    url = f"{a.endpoint}/v1/datasets/ds/held"
    peer = {PEER_HEADER: "b", "Authorization": f"Bearer {PEER_TOKEN}"}

    status, body = _get(f"{url}?member=b", {})
    assert status == 403, body  # a client, not a peer
    status, body = _get(f"{url}?member=b", {PEER_HEADER: "b", "Authorization": "Bearer nope"})
    assert status == 403, body  # a peer without the pool's credential

    for bad in ("0", "10001", "ten"):
        status, body = _get(f"{url}?member=a&limit={bad}", peer)
        assert status == 400, body
        assert "limit" in body["message"] and repr(bad) in body["message"]
        assert "1 to 10000" in body["message"]
    status, body = _get(f"{url}?member=zed", peer)
    assert status == 400 and "member" in body["message"] and "'zed'" in body["message"]

    listed: list[str] = []  # what a holds that a owns, three at a time
    cursor: str | None = ""
    while cursor is not None:
        query = urllib.parse.urlencode({"member": "a", "limit": 3, "start_after": cursor})
        status, body = _get(f"{url}?{query}", peer)
        assert status == 200, body
        assert len(body["files"]) <= 3
        listed += [f["path"] for f in body["files"]]
        for f in body["files"]:
            assert f["size"] == len(FILES[f["path"]])
        cursor = body["next"]
    assert listed == sorted(owned_by("a", {"a", "b"}))
    status, body = _get(f"{url}?member=b", peer)  # b's own files are b's: a holds none
    assert status == 200 and body == {"files": [], "next": None}
