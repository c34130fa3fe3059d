"""``python -m tidepool_lab.bench.faults``: the edge-autonomy figures of issue 4, measured for real.

A real S3 origin (juicefs gateway), the user-space WAN relay in front of it (40 ms RTT,
100 Mbit/s by default) and a ``tidepool up`` worker process. Part of a dataset is warmed, then:

* **Offline** — the link is cut: share of the cached files read back in full with the right bytes
  (target 100%); time for an uncached read to fail, over many reads including the first ones after
  the cut (p50/p99/max; target p99 <= 2 s); the link is restored: time until an uncached read
  succeeds again, with no restart (target <= 10 s).
* **Restart** — a warm-up of the rest is SIGKILLed half way, the worker restarted with the link
  down: share of the bytes cached before the kill that are served with no origin read (target
  >= 99%); origin reads are counted by the worker (bytes served from the origin) and by the relay
  (bytes that crossed the link).

Prints a table and writes JSON. The node-pool network-namespace harness (issue 3) is not used yet:
the WAN is the relay, whose cut resets connections and refuses new ones.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tidepool.client import TidepoolFileSystem
from tidepool.core.errors import OriginUnavailableError
from tidepool_lab.bench.run import bench_spec, workdir, write_results
from tidepool_lab.testbed.s3server import S3Server
from tidepool_lab.testbed.s3util import upload
from tidepool_lab.testbed.wan import WanRelay
from tidepool_lab.testbed.workerproc import WorkerProcess

BUCKET = "faults"
PAGE = 256 * 1024


def _rand(n: int, seed: int) -> bytes:
    out = bytearray()
    h = hashlib.sha512(seed.to_bytes(8, "little"))
    while len(out) < n:
        h.update(b"x")
        out += h.digest() * 32
    return bytes(out[:n])


def _pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, round(q * (len(v) - 1)))] if v else 0.0


def _metric(fs: TidepoolFileSystem, name: str, **labels: str) -> float:
    total = 0.0
    for line in fs.metrics_text().splitlines():
        if line.startswith("#") or line.split("{")[0].split(" ")[0] != name:
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _client(endpoint: str) -> TidepoolFileSystem:
    return TidepoolFileSystem(endpoint, local_reads=False, skip_instance_cache=True)


def _offline(
    fs: TidepoolFileSystem,
    relay: WanRelay,
    files: dict[str, bytes],
    cached: list[str],
    cold: list[str],
    rounds: int,
) -> dict[str, Any]:
    relay.set_link(False)
    cut_at = time.time()
    fail_s: list[float] = []
    wrong = 0
    for _ in range(rounds):
        for name in cold:
            t0 = time.perf_counter()
            try:
                fs.cat_file(f"bench/{name}")
                wrong += 1  # must not succeed with the link down
            except OSError as exc:
                wrong += not isinstance(exc, OriginUnavailableError)
            fail_s.append(time.perf_counter() - t0)
    ok = sum(fs.cat_file(f"bench/{n}") == files[n] for n in cached)
    status = fs.status("bench", refresh=False)["raw"]
    relay.set_link(True)
    t0 = time.perf_counter()
    recovered: float | None = None
    while time.perf_counter() - t0 < 60:
        try:
            if fs.cat_file(f"bench/{cold[0]}") == files[cold[0]]:
                recovered = time.perf_counter() - t0
                break
        except OriginUnavailableError:
            time.sleep(0.02)
    return {
        "cached_files": len(cached),
        "cached_files_readable": ok,
        "cached_readable_share": ok / len(cached),
        "uncached_reads": len(fail_s),
        "uncached_wrong_outcome": wrong,
        "uncached_fail_first_s": [round(x, 4) for x in fail_s[:3]],
        "uncached_fail_p50_s": round(_pct(fail_s, 0.5), 4),
        "uncached_fail_p99_s": round(_pct(fail_s, 0.99), 4),
        "uncached_fail_max_s": round(max(fail_s), 4),
        "status_origin_reachable": status["origin_reachable"],
        "status_down_since_lag_s": round((status["origin_down_since"] or 0) - cut_at, 3),
        "recover_s": round(recovered, 3) if recovered is not None else None,
        "targets": {"cached_readable_share": 1.0, "uncached_fail_p99_s": 2.0, "recover_s": 10.0},
    }


def _warm_half(files: dict[str, bytes], rest: list[str], endpoint: str) -> dict[str, Any]:
    fs = _client(endpoint)
    job = fs.start_load("bench", rest, concurrency=8)
    total = sum(len(files[n]) for n in rest)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if fs.load_progress(job["id"])["bytes_done"] >= total // 2:
            break
        time.sleep(0.01)
    before = fs.status("bench", refresh=False)["raw"]["cached_bytes"]
    return {"cached_before_kill": before, "load_bytes_total": total}


def _after_restart(
    spec: Path, log: Path, relay: WanRelay, files: dict[str, bytes], before: int
) -> dict[str, Any]:
    relay.set_link(False)
    down = relay.stats()["bytes_down"]
    t0 = time.perf_counter()
    with WorkerProcess.start([spec], log) as w:
        started = time.perf_counter() - t0
        fs = _client(w.endpoint)
        listed = len(fs.find("bench"))
        served = wrong = 0
        for name, data in files.items():
            for start in range(0, len(data), PAGE):
                end = min(start + PAGE, len(data))
                try:
                    got = fs.cat_file(f"bench/{name}", start=start, end=end)
                except OriginUnavailableError:
                    continue
                wrong += got != data[start:end]
                served += len(got)
        from_origin = _metric(fs, "tidepool_bytes_served_total", source="origin")
        origin_requests = _metric(fs, "tidepool_origin_requests_total")
    relay.set_link(True)
    return {
        "restart_offline_s": round(started, 3),
        "files_listed_offline": listed,
        "files_total": len(files),
        "cached_before_kill": before,
        "served_from_cache_after": served,
        "served_wrong": wrong,
        "served_share": round(served / before, 5) if before else None,
        "bytes_from_origin_worker": from_origin,
        "origin_fetch_attempts_worker": origin_requests,  # failed at once: link down
        "bytes_over_link_relay": relay.stats()["bytes_down"] - down,
        "targets": {"served_share": 0.99},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    console = Console(width=None if sys.stdout.isatty() else 110)  # logs: no wrapped tables
    res: dict[str, Any] = {"wan": {"rtt_ms": args.rtt_ms, "rate_mbit": args.rate_mbit}}
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(workdir(args.workdir, "tidepool-faults-"))
        console.print("starting the S3 origin, the WAN relay and a worker …")
        files = {f"f/{i:04d}.bin": _rand(args.size_kib * 1024, i) for i in range(args.files)}
        files["big/big.bin"] = _rand(args.big_mib << 20, 10**6)
        server = stack.enter_context(S3Server.start(work / "s3"))
        server.create_bucket(BUCKET)
        upload(server, BUCKET, ((f"data/{k}", v) for k, v in files.items()))
        port = int(server.endpoint.rsplit(":", 1)[1])
        relay = stack.enter_context(
            WanRelay.start(("127.0.0.1", port), rtt_ms=args.rtt_ms, rate_mbit=args.rate_mbit)
        )
        dataset = bench_spec(server, relay.endpoint, work / "cache", "4Gi", bucket=BUCKET)
        spec = dataset.write(work / "faults.yaml")
        names = sorted(n for n in files if n.startswith("f/"))
        cached, cold = names[: len(names) // 2], names[len(names) // 2 :]
        w1 = stack.enter_context(WorkerProcess.start([spec], work / "w1.log"))
        fs = _client(w1.endpoint)
        fs.find("bench")
        for n in cached:
            fs.cat_file(f"bench/{n}")
        console.print(f"warmed {len(cached)} files; cutting the link …")
        res["offline"] = _offline(fs, relay, files, cached, cold, args.rounds)
        console.print("warm-up of the rest, SIGKILL half way, restart with the link down …")
        r = _warm_half(files, [*cold, "big/big.bin"], w1.endpoint)
        w1.kill()
        res["restart"] = _after_restart(
            spec, work / "w2.log", relay, files, r["cached_before_kill"]
        )
    _report(res, console)
    write_results(res, args.json, console)
    return res


def _report(res: dict[str, Any], console: Console) -> None:
    o, r = res["offline"], res["restart"]
    t = Table(
        title=f"edge autonomy, WAN {res['wan']['rtt_ms']:.0f} ms / "
        f"{res['wan']['rate_mbit']:.0f} Mbit/s (user-space relay)"
    )
    for c in ("figure", "measured", "target", "met"):
        t.add_column(c, justify="left" if c == "figure" else "right")
    rows = [
        (
            "offline: cached files readable",
            f"{100 * o['cached_readable_share']:.1f}%",
            "100%",
            o["cached_readable_share"] >= 1.0,
        ),
        (
            f"offline: uncached read fails, p99 of {o['uncached_reads']}",
            f"{o['uncached_fail_p99_s']:.3f} s",
            "<= 2 s",
            o["uncached_fail_p99_s"] <= 2.0,
        ),
        ("offline: uncached read fails, max", f"{o['uncached_fail_max_s']:.3f} s", "", True),
        (
            "link back: recovered after",
            f"{o['recover_s']} s",
            "<= 10 s",
            o["recover_s"] is not None and o["recover_s"] <= 10.0,
        ),
        (
            "restart offline: cached bytes served w/o origin",
            f"{100 * (r['served_share'] or 0):.2f}%",
            ">= 99%",
            (r["served_share"] or 0) >= 0.99,
        ),
        (
            "restart offline: bytes over the link",
            str(r["bytes_over_link_relay"]),
            "0",
            r["bytes_over_link_relay"] == 0,
        ),
    ]
    for name, val, target, met in rows:
        t.add_row(name, val, target, "yes" if met else "NO")
    console.print(t)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tidepool_lab.bench.faults", description=__doc__)
    p.add_argument("--files", type=int, default=200, help="small files (half warmed)")
    p.add_argument("--size-kib", type=int, default=100, help="small file size in KiB")
    p.add_argument("--big-mib", type=int, default=32, help="large file in the killed warm-up")
    p.add_argument("--rounds", type=int, default=1, help="passes over the uncached files offline")
    p.add_argument("--rtt-ms", type=float, default=40.0, help="emulated WAN round trip (ms)")
    p.add_argument("--rate-mbit", type=float, default=100.0, help="emulated WAN rate (Mbit/s)")
    p.add_argument("--json", type=Path, default=Path("out/faults.json"), help="JSON output")
    p.add_argument("--workdir", type=Path, default=None, help="keep the run's files here")
    args = p.parse_args(argv)
    os.environ.pop("AWS_CA_BUNDLE", None)
    res = run(args)
    o, r = res["offline"], res["restart"]
    ok = (
        o["cached_readable_share"] >= 1.0
        and o["uncached_wrong_outcome"] == 0
        and r["served_wrong"] == 0
        and (r["served_share"] or 0) >= 0.99
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
