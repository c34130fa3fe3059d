"""Orchestrate the demo: a cloud S3 bucket behind an emulated WAN, read three ways.

1. Make a seeded sample dataset of real JPEG images and upload it to a real S3 server (the juicefs
   gateway by default) that plays the cloud.
2. Put a user-space WAN relay in front of it (40 ms RTT, 100 Mbit/s by default; no root needed).
3. Start a Tidepool worker (``tidepool up``, a child process) on a Fluid-style spec whose Dataset
   points at the bucket through the WAN, with credentials from a Secret document.
4. Run the inference-style workload (read, decode, resize, optionally ResNet-18) directly with s3fs
   ("before acceleration"), through Tidepool cold, then warm after ``tidepool load``.
5. Print a table, optionally write JSON; stop everything it started, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tidepool.client import TidepoolFileSystem
from tidepool_lab.demo.plot import plot_demo, pyplot
from tidepool_lab.demo.workload import EpochResult, make_model, run_epoch
from tidepool_lab.testbed.images import make_jpegs
from tidepool_lab.testbed.s3server import S3Server
from tidepool_lab.testbed.s3util import s3fs_filesystem, upload
from tidepool_lab.testbed.wan import WanRelay
from tidepool_lab.testbed.workerproc import WorkerProcess

BUCKET = "demo"
PREFIX = "images"
DATASET = "images"

SPEC_TEMPLATE = """\
# Written by `tidepool demo`: the seed talk's manifests, pointed at a local S3 "cloud".
apiVersion: v1
kind: Secret
metadata:
  name: demo-cloud
stringData:
  fs.s3a.access.key: "{key}"
  fs.s3a.secret.key: "{secret}"
---
apiVersion: data.fluid.io/v1alpha1
kind: Dataset
metadata:
  name: {dataset}
spec:
  mounts:
    - mountPoint: s3://{bucket}/{prefix}/
      name: {dataset}
      path: "/"
      options:
        fs.s3a.endpoint: {endpoint}
        fs.s3a.path.style.access: "true"
      encryptOptions:
        - name: fs.s3a.access.key
          valueFrom:
            secretKeyRef:
              name: demo-cloud
              key: fs.s3a.access.key
        - name: fs.s3a.secret.key
          valueFrom:
            secretKeyRef:
              name: demo-cloud
              key: fs.s3a.secret.key
---
apiVersion: data.fluid.io/v1alpha1
kind: AlluxioRuntime
metadata:
  name: {dataset}
spec:
  replicas: 1
  tieredstore:
    levels:
      - mediumtype: SSD
        path: {cache}
        quota: 4Gi
        high: "0.95"
        low: "0.7"
"""


def write_spec(workdir: Path, server: S3Server, wan_endpoint: str) -> Path:
    spec = workdir / "demo-spec.yaml"
    spec.write_text(
        SPEC_TEMPLATE.format(
            key=server.access_key,
            secret=server.secret_key,
            dataset=DATASET,
            bucket=BUCKET,
            prefix=PREFIX,
            endpoint=wan_endpoint,
            cache=workdir / "cache",
        )
    )
    spec.chmod(0o600)
    return spec


def _table(results: dict[str, dict[str, Any]], report: dict[str, Any], console: Console) -> None:
    t = Table(
        title=(
            f"{report['files']} images, {report['bytes'] / 2**20:.1f} MiB, WAN "
            f"{report['wan']['rtt_ms']:.0f} ms RTT / {report['wan']['rate_mbit']:.0f} Mbit/s"
        )
    )
    for col in (
        "scenario",
        "epoch s",
        "read s",
        "files/s",
        "read p50 ms",
        "read p99 ms",
        "verified",
    ):
        t.add_column(col, justify="left" if col == "scenario" else "right")
    labels = {
        "direct": "direct s3fs",
        "cold": "Tidepool cold",
        "warm": "Tidepool warm",
    }
    for name, r in results.items():
        t.add_row(
            labels[name],
            f"{r['seconds']:.2f}",
            f"{r['read_seconds']:.3f}",
            f"{r['files_per_s']:.0f}",
            f"{r['read_p50_ms']:.2f}",
            f"{r['read_p99_ms']:.2f}",
            "yes" if r["verified"] else "[red]NO[/]",
        )
    console.print(t)
    s = report["speedup"]
    console.print(
        f"read speed-up warm vs direct: [bold green]{s['warm_vs_direct']:.0f}x[/]   "
        f"cold vs direct: {s['cold_vs_direct']:.2f}x   "
        f"end-to-end warm vs direct: {s['end_to_end_warm_vs_direct']:.1f}x"
    )
    load = report.get("load")
    if load:
        console.print(
            f"tidepool load: {load['files']} files checked in {load['seconds']:.2f} s "
            f"({load['phase']}); cache holds {report['cache']['cached']} "
            f"({report['cache']['cachedPercentage']})"
        )


def run_demo(args: argparse.Namespace) -> int:
    console = Console(width=None if sys.stdout.isatty() else 110)  # logs: no wrapped tables
    plot = getattr(args, "plot", None)
    if plot is not None:
        pyplot()  # a missing matplotlib is said now, not after minutes of demo
    json_path = args.json or (plot.with_suffix(".json") if plot is not None else None)
    infer = make_model(args.model)
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix="tidepool-demo-"))
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        else:
            workdir = args.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        console.print(f"[bold]1/6[/] making {args.files} sample JPEG images (seed {args.seed})")
        items = list(make_jpegs(args.files, seed=args.seed, target_kib=args.size_kib))
        total = sum(len(b) for _, b in items)

        console.print(
            f"[bold]2/6[/] starting the cloud: {args.origin} S3 server + WAN relay "
            f"({args.rtt_ms:.0f} ms RTT, {args.rate_mbit:.0f} Mbit/s)"
        )
        server = stack.enter_context(S3Server.start(workdir / "s3", kind=args.origin))
        server.create_bucket(BUCKET)
        md5s = upload(server, BUCKET, ((f"{PREFIX}/{n}", b) for n, b in items))
        expected = {n: md5s[f"{PREFIX}/{n}"] for n, _ in items}
        _host, port = server.endpoint.rsplit(":", 1)
        relay = stack.enter_context(
            WanRelay.start(("127.0.0.1", int(port)), rtt_ms=args.rtt_ms, rate_mbit=args.rate_mbit)
        )

        console.print("[bold]3/6[/] starting Tidepool (tidepool up) on the demo's Fluid spec")
        spec = write_spec(workdir, server, relay.endpoint)
        worker = stack.enter_context(WorkerProcess.start([spec], workdir / "worker.log"))

        results: dict[str, EpochResult] = {}
        console.print("[bold]4/6[/] epoch 1: reading straight from the cloud with s3fs")
        direct = s3fs_filesystem(
            relay.endpoint, server.access_key, server.secret_key, use_listings_cache=True
        )
        listing = direct.find(f"{BUCKET}/{PREFIX}/")
        order = sorted(p[len(f"{BUCKET}/{PREFIX}/") :] for p in listing)
        results["direct"] = run_epoch(
            order, lambda p: direct.cat_file(f"{BUCKET}/{PREFIX}/{p}"), expected, infer
        )

        console.print("[bold]5/6[/] epoch 2: through Tidepool, cold cache")
        cold = TidepoolFileSystem(worker.endpoint, skip_instance_cache=True)
        cold.find(DATASET)
        results["cold"] = run_epoch(
            order, lambda p: cold.cat_file(f"{DATASET}/{p}"), expected, infer
        )

        console.print("[bold]6/6[/] tidepool load (warm-up), then epoch 3: warm cache")
        # after a cold epoch the load finds everything cached: it proves the cache is
        # complete; the warm-up rate against the link is measured by `tidepool bench`.
        t0 = time.perf_counter()
        job = cold.start_load(DATASET, [])
        while job["phase"] not in ("Complete", "Failed"):
            time.sleep(0.1)
            job = cold.load_progress(job["id"])
        load_s = time.perf_counter() - t0
        warm = TidepoolFileSystem(worker.endpoint, skip_instance_cache=True)
        warm.find(DATASET)
        results["warm"] = run_epoch(
            order, lambda p: warm.cat_file(f"{DATASET}/{p}"), expected, infer
        )
        status = warm.status(DATASET)

        summaries = {k: v.summary() for k, v in results.items()}
        d, c, w = summaries["direct"], summaries["cold"], summaries["warm"]
        report: dict[str, Any] = {
            "files": len(items),
            "bytes": total,
            "wan": {"rtt_ms": args.rtt_ms, "rate_mbit": args.rate_mbit},
            "origin": args.origin,
            "model": args.model,
            "scenarios": summaries,
            "speedup": {
                "warm_vs_direct": round(d["read_seconds"] / max(w["read_seconds"], 1e-9), 2),
                "cold_vs_direct": round(d["read_seconds"] / max(c["read_seconds"], 1e-9), 3),
                "end_to_end_warm_vs_direct": round(d["seconds"] / max(w["seconds"], 1e-9), 2),
            },
            "load": {
                "phase": job["phase"],
                "seconds": round(load_s, 3),
                "files": job["files_done"],
                "bytes": job["bytes_done"],
            },
            "cache": status["cacheStates"],
        }
        _table(summaries, report, console)
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(report, indent=2))
            console.print(f"results written to {json_path}")
        if plot is not None:
            console.print(f"chart drawn in {plot_demo(report, plot)}")
        ok = all(s["verified"] for s in summaries.values())
        if not ok:
            console.print("[red]some bytes did not match the origin[/]", style="bold")
        return 0 if ok else 1
    return 1  # pragma: no cover - ExitStack does not swallow


if __name__ == "__main__":  # pragma: no cover
    from tidepool_lab.demo.options import add_demo_args

    p = argparse.ArgumentParser()
    add_demo_args(p)
    sys.exit(run_demo(p.parse_args()))
