"""A member joins and leaves a pool of real worker processes (etcd membership), the origin
behind a WAN relay that counts its bytes and can be cut.

After a join, the files the newcomer now owns are taken from the members that held them before
(asked only if cached, over the LAN): reading the whole dataset through the newcomer moves no
byte across the WAN, and with the link cut every file is still served by every member. After a
leave the previous owners still hold what they had, so nothing is fetched again either.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tidepool.client import TidepoolFileSystem
from tidepool_lab.testbed.etcd import EtcdServer
from tidepool_lab.testbed.s3server import free_port
from tidepool_lab.testbed.specs import S3DatasetSpec
from tidepool_lab.testbed.wan import WanRelay
from tidepool_lab.testbed.workerproc import WorkerProcess

from .test_etcd_membership import members_seen, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FILES = {f"d{i % 3}/f{i:03d}.bin": os.urandom(20_000 + i) for i in range(45)}
PEER_TOKEN = "pool-b-peer-credential"


def raw_status(endpoint: str, *, refresh: bool = True) -> dict[str, Any]:
    """``raw`` of the dataset's status (``refresh=False``: no listing of the origin)."""
    query = "" if refresh else "?refresh=0"
    with urllib.request.urlopen(f"{endpoint}/v1/datasets/ds/status{query}", timeout=5) as r:
        raw: dict[str, Any] = json.loads(r.read())["raw"]
        return raw


@pytest.fixture
def pool(
    make_dataset: Any, s3_server: Any, tmp_path: Path
) -> Iterator[tuple[WanRelay, Callable[..., WorkerProcess]]]:
    make_dataset(FILES)
    target = urlsplit(s3_server.endpoint)
    assert target.hostname is not None and target.port is not None
    etcd = EtcdServer.start(tmp_path / "etcd")
    started: list[WorkerProcess] = []
    relay = WanRelay.start((target.hostname, target.port), rtt_ms=10, rate_mbit=200)

    def start(name: str, *args: str, quota: str = "1Gi") -> WorkerProcess:
        """Worker ``name`` of pool-b (its own tier of ``quota`` and state, kept across
        restarts), with ``args`` added to its command line."""
        spec = S3DatasetSpec(
            url=f"s3://{make_dataset.bucket}/data/",
            endpoint=relay.endpoint,
            cache=tmp_path / f"cache-{name}",
            credentials="inline",
            access_key=s3_server.access_key,
            secret_key=s3_server.secret_key,
            page_size="64Ki",
            prefetch="off",
            quota=quota,
        ).write(tmp_path / f"{name}.yaml")
        w = WorkerProcess.start(
            [spec],
            tmp_path / f"{name}.log",
            port=free_port(),
            extra_args=[
                "--nodepool",
                "pool-b",
                "--node-name",
                name,
                "--etcd",
                etcd.endpoint,
                "--state-dir",
                str(tmp_path / f"state-{name}"),
                *args,
            ],
            env={"TIDEPOOL_PEER_TOKEN": PEER_TOKEN},
        )
        started.append(w)
        return w

    try:
        yield relay, start
    finally:
        for w in started:
            w.stop()
        relay.stop()
        etcd.stop()


def read_all(endpoint: str) -> None:
    fs = TidepoolFileSystem(endpoint, local_reads=False, skip_instance_cache=True)
    for name, data in FILES.items():
        assert fs.cat_file(f"ds/{name}") == data, name


def test_join_takes_over_from_the_previous_owners_and_leave_refetches_nothing(
    pool: Any,
) -> None:
    relay, start = pool
    a, b = start("a"), start("b")
    assert wait_for(lambda: members_seen(a.endpoint) == {"a", "b"})
    assert wait_for(lambda: members_seen(b.endpoint) == {"a", "b"})
    read_all(a.endpoint)  # the pool of two holds everything

    # join: c now owns about a third of the files, and holds none (no background copy here:
    # this test is about taking them over when read; test_rebalance_push covers the copy)
    c = start("c", "--rebalance-rate", "0")
    for w in (a, b, c):
        assert wait_for(lambda w=w: members_seen(w.endpoint) == {"a", "b", "c"})
    before = relay.stats()["bytes_down"]
    read_all(c.endpoint)  # every file c owns comes from the member that held it
    read_all(a.endpoint)
    assert relay.stats()["bytes_down"] == before, "a file crossed the WAN again after the join"
    took_over = raw_status(c.endpoint)
    assert took_over["origin_read_bytes"] == 0
    assert took_over["peer_hits"] == took_over["page_misses"] > 0  # every page from a holder

    relay.set_link(False)  # the cloud link is cut right after the join
    for w in (a, b, c):
        read_all(w.endpoint)

    c.kill()  # leave (no goodbye: the lease expires)
    for w in (a, b):
        assert wait_for(lambda w=w: members_seen(w.endpoint) == {"a", "b"}, timeout=20)
        read_all(w.endpoint)  # the previous owners still hold what they had (the link is cut)


def test_member_restarted_with_the_link_cut_lists_and_reads_the_pool(pool: Any) -> None:
    relay, start = pool
    a, b = start("a"), start("b")
    for w in (a, b):
        assert wait_for(lambda w=w: members_seen(w.endpoint) == {"a", "b"})
    fs = TidepoolFileSystem(a.endpoint, local_reads=False, skip_instance_cache=True)
    listed = sorted(fs.find("ds"))
    assert listed == sorted(f"ds/{n}" for n in FILES)
    read_all(a.endpoint)

    relay.set_link(False)
    b.kill()  # SIGKILL, then back while the cloud link is still cut
    b = start("b")
    for w in (a, b):
        assert wait_for(lambda w=w: members_seen(w.endpoint) == {"a", "b"}, timeout=20)
    fs_b = TidepoolFileSystem(b.endpoint, local_reads=False, skip_instance_cache=True)
    assert sorted(fs_b.find("ds")) == listed
    assert sorted(fs_b.ls("ds/d1", detail=False)) == sorted(n for n in listed if "/d1/" in n)
    read_all(b.endpoint)
