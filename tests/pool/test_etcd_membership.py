"""etcd membership with real worker processes: join, SIGKILL (missed lease), etcd outage.

Proves: workers register under a lease and see each other; a worker killed with SIGKILL drops out
of the others' view within a few seconds (lease expiry); while etcd is down the pool keeps its
last-known-good membership and keeps serving; when etcd is back, changes are seen again.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tidepool.client import TidepoolFileSystem
from tidepool_lab.testbed.etcd import EtcdServer
from tidepool_lab.testbed.s3server import free_port
from tidepool_lab.testbed.specs import S3DatasetSpec
from tidepool_lab.testbed.workerproc import WorkerProcess

# no skip when etcd is missing: `make test` unpacks it into .venv (scripts/system-deps.sh), and a
# skipped test would hide a broken install step; EtcdServer.start says where to get it
pytestmark = [pytest.mark.integration, pytest.mark.slow]


FILES = {f"f{i:03d}.bin": os.urandom(30_000 + i) for i in range(30)}
PEER_TOKEN = "pool-a-peer-credential"


def members_seen(endpoint: str) -> set[str]:
    with urllib.request.urlopen(f"{endpoint}/v1/node", timeout=2) as r:
        return {m["name"] for m in json.loads(r.read())["members"]}


def wait_for(pred: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return pred()


@pytest.fixture
def pool(
    make_dataset: Any, s3_server: Any, tmp_path: Path
) -> Iterator[tuple[EtcdServer, Callable[[str], WorkerProcess]]]:
    make_dataset(FILES)
    etcd = EtcdServer.start(tmp_path / "etcd")
    started: list[WorkerProcess] = []

    def start(name: str) -> WorkerProcess:
        spec = S3DatasetSpec(
            url=f"s3://{make_dataset.bucket}/data/",
            endpoint=s3_server.endpoint,
            cache=tmp_path / f"cache-{name}",
            credentials="inline",
            access_key=s3_server.access_key,
            secret_key=s3_server.secret_key,
        ).write(tmp_path / f"{name}.yaml")
        port = free_port()
        w = WorkerProcess.start(
            [spec],
            tmp_path / f"{name}.log",
            port=port,
            extra_args=[
                "--nodepool",
                "pool-a",
                "--node-name",
                name,
                "--etcd",
                etcd.endpoint,
                "--state-dir",
                str(tmp_path / f"state-{name}"),
            ],
            env={"TIDEPOOL_PEER_TOKEN": PEER_TOKEN},
        )
        started.append(w)
        return w

    try:
        yield etcd, start
    finally:
        for w in started:
            w.stop()
        etcd.stop()


def test_join_kill_and_etcd_outage(pool: Any) -> None:
    etcd, start = pool
    a, b = start("a"), start("b")
    assert wait_for(lambda: members_seen(a.endpoint) == {"a", "b"})
    assert wait_for(lambda: members_seen(b.endpoint) == {"a", "b"})
    fs = TidepoolFileSystem(a.endpoint, local_reads=False, skip_instance_cache=True)
    for name, data in FILES.items():
        assert fs.cat_file(f"ds/{name}") == data

    c = start("c")  # join
    assert wait_for(lambda: members_seen(a.endpoint) == {"a", "b", "c"})

    c.kill()  # SIGKILL: no clean leave, the lease must expire
    assert wait_for(lambda: members_seen(a.endpoint) == {"a", "b"}, timeout=15)
    assert wait_for(lambda: members_seen(b.endpoint) == {"a", "b"}, timeout=5)

    etcd.stop()  # control plane gone: keep the last known pool and keep serving
    time.sleep(2.5)
    assert members_seen(a.endpoint) == {"a", "b"}
    assert members_seen(b.endpoint) == {"a", "b"}
    fs2 = TidepoolFileSystem(b.endpoint, local_reads=False, skip_instance_cache=True)
    for name, data in FILES.items():
        assert fs2.cat_file(f"ds/{name}") == data

    etcd.resume()  # back: changes are seen again
    d = start("d")
    assert wait_for(lambda: members_seen(a.endpoint) == {"a", "b", "d"}, timeout=20)
    assert wait_for(lambda: members_seen(d.endpoint) == {"a", "b", "d"}, timeout=20)


def test_restart_offline_uses_last_known_members(pool: Any, tmp_path: Path) -> None:
    etcd, start = pool
    a, _b = start("a"), start("b")
    assert wait_for(lambda: members_seen(a.endpoint) == {"a", "b"})
    saved = json.loads((tmp_path / "state-a" / "members-pool-a.json").read_text())
    assert {m["name"] for m in saved} == {"a", "b"}
    etcd.stop()
    a.kill()
    a2 = start("a")  # starts with etcd down
    assert members_seen(a2.endpoint) >= {"a", "b"}
