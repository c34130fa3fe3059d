"""The first epoch: how a cold cache reads a dataset it has never seen, side by side with direct.

Part of ``tidepool bench`` (the ``first-epoch`` section; ``--only first-epoch`` runs it alone).
Every case starts a fresh worker on an empty cache in front of the same emulated WAN and reads the
small-file dataset once, every byte checked against the origin's MD5:

* ``listing``   — one reader, listing order, no hints (default policy ``dataset``);
* ``shuffled``  — one reader, a seeded random order, no hints (default policy);
* ``forked``    — 4 reader processes forked from one client created before the fork, shuffled;
* ``hinted``    — one reader that announces its order first (``fs.prefetch``), shuffled, with
  the ``pattern`` policy (no whole-dataset warm-up: the hints alone);
* ``listing_pattern`` / ``shuffled_pattern`` — the first two with the ``pattern`` policy: what
  the walk detector does alone (a shuffled reader then gets no help, by design);
* ``fuse``      — ``md5sum`` of the cold directory through the FUSE mount (when FUSE works here);
* ``bigger``    — random reads of 5 % of a dataset four times larger than the cache quota: the
  WAN bytes against the bytes read, and whether what was read is still cached;
* ``cut``       — the link cut in the middle of the prefetch: reads of cached files (errors?), and
  how long after the link's return prefetch is running again;
* ``load``      — ``tidepool load`` of the dataset, against the link rate.

For each: seconds, WAN bytes (the relay's count, both directions' payload towards the edge) as a
multiple of the dataset, and the worker's prefetch figures.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tidepool.client import TidepoolFileSystem
from tidepool_lab.testbed.s3server import S3Server
from tidepool_lab.testbed.wan import WanRelay
from tidepool_lab.testbed.workerproc import WorkerProcess

DATASET = "bench"
PREFIX = "small/"
"""The epoch's files are ``small/...`` at the origin and the dataset is rooted there."""


def _rel(name: str) -> str:
    return name.removeprefix(PREFIX)


def _verify(data: dict[str, bytes], md5s: dict[str, str]) -> bool:
    return all(hashlib.md5(v).hexdigest() == md5s[k] for k, v in data.items())


MakeSpec = Callable[[Path, str, str | None], Path]
"""``(cache dir, quota, prefetch policy or None) -> spec file``."""


@contextlib.contextmanager
def fresh_worker(
    make_spec: MakeSpec, work: Path, name: str, quota: str = "8Gi", prefetch: str | None = None
) -> Iterator[WorkerProcess]:
    """A worker on an empty cache of its own."""
    cache = work / f"cache-{name}"
    shutil.rmtree(cache, ignore_errors=True)
    spec = make_spec(cache, quota, prefetch)
    with WorkerProcess.start([spec], work / f"worker-{name}.log") as worker:
        yield worker
    shutil.rmtree(cache, ignore_errors=True)


def _prefetch_status(fs: TidepoolFileSystem) -> dict[str, Any]:
    raw = fs.status(DATASET, refresh=False)["raw"]
    return dict(raw.get("prefetch") or {})


def _read_all(fs: TidepoolFileSystem, order: list[str]) -> tuple[float, dict[str, bytes]]:
    got: dict[str, bytes] = {}
    t0 = time.perf_counter()
    for p in order:
        got[p] = fs.cat_file(f"{DATASET}/{_rel(p)}")
    return time.perf_counter() - t0, got


def _forked_reader(fs: TidepoolFileSystem, paths: list[str], conn: Any) -> None:
    try:
        out = {p: hashlib.md5(fs.cat_file(f"{DATASET}/{_rel(p)}")).hexdigest() for p in paths}
        conn.send(out)
    except BaseException as exc:
        conn.send({"error": repr(exc)})
    finally:
        conn.close()


def _forked(fs: TidepoolFileSystem, order: list[str], readers: int) -> tuple[float, dict[str, str]]:
    ctx = multiprocessing.get_context("fork")
    parts = [order[i::readers] for i in range(readers)]
    t0 = time.perf_counter()
    procs, pipes = [], []
    for part in parts:
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_forked_reader, args=(fs, part, child))
        p.start()
        child.close()
        procs.append(p)
        pipes.append(parent)
    sums: dict[str, str] = {}
    for pipe in pipes:
        answer = pipe.recv()
        if "error" in answer:
            raise RuntimeError(f"a forked reader failed: {answer['error']}")
        sums.update(answer)
    for p in procs:
        p.join(30)
    return time.perf_counter() - t0, sums


def _case(
    seconds: float, ok: bool, wan: int, dataset_bytes: int, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "seconds": round(seconds, 3),
        "verified": ok,
        "wan_bytes": wan,
        "wan_x_dataset": round(wan / dataset_bytes, 3) if dataset_bytes else None,
        **(extra or {}),
    }


def run_first_epoch(
    *,
    server: S3Server,
    relay: WanRelay,
    work: Path,
    make_spec: MakeSpec,
    names: list[str],
    md5s: dict[str, str],
    file_bytes: int,
    link_bps: float,
    seed: int = 7,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    res: dict[str, Any] = {}
    dataset_bytes = file_bytes * len(names)
    shuffled = list(names)
    random.Random(seed).shuffle(shuffled)

    def wan() -> int:
        return int(relay.stats()["bytes_down"])

    for label, order, hinted, policy in (
        ("listing", names, False, None),
        ("listing_pattern", names, False, "pattern"),
        ("shuffled", shuffled, False, None),
        ("shuffled_pattern", shuffled, False, "pattern"),
        ("hinted", shuffled, True, "pattern"),
    ):
        log(f"first epoch, {label} …")
        with fresh_worker(make_spec, work, label, prefetch=policy) as worker:
            fs = TidepoolFileSystem(worker.endpoint, skip_instance_cache=True)
            fs.find(DATASET)
            before = wan()
            t0 = time.perf_counter()
            if hinted:
                fs.prefetch([f"{DATASET}/{_rel(p)}" for p in order])
            took, got = _read_all(fs, order)
            took = time.perf_counter() - t0
            res[label] = _case(
                took,
                _verify(got, md5s),
                wan() - before,
                dataset_bytes,
                {"prefetch": _prefetch_status(fs)},
            )

    log("first epoch, 4 forked readers sharing one client …")
    with fresh_worker(make_spec, work, "forked") as worker:
        fs = TidepoolFileSystem(worker.endpoint, skip_instance_cache=True)
        fs.find(DATASET)
        before = wan()
        took, sums = _forked(fs, shuffled, 4)
        ok = all(sums[p] == md5s[p] for p in names)
        res["forked"] = _case(took, ok, wan() - before, dataset_bytes)

    fuse = _fuse_case(make_spec, work, names, md5s, wan, dataset_bytes, log)
    if fuse is not None:
        res["fuse"] = fuse

    log("random reads of 5 % of a dataset 4x the cache …")
    quota_mib = max(1, dataset_bytes // 4 // (1 << 20))
    with fresh_worker(make_spec, work, "bigger", quota=f"{quota_mib}Mi") as worker:
        fs = TidepoolFileSystem(worker.endpoint, skip_instance_cache=True)
        fs.find(DATASET)
        picks = random.Random(seed + 1).sample(names, max(1, len(names) // 20))
        before = wan()
        took, got = _read_all(fs, picks)
        read_bytes = sum(len(v) for v in got.values())
        spent = wan() - before
        again = wan()
        _, got_again = _read_all(fs, picks)  # what was read must still be cached: no WAN byte
        res["bigger"] = {
            "seconds": round(took, 3),
            "verified": _verify(got, md5s) and _verify(got_again, md5s),
            "bytes_read": read_bytes,
            "wan_bytes": spent,
            "wan_x_read": round(spent / read_bytes, 3),
            "reread_wan_bytes": wan() - again,
            "quota_mib": quota_mib,
        }

    log("link cut in the middle of the prefetch …")
    with fresh_worker(make_spec, work, "cut") as worker:
        fs = TidepoolFileSystem(worker.endpoint, skip_instance_cache=True)
        fs.find(DATASET)
        first = names[: len(names) // 10]
        _read_all(fs, first)  # starts the dataset's warm-up
        time.sleep(1.0)
        relay.set_link(False)
        cached_errors = 0
        try:
            for p in first:  # read before the cut: cached
                try:
                    if hashlib.md5(fs.cat_file(f"{DATASET}/{_rel(p)}")).hexdigest() != md5s[p]:
                        cached_errors += 1
                except OSError:
                    cached_errors += 1
            time.sleep(3.0)
        finally:
            relay.set_link(True)
        back = time.perf_counter()
        bytes_at_return = _prefetch_status(fs).get("bytes", 0)
        resumed = None
        while time.perf_counter() - back < 30:
            if _prefetch_status(fs).get("bytes", 0) > bytes_at_return:
                resumed = time.perf_counter() - back
                break
            time.sleep(0.1)
        took, got = _read_all(fs, names)
        res["cut"] = {
            "cached_read_errors": cached_errors,
            "resumed_after_s": None if resumed is None else round(resumed, 2),
            "verified": _verify(got, md5s),
        }

    log("tidepool load of the dataset …")
    with fresh_worker(make_spec, work, "load") as worker:
        fs = TidepoolFileSystem(worker.endpoint, skip_instance_cache=True)
        before = wan()
        t0 = time.perf_counter()
        job = fs.start_load(DATASET, [""])
        while job["phase"] not in ("Complete", "Incomplete", "Failed"):
            time.sleep(0.02)
            job = fs.load_progress(job["id"])
        took = time.perf_counter() - t0
        res["load"] = _case(
            took,
            job["phase"] == "Complete",
            wan() - before,
            dataset_bytes,
            {"link_fraction": round(job["bytes_done"] / took / link_bps, 3)},
        )
    return res


def _fuse_case(
    make_spec: MakeSpec,
    work: Path,
    names: list[str],
    md5s: dict[str, str],
    wan: Callable[[], int],
    dataset_bytes: int,
    log: Callable[[str], None],
) -> dict[str, Any] | None:
    if not shutil.which("fusermount3") or not os.path.exists("/dev/fuse") or os.geteuid() != 0:
        log("first epoch through FUSE: skipped (needs root and fuse3)")
        return None
    log("first epoch, md5sum through the FUSE mount …")
    with fresh_worker(make_spec, work, "fuse") as worker:
        mnt = work / "mnt"
        mnt.mkdir(exist_ok=True)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tidepool.fuse",
                DATASET,
                str(mnt),
                "--endpoint",
                worker.endpoint,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 30
            while not any(mnt.iterdir()) and time.monotonic() < deadline:
                time.sleep(0.05)
            files = sorted(os.listdir(mnt))
            before = wan()
            t0 = time.perf_counter()
            out = subprocess.run(
                ["md5sum", *files], cwd=mnt, capture_output=True, check=True, timeout=600
            ).stdout.decode()
            took = time.perf_counter() - t0
            sums = {f"{PREFIX}{line.split()[1]}": line.split()[0] for line in out.splitlines()}
            ok = all(sums.get(p) == md5s[p] for p in names)
            return _case(took, ok, wan() - before, dataset_bytes)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            subprocess.run(["fusermount3", "-uz", str(mnt)], check=False, capture_output=True)
