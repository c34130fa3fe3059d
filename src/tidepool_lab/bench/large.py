"""Large files (issue 18): one model-sized file read as a user reads it, side by side in one run.

``python -m tidepool_lab.bench.large --json out/large.json`` builds one S3 origin (juicefs gateway)
behind the emulated WAN (40 ms RTT, 100 Mbit/s by default) holding one ``--big-mib`` MiB file, and
reads it with ``f = fsspec.open(...); f.read(1 MiB)`` (the first byte) then ``f.read(4 MiB)`` in a
loop, through:

* direct s3fs (every read crosses the WAN);
* fsspec's ``filecache`` over s3fs (the whole file is downloaded on open, then a local file);
* Tidepool's ``tidepool://`` on the worker's host (same-host fast path), cold then warm;
* Tidepool over HTTP (``local_reads=False``: what another host of the pool sees), warm;
* Tidepool's FUSE mount, warm, ``dd bs=4M`` with the kernel's page cache of the file dropped
  first (every byte crosses FUSE);
* random 4 KiB reads of the warm file (issue 14): through ``tidepool://`` on the worker's host and
  through the mount (a ``pread`` loop, and ``fio --rw=randread --bs=4k`` when fio is installed);
* layout (issue 18): the same file stored both ways a worker stores it, as page files and as one
  extent, by one page store in this process, one after the other (same memory state), then read
  through the client's same-host reader as ``tidepool://`` reads it, alternating;
* memory: a ``--huge-gib`` GiB file read cold through a worker whose only tier is a MEM tier of
  ``--mem-gib`` GiB (origin on loopback, not the WAN, so it takes a minute, not an hour): the
  peak RSS of the worker and of the reading client process.

Every byte of every case is verified (xxh3 against the origin data). Warm rows are the median of
``--repeats`` runs; Tidepool's same-host runs alternate with fsspec filecache's, so both meet
the same machine, after both caches' files were written back, dropped from the kernel's page cache
and read back once, uncounted (:func:`refill_page_cache`: how the kernel cached a file while it
was written differs by when it was written, and changes a warm read by half). It
prints a table and writes JSON; compare the ratios of one run, not absolute
figures across runs or machines.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import fsspec
import xxhash
from rich.console import Console
from rich.table import Table

from tidepool.client import TidepoolFileSystem
from tidepool.client.local import LocalFile, LocalLayout, LocalReader
from tidepool.core.pages import PageKey, file_key
from tidepool.spec.config import TierConfig
from tidepool.store import PageStore
from tidepool_lab.bench.fuse import drop_kernel_pages, fuse_process
from tidepool_lab.bench.run import bench_spec, big_read, peak_rss_mib, workdir, write_results
from tidepool_lab.testbed.s3server import S3Server
from tidepool_lab.testbed.s3util import storage_options
from tidepool_lab.testbed.wan import WanRelay
from tidepool_lab.testbed.workerproc import WorkerProcess

MiB = 1 << 20
BUCKET = "bench"
KEY = "data/models/big.bin"
FIRST = 1 * MiB
CHUNK = 4 * MiB
TARGETS = {
    "cold_first_byte_s": 0.5,
    "cold_link_fraction": 0.95,
    "warm_local_mb_per_s": 2000.0,
    "warm_http_mb_per_s": 1400.0,
    "warm_mount_mb_per_s": 1500.0,
    "huge_rss_mib": 300.0,
    "random_local_reads_per_s": 20_000.0,
    "random_mount_iops": 12_000.0,
}


def _blocks(size: int, seed: int) -> Iterator[bytes]:
    """Deterministic incompressible bytes, 4 MiB at a time."""
    h = hashlib.sha512(seed.to_bytes(8, "little"))
    block = bytearray()
    left = size
    while left:
        while len(block) < 4 * MiB:
            h.update(block[-64:] or b"x")
            block += h.digest() * 256
        out = bytes(block[: min(left, 4 * MiB)])
        block = block[len(out) :]
        left -= len(out)
        yield out


def write_file(path: Path, size: int, seed: int) -> int:
    """Write ``size`` deterministic bytes to ``path``; their xxh3 digest."""
    h = xxhash.xxh3_64()
    with open(path, "wb") as f:
        for block in _blocks(size, seed):
            h.update(block)
            f.write(block)
    return h.intdigest()


def read_through(opener: Callable[[], Any], size: int, digest: int) -> dict[str, Any]:
    """``open``, ``read(1 MiB)`` (the first byte), then ``read(4 MiB)`` to the end, every byte
    verified (:func:`~tidepool_lab.bench.run.big_read`)."""
    return big_read(opener, size, digest, chunk=CHUNK, first=FIRST)


def read_into(path: Path, size: int, digest: int) -> dict[str, Any]:
    """A plain local file read with ``readinto`` 4 MiB at a time (the disk's own figure)."""
    h = xxhash.xxh3_64()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    n = 0
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while got := f.readinto(buf):
            h.update(view[:got])
            n += got
    total = time.perf_counter() - t0
    return {
        "seconds": round(total, 3),
        "mb_per_s": round(n / total / 1e6, 1),
        "verified": n == size and h.intdigest() == digest,
    }


def settle(cache: Path, timeout: float = 30.0) -> None:
    """Wait until the worker has written what the cold read fetched (no temp file left in its
    tiers for a second: pages written, the extent made)."""
    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    while time.monotonic() < deadline:
        busy = any(p.is_file() for p in cache.rglob("tmp/*"))
        now = time.monotonic()
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= 1.0:
            return
        time.sleep(0.05)


def refill_page_cache(roots: list[Path]) -> None:
    """Write back and drop the kernel's page cache of every file below ``roots`` (fsspec
    filecache's copy and Tidepool's pages/extent), so that the warm runs find both filled the
    same way, by reading, rather than however the kernel cached each while it was written.

    Measured (``/proc/kpageflags``): after one run, filecache's file sat in 107 2 MiB folios,
    written early in the run; Tidepool's extent, written later by the worker, mostly in 4 KiB
    folios, and a plain ``read()`` of it ran at 5,285 MB/s; dropped and read back: 113 2 MiB
    folios, 8,249 MB/s. Without this the warm rows compare when each file was written."""
    for root in roots:
        for path in root.rglob("*"):
            if not path.is_file() or path.is_symlink():
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    best = sorted(runs, key=lambda r: r["mb_per_s"])[len(runs) // 2]
    return {
        **best,
        "runs_mb_per_s": [r["mb_per_s"] for r in runs],
        "verified": all(r["verified"] for r in runs),
    }


def dd_read(path: Path, size: int, digest: int) -> dict[str, Any]:
    """``dd bs=4M`` through the mount (timed), then the same bytes verified (not timed)."""
    drop_kernel_pages(path.parent, [path.name])
    t0 = time.perf_counter()
    subprocess.run(
        ["dd", f"if={path}", "of=/dev/null", "bs=4M"], check=True, capture_output=True, timeout=600
    )
    total = time.perf_counter() - t0
    check = read_into(path, size, digest)
    return {
        "seconds": round(total, 3),
        "mb_per_s": round(size / total / 1e6, 1),
        "verified": check["verified"],
    }


def random_reads(
    read: Callable[[int], bytes], size: int, expect: Callable[[int], bytes], n: int = 20_000
) -> dict[str, Any]:
    """``n`` reads of 4 KiB at random 4 KiB-aligned offsets (after one warm-up pass over the
    same offsets): reads/s, every one compared with the origin's bytes (outside the clock)."""
    rng = random.Random(4096)
    offsets = [rng.randrange(size // 4096) * 4096 for _ in range(n)]
    for off in offsets[: n // 10]:
        read(off)
    got = []
    t0 = time.perf_counter()
    for off in offsets:
        got.append(read(off))
    seconds = time.perf_counter() - t0
    bad = sum(g != expect(off) for g, off in zip(got, offsets, strict=True))
    return {"reads": n, "reads_per_s": round(n / seconds), "verified": bad == 0}


def fio_randread(path: Path) -> dict[str, Any] | None:
    """``fio --rw=randread --bs=4k`` for 5 s on ``path`` (kernel cache dropped first), or None
    when fio is not installed."""
    fio = shutil.which("fio")
    if fio is None:
        return None
    drop_kernel_pages(path.parent, [path.name])
    out = subprocess.run(
        [
            fio,
            "--name=randread",
            f"--filename={path}",
            "--rw=randread",
            "--bs=4k",
            "--runtime=5",
            "--time_based",
            "--ioengine=psync",
            "--readonly",
            "--output-format=json",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return {"iops": round(json.loads(out.stdout)["jobs"][0]["read"]["iops"])}


_CLIENT = """
import sys, xxhash
from tidepool.client import TidepoolFileSystem
fs = TidepoolFileSystem(sys.argv[1], local_reads=False, skip_instance_cache=True)
h, n = xxhash.xxh3_64(), 0
with fs.open(sys.argv[2]) as f:
    while data := f.read(4 << 20):
        h.update(data); n += len(data)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(n, h.intdigest(), int(hwm) // 1024)
"""


def layout_case(work: Path, size: int, repeats: int) -> dict[str, Any]:
    """The same ``size``-byte file as page files and as one extent, read alike (see the module
    docstring): ``{"pages": run, "extent": run, "ratio": extent/pages}``."""
    blob = b"".join(_blocks(size, 19))
    digest = xxhash.xxh3_64_intdigest(blob)
    root = work / "layout"
    store = PageStore(
        [TierConfig("SSD", str(root / "tier"), quota=4 * size, high=1.0, low=1.0)],
        root / "state",
        dataset="ab",
        page_size=MiB,
        flush_interval=None,
        extent_min_bytes=2 * MiB,
    )
    try:
        for name, whole in (("pages.bin", None), ("extent.bin", size)):
            fkey = file_key("ab", name, "v1")
            for i in range(-(-size // MiB)):
                page = blob[i * MiB : (i + 1) * MiB]
                store.put(PageKey("ab", fkey, i), page, file_size=whole)
            where = store.locate(PageKey("ab", fkey, 0))
            if where is None or (where.suffix == ".x") != (whole is not None):
                raise RuntimeError(f"layout case: {name} is not stored as intended ({where})")
        del blob
        reader = LocalReader({"ab": LocalLayout("ab", MiB, tuple(store.tier_roots()))})

        def opener(name: str) -> Callable[[], Any]:
            return lambda: _LocalFileReader(LocalFile(reader, "ab", name, "v1", size))

        runs: dict[str, list[dict[str, Any]]] = {"pages": [], "extent": []}
        read_through(opener("pages.bin"), size, digest)  # each page checked once, uncounted
        read_through(opener("extent.bin"), size, digest)
        for _ in range(repeats):
            for case in runs:
                runs[case].append(read_through(opener(f"{case}.bin"), size, digest))
        out: dict[str, Any] = {case: median_run(r) for case, r in runs.items()}
        out["ratio"] = round(out["extent"]["mb_per_s"] / out["pages"]["mb_per_s"], 3)
        return out
    finally:
        store.close()


class _LocalFileReader:
    """``read(n)`` over a :class:`LocalFile`, as an open ``tidepool://`` file reads it."""

    def __init__(self, local: LocalFile) -> None:
        self._local = local
        self._pos = 0

    def read(self, n: int) -> bytes:
        data = self._local.read(self._pos, self._pos + n)
        if data is None:
            raise RuntimeError("the layout case's file is not on local disk")
        self._pos += len(data)
        return data

    def __enter__(self) -> _LocalFileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._local.close()


def huge_case(
    server: S3Server, work: Path, gib: int, mem_gib: int, log: Callable[[str], None]
) -> dict[str, Any]:
    """A ``gib`` GiB file read cold through a MEM tier of ``mem_gib`` GiB (origin on loopback)."""
    size = gib << 30
    log(f"memory: writing and uploading a {gib} GiB file …")
    src = work / "huge.bin"
    digest = write_file(src, size, 4242)
    client = server.boto3_client()
    client.upload_file(str(src), BUCKET, "data/huge/huge.bin")
    src.unlink()
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else work
    mem_dir = Path(tempfile.mkdtemp(prefix="tidepool-bench-mem-", dir=shm))
    try:
        spec = bench_spec(
            server, server.endpoint, mem_dir, f"{mem_gib}Gi", name="huge", prefix="huge/"
        )
        spec_file = replace(spec, medium="MEM").write(work / "huge.yaml")
        with WorkerProcess.start([spec_file], work / "worker-huge.log") as w:
            log(f"memory: reading it through a {mem_gib} GiB MEM tier …")
            t0 = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", _CLIENT, w.endpoint, "huge/huge.bin"],
                check=True,
                capture_output=True,
                text=True,
                timeout=1800,
            )
            seconds = time.perf_counter() - t0
            n, got, client_rss = (int(x) for x in out.stdout.split())
            return {
                "gib": gib,
                "mem_tier_gib": mem_gib,
                "seconds": round(seconds, 2),
                "mb_per_s": round(size / seconds / 1e6, 1),
                "worker_peak_rss_mib": peak_rss_mib(w.pid),
                "client_peak_rss_mib": float(client_rss),
                "verified": n == size and got == digest,
            }
    finally:
        shutil.rmtree(mem_dir, ignore_errors=True)


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    link_bps = args.rate_mbit * 1e6 / 8
    res: dict[str, Any] = {
        "wan": {"rtt_ms": args.rtt_ms, "rate_mbit": args.rate_mbit},
        "big_mib": args.big_mib,
        "targets": TARGETS,
    }
    size = args.big_mib * MiB
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(workdir(args.workdir, "tidepool-bench-large-"))
        log(f"preparing a {args.big_mib} MiB file on the S3 origin …")
        server = stack.enter_context(S3Server.start(work / "s3"))
        server.create_bucket(BUCKET)
        src = work / "big.bin"
        digest = write_file(src, size, 18)
        server.boto3_client().upload_file(str(src), BUCKET, KEY)
        res["local_disk"] = median_run([read_into(src, size, digest) for _ in range(args.repeats)])
        src.unlink()
        port = int(server.endpoint.rsplit(":", 1)[1])
        relay = stack.enter_context(
            WanRelay.start(("127.0.0.1", port), rtt_ms=args.rtt_ms, rate_mbit=args.rate_mbit)
        )
        opts = storage_options(relay.endpoint, server.access_key, server.secret_key)
        url = f"s3://{BUCKET}/{KEY}"

        filecache: Callable[[], Any] | None = None
        if not args.skip_direct:
            log("direct s3fs over the WAN …")
            res["direct"] = read_through(
                lambda: fsspec.open(url, "rb", **opts).open(), size, digest
            )
            log("fsspec filecache over s3fs: cold (downloads the file on open), warm …")
            fc_dir = work / "filecache"

            def filecache() -> Any:
                return fsspec.open(
                    f"filecache::{url}", "rb", s3=opts, filecache={"cache_storage": str(fc_dir)}
                ).open()

            res["filecache_cold"] = read_through(filecache, size, digest)

        spec = bench_spec(server, relay.endpoint, work / "cache", "8Gi", prefix="models/")
        spec = replace(spec, prefetch="off")  # the file itself, read as the user reads it
        spec_file = spec.write(work / "bench.yaml")
        worker = stack.enter_context(WorkerProcess.start([spec_file], work / "worker.log"))
        log("Tidepool cold (tidepool:// on the worker's host) …")
        local = TidepoolFileSystem(worker.endpoint, skip_instance_cache=True)
        path = "bench/big.bin"
        res["tidepool_cold"] = read_through(lambda: local.open(path), size, digest)
        local.invalidate_cache()
        log("Tidepool warm: same host (alternating with fsspec filecache), HTTP, the mount …")
        settle(work / "cache")
        refill_page_cache([work / "cache", work / "filecache"])
        read_through(lambda: local.open(path), size, digest)  # pages checked once, uncounted
        if filecache is not None:
            read_through(filecache, size, digest)  # its page cache refilled the same way
        tp_runs, fc_runs = [], []
        for _ in range(args.repeats):  # one after the other, so both see the same machine
            tp_runs.append(read_through(lambda: local.open(path), size, digest))
            if filecache is not None:
                fc_runs.append(read_through(filecache, size, digest))
        res["tidepool_warm_local"] = median_run(tp_runs)
        if fc_runs:
            res["filecache_warm"] = median_run(fc_runs)
        http = TidepoolFileSystem(worker.endpoint, local_reads=False, skip_instance_cache=True)
        res["tidepool_warm_http"] = median_run(
            [read_through(lambda: http.open(path), size, digest) for _ in range(args.repeats)]
        )
        log("random 4 KiB reads, warm: tidepool:// on the worker's host, the mount …")
        ref = b"".join(_blocks(size, 18))

        def expect(off: int) -> bytes:
            return ref[off : off + 4096]

        with local.open(path) as f:

            def tp_read(off: int) -> bytes:
                f.seek(off)
                return f.read(4096)  # type: ignore[no-any-return]

            res["random_local"] = random_reads(tp_read, size, expect)
        if not args.skip_mount:
            mnt = work / "mnt"
            env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
            cmd = [sys.executable, "-m", "tidepool.fuse", "--endpoint", worker.endpoint, "bench"]
            with fuse_process([*cmd, str(mnt)], mnt, work / "mount.log", env):
                res["tidepool_warm_mount"] = median_run(
                    [dd_read(mnt / "big.bin", size, digest) for _ in range(args.repeats)]
                )
                drop_kernel_pages(mnt, ["big.bin"])
                fd = os.open(mnt / "big.bin", os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
                    res["random_mount"] = random_reads(
                        lambda off: os.pread(fd, 4096, off), size, expect
                    )
                finally:
                    os.close(fd)
                fio = fio_randread(mnt / "big.bin")
                if fio is not None:
                    res["random_mount"]["fio_iops"] = fio["iops"]
        res["worker_peak_rss_mib"] = peak_rss_mib(worker.pid)
        res["cold_link_fraction"] = round(res["tidepool_cold"]["mb_per_s"] * 1e6 / link_bps, 3)
        log("layout: the same file as page files and as one extent, read alike …")
        res["layout"] = layout_case(work, size, args.repeats)
        if args.huge_gib:
            res["huge"] = huge_case(server, work, args.huge_gib, args.mem_gib, log)
    res["verified"] = all(v.get("verified", True) for v in res.values() if isinstance(v, dict))
    return res


def targets(res: dict[str, Any]) -> dict[str, bool]:
    """Which of issue 18's targets this run met."""
    out = {
        "cold_first_byte": res["tidepool_cold"]["first_byte_s"] <= TARGETS["cold_first_byte_s"],
        "cold_rate": res["cold_link_fraction"] >= TARGETS["cold_link_fraction"],
        "warm_local": res["tidepool_warm_local"]["mb_per_s"] >= TARGETS["warm_local_mb_per_s"]
        and res["tidepool_warm_local"]["mb_per_s"]
        >= res.get("filecache_warm", {}).get("mb_per_s", 0.0),
        "warm_http": res["tidepool_warm_http"]["mb_per_s"] >= TARGETS["warm_http_mb_per_s"],
    }
    if "tidepool_warm_mount" in res:
        out["warm_mount"] = res["tidepool_warm_mount"]["mb_per_s"] >= TARGETS["warm_mount_mb_per_s"]
    if "random_local" in res:
        r = res["random_local"]
        out["random_local"] = r["reads_per_s"] >= TARGETS["random_local_reads_per_s"]
    if "random_mount" in res:
        r = res["random_mount"]
        out["random_mount"] = r.get("fio_iops", r["reads_per_s"]) >= TARGETS["random_mount_iops"]
    if "huge" in res:
        h = res["huge"]
        out["huge_rss"] = max(h["worker_peak_rss_mib"], h["client_peak_rss_mib"]) <= TARGETS[
            "huge_rss_mib"
        ] and bool(h["verified"])
    return out


def report(res: dict[str, Any], console: Console) -> None:
    t = Table(
        title=f"{res['big_mib']} MiB file, WAN {res['wan']['rtt_ms']:.0f} ms / "
        f"{res['wan']['rate_mbit']:.0f} Mbit/s"
    )
    for col in ("case", "first byte (s)", "MB/s", "runs (MB/s)", "verified"):
        t.add_column(col, justify="left" if col == "case" else "right")
    rows = [
        ("local disk, readinto 4 MiB", "local_disk"),
        ("direct s3fs", "direct"),
        ("fsspec filecache, cold", "filecache_cold"),
        ("fsspec filecache, warm", "filecache_warm"),
        ("Tidepool cold (tidepool://)", "tidepool_cold"),
        ("Tidepool warm, same host", "tidepool_warm_local"),
        ("Tidepool warm, HTTP", "tidepool_warm_http"),
        ("Tidepool warm, mount dd bs=4M", "tidepool_warm_mount"),
    ]
    for label, key in rows:
        r = res.get(key)
        if r is None:
            continue
        first = r.get("first_byte_s")
        t.add_row(
            label,
            "" if first is None else f"{first:.3f}",
            f"{r['mb_per_s']:,.1f}",
            " ".join(f"{x:,.0f}" for x in r.get("runs_mb_per_s", [])),
            str(r["verified"]),
        )
    console.print(t)
    console.print(f"cold rate: {res['cold_link_fraction']:.1%} of the link")
    for key, label in (("random_local", "tidepool:// same host"), ("random_mount", "mount")):
        if key in res:
            r = res[key]
            fio = f", fio randread {r['fio_iops']:,} IOPS" if "fio_iops" in r else ""
            console.print(
                f"random 4 KiB reads, warm, {label}: {r['reads_per_s']:,}/s{fio}, "
                f"verified {r['verified']}"
            )
    if "layout" in res:
        lay = res["layout"]
        console.print(
            f"layout, same host, same process: page files {lay['pages']['mb_per_s']:,.0f} MB/s, "
            f"one extent {lay['extent']['mb_per_s']:,.0f} MB/s ({lay['ratio']:.2f}x)"
        )
    if "huge" in res:
        h = res["huge"]
        console.print(
            f"{h['gib']} GiB through a {h['mem_tier_gib']} GiB MEM tier: peak RSS worker "
            f"{h['worker_peak_rss_mib']:.0f} MiB, client {h['client_peak_rss_mib']:.0f} MiB, "
            f"{h['mb_per_s']:.0f} MB/s, verified {h['verified']}"
        )
    met = targets(res)
    console.print(
        "targets: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in met.items())
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tidepool_lab.bench.large", description=__doc__)
    p.add_argument("--big-mib", type=int, default=256, help="file size, MiB (default 256)")
    p.add_argument("--rtt-ms", type=float, default=40.0, help="emulated WAN round trip, ms")
    p.add_argument("--rate-mbit", type=float, default=100.0, help="emulated WAN rate, Mbit/s")
    p.add_argument("--repeats", type=int, default=5, help="runs of each warm case (median)")
    p.add_argument("--huge-gib", type=int, default=4, help="the memory case's file, GiB (0: skip)")
    p.add_argument("--mem-gib", type=int, default=1, help="the memory case's MEM tier, GiB")
    p.add_argument("--skip-direct", action="store_true", help="skip direct s3fs and filecache")
    p.add_argument("--skip-mount", action="store_true", help="skip the FUSE mount case")
    p.add_argument("--workdir", type=Path, default=None, help="keep the files here")
    p.add_argument("--json", type=Path, default=Path("out/large.json"), help="results (JSON)")
    args = p.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 110)
    res = run(args, lambda m: console.print(m))
    report(res, console)
    write_results(res, args.json, console)
    return 0 if res["verified"] else 1


if __name__ == "__main__":
    sys.exit(main())
