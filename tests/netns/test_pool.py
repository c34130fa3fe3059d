"""Node pools on real hosts: `tidepool up` workers in network namespaces, the origin across a WAN.

Every worker is a real ``tidepool up`` process on its own host address with static membership
(its pool's LAN addresses) and a shared token; every client is a ``python -c`` process on another
host. WAN bytes are counted by the lab's WAN relay (TCP payload, cloud -> edge).

Proves:

* a node reads what another node of its pool warmed without one byte crossing the WAN, and the
  bytes match the origin;
* pool-b's clients never reach pool-a's workers (their served-bytes and file-read counters stay
  still even while the router would forward between the pools), and a pool-b client pointed at
  a pool-a worker fails with the error that names both pools;
* with ``spec.data.replicas: 2``, a third worker joining moves only the keys the ring gives it
  (about 1/3), and it fetches them from the surviving replicas over the LAN; a worker killed with
  SIGKILL loses the pool nothing: reads keep succeeding and its keys' new owners copy them from a
  surviving replica, again with no WAN bytes;
* with the owner of some files killed mid-run, a client keeps reading them, each within 2 s.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tidepool.core.ring import Member, file_key, owners, ranked
from tidepool_lab.testbed.netns import Host, Lab
from tidepool_lab.testbed.specs import S3DatasetSpec, write_secrets_dir
from tidepool_lab.testbed.workerproc import WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUCKET = "pooltest"
FILES = {f"d{i % 3}/f{i:03d}.bin": os.urandom(24_000 + 97 * i) for i in range(90)}
FILES["big.bin"] = os.urandom(3 * (1 << 20) + 4321)  # several pages: page reads between peers
MD5 = {name: hashlib.md5(data).hexdigest() for name, data in FILES.items()}
TOKEN = secrets.token_hex(16)
PEER_TOKEN = secrets.token_hex(16)
METADATA_BYTES = 1024
"""Upper bound of the WAN payload of one stat (an S3 HEAD answer is about 300 bytes)."""


# A client process on an edge host. argv[1] is JSON: endpoint, nodepool, paths, mode.
# mode "parallel": 16 threads share one client; "seq": one read after another, timed;
# "twice": a sequential round, then "ready" on stdout, then (after a line on stdin) another.
CLIENT = """\
import concurrent.futures, hashlib, json, sys, time
from tidepool.client import TidepoolFileSystem
args = json.loads(sys.argv[1])
fs = TidepoolFileSystem(endpoint=args["endpoint"], nodepool=args["nodepool"],
                        local_reads=False, skip_instance_cache=True)
def one(p):
    t0 = time.monotonic()
    data = fs.cat_file("ds/" + p)
    return p, hashlib.md5(data).hexdigest(), time.monotonic() - t0
def seq():
    return {p: [m, t] for p, m, t in map(one, args["paths"])}
try:
    if args["mode"] == "parallel":
        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            reads = {p: [m, t] for p, m, t in ex.map(one, args["paths"])}
    elif args["mode"] == "seq":
        reads = seq()
    else:
        seq()
        print("ready", flush=True)
        sys.stdin.readline()
        reads = seq()
    print(json.dumps({"reads": reads}))
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
"""


# --------------------------------------------------------------------------------------------
# helpers


def _client_argv(endpoint: str, paths: Sequence[str], mode: str, nodepool: str) -> list[str]:
    args = {"endpoint": endpoint, "nodepool": nodepool, "paths": list(paths), "mode": mode}
    return [sys.executable, "-c", CLIENT, json.dumps(args)]


def _client_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env["TIDEPOOL_TOKEN"] = TOKEN
    return env


def read(
    host: Host, endpoint: str, paths: Sequence[str], *, mode: str = "parallel", nodepool: str
) -> dict[str, Any]:
    """Run the client on ``host``; return its JSON answer (``reads`` or ``error``)."""
    result = host.run(_client_argv(endpoint, paths, mode, nodepool), env=_client_env(), timeout=90)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    answer: dict[str, Any] = json.loads(result.stdout.decode().strip().splitlines()[-1])
    return answer


def assert_read_ok(answer: dict[str, Any], paths: Sequence[str]) -> dict[str, list[Any]]:
    assert "error" not in answer, answer
    reads: dict[str, list[Any]] = answer["reads"]
    assert sorted(reads) == sorted(paths)
    bad = [p for p in paths if reads[p][0] != MD5[p]]
    assert not bad, f"bytes differ from the origin for {bad}"
    return reads


def http_get(host: Host, url: str) -> bytes:
    """GET with the token from inside ``host``'s namespace (the socket lives there)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})

    def go() -> bytes:
        with opener.open(req, timeout=5) as reply:
            body: bytes = reply.read()
            return body

    return host.call(go)


COUNTERS = (
    "tidepool_bytes_served_total{",
    "tidepool_read_seconds_count{",
    "tidepool_http_requests_total{",
)


def served(host: Host, endpoint: str) -> float:
    """What a worker answered so far, from ``/metrics``: bytes served, file reads answered and
    dataset API requests. Not counted: the scrape itself, the health check and ``/v1/node`` —
    the identity question a misdirected client must ask to learn it is in the wrong pool — and
    the status the members of a pool poll from each other every few seconds (the pool view)."""
    total = 0.0
    for line in http_get(host, f"{endpoint}/metrics").decode().splitlines():
        if not line.startswith(COUNTERS):
            continue
        routes = ("/metrics", "/healthz", "/v1/node", "/v1/datasets/{ds}/status")
        if any(f'route="{r}"' in line for r in routes):
            continue
        total += float(line.rsplit(" ", 1)[1])
    return total


def origin_reads(host: Host, endpoint: str) -> float:
    """Page fetches this worker made from the origin (``tidepool_origin_requests_total``)."""
    total = 0.0
    for line in http_get(host, f"{endpoint}/metrics").decode().splitlines():
        if line.startswith("tidepool_origin_requests_total{") and 'op="read"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def cached_files(host: Host, endpoint: str) -> int:
    body = http_get(host, f"{endpoint}/v1/datasets/ds/status?refresh=0")
    return int(json.loads(body)["raw"]["cached_files"])


def wait_cached(pool: Pool, want: dict[str, int]) -> None:
    """Page writes land just after the bytes are served: wait for the counts, briefly."""
    deadline = time.monotonic() + 20
    while (have := pool.cached()) != want:
        assert time.monotonic() < deadline, f"cached files {have}, expected {want}"
        time.sleep(0.2)


def wan_down(lab: Lab) -> int:
    """New bytes that crossed the WAN towards the edge (resends of delivered bytes left out)."""
    return lab.wan.new_bytes_down()


@dataclass
class Pool:
    """Workers of one node pool on the lab's hosts, with static membership."""

    lab: Lab
    name: str
    tmp: Path
    port: int
    replicas: int = 1
    workers: dict[str, WorkerProcess] = field(default_factory=dict)

    def host(self, node: str) -> Host:
        return next(h for h in self.lab.hosts[self.name] if h.node == node)

    def endpoint(self, node: str) -> str:
        return f"http://{self.host(node).address}:{self.port}"

    def members(self, nodes: Sequence[str]) -> list[Member]:
        return [Member(n, self.endpoint(n), self.name) for n in nodes]

    def _spec(self, node: str) -> Path:
        return S3DatasetSpec(
            url=f"s3://{BUCKET}/data/",
            prefetch="off",  # exact origin and WAN counts
            endpoint=self.lab.origin.endpoint,
            cache=self.tmp / node / "cache",
            metadata_sync={"immutable": True},
            replicas=3,
            data_replicas=self.replicas,
        ).write(self.tmp / node / "spec.yaml")

    def start(self, nodes: Sequence[str], member_nodes: Sequence[str] | None = None) -> None:
        """Start workers on ``nodes`` (in parallel) with ``member_nodes`` as the static list."""
        static = "static:" + ",".join(
            f"{m.name}={m.address}" for m in self.members(member_nodes or nodes)
        )
        secrets_dir = write_secrets_dir(
            self.tmp / "secrets", self.lab.origin.access_key, self.lab.origin.secret_key
        )

        def one(node: str) -> WorkerProcess:
            extra = ["--nodepool", self.name, "--node-name", node]
            extra += ["--advertise", self.endpoint(node), "--members", static]
            extra += ["--secrets-dir", str(secrets_dir), "--state-dir", str(self.tmp / node)]
            return self.host(node).start_worker(
                [self._spec(node)],
                self.tmp / node / "worker.log",
                token=TOKEN,
                peer_token=PEER_TOKEN,
                port=self.port,
                extra_args=extra,
            )

        with concurrent.futures.ThreadPoolExecutor(len(nodes)) as ex:
            futures = {node: ex.submit(one, node) for node in nodes}
            for node, fut in futures.items():
                self.workers[node] = fut.result()

    def stop(self, nodes: Sequence[str] | None = None) -> None:
        for node in list(nodes or self.workers):
            self.workers.pop(node).stop()

    def kill(self, node: str) -> None:
        self.workers.pop(node).kill()

    def served(self) -> dict[str, float]:
        return {n: served(self.host(n), self.endpoint(n)) for n in self.workers}

    def origin_reads(self) -> dict[str, float]:
        return {n: origin_reads(self.host(n), self.endpoint(n)) for n in self.workers}

    def cached(self) -> dict[str, int]:
        return {n: cached_files(self.host(n), self.endpoint(n)) for n in self.workers}


def primary(name: str, members: Sequence[Member]) -> str:
    return ranked(file_key("ds", name), members)[0].name


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def dataset(lab: Lab) -> None:
    lab.origin.create_bucket(BUCKET)
    lab.origin.upload(BUCKET, {f"data/{k}": v for k, v in FILES.items()})


@pytest.fixture(scope="module")
def pool_a(lab: Lab, dataset: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    """pool-a's three hosts, each with a worker (r = 1)."""
    pool = Pool(lab, "pool-a", tmp_path_factory.mktemp("pool-a"), port=8433)
    try:
        pool.start([h.node for h in lab.hosts["pool-a"]])
        yield pool
    finally:
        pool.stop()


@pytest.fixture(scope="module")
def pool_b(lab: Lab, dataset: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    """pool-b's two hosts, each with a worker of its own pool."""
    pool = Pool(lab, "pool-b", tmp_path_factory.mktemp("pool-b"), port=8433)
    try:
        pool.start([h.node for h in lab.hosts["pool-b"]])
        yield pool
    finally:
        pool.stop()


# --------------------------------------------------------------------------------------------
# tests


def test_node_reads_what_another_node_warmed_without_the_wan(lab: Lab, pool_a: Pool) -> None:
    a, b, c = (h.node for h in lab.hosts["pool-a"])
    members = pool_a.members([a, b, c])
    # one file owned by each worker, and the multi-page file
    picks = {primary(n, members): n for n in FILES if n != "big.bin"}
    paths = [*picks.values(), "big.bin"]
    assert len(picks) == 3
    before_a = wan_down(lab)
    assert_read_ok(read(pool_a.host(a), pool_a.endpoint(a), paths, nodepool="pool-a"), paths)
    warmed = wan_down(lab) - before_a
    assert warmed >= sum(len(FILES[p]) for p in paths)  # node A's reads crossed the WAN once
    before_b = wan_down(lab)
    assert_read_ok(read(pool_a.host(b), pool_a.endpoint(b), paths, nodepool="pool-a"), paths)
    assert wan_down(lab) == before_b  # node B's did not cross it at all


def test_pool_b_never_contacts_pool_a(lab: Lab, pool_a: Pool, pool_b: Pool) -> None:
    paths = sorted(FILES)
    b0, b1 = (h.node for h in lab.hosts["pool-b"])
    before = pool_a.served()
    lab.connect_pools(True)  # the router would forward: only the client's own choice keeps out
    try:
        for node in (b0, b1):
            answer = read(pool_b.host(node), pool_b.endpoint(node), paths, nodepool="pool-b")
            assert_read_ok(answer, paths)
        assert pool_a.served() == before
        # pointed at a pool-a worker, a pool-b client refuses to use it, and says why
        a0 = lab.hosts["pool-a"][0].node
        answer = read(pool_b.host(b0), pool_a.endpoint(a0), paths[:1], nodepool="pool-b")
        assert answer.get("error") == "ConnectionError", answer
        assert "node pool 'pool-a'" in answer["message"]
        assert "'pool-b'" in answer["message"]
        assert pool_a.served() == before
    finally:
        lab.connect_pools(False)


def test_join_and_sigkill_with_two_replicas(
    lab: Lab, dataset: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    nodes = [h.node for h in lab.hosts["pool-a"]]
    n0, n1, n2 = nodes
    pool = Pool(lab, "pool-a", tmp_path_factory.mktemp("join"), port=8533, replicas=2)
    reader = pool.host(n0)
    paths = sorted(FILES)
    try:
        # two workers, r = 2: both hold every file after one epoch
        pool.start([n0, n1])
        assert_read_ok(read(reader, pool.endpoint(n0), paths, nodepool="pool-a"), paths)
        wait_cached(pool, {n0: len(paths), n1: len(paths)})

        # join: the two restart with the three-member list, the third starts empty
        pool.stop()
        pool.start(nodes)
        two, three = pool.members([n0, n1]), pool.members(nodes)
        moved = {p for p in paths if primary(p, two) != primary(p, three)}
        assert moved == {p for p in paths if primary(p, three) == n2}  # only to the joiner
        assert abs(len(moved) / len(paths) - 1 / 3) < 0.15
        slots = {p: {m.name for m in owners(file_key("ds", p), three, 2)} for p in paths}
        assert abs(sum(n2 in s for s in slots.values()) / (2 * len(paths)) - 1 / 3) < 0.15
        wan = wan_down(lab)
        assert_read_ok(read(reader, pool.endpoint(n0), paths, nodepool="pool-a"), paths)
        # the joiner copied its keys' bytes from the replicas over the LAN; what crossed the WAN
        # is its first stat of each (a HEAD answer: worker metadata is not shared in the pool)
        assert pool.origin_reads() == {n0: 0, n1: 0, n2: 0}
        assert wan_down(lab) - wan < METADATA_BYTES * len(moved)
        # and, in the background, every file it is one of the two owners of (rebalance)
        theirs = {p for p in paths if n2 in slots[p]}
        wait_cached(pool, {n0: len(paths), n1: len(paths), n2: len(theirs)})

        # leave: SIGKILL an original member; its keys' next owners copy from a surviving replica
        pool.kill(n1)
        survivors = pool.members([n0, n2])
        lost = {p for p in paths if primary(p, three) == n1}
        assert abs(len(lost) / len(paths) - 1 / 3) < 0.15
        to_joiner = {p for p in paths if primary(p, survivors) == n2}
        assert to_joiner <= theirs  # the second owner of n1's files: held since the join
        wan, fetched = wan_down(lab), pool.origin_reads()
        reads = assert_read_ok(
            read(reader, pool.endpoint(n0), paths, mode="seq", nodepool="pool-a"), paths
        )
        assert pool.origin_reads() == fetched
        assert wan_down(lab) - wan < METADATA_BYTES * len(lost)
        assert max(t for _, t in reads.values()) < 2.0
        wait_cached(pool, {n0: len(paths), n2: len(theirs)})
    finally:
        pool.stop()


def test_reads_fail_over_within_two_seconds(lab: Lab, pool_a: Pool) -> None:
    a, b, c = (h.node for h in lab.hosts["pool-a"])
    members = pool_a.members([a, b, c])
    victim = c
    mine = [p for p in sorted(FILES) if primary(p, members) == victim and p != "big.bin"][:12]
    assert mine
    reader = pool_a.host(a)
    proc = reader.exec(
        _client_argv(pool_a.endpoint(a), mine, "twice", "pool-a"),
        env=_client_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == b"ready"  # warm, connections pooled
        pool_a.kill(victim)
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()[-3000:]
    reads = assert_read_ok(json.loads(out.decode().strip().splitlines()[-1]), mine)
    slowest = max(t for _, t in reads.values())
    assert slowest < 2.0, reads
