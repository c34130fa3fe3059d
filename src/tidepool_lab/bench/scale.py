"""Scale (issue 16): a dataset of many small files, as a user runs it, and what each file costs.

``python -m tidepool_lab.bench.scale --files 100000 --json out/scale.json`` writes ``--files``
files of ``--size`` bytes (1 KiB) in ``--dirs`` directories on a ``local://`` origin on this
machine (no WAN: only Tidepool's own costs show), starts one worker (``tidepool up``, one SSD
tier) and measures, in this order:

* ``tidepool load`` of the whole dataset (the CLI, as a user runs it): files/s;
* the worker's resident memory after the load, and the cache on disk (every file's blocks below
  the tier and state directories) against the data's bytes;
* ``fs.find`` of the whole dataset through the fsspec client, in a child process: seconds, and the
  child's peak RSS; the worker's RSS after it. A load that took longer than the metadata TTL
  (60 s) makes this find list the origin again; a second find (``find_held``) is served from
  the listing the worker then holds. The target is judged on the first;
* ``ListObjectsV2`` of the whole dataset through the S3 gateway (boto3's paginator, as
  ``aws s3 ls --recursive``): seconds, and the gateway's peak RSS;
* warm same-host reads (``cat_file`` through ``tidepool://`` on the worker's host, a child process
  that lists the dataset first, as a data loader does, untimed) of ``--sample`` files picked at
  random: files/s, every file's bytes checked against the origin's;
* a restart after SIGKILL with the origin moved away: seconds from starting the new worker until it
  serves a cached file, and its RSS then.

Give ``--files`` more than once (``--files 100000 1000000``) for a row per size and the cost per
file of each; the 1,000,000 case takes tens of minutes at today's load rate. Every figure is this
machine's at this moment: compare rows of one run. Targets are the issue's, at 1,000,000 files.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import xxhash
import yaml
from rich.console import Console
from rich.table import Table

from tidepool_lab.bench.run import peak_rss_mib, status_mib, workdir, write_results
from tidepool_lab.testbed.workerproc import WorkerProcess

DATASET = "scale"
MOUNT = "data"
TARGETS = {
    "worker_rss_mib": 300.0,
    "disk_overhead": 1.1,
    "disk_slack_mib": 200.0,
    "restart_s": 5.0,
    "find_s": 10.0,
    "find_client_rss_mib": 500.0,
    "load_files_per_s": 10_000.0,
    "warm_files_per_s": 50_000.0,
    "gateway_rss_mib": 300.0,
}
"""At 1,000,000 files of 1 KiB (the issue's table)."""


def rel_path(i: int, dirs: int) -> str:
    """File ``i``'s path below the origin's root."""
    return f"d{i % dirs:03d}/f{i:07d}.bin"


def write_origin(root: Path, files: int, size: int, dirs: int) -> array[int]:
    """``files`` files of ``size`` random bytes below ``root``; their xxh3 digests by index."""
    digests = array("Q")
    rng = random.Random(16)
    for d in range(min(dirs, files)):
        (root / f"d{d:03d}").mkdir(parents=True, exist_ok=True)
    for i in range(files):
        data = rng.randbytes(size)
        fd = os.open(root / rel_path(i, dirs), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        digests.append(xxhash.xxh3_64_intdigest(data))
    return digests


def spec_text(origin: Path, cache: Path, quota_bytes: int) -> str:
    docs = [
        {
            "apiVersion": "data.fluid.io/v1alpha1",
            "kind": "Dataset",
            "metadata": {"name": DATASET},
            "spec": {"mounts": [{"mountPoint": f"local://{origin}", "name": MOUNT, "path": "/"}]},
        },
        {
            "apiVersion": "data.fluid.io/v1alpha1",
            "kind": "AlluxioRuntime",
            "metadata": {"name": DATASET},
            "spec": {
                "prefetch": {"policy": "off"},
                "tieredstore": {
                    "levels": [{"mediumtype": "SSD", "path": str(cache), "quota": quota_bytes}]
                },
            },
        },
    ]
    return yaml.safe_dump_all(docs, sort_keys=False)


def rss_mib(pid: int) -> float:
    """The resident memory (``VmRSS``) of a process now, MiB."""
    return status_mib(pid, "VmRSS")


def disk_bytes(*roots: Path) -> int:
    """Bytes the file system gives every file and directory below ``roots`` (``st_blocks``)."""
    total = 0
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in [*filenames, *dirnames]:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
                except OSError:
                    continue
    return total


_FIND = """
import sys, time, resource
from tidepool.client import TidepoolFileSystem
fs = TidepoolFileSystem(sys.argv[1], skip_instance_cache=True)
t0 = time.perf_counter()
n = len(fs.find(sys.argv[2]))
print(n, time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""

_READ = """
import sys, time, xxhash
from tidepool.client import TidepoolFileSystem
fs = TidepoolFileSystem(sys.argv[1], skip_instance_cache=True, local_reads=True)
paths = open(sys.argv[2]).read().split()
fs.find(sys.argv[4])  # as a data loader lists its dataset first (not timed)
out = []
t0 = time.perf_counter()
for p in paths:
    out.append(xxhash.xxh3_64_intdigest(fs.cat_file(p)))
seconds = time.perf_counter() - t0
open(sys.argv[3], "w").write(" ".join(map(str, out)))
print(len(paths), seconds, fs._local.hits if fs._local is not None else 0)
"""


def child(script: str, *args: str, timeout: float) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=timeout
    )
    if out.returncode != 0:
        raise RuntimeError(
            f"a benchmark child failed (exit {out.returncode}):\n{out.stderr[-3000:]}"
        )
    return out.stdout.split()


def served_from_cache(endpoint: str, path: str, digest: int, deadline: float) -> bool:
    """Poll until ``path`` reads back right over HTTP (the origin is away: from the cache)."""
    from tidepool.client import TidepoolFileSystem

    while time.monotonic() < deadline:
        try:
            fs = TidepoolFileSystem(endpoint, skip_instance_cache=True, local_reads=False)
            data = fs.cat_file(path)
        except Exception:  # not answering yet (or not serving): poll again
            time.sleep(0.02)
            continue
        return xxhash.xxh3_64_intdigest(data) == digest
    return False


def gateway_listing(endpoint: str, log_path: Path) -> dict[str, Any]:
    """``aws s3 ls --recursive`` as boto3 does it (ListObjectsV2, 1,000 keys a page) through
    a ``tidepool gateway`` in front of the worker: keys, seconds, the gateway's peak RSS."""
    from tidepool_lab.bench.gateway import gateway_process
    from tidepool_lab.testbed import s3util

    with gateway_process(endpoint, "scale", "scale-secret", log_path) as (url, pid):
        s3 = s3util.boto3_client(url, "scale", "scale-secret")
        t0 = time.perf_counter()
        keys = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=DATASET):
            keys += page.get("KeyCount", 0)
        seconds = time.perf_counter() - t0
        return {"keys": keys, "seconds": round(seconds, 2), "peak_rss_mib": peak_rss_mib(pid)}


def run_case(files: int, args: argparse.Namespace, work: Path, log: Any) -> dict[str, Any]:
    """One dataset of ``files`` files, every measurement above."""
    case = work / f"n{files}"
    shutil.rmtree(case, ignore_errors=True)
    origin, cache = case / "origin", case / "cache"
    log(f"{files:,} files: writing the origin …")
    t0 = time.perf_counter()
    digests = write_origin(origin, files, args.size, args.dirs)
    res: dict[str, Any] = {"files": files, "size": args.size, "dirs": args.dirs}
    res["origin_write_s"] = round(time.perf_counter() - t0, 2)
    data_bytes = files * args.size
    spec = case / "spec.yaml"
    spec.write_text(spec_text(origin, cache, max(4 * data_bytes, 1 << 30)))
    state = case / "state"
    extra = ["--state-dir", str(state)]
    worker = WorkerProcess.start([spec], case / "worker.log", extra_args=extra, timeout=60)
    try:
        log(f"{files:,} files: tidepool load …")
        env = {**os.environ, "TIDEPOOL_ENDPOINT": worker.endpoint}
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "tidepool.cli", "load", DATASET],
            check=True,
            capture_output=True,
            env=env,
            timeout=args.timeout,
        )
        load_s = time.perf_counter() - t0
        res["load_s"] = round(load_s, 2)
        res["load_files_per_s"] = round(files / load_s)
        res["worker_rss_after_load_mib"] = round(rss_mib(worker.pid), 1)
        disk = disk_bytes(cache, state)
        res["disk_mib"] = round(disk / 2**20, 1)
        res["data_mib"] = round(data_bytes / 2**20, 1)
        res["disk_per_data"] = round(disk / data_bytes, 2)

        log(f"{files:,} files: find …")
        n, seconds, client_rss = child(_FIND, worker.endpoint, DATASET, timeout=args.timeout)
        res["find_s"] = round(float(seconds), 2)
        res["find_client_rss_mib"] = round(float(client_rss), 1)
        res["find_files"] = int(n)
        res["worker_rss_after_find_mib"] = round(rss_mib(worker.pid), 1)
        n, seconds, client_rss = child(_FIND, worker.endpoint, DATASET, timeout=args.timeout)
        res["find_held_s"] = round(float(seconds), 2)
        res["find_held_client_rss_mib"] = round(float(client_rss), 1)
        res["find_held_files"] = int(n)

        log(f"{files:,} files: the S3 gateway, ListObjectsV2 of the whole bucket …")
        res["gateway"] = gateway_listing(worker.endpoint, case / "gateway.log")

        log(f"{files:,} files: warm same-host reads …")
        picked = random.Random(7).sample(range(files), min(args.sample, files))
        paths_file, got_file = case / "paths.txt", case / "got.txt"
        paths_file.write_text(" ".join(f"{DATASET}/{rel_path(i, args.dirs)}" for i in picked))
        n, seconds, hits = child(
            _READ, worker.endpoint, str(paths_file), str(got_file), DATASET, timeout=args.timeout
        )
        got = [int(x) for x in got_file.read_text().split()]
        res["warm_files"] = int(n)
        res["warm_files_per_s"] = round(int(n) / float(seconds))
        res["warm_same_host_hits"] = int(hits)
        res["warm_verified"] = got == [digests[i] for i in picked]
        res["worker_peak_rss_mib"] = round(peak_rss_mib(worker.pid), 1)
    finally:
        worker.kill()

    log(f"{files:,} files: restart after SIGKILL, origin away …")
    away = case / "origin.away"
    origin.rename(away)
    try:
        probe = picked[0]
        t0 = time.monotonic()
        worker = WorkerProcess.start([spec], case / "worker.log", extra_args=extra, timeout=600)
        try:
            path = f"{DATASET}/{rel_path(probe, args.dirs)}"
            ok = served_from_cache(worker.endpoint, path, digests[probe], t0 + 600)
            res["restart_s"] = round(time.monotonic() - t0, 2)
            res["restart_served_from_cache"] = ok
            res["worker_rss_after_restart_mib"] = round(rss_mib(worker.pid), 1)
        finally:
            worker.kill()
    finally:
        away.rename(origin)
    res["verified"] = bool(
        res["warm_verified"]
        and res["restart_served_from_cache"]
        and res["find_files"] == res["find_held_files"] == files
        and res["gateway"]["keys"] == files
        and res["warm_same_host_hits"] >= res["warm_files"]
    )
    res["per_file"] = {
        "worker_rss_bytes": round(res["worker_rss_after_load_mib"] * 2**20 / files),
        "disk_bytes": round(disk / files),
        "load_us": round(load_s / files * 1e6, 1),
        "find_us": round(res["find_s"] / files * 1e6, 2),
    }
    if not args.keep:
        shutil.rmtree(case, ignore_errors=True)
    return res


def targets(row: dict[str, Any]) -> dict[str, bool]:
    """The issue's targets, judged on one row (they are set for 1,000,000 files)."""
    t = TARGETS
    disk_ok = row["disk_mib"] <= t["disk_overhead"] * row["data_mib"] + t["disk_slack_mib"]
    return {
        "worker_rss": max(row["worker_rss_after_load_mib"], row["worker_rss_after_find_mib"])
        <= t["worker_rss_mib"],
        "disk": disk_ok,
        "restart": row["restart_s"] <= t["restart_s"],
        "find": row["find_s"] <= t["find_s"]
        and row["find_client_rss_mib"] <= t["find_client_rss_mib"],
        "load": row["load_files_per_s"] >= t["load_files_per_s"],
        "warm": row["warm_files_per_s"] >= t["warm_files_per_s"],
        "gateway_rss": row["gateway"]["peak_rss_mib"] <= t["gateway_rss_mib"],
    }


def report(res: dict[str, Any], console: Console) -> None:
    t = Table(title=f"many small files ({res['size']} B each), local origin, one worker")
    cols: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("files", lambda r: f"{r['files']:,}"),
        ("load/s", lambda r: f"{r['load_files_per_s']:,}"),
        ("worker MiB¹", lambda r: f"{r['worker_rss_after_load_mib']:.0f}/"
         f"{r['worker_rss_after_find_mib']:.0f}/{r['worker_rss_after_restart_mib']:.0f}"),
        ("disk MiB²", lambda r: f"{r['disk_mib']:,.0f} ({r['data_mib']:,.0f})"),
        ("find s³", lambda r: f"{r['find_s']:.1f} ({r['find_client_rss_mib']:.0f})"),
        ("held⁴", lambda r: f"{r['find_held_s']:.1f}"),
        ("warm/s", lambda r: f"{r['warm_files_per_s']:,}"),
        ("S3 list s³", lambda r: f"{r['gateway']['seconds']:.1f} "
         f"({r['gateway']['peak_rss_mib']:.0f})"),
        ("restart s", lambda r: f"{r['restart_s']:.1f}"),
        ("ok", lambda r: str(r["verified"])),
    ]  # fmt: skip
    for name, _ in cols:
        t.add_column(name, justify="right")
    for row in res["rows"]:
        t.add_row(*(fmt(row) for _, fmt in cols))
    console.print(t)
    console.print(
        "¹ after the load / after find / after a restart; ² the cache (data); ³ (peak RSS MiB of "
        "the client / the S3 gateway); ⁴ a second find, from the listing the first left"
    )
    for row in res["rows"]:
        p = row["per_file"]
        met = targets(row)
        console.print(
            f"{row['files']:,} files, per file: worker RSS {p['worker_rss_bytes']:,} B, disk "
            f"{p['disk_bytes']:,} B, load {p['load_us']} µs, find {p['find_us']} µs; targets "
            "(set at 1,000,000): "
            + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in met.items())
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tidepool_lab.bench.scale", description=__doc__)
    p.add_argument(
        "--files", type=int, action="append", help="files in the dataset (repeat for more rows; "
        "default 100000)"
    )  # fmt: skip
    p.add_argument("--size", type=int, default=1024, help="bytes per file (default 1024)")
    p.add_argument("--dirs", type=int, default=100, help="directories (default 100)")
    p.add_argument("--sample", type=int, default=20_000, help="files read warm (default 20000)")
    p.add_argument("--timeout", type=float, default=3600.0, help="per step, seconds")
    p.add_argument("--workdir", type=Path, default=None, help="work here (kept)")
    p.add_argument("--keep", action="store_true", help="keep each case's files")
    p.add_argument("--json", type=Path, default=Path("out/scale.json"), help="results (JSON)")
    args = p.parse_args(argv)
    sizes = args.files or [100_000]
    if any(n < 1 for n in sizes) or args.size < 1 or args.dirs < 1 or args.sample < 1:
        p.error("--files, --size, --dirs and --sample must be at least 1")
    console = Console(width=None if sys.stdout.isatty() else 110)
    res: dict[str, Any] = {"size": args.size, "dirs": args.dirs, "targets": TARGETS, "rows": []}
    with workdir(args.workdir, "tidepool-bench-scale-") as work:
        for n in sizes:
            res["rows"].append(run_case(n, args, work, lambda m: console.print(m)))
    res["verified"] = all(r["verified"] for r in res["rows"])
    report(res, console)
    write_results(res, args.json, console)
    return 0 if res["verified"] else 1


if __name__ == "__main__":
    sys.exit(main())
