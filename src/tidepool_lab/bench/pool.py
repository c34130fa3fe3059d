"""``python -m tidepool_lab.bench.pool``: a node pool's shared cache against per-node caches.

On a network-namespace lab (:mod:`tidepool_lab.testbed.netns`: an S3 origin behind a
40 ms / 100 Mbit/s WAN, one pool LAN of edge hosts), in one run:

* **second node, first epoch.** ``--files`` files of ``--size-kib`` KiB, read one after another by
  one reader: direct s3fs from a node; fsspec ``filecache`` on node 1, then on node 2 (each node
  has its own cache directory, so node 2 pays the WAN again); Tidepool on node 1 (cold: the
  pool's owners fetch from the origin), then on node 2 (the pool already holds everything): over
  HTTP only, then with the client's default same-host fast path (the third of the files node 2's
  own worker owns read from its disk). Each row gives the epoch time and the WAN payload bytes
  (cloud -> edge) counted by the WAN relay while the epoch ran. Targets: node 2 at least 40x
  faster than direct s3fs and within 0.3 s, with zero WAN bytes.
* **scale-out.** ``--readers`` readers, each in its own host namespace and its own process, read
  a warm dataset of ``--tput-files`` files of ``--tput-mib`` MiB for ``--seconds`` seconds:
  routed by the ring over the pool's three workers, then all on one worker. Target: aggregate
  throughput at least 2x.

* **large file.** One ``--large-mib`` MiB file, warm, in two pools of three: placed by chunk
  (``--chunk-size``) and placed whole (one owner). The worker hosts' LAN links are limited to
  ``--node-mbit``; one reader on another host reads 8 MiB ranges, 8 at a time. Targets: no
  worker holds more than half the file; the chunked read at least 1.8x the one-owner rate.

``--cases`` picks the parts (default all three). Every byte read is checked against the origin's
MD5 (epochs: all reads; scale-out: the first read of each file by each reader, lengths always).

Limits, and why the scale-out rows are run twice: all hosts of the lab share this machine's CPU
cores, so without a per-node limit a pool of three workers cannot be faster than one worker
beyond what idle cores allow (on a 2-core machine, about none: readers and workers compete for
the same two cores). Real nodes bring their own NIC and CPU; the ``nic`` rows emulate that by
limiting each host's LAN link to ``--node-mbit`` each way (``tc tbf`` on the host's interface and
its bridge port), and the target is judged on those rows. The ``unshaped`` rows show this
machine's CPU bound. Figures are from one run on one machine: compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.table import Table

from tidepool_lab.testbed.netns import Host, Lab, cleanup_stale
from tidepool_lab.testbed.specs import S3DatasetSpec, write_secrets_dir
from tidepool_lab.testbed.workerproc import WorkerProcess

PREFIX = "tpb"
BUCKET = "poolbench"
POOL = "pool-a"
WORKERS = 3
PORT = 8433
SOLO_PORT = 8533
COLD_PORT = 8633
CHUNKED_PORT = 8733
WHOLE_PORT = 8833
KiB, MiB = 1 << 10, 1 << 20
MODEL = "model/large.bin"


# One reader process on an edge host. argv[1]: a JSON file with the reader's settings. It sets
# up (imports, filesystem), prints "ready", waits for a line on stdin, then reads and prints JSON:
# mode "epoch" reads ``paths`` once in order (timed); "warm" reads them with 4 threads; "for"
# reads them round-robin (from a per-reader offset) for ``seconds``.
READER = r"""
import concurrent.futures, hashlib, json, sys, time
args = json.load(open(sys.argv[1]))
kind = args["kind"]
if kind == "tidepool":
    from tidepool.client import TidepoolFileSystem
    fs = TidepoolFileSystem(endpoint=args["endpoint"], nodepool=args["nodepool"],
                            local_reads=args["local_reads"], skip_instance_cache=True)
elif kind == "s3":
    import s3fs
    fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False,
                           **args["storage_options"])
else:
    import fsspec
    fs = fsspec.filesystem("filecache", target_protocol="s3", cache_storage=args["cache"],
                           target_options=dict(args["storage_options"], skip_instance_cache=True),
                           skip_instance_cache=True)
prefix, md5, paths = args["prefix"], args["md5"], args["paths"]
if args.get("list"):
    fs.find(args["list"])  # as a data loader lists its dataset before the first epoch
print("ready", flush=True)
sys.stdin.readline()
if args["mode"] == "epoch":
    got, lat = [], []
    t0 = time.perf_counter()
    for p in paths:
        r0 = time.perf_counter()
        got.append(fs.cat_file(prefix + p))
        lat.append(time.perf_counter() - r0)
    total = time.perf_counter() - t0
    bad = sum(hashlib.md5(d).hexdigest() != md5[p] for p, d in zip(paths, got))
    lat.sort()
    out = {"seconds": total, "files": len(paths), "bytes": sum(map(len, got)), "bad": bad,
           "p50_ms": 1000 * lat[len(lat) // 2], "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))]}
elif args["mode"] == "warm":
    def one(p):
        return hashlib.md5(fs.cat_file(prefix + p)).hexdigest() != md5[p]
    t0 = time.perf_counter()
    # 4 at a time: 16 cold 1 MiB fetches fill the 100 Mbit/s WAN queue and trip the worker's 1 s
    # origin connect timeout (SYN-ACKs dropped behind the data)
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        bad = sum(ex.map(one, paths))
    out = {"seconds": time.perf_counter() - t0, "files": len(paths), "bad": bad}
elif args["mode"] == "ranges":
    # one large file in ``step``-byte ranges, ``threads`` at a time (as a model loader or a
    # parallel downloader reads), assembled and checked whole after the clock stops
    p = paths[0]
    size, step = args["sizes"][p], args["step"]
    buf = bytearray(size)
    def part(off):
        data = fs.cat_file(prefix + p, start=off, end=min(size, off + step))
        buf[off:off + len(data)] = data
        return len(data)
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(args["threads"]) as ex:
        n = sum(ex.map(part, range(0, size, step)))
    secs = time.perf_counter() - t0
    bad = int(n != size or hashlib.md5(buf).hexdigest() != md5[p])
    out = {"seconds": secs, "files": 1, "bytes": n, "bad": bad}
else:
    sizes, seen, n, nbytes, bad, i = args["sizes"], set(), 0, 0, 0, args["offset"]
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < args["seconds"]:
        p = paths[i % len(paths)]
        i += 1
        data = fs.cat_file(prefix + p)
        n += 1
        nbytes += len(data)
        if len(data) != sizes[p] or (p not in seen and hashlib.md5(data).hexdigest() != md5[p]):
            bad += 1
        seen.add(p)
    out = {"seconds": time.perf_counter() - t0, "files": n, "bytes": nbytes, "bad": bad}
print(json.dumps(out), flush=True)
"""


def _data(prefix: str, count: int, size: int) -> dict[str, bytes]:
    return {f"{prefix}/{i // 100:02d}/f{i:05d}.bin": os.urandom(size) for i in range(count)}


class Bench:
    """The lab, its workers and the reader processes of one bench run."""

    def __init__(self, lab: Lab, workdir: Path, console: Console) -> None:
        self.lab = lab
        self.workdir = workdir
        self.console = console
        self.token = secrets.token_hex(16)
        self.peer_token = secrets.token_hex(16)
        self.hosts = lab.hosts[POOL]
        self.md5: dict[str, str] = {}
        self.sizes: dict[str, int] = {}
        self._seq = 0

    # -- setup -----------------------------------------------------------------------------------

    def upload(self, objects: Mapping[str, bytes]) -> None:
        self.lab.origin.create_bucket(BUCKET)
        self.lab.origin.upload(BUCKET, objects)
        for name, data in objects.items():
            self.md5[name] = hashlib.md5(data).hexdigest()
            self.sizes[name] = len(data)

    def _secrets(self) -> Path:
        origin = self.lab.origin
        return write_secrets_dir(self.workdir / "secrets", origin.access_key, origin.secret_key)

    def start_worker(
        self,
        host: Host,
        name: str,
        port: int,
        members: Sequence[Host] = (),
        prefetch: str | None = None,
        chunk_size: str | None = None,
    ) -> WorkerProcess:
        """``tidepool up`` on ``host``; a pool member (static list) when ``members`` is given."""
        home = self.workdir / name
        home.mkdir(parents=True, exist_ok=True)
        spec = S3DatasetSpec(
            url=f"s3://{BUCKET}/",
            endpoint=self.lab.origin.endpoint,
            cache=home / "cache",
            quota="4Gi",
            metadata_sync={"immutable": True},
            prefetch=prefetch,
        ).write(home / "spec.yaml")
        extra = ["--secrets-dir", str(self._secrets()), "--state-dir", str(home)]
        if chunk_size is not None:
            extra += ["--chunk-size", chunk_size]
        if members:
            static = ",".join(f"{h.node}=http://{h.address}:{port}" for h in members)
            extra += ["--nodepool", POOL, "--node-name", host.node]
            extra += [
                "--advertise",
                f"http://{host.address}:{port}",
                "--members",
                f"static:{static}",
            ]
        return host.start_worker(
            [spec],
            home / "worker.log",
            token=self.token,
            peer_token=self.peer_token,
            port=port,
            extra_args=extra,
        )

    # -- readers ---------------------------------------------------------------------------------

    def _spawn(self, host: Host, settings: dict[str, Any]) -> tuple[subprocess.Popen[bytes], Path]:
        self._seq += 1
        path = self.workdir / "readers" / f"r{self._seq:03d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the secret
        with os.fdopen(fd, "w") as f:
            json.dump(settings, f)
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        env["TIDEPOOL_TOKEN"] = self.token
        log = path.with_suffix(".log")
        with open(log, "wb") as err:
            proc = host.exec(
                [sys.executable, "-c", READER, str(path)],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        return proc, log

    def run_readers(
        self, jobs: Sequence[tuple[Host, dict[str, Any]]], timeout: float = 600.0
    ) -> tuple[list[dict[str, Any]], int, int]:
        """Start readers, wait until all are set up, let them go at once; return their results,
        the WAN payload bytes (cloud -> edge) from go to the last result, and during set-up."""
        setup = self.lab.wan.stats()["payload_down"]
        procs = [self._spawn(host, settings) for host, settings in jobs]
        try:
            for proc, log in procs:
                assert proc.stdout is not None
                if proc.stdout.readline().strip() != b"ready":
                    raise RuntimeError(f"reader failed to start:\n{log.read_text()[-3000:]}")
            before = self.lab.wan.stats()["payload_down"]
            setup = before - setup
            for proc, _ in procs:
                stdin: IO[bytes] | None = proc.stdin
                assert stdin is not None
                stdin.write(b"go\n")
                stdin.flush()
            results = []
            for proc, log in procs:
                out, _ = proc.communicate(timeout=timeout)
                if proc.returncode != 0:
                    raise RuntimeError(f"reader failed:\n{log.read_text()[-3000:]}")
                results.append(json.loads(out.decode().strip().splitlines()[-1]))
            wan = self.lab.wan.stats()["payload_down"] - before
        finally:
            for proc, _ in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        bad = sum(int(r.get("bad", 0)) for r in results)
        if bad:
            raise RuntimeError(f"{bad} reads returned bytes that differ from the origin")
        return results, int(wan), int(setup)

    def tidepool(self, endpoint: str, **extra: Any) -> dict[str, Any]:
        return {
            "kind": "tidepool",
            "endpoint": endpoint,
            "nodepool": POOL,
            "local_reads": False,
            "prefix": "ds/",
            "md5": self.md5,
            **extra,
        }

    def s3(self, kind: str = "s3", **extra: Any) -> dict[str, Any]:
        return {
            "kind": kind,
            "storage_options": self.lab.origin.storage_options(),
            "prefix": f"{BUCKET}/",
            "md5": self.md5,
            **extra,
        }


# --------------------------------------------------------------------------------------------
# node NIC emulation


def _tbf(netns: str, dev: str, mbit: float) -> list[str]:
    burst = max(16 * KiB, int(mbit * 1e6 / 8 * 0.004))
    shape = ["rate", f"{mbit}mbit", "burst", str(burst), "latency", "20ms"]
    return ["tc", "-n", netns, "qdisc", "replace", "dev", dev, "root", "tbf", *shape]


@contextmanager
def node_nics(lab: Lab, hosts: Sequence[Host], mbit: float) -> Iterator[None]:
    """Limit each host's LAN link to ``mbit`` each way: its interface and its bridge port."""
    links = []
    for h in hosts:
        k = list(lab.hosts).index(h.pool)
        links += [(h.name, "eth0"), (lab.edge_ns, f"p{k}h{h.index}")]  # netns.py's port names
    try:
        for netns, dev in links:
            subprocess.run(_tbf(netns, dev, mbit), check=True, capture_output=True)
        yield
    finally:
        for netns, dev in links:
            subprocess.run(
                ["tc", "-n", netns, "qdisc", "del", "dev", dev, "root"], capture_output=True
            )


# --------------------------------------------------------------------------------------------
# the run


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    cleanup_stale(PREFIX)
    hosts_needed = WORKERS + args.readers
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tidepool-poolbench-"))
    (workdir / "lab").mkdir(parents=True, exist_ok=True)
    try:
        lab = Lab.create(
            prefix=PREFIX,
            pools={POOL: hosts_needed},
            rtt_ms=args.rtt_ms,
            rate_mbit=args.rate_mbit,
            workdir=workdir / "lab",
        )
        try:
            return _run(Bench(lab, workdir, console), args)
        finally:
            lab.close()
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _run(b: Bench, args: argparse.Namespace) -> dict[str, Any]:
    say = b.console.print
    small = _data("small", args.files, args.size_kib * KiB)
    cases = set(args.cases.split(","))
    large = _data("large", args.tput_files, args.tput_mib * MiB) if "scaleout" in cases else {}
    model = {MODEL: os.urandom(args.large_mib * MiB)} if "large" in cases else {}
    say(f"lab: {b.lab.describe()}")
    say(f"uploading {len(small)} + {len(large)} + {len(model)} files to the origin (cloud side)")
    b.upload({**small, **large, **model})
    model.clear()  # the bench keeps its MD5
    paths = sorted(small)
    res: dict[str, Any] = {
        "setup": {
            "rtt_ms": args.rtt_ms,
            "rate_mbit": args.rate_mbit,
            "files": args.files,
            "size_kib": args.size_kib,
            "workers": WORKERS,
            "readers": args.readers,
            "tput_files": args.tput_files,
            "tput_mib": args.tput_mib,
            "seconds": args.seconds,
            "node_mbit": args.node_mbit,
            "cpus": os.cpu_count(),
            "prefetch": args.prefetch,
            "cases": sorted(cases),
            "large_mib": args.large_mib,
            "chunk_size": args.chunk_size,
        },
        "epochs": {},
        "scaleout": {},
        "large": {},
        "targets": {},
    }
    node1, node2 = b.hosts[0], b.hosts[1]
    pool_hosts = b.hosts[:WORKERS]
    readers = b.hosts[WORKERS:]

    def epoch(label: str, host: Host, settings: dict[str, Any]) -> None:
        say(f"epoch: {label} ...")
        [r], wan, setup = b.run_readers([(host, {**settings, "mode": "epoch", "paths": paths})])
        row = {
            "node": host.node,
            "seconds": round(r["seconds"], 3),
            "files_per_s": round(r["files"] / r["seconds"], 1),
            "p50_ms": round(r["p50_ms"], 2),
            "p99_ms": round(r["p99_ms"], 2),
            "wan_bytes": wan,
            "setup_wan_bytes": setup,
            "verified": True,
        }
        res["epochs"][label] = row
        say(f"  {row}")

    pf = args.prefetch
    if "large" in cases:
        res["large"] = _large(b, args)
        res["targets"] |= {
            "large_ratio": res["large"]["ratio"],
            "large_ratio_met": res["large"]["ratio"] >= 1.8,
            "large_largest_share": res["large"]["chunked"]["largest_share"],
            "large_spread_met": res["large"]["chunked"]["largest_share"] <= 0.5,
        }
    epochs = "epochs" in cases
    if not epochs and "scaleout" not in cases:
        return res
    if epochs:
        epoch("direct s3fs", node1, b.s3())
        single = b.start_worker(node1, "single", COLD_PORT, prefetch=pf)
        epoch("single worker (cold)", node1, b.tidepool(single.endpoint))
        single.stop()
    workers = [b.start_worker(h, f"w-{h.node}", PORT, pool_hosts, pf) for h in pool_hosts]
    ep = [f"http://{h.address}:{PORT}" for h in pool_hosts]
    if epochs:
        epoch("filecache node 1", node1, b.s3("filecache", cache=str(b.workdir / "fc-node1")))
        epoch("filecache node 2", node2, b.s3("filecache", cache=str(b.workdir / "fc-node2")))
        epoch("tidepool node 1 (cold)", node1, b.tidepool(ep[0]))
        epoch("tidepool node 2 (first epoch)", node2, b.tidepool(ep[1]))
        # the client's default: pages of node 2's own worker (a third of the files) from disk
        epoch("tidepool node 2 (local reads)", node2, b.tidepool(ep[1], local_reads=True))
        node3 = pool_hosts[2]
        epoch("tidepool node 3 (lists first)", node3, b.tidepool(ep[2], list="ds/small"))

    if "scaleout" not in cases:
        for w in workers:
            w.stop()
        return _epoch_targets(res)
    # scale-out: the pool of three, and one worker alone, both warm with the large files
    solo = b.start_worker(node1, "solo", SOLO_PORT)
    big = sorted(large)
    for endpoint in (ep[0], solo.endpoint):
        say(f"warming {len(big)} x {args.tput_mib} MiB through {endpoint} ...")
        b.run_readers([(node2, {**b.tidepool(endpoint), "mode": "warm", "paths": big})])

    def scaleout(label: str, endpoints: Sequence[str]) -> dict[str, Any]:
        jobs = []
        for i, host in enumerate(readers):
            settings = b.tidepool(endpoints[i % len(endpoints)], mode="for", paths=big)
            settings.update(
                sizes=b.sizes, seconds=args.seconds, offset=i * len(big) // len(readers)
            )
            jobs.append((host, settings))
        results, wan, _ = b.run_readers(jobs)
        mb = sum(r["bytes"] / r["seconds"] for r in results) / 1e6
        files = sum(r["files"] / r["seconds"] for r in results)
        row = {"mb_per_s": round(mb, 1), "files_per_s": round(files, 1), "wan_bytes": wan}
        say(f"  {label}: {row}")
        return row

    for shape in ("unshaped", "nic"):
        say(f"scale-out, {shape} ...")
        with node_nics(b.lab, b.hosts, args.node_mbit) if shape == "nic" else _nothing():
            pool = scaleout(f"{WORKERS} workers", ep)
            one = scaleout("1 worker", [solo.endpoint])
        res["scaleout"][shape] = {
            "pool": pool,
            "one_worker": one,
            "ratio": round(pool["mb_per_s"] / max(one["mb_per_s"], 1e-9), 2),
        }
    for w in [*workers, solo]:
        w.stop()

    res["targets"] |= {
        "scaleout_ratio": res["scaleout"]["nic"]["ratio"],
        "scaleout_ratio_met": res["scaleout"]["nic"]["ratio"] >= 2,
        "scaleout_ratio_unshaped": res["scaleout"]["unshaped"]["ratio"],
    }
    return _epoch_targets(res) if epochs else res


def _epoch_targets(res: dict[str, Any]) -> dict[str, Any]:
    direct = res["epochs"]["direct s3fs"]["seconds"]
    node1_row = res["epochs"]["tidepool node 1 (cold)"]
    single_row = res["epochs"]["single worker (cold)"]
    res["targets"] |= {
        "node1_vs_direct": round(node1_row["seconds"] / direct, 3),
        "node1_vs_direct_met": node1_row["seconds"] <= 1.05 * direct,
        "node1_p50_over_single_ms": round(node1_row["p50_ms"] - single_row["p50_ms"], 2),
        "node1_p50_met": node1_row["p50_ms"] - single_row["p50_ms"] <= 5,
    }
    node2_row = res["epochs"]["tidepool node 2 (first epoch)"]
    node2_local = res["epochs"]["tidepool node 2 (local reads)"]
    node3_row = res["epochs"]["tidepool node 3 (lists first)"]
    res["targets"] |= {
        "node2_vs_direct": round(direct / node2_row["seconds"], 1),
        "node2_vs_direct_met": direct / node2_row["seconds"] >= 40,
        "node2_wan_bytes": node2_row["wan_bytes"],
        "node2_wan_bytes_met": node2_row["wan_bytes"] == 0,
        "node2_seconds": node2_row["seconds"],
        "node2_local_seconds": node2_local["seconds"],
        "node2_local_wan_bytes": node2_local["wan_bytes"],
        "node2_seconds_met": min(node2_row["seconds"], node2_local["seconds"]) <= 0.3,
        "node3_listed_vs_direct": round(direct / node3_row["seconds"], 1),
        "node3_listed_wan_bytes": node3_row["wan_bytes"],
    }
    return res


def _large(b: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """One large file in two pools of three, warm: placed by chunk (``--chunk-size``) and placed
    whole (``--chunk-size 0``: the one-owner figure). Each worker host's LAN link is limited to
    ``--node-mbit``; the reader's host is not (a training server with a faster NIC than the
    cache nodes), and reads the file in 8 MiB ranges, 8 at a time."""
    say = b.console.print
    pool_hosts, reader = b.hosts[:WORKERS], b.hosts[WORKERS]
    out: dict[str, Any] = {}
    for label, port, chunk in (
        ("chunked", CHUNKED_PORT, args.chunk_size),
        ("whole", WHOLE_PORT, "0"),
    ):
        workers = [
            b.start_worker(h, f"{label}-{h.node}", port, pool_hosts, chunk_size=chunk)
            for h in pool_hosts
        ]
        try:
            endpoint = f"http://{pool_hosts[0].address}:{port}"
            say(f"large file, {label}: warming {args.large_mib} MiB through {endpoint} ...")
            warm = b.tidepool(endpoint, mode="ranges", paths=[MODEL], sizes=b.sizes)
            b.run_readers([(reader, {**warm, "step": 8 * MiB, "threads": 4})])
            held = [_du(b.workdir / f"{label}-{h.node}" / "cache") for h in pool_hosts]
            with node_nics(b.lab, pool_hosts, args.node_mbit):
                [r], wan, _ = b.run_readers([(reader, {**warm, "step": 8 * MiB, "threads": 8})])
        finally:
            for w in workers:
                w.stop()
        row = {
            "chunk_size": chunk,
            "seconds": round(r["seconds"], 3),
            "mb_per_s": round(r["bytes"] / r["seconds"] / 1e6, 1),
            "held_bytes": held,
            "largest_share": round(max(held) / max(sum(held), 1), 3),
            "wan_bytes": wan,
            "verified": True,
        }
        out[label] = row
        say(f"  {row}")
    out["ratio"] = round(out["chunked"]["mb_per_s"] / max(out["whole"]["mb_per_s"], 1e-9), 2)
    return out


def _du(path: Path) -> int:
    """Bytes of the files under ``path`` (a worker's cache: its pages and index)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def report(res: dict[str, Any], console: Console) -> None:
    if res["epochs"]:
        _report_epochs(res, console)
    if res["scaleout"]:
        _report_scaleout(res, console)
    if res["large"]:
        _report_large(res, console)
    console.print(f"targets: {res['targets']}")


def _report_epochs(res: dict[str, Any], console: Console) -> None:
    direct = res["epochs"]["direct s3fs"]["seconds"]
    t = Table(
        title=f"one epoch, {res['setup']['files']} x {res['setup']['size_kib']} KiB, "
        f"one reader ({res['setup']['rtt_ms']:g} ms / {res['setup']['rate_mbit']:g} Mbit/s)"
    )
    cols = (
        "read path",
        "node",
        "epoch s",
        "p50 ms",
        "p99 ms",
        "WAN bytes",
        "set-up WAN",
        "vs direct",
    )
    for col in cols:
        t.add_column(col, justify="left" if col == "read path" else "right")
    for label, r in res["epochs"].items():
        t.add_row(
            label,
            r["node"],
            f"{r['seconds']:.3f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['wan_bytes']:,}",
            f"{r['setup_wan_bytes']:,}",
            f"{direct / r['seconds']:.1f}x",
        )
    console.print(t)


def _report_scaleout(res: dict[str, Any], console: Console) -> None:
    s = res["setup"]
    t = Table(
        title=f"{s['readers']} readers, warm {s['tput_files']} x {s['tput_mib']} MiB, "
        f"{s['seconds']:g} s each"
    )
    for col in (
        "links",
        f"{s['workers']} workers MB/s",
        "1 worker MB/s",
        "ratio",
        f"{s['workers']} workers files/s",
        "1 worker files/s",
    ):
        t.add_column(col, justify="right")
    for shape, r in res["scaleout"].items():
        label = f"node NIC {s['node_mbit']:g} Mbit/s" if shape == "nic" else "unshaped"
        t.add_row(
            label,
            f"{r['pool']['mb_per_s']:.1f}",
            f"{r['one_worker']['mb_per_s']:.1f}",
            f"{r['ratio']:.2f}x",
            f"{r['pool']['files_per_s']:.0f}",
            f"{r['one_worker']['files_per_s']:.0f}",
        )
    console.print(t)


def _report_large(res: dict[str, Any], console: Console) -> None:
    s = res["setup"]
    t = Table(
        title=f"one {s['large_mib']} MiB file, warm, in a pool of {WORKERS} "
        f"(each worker's NIC {s['node_mbit']:g} Mbit/s), 8 readers of 8 MiB ranges"
    )
    for col in ("placement", "MB/s", "seconds", "largest share", "held per worker (MiB)"):
        t.add_column(col)
    for label in ("chunked", "whole"):
        r = res["large"][label]
        name = f"by chunk ({r['chunk_size']})" if label == "chunked" else "whole file"
        held = " / ".join(f"{h / MiB:.0f}" for h in r["held_bytes"])
        t.add_row(
            name, f"{r['mb_per_s']:.1f}", f"{r['seconds']:.2f}", f"{r['largest_share']:.0%}", held
        )
    console.print(t)
    console.print(f"by chunk / whole: {res['large']['ratio']:.2f}x")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tidepool_lab.bench.pool",
        description=__doc__.split("\n", 1)[0] if __doc__ else None,
    )
    p.add_argument("--files", type=int, default=600, help="small files in the epoch")
    p.add_argument("--size-kib", type=int, default=100, help="small file size in KiB")
    p.add_argument("--readers", type=int, default=8, help="parallel readers for scale-out")
    p.add_argument("--tput-files", type=int, default=96, help="files in the scale-out set")
    p.add_argument("--tput-mib", type=int, default=1, help="scale-out file size in MiB")
    p.add_argument("--seconds", type=float, default=8.0, help="scale-out read time per row")
    p.add_argument(
        "--node-mbit",
        type=float,
        default=400.0,
        help="emulated node NIC rate for the `nic` scale-out rows (each way)",
    )
    p.add_argument("--rtt-ms", type=float, default=40.0, help="emulated WAN round trip")
    p.add_argument("--rate-mbit", type=float, default=100.0, help="emulated WAN rate")
    p.add_argument(
        "--prefetch",
        choices=("off", "pattern", "dataset"),
        default="off",
        help="the workers' spec.prefetch.policy (off: each file costs its own round trip, "
        "which is what the cold-reader target compares; dataset also warms the scale-out set)",
    )
    p.add_argument("--json", type=Path, default=Path("out/pool.json"), metavar="PATH")
    p.add_argument(
        "--cases",
        default="epochs,scaleout,large",
        help="comma-separated: epochs (first reader, node 2), scaleout (many readers), "
        "large (one large file placed by chunk against whole)",
    )
    p.add_argument("--large-mib", type=int, default=1024, help="the large case's file size")
    p.add_argument(
        "--chunk-size", default="16Mi", help="the workers' --chunk-size in the large case"
    )
    p.add_argument("--workdir", type=Path, default=None, help="keep the run's files here")
    args = p.parse_args(argv)
    bad = set(args.cases.split(",")) - {"epochs", "scaleout", "large"}
    if bad:
        p.error(f"--cases: unknown {sorted(bad)}; valid: epochs, scaleout, large")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 110)  # logs: no wrapped tables
    res = run(args, console)
    report(res, console)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=2) + "\n")
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
