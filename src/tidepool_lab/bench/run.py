"""``tidepool bench``: Tidepool and direct s3fs side by side, in one run, on the emulated WAN.

Rows (each a median over repeats where it is cheap to repeat):

* small files: one epoch over ``--files`` files of ``--size-kib`` KiB — direct s3fs, Tidepool cold,
  Tidepool warm over HTTP, Tidepool warm over the same-host fast path (p50/p99 per read, files/s);
* large file: ``--big-mib`` MiB read sequentially — direct s3fs, Tidepool cold (time to first
  byte, rate as a fraction of the link), warm over HTTP and over the fast path (MB/s);
* ``tidepool load`` of fresh data: rate as a fraction of the link;
* one client instance shared by ``--threads`` threads: errors and verified bytes;
* worker memory (peak RSS) while streaming a dataset ten times larger than its MEM tier.

It prints a table and writes everything as JSON. Figures are from this machine at this moment:
compare ratios within one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import xxhash
from rich.console import Console
from rich.table import Table

from tidepool.client import TidepoolFileSystem
from tidepool_lab.bench.epoch import run_first_epoch
from tidepool_lab.bench.plot import plot_bench
from tidepool_lab.demo.plot import pyplot
from tidepool_lab.testbed.s3server import S3Server
from tidepool_lab.testbed.s3util import s3fs_filesystem, upload
from tidepool_lab.testbed.specs import S3DatasetSpec
from tidepool_lab.testbed.wan import WanRelay
from tidepool_lab.testbed.workerproc import WorkerProcess

BUCKET = "bench"


def bench_spec(
    server: S3Server,
    endpoint: str,
    cache: Path,
    quota: str,
    *,
    bucket: str = BUCKET,
    name: str = "bench",
    prefix: str = "",
) -> S3DatasetSpec:
    """The benchmarks' dataset: ``s3://BUCKET/data/PREFIX`` through ``endpoint`` (the WAN relay,
    or the origin itself), keys inline, one tier at ``cache``."""
    return S3DatasetSpec(
        url=f"s3://{bucket}/data/{prefix}",
        endpoint=endpoint,
        cache=cache,
        name=name,
        credentials="inline",
        access_key=server.access_key,
        secret_key=server.secret_key,
        quota=quota,
        watermarks=("0.95", "0.7"),
    )


MiB = 1 << 20


def _rand(n: int, seed: int) -> bytes:
    # fast deterministic incompressible bytes
    out = bytearray()
    block = hashlib.sha512(seed.to_bytes(8, "little")).digest()
    h = hashlib.sha512(block)
    while len(out) < n:
        h.update(block)
        out += h.digest() * 64
    return bytes(out[:n])


def _pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, round(q * (len(v) - 1)))] if v else 0.0


def epoch(paths: list[str], read: Callable[[str], bytes], md5s: dict[str, str]) -> dict[str, Any]:
    """One pass over ``paths``; only the reads are timed, verification comes after."""
    lat = []
    got = []
    t0 = time.perf_counter()
    for p in paths:
        r0 = time.perf_counter()
        got.append(read(p))
        lat.append(time.perf_counter() - r0)
    total = time.perf_counter() - t0
    bad = sum(hashlib.md5(d).hexdigest() != md5s[p] for p, d in zip(paths, got, strict=True))
    return {
        "seconds": round(total, 4),
        "files_per_s": round(len(paths) / total, 1),
        "p50_ms": round(statistics.median(lat) * 1000, 4),
        "p99_ms": round(_pct(lat, 0.99) * 1000, 4),
        "verified": bad == 0,
    }


def big_read(
    opener: Callable[[], Any],
    size: int,
    digest: int,
    chunk: int = 8 * MiB,
    first: int = 64 * 1024,
) -> dict[str, Any]:
    """Sequential read: a first ``first``-byte read (time to first byte, the open included),
    then ``chunk`` reads to the end.

    Every byte is verified as it arrives with xxh3 against the origin data's digest (fast enough
    not to weigh on the figure, unlike MD5 at ~600 MB/s), and nothing is retained, as a real
    consumer would not retain it either.
    """
    h = xxhash.xxh3_64()
    n = 0
    t0 = time.perf_counter()
    with opener() as f:
        data = f.read(first)
        first_s = time.perf_counter() - t0
        while data:
            h.update(data)
            n += len(data)
            data = f.read(chunk)
    total = time.perf_counter() - t0
    return {
        "seconds": round(total, 3),
        "first_byte_s": round(first_s, 4),
        "mb_per_s": round(n / total / 1e6, 1),
        "verified": n == size and h.intdigest() == digest,
    }


def _cat(fs: TidepoolFileSystem, dataset: str, path: str) -> bytes:
    return fs.cat_file(f"{dataset}/{path}")


def _open_read(fs: TidepoolFileSystem, dataset: str, path: str) -> bytes:
    with fs.open(f"{dataset}/{path}") as f:
        data: bytes = f.read()
    return data


def status_mib(pid: int, field: str) -> float:
    """A memory figure of ``/proc/PID/status`` (``VmHWM``, ``VmRSS``...), MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mib(pid: int) -> float:
    """The peak resident memory (``VmHWM``) of a process, MiB."""
    return status_mib(pid, "VmHWM")


def write_results(res: dict[str, Any], path: Path, console: Console) -> None:
    """A benchmark's results as JSON at ``path`` (its directory made), and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2) + "\n")
    console.print(f"results written to {path}")


@contextlib.contextmanager
def workdir(path: Path | None, prefix: str = "tidepool-bench-") -> Iterator[Path]:
    """``path`` (created, kept), or a temporary directory removed at the end."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_bench(args: argparse.Namespace) -> int:
    console = Console(width=None if sys.stdout.isatty() else 110)  # logs: no wrapped tables
    link_bps = args.rate_mbit * 1e6 / 8
    plot = getattr(args, "plot", None)
    if plot is not None:
        pyplot()  # a missing matplotlib is said now, not after the benchmark
    res: dict[str, Any] = {
        "wan": {"rtt_ms": args.rtt_ms, "rate_mbit": args.rate_mbit},
        "files": args.files,
        "file_kib": args.size_kib,
        "big_mib": args.big_mib,
    }
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(workdir(args.workdir))
        console.print("preparing data and the S3 origin …")
        small = {f"small/f{i:05d}.bin": _rand(args.size_kib * 1024, i) for i in range(args.files)}
        big = {"big/big.bin": _rand(args.big_mib * MiB, 10**6)}
        n_load = max(1, args.load_mib * MiB // (args.size_kib * 1024))
        fresh = {
            f"load/l{i:05d}.bin": _rand(args.size_kib * 1024, 10**7 + i) for i in range(n_load // 2)
        }
        fresh["load/big.bin"] = _rand(args.load_mib * MiB // 2, 10**8)
        server = stack.enter_context(S3Server.start(work / "s3"))
        server.create_bucket(BUCKET)
        md5s = upload(server, BUCKET, ((f"data/{k}", v) for k, v in {**small, **big}.items()))
        md5s.update(upload(server, BUCKET, ((f"data/{k}", v) for k, v in fresh.items())))
        md5s = {k[len("data/") :]: v for k, v in md5s.items()}
        del fresh
        port = int(server.endpoint.rsplit(":", 1)[1])
        relay = stack.enter_context(
            WanRelay.start(("127.0.0.1", port), rtt_ms=args.rtt_ms, rate_mbit=args.rate_mbit)
        )
        spec = bench_spec(server, relay.endpoint, work / "cache", "8Gi").write(work / "bench.yaml")
        worker = stack.enter_context(WorkerProcess.start([spec], work / "worker.log"))
        names = sorted(small)
        big_name = "big/big.bin"
        big_size = len(big[big_name])
        big_digest = xxhash.xxh3_64_intdigest(big[big_name])
        del big

        # ---- direct s3fs ---------------------------------------------------------------
        if not args.skip_direct:
            console.print("direct s3fs over the WAN: small-file epoch, large file …")
            direct = s3fs_filesystem(
                relay.endpoint, server.access_key, server.secret_key, use_listings_cache=True
            )
            direct.find(f"{BUCKET}/data/small/")
            res["direct_small"] = epoch(
                names, lambda p: direct.cat_file(f"{BUCKET}/data/{p}"), md5s
            )
            if args.only == "all":
                res["direct_big"] = big_read(
                    lambda: direct.open(f"{BUCKET}/data/{big_name}", "rb", block_size=8 * MiB),
                    big_size,
                    big_digest,
                )

        # ---- the first epoch (a fresh worker per case) ---------------------------------------
        def make_spec(cache: Path, quota: str, prefetch: str | None = None) -> Path:
            # the epoch's dataset is the small files alone: warming "the whole dataset" must
            # not mean the benchmark's other data
            spec = bench_spec(server, relay.endpoint, cache, quota, prefix="small/")
            spec = replace(spec, prefetch=prefetch)
            return spec.write(work / f"{cache.name}.yaml")

        res["first_epoch"] = run_first_epoch(
            server=server,
            relay=relay,
            work=work,
            make_spec=make_spec,
            names=names,
            md5s=md5s,
            file_bytes=args.size_kib * 1024,
            link_bps=link_bps,
            log=console.print,
        )

        if args.only == "all":
            # ---- Tidepool cold ---------------------------------------------------------------
            console.print("Tidepool cold: small-file epoch, large file …")
            cold = TidepoolFileSystem(worker.endpoint, skip_instance_cache=True)
            cold.find("bench/small")
            res["cold_small"] = epoch(names, lambda p: cold.cat_file(f"bench/{p}"), md5s)
            cold_big = big_read(lambda: cold.open(f"bench/{big_name}"), big_size, big_digest)
            cold_big["link_fraction"] = round(cold_big["mb_per_s"] * 1e6 / link_bps, 3)
            res["cold_big"] = cold_big

            # ---- load ------------------------------------------------------------------------
            console.print("tidepool load of fresh data …")
            before = relay.stats()["bytes_down"]
            t0 = time.perf_counter()
            job = cold.start_load("bench", ["load"])
            while job["phase"] not in ("Complete", "Failed"):
                time.sleep(0.05)
                job = cold.load_progress(job["id"])
            load_s = time.perf_counter() - t0
            wan_bytes = relay.stats()["bytes_down"] - before
            res["load"] = {
                "phase": job["phase"],
                "files": job["files_done"],
                "bytes": job["bytes_done"],
                "seconds": round(load_s, 3),
                "wan_bytes": wan_bytes,
                "link_fraction": round(job["bytes_done"] / load_s / link_bps, 3),
            }

            # ---- Tidepool warm -----------------------------------------------------------------
            console.print("Tidepool warm: HTTP and same-host fast path …")
            for label, local in (("http", False), ("local", True)):
                fs = TidepoolFileSystem(
                    worker.endpoint, local_reads=local, skip_instance_cache=True
                )
                fs.find("bench/small")
                read = functools.partial(_cat, fs, "bench")
                runs = [epoch(names, read, md5s) for _ in range(3)]
                best = sorted(runs, key=lambda r: r["seconds"])[1]
                res[f"warm_small_{label}"] = best
                bigs = [
                    big_read(functools.partial(fs.open, f"bench/{big_name}"), big_size, big_digest)
                    for _ in range(3)
                ]
                res[f"warm_big_{label}"] = sorted(bigs, key=lambda r: r["mb_per_s"])[1]
            # as many loaders read: fsspec.open(...).read(), no listing first (a fresh client
            # each pass: what it learns of the files comes from the worker as it reads)
            runs = [
                epoch(
                    names,
                    functools.partial(
                        _open_read,
                        TidepoolFileSystem(worker.endpoint, skip_instance_cache=True),
                        "bench",
                    ),
                    md5s,
                )
                for _ in range(3)
            ]
            res["warm_small_open"] = sorted(runs, key=lambda r: r["seconds"])[1]

            # ---- threads sharing one client ------------------------------------------------------
            console.print(f"{args.threads} threads sharing one client …")
            shared = TidepoolFileSystem(worker.endpoint, skip_instance_cache=True)
            shared.find("bench/small")
            errors = 0
            verified = 0

            def read_one(p: str) -> bool:
                return hashlib.md5(shared.cat_file(f"bench/{p}")).hexdigest() == md5s[p]

            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.threads) as pool:
                futs = [pool.submit(read_one, p) for p in names * 2]
                for f in futs:
                    try:
                        verified += bool(f.result())
                    except Exception:
                        errors += 1
            res["threads"] = {
                "threads": args.threads,
                "reads": len(futs),
                "errors": errors,
                "verified": verified,
                "seconds": round(time.perf_counter() - t0, 3),
            }

            # ---- memory while streaming a dataset 10x the MEM tier --------------------------
            console.print("worker memory with a MEM tier ten times smaller than the data …")
            mem_quota = max(8 * MiB, big_size // 10)
            mem_spec = work / "mem.yaml"
            shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else work
            mem_dir = Path(tempfile.mkdtemp(prefix="tidepool-bench-mem-", dir=shm))
            stack.callback(shutil.rmtree, mem_dir, ignore_errors=True)
            mem = bench_spec(
                server, server.endpoint, mem_dir, f"{mem_quota // MiB}Mi", name="benchmem"
            )
            replace(mem, medium="MEM").write(mem_spec)
            mw = stack.enter_context(WorkerProcess.start([mem_spec], work / "worker-mem.log"))
            mfs = TidepoolFileSystem(mw.endpoint, local_reads=False, skip_instance_cache=True)
            r = big_read(lambda: mfs.open(f"benchmem/{big_name}"), big_size, big_digest)
            res["memory"] = {
                "mem_tier_mib": mem_quota // MiB,
                "data_mib": big_size // MiB,
                "worker_peak_rss_mib": round(peak_rss_mib(mw.pid), 1),
                "verified": r["verified"],
            }
            res["worker_peak_rss_mib"] = round(peak_rss_mib(worker.pid), 1)

    _report(res, console)
    write_results(res, args.json, console)
    if plot is not None:
        console.print(f"chart drawn in {plot_bench(res, plot)}")
    ok = all(v.get("verified", True) for v in res.values() if isinstance(v, dict))
    return 0 if ok and res.get("threads", {}).get("errors", 0) == 0 else 1


def _report(res: dict[str, Any], console: Console) -> None:
    t = Table(
        title="tidepool bench: small files "
        f"({res['files']} x {res['file_kib']} KiB), WAN {res['wan']['rtt_ms']:.0f} ms / "
        f"{res['wan']['rate_mbit']:.0f} Mbit/s"
    )
    for c in ("row", "epoch s", "files/s", "p50 ms", "p99 ms", "verified"):
        t.add_column(c, justify="left" if c == "row" else "right")
    for key, label in (
        ("direct_small", "direct s3fs"),
        ("cold_small", "Tidepool cold"),
        ("warm_small_http", "Tidepool warm, HTTP"),
        ("warm_small_local", "Tidepool warm, same-host"),
        ("warm_small_open", "  same-host, open().read(), never listed"),
    ):
        r = res.get(key)
        if r:
            t.add_row(
                label,
                f"{r['seconds']:.3f}",
                f"{r['files_per_s']:.0f}",
                f"{r['p50_ms']:.3f}",
                f"{r['p99_ms']:.3f}",
                str(r["verified"]),
            )
    console.print(t)
    if "first_epoch" in res:
        _report_first_epoch(res, console)
    if "cold_small" not in res:
        return
    t = Table(title=f"large file ({res['big_mib']} MiB, sequential)")
    for c in ("row", "seconds", "first byte s", "MB/s", "verified"):
        t.add_column(c, justify="left" if c == "row" else "right")
    for key, label in (
        ("direct_big", "direct s3fs"),
        ("cold_big", "Tidepool cold"),
        ("warm_big_http", "Tidepool warm, HTTP"),
        ("warm_big_local", "Tidepool warm, same-host"),
    ):
        r = res.get(key)
        if r:
            t.add_row(
                label,
                f"{r['seconds']:.2f}",
                f"{r['first_byte_s']:.3f}",
                f"{r['mb_per_s']:.0f}",
                str(r["verified"]),
            )
    console.print(t)
    ld, th, mem = res["load"], res["threads"], res["memory"]
    console.print(
        f"load: {ld['bytes'] / MiB:.0f} MiB in {ld['seconds']:.1f} s = "
        f"{ld['link_fraction'] * 100:.0f}% of the link; cold large file at "
        f"{res['cold_big']['link_fraction'] * 100:.0f}% of the link"
    )
    console.print(
        f"{th['threads']} threads, one client: {th['reads']} reads, {th['errors']} "
        f"errors, {th['verified']} verified"
    )
    console.print(
        f"worker peak RSS with a {mem['mem_tier_mib']} MiB MEM tier streaming "
        f"{mem['data_mib']} MiB: {mem['worker_peak_rss_mib']:.0f} MiB"
    )
    if "direct_small" in res:
        d, w, c = res["direct_small"], res["warm_small_http"], res["cold_small"]
        console.print(
            f"warm vs direct: {d['seconds'] / w['seconds']:.0f}x; cold vs direct: "
            f"{c['seconds'] / d['seconds']:.2f}x the time"
        )


def _report_first_epoch(res: dict[str, Any], console: Console) -> None:
    fe = res["first_epoch"]
    direct = res.get("direct_small", {}).get("seconds")
    t = Table(title="first epoch (cold cache, fresh worker per case)")
    for c in ("case", "seconds", "vs direct", "WAN x dataset", "verified"):
        t.add_column(c, justify="left" if c == "case" else "right")
    if direct:
        t.add_row("direct s3fs, listing order", f"{direct:.2f}", "1.00x", "", "")
    labels = {
        "listing": "Tidepool, listing order, no hints",
        "listing_pattern": "  same, policy pattern (walk detection alone)",
        "shuffled": "Tidepool, shuffled, no hints",
        "shuffled_pattern": "  same, policy pattern (no help by design)",
        "forked": "Tidepool, 4 forked readers, shuffled",
        "hinted": "Tidepool, order announced (policy pattern)",
        "fuse": "FUSE mount, md5sum of the directory",
        "load": "tidepool load",
    }
    for key, label in labels.items():
        r = fe.get(key)
        if r:
            ratio = f"{r['seconds'] / direct:.2f}x" if direct else ""
            t.add_row(
                label, f"{r['seconds']:.2f}", ratio, f"{r['wan_x_dataset']:.3f}", str(r["verified"])
            )
    console.print(t)
    b, cut, load = fe.get("bigger"), fe.get("cut"), fe.get("load")
    if b:
        console.print(
            f"random 5 % of a dataset 4x the cache ({b['quota_mib']} MiB quota): WAN "
            f"{b['wan_x_read']:.2f}x the bytes read; rereading them: "
            f"{b['reread_wan_bytes']} WAN bytes"
        )
    if cut:
        console.print(
            f"link cut mid-prefetch: {cut['cached_read_errors']} errors reading cached files; "
            f"prefetch running again {cut['resumed_after_s']} s after the link returned"
        )
    if load:
        console.print(f"tidepool load: {load['link_fraction'] * 100:.0f}% of the link")
