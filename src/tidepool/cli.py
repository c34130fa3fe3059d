"""The ``tidepool`` command: a thin layer that builds settings and calls the library.

Verbs: ``up`` (serve datasets), ``validate``, ``load`` (warm-up with a progress bar), ``ls``,
``cat``, ``status``, ``demo``, ``bench``. Exit codes: 0 ok, 1 runtime failure, 2 bad input (spec or
arguments), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tidepool.core.errors import ConfigError, SpecError, TidepoolError, redact

log = logging.getLogger("tidepool")

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"TIDEPOOL_{name}", default)


def _add_client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--endpoint",
        default=_env("ENDPOINT", "http://127.0.0.1:8433"),
        help="worker URL (env TIDEPOOL_ENDPOINT, default %(default)s)",
    )
    _add_token_args(p)


def _add_token_args(p: argparse.ArgumentParser) -> None:
    from tidepool.spec.credentials import add_secret_args

    add_secret_args(p, "token", "TIDEPOOL_TOKEN", "bearer token of the worker")


def _token(args: argparse.Namespace) -> str | None:
    """The bearer token from --token-file, --token (warned: visible in ps) or TIDEPOOL_TOKEN."""
    from tidepool.spec.credentials import resolve_secret

    return resolve_secret(
        args.token, args.token_file, os.environ, name="token", env="TIDEPOOL_TOKEN"
    )


def _add_spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-f",
        "--file",
        dest="files",
        action="append",
        required=True,
        metavar="FILE",
        help="spec YAML (Fluid Dataset/AlluxioRuntime/DataLoad/Secret); repeatable",
    )
    p.add_argument(
        "--secrets-dir",
        type=Path,
        default=_env("SECRETS_DIR"),
        help="directory of secret files (<secret>/<key> or <key>, as Kubernetes mounts them)",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=_env("CACHE_DIR"),
        help="where datasets without a runtime keep their cache (default ~/.cache/tidepool)",
    )


def _add_pool_security_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--peer-token-file",
        type=Path,
        default=_env("PEER_TOKEN_FILE"),
        help="file holding the node pool's peer credential, the same on every worker (or env "
        "TIDEPOOL_PEER_TOKEN); required with --members or --etcd",
    )
    p.add_argument(
        "--tls-cert",
        type=Path,
        default=_env("TLS_CERT"),
        help="PEM certificate chain: serve HTTPS (with --tls-key; env TIDEPOOL_TLS_CERT)",
    )
    p.add_argument(
        "--tls-key", type=Path, default=_env("TLS_KEY"), help="its PEM key (env TIDEPOOL_TLS_KEY)"
    )
    p.add_argument(
        "--tls-ca",
        type=Path,
        default=_env("TLS_CA"),
        help="PEM CA bundle that peers' and etcd's certificates are checked against (env "
        "TIDEPOOL_TLS_CA; default: the system's)",
    )


def _secret(path: Path | None, env: str) -> str | None:
    """A secret from a file (first line, stripped) or the ``TIDEPOOL_<env>`` variable."""
    if path is None:
        return _env(env) or None
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read secret file {path}: {exc}") from None
    if not value:
        raise ConfigError(f"secret file {path} is empty")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tidepool",
        description="Edge data acceleration: a shared, persistent cache of cloud datasets.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # no abbreviations: "--peer-token SECRET" must not be taken for --peer-token-file SECRET
    p = sub.add_parser(
        "up", help="serve the datasets of spec files on this host", allow_abbrev=False
    )
    _add_spec_args(p)
    p.add_argument("--host", default=_env("HOST", "127.0.0.1"), help="listen address")
    p.add_argument("--port", type=int, default=int(_env("PORT", "8433") or 8433))
    _add_token_args(p)  # required off loopback
    p.add_argument("--state-dir", type=Path, default=_env("STATE_DIR"))
    p.add_argument(
        "--nodepool",
        default=_env("NODEPOOL", ""),
        help="this node's pool (apps.openyurt.io/nodepool; env TIDEPOOL_NODEPOOL)",
    )
    p.add_argument("--node-name", default=_env("NODE_NAME", ""), help="name in the pool")
    p.add_argument(
        "--advertise",
        default=_env("ADVERTISE", ""),
        help="URL peers and clients use to reach this worker (default http://HOST:PORT)",
    )
    p.add_argument(
        "--members",
        default=_env("MEMBERS", ""),
        help="static pool membership: static:NAME=http://HOST:PORT,... (or a file with @PATH)",
    )
    p.add_argument(
        "--etcd",
        default=_env("ETCD", ""),
        help="etcd endpoints for pool membership, comma-separated (http://HOST:2379)",
    )
    _add_pool_security_args(p)

    p = sub.add_parser("validate", help="check spec files and print what was understood")
    _add_spec_args(p)

    p = sub.add_parser("load", help="warm the cache with a dataset or some of its paths")
    p.add_argument("dataset")
    p.add_argument("paths", nargs="*", help="paths inside the dataset (default: all of it)")
    p.add_argument("--concurrency", type=int, default=None, help="files fetched at once")
    p.add_argument("--no-wait", action="store_true", help="start the job and return")
    p.add_argument(
        "--report-job",
        default=_env("REPORT_JOB", ""),
        metavar="NAMESPACE/NAME",
        help="also write the progress onto this Kubernetes Job's annotations, for the "
        "operator's DataLoad status (the operator's load Jobs set it; API server from "
        "TIDEPOOL_KUBE_SERVER or in-cluster)",
    )
    _add_client_args(p)

    p = sub.add_parser("ls", help="list a dataset path (tidepool://DATASET/PATH or DATASET/PATH)")
    p.add_argument("path", nargs="?", default="")
    p.add_argument("-l", "--long", action="store_true", help="sizes and versions")
    p.add_argument("-R", "--recursive", action="store_true", help="every file below the path")
    _add_client_args(p)

    p = sub.add_parser("cat", help="write a file's bytes to standard output")
    p.add_argument("path")
    _add_client_args(p)

    p = sub.add_parser("status", help="cache state per dataset (Fluid cacheStates)")
    p.add_argument("dataset", nargs="?")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_client_args(p)

    p = sub.add_parser("mount", help="mount datasets read-only with FUSE (POSIX access)")
    from tidepool.fuse import add_mount_args

    add_mount_args(p)

    p = sub.add_parser("gateway", help="serve datasets as S3 buckets (GetObject, ListObjectsV2…)")
    from tidepool.gateway.cli import add_gateway_args

    add_gateway_args(p)

    from tidepool.operator.cli import add_convert_args, add_operator_args, add_render_args

    add_operator_args(sub.add_parser("operator", help="run the Kubernetes operator (kopf)"))
    add_render_args(sub.add_parser("render", help="print the manifests the operator would create"))
    add_convert_args(sub.add_parser("convert", help="turn Fluid manifests into Tidepool's"))

    p = sub.add_parser("demo", help="the end-to-end demo: S3 behind a WAN, read 3 ways")
    from tidepool_lab.demo.options import add_demo_args

    add_demo_args(p)

    p = sub.add_parser("bench", help="benchmarks, side by side, written as JSON")
    from tidepool_lab.bench.options import add_bench_args

    add_bench_args(p)
    return parser


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _load_bundle(args: argparse.Namespace) -> Any:
    from tidepool.spec import load_files

    return load_files(
        args.files,
        secrets_dir=args.secrets_dir,
        environ=os.environ,
        default_cache_dir=args.cache_dir,
    )


def cmd_validate(args: argparse.Namespace) -> int:
    from tidepool.spec import describe
    from tidepool.store.tierdir import inspect_tier

    bundle = _load_bundle(args)
    print(describe(bundle))
    problems = [
        f"dataset {name}: {problem}"
        for name, config in bundle.datasets.items()
        for tier in config.runtime.tiers
        for problem in inspect_tier(tier, name)
    ]
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    return EXIT_USAGE if problems else EXIT_OK


def cmd_up(args: argparse.Namespace) -> int:
    from tidepool.worker import Worker, WorkerSettings

    bundle = _load_bundle(args)
    for notice in bundle.notices:
        print(f"notice: {notice}", file=sys.stderr)
    if not bundle.datasets:
        raise ConfigError("the spec files define no Dataset to serve")
    members = args.members
    if members.startswith("@"):
        members = Path(members[1:]).read_text().replace("\n", ",")
    provider = None
    if members.startswith("kubernetes:"):
        from tidepool.pool.kubernetes import from_spec

        state = args.state_dir or Path("~/.local/state/tidepool").expanduser()
        provider = from_spec(
            members,
            args.nodepool,
            state / f"members-{args.nodepool or 'default'}.json",
            namespace=os.environ.get("POD_NAMESPACE", "default"),
        )
        members = ""
    settings = WorkerSettings(
        host=args.host,
        port=args.port,
        token=_token(args),
        nodepool=args.nodepool,
        node_name=args.node_name,
        advertise=args.advertise,
        members=members,
        etcd=tuple(e.strip() for e in args.etcd.split(",") if e.strip()),
        membership=provider,
        peer_token=_secret(args.peer_token_file, "PEER_TOKEN"),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_ca=args.tls_ca,
    )
    if args.state_dir:
        settings.state_dir = args.state_dir
    from tidepool.serving import ServerLimits

    settings.limits = ServerLimits.from_env(os.environ)  # TIDEPOOL_MAX_CONNECTIONS, ...
    worker = Worker(bundle.datasets.values(), settings)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await worker.start()
        print(
            f"tidepool worker serving {', '.join(sorted(bundle.datasets))} on {worker.endpoint}",
            flush=True,
        )
        await stop.wait()
        await worker.stop()

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(run())
    return EXIT_OK


def _loop_factory() -> Any:
    """uvloop when installed: it answers a warm small read in about two thirds of the time."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _fs(args: argparse.Namespace) -> Any:
    from tidepool.client import TidepoolFileSystem

    return TidepoolFileSystem(endpoint=args.endpoint, token=_token(args), skip_instance_cache=True)


def cmd_ls(args: argparse.Namespace) -> int:
    from tidepool.core.quantity import format_bytes

    fs = _fs(args)
    path = fs._strip_protocol(args.path)
    entries = (
        list(fs.find(path, detail=True).values()) if args.recursive else fs.ls(path, detail=True)
    )
    for e in entries:
        if args.long:
            size = format_bytes(e["size"]) if e["type"] == "file" else "-"
            kind = "d" if e["type"] == "directory" else "-"
            print(f"{kind} {size:>10}  {e.get('version', '')[:16]:16}  {e['name']}")
        else:
            print(e["name"] + ("/" if e["type"] == "directory" else ""))
    return EXIT_OK


def cmd_cat(args: argparse.Namespace) -> int:
    fs = _fs(args)
    out = sys.stdout.buffer
    with fs.open(args.path, "rb") as f:
        while chunk := f.read(8 << 20):
            out.write(chunk)
    out.flush()
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from tidepool.core.quantity import format_bytes

    fs = _fs(args)
    names = [args.dataset] if args.dataset else fs.datasets()
    statuses = [fs.status(n) for n in names]
    if args.json:
        print(json.dumps(statuses, indent=2))
        return EXIT_OK
    table = Table(title=f"Tidepool datasets at {args.endpoint}")
    for col in (
        "DATASET",
        "UFS TOTAL",
        "FILES",
        "CACHED",
        "CAPACITY",
        "CACHED %",
        "HIT RATIO",
        "ORIGIN",
    ):
        table.add_column(col, justify="right" if col != "DATASET" else "left")
    for s in statuses:
        c = s["cacheStates"]
        table.add_row(
            s["dataset"],
            s["ufsTotal"],
            s["fileNum"],
            c["cached"],
            c["cacheCapacity"],
            c["cachedPercentage"],
            c["cacheHitRatio"],
            "reachable" if s["raw"]["origin_reachable"] else "UNREACHABLE",
        )
    console = Console()
    console.print(table)
    pool = fs.pool_status(names)
    if pool["members"]:
        t = Table(
            title=f"node pool {pool['nodepool'] or '(unnamed)'}: {pool['replicas']} "
            "cop(ies) per file"
        )
        for col in ("MEMBER", "ADDRESS", "STATE", "FILES OWNED", "CACHED"):
            t.add_column(col, justify="left" if col in ("MEMBER", "ADDRESS") else "right")
        for m in pool["members"]:
            t.add_row(
                m["name"],
                m["address"],
                m["state"],
                str(m["files_owned"]),
                format_bytes(m["cached_bytes"]) if m["cached_bytes"] is not None else "-",
            )
        console.print(t)
    return EXIT_OK


def cmd_load(args: argparse.Namespace) -> int:
    reporter = None
    if args.report_job and not args.no_wait:
        from tidepool.operator.loadreport import JobReporter, check_own_job, parse_job_ref
        from tidepool.pool.kubeapi import KubeConfig

        ns, name = parse_job_ref(args.report_job, os.environ.get("POD_NAMESPACE", "default"))
        check_own_job(ns, name, os.environ)
        reporter = JobReporter(KubeConfig.from_env(), ns, name).start()
    fs = _fs(args)
    job = fs.start_load(args.dataset, list(args.paths), concurrency=args.concurrency)
    if args.no_wait:
        print(job["id"])
        return EXIT_OK
    try:
        job = _follow_load(fs, args.dataset, job, reporter)
    finally:
        if reporter is not None:
            reporter.close()
    rate = job["rate_bytes_s"] / 1e6
    print(
        f"{job['phase']}: {job['files_done']}/{job['files_total']} files, "
        f"{job['bytes_done'] / 2**20:.1f} MiB in {job['elapsed_s']:.1f} s ({rate:.1f} MB/s)"
    )
    for err in job["errors"]:
        print(f"  error: {err}", file=sys.stderr)
    return EXIT_OK if job["phase"] == "Complete" else EXIT_FAIL


def _follow_load(fs: Any, dataset: str, job: dict[str, Any], reporter: Any) -> dict[str, Any]:
    """Show a load's progress until it ends, handing each reading to ``reporter``; the last."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn(f"[bold]{dataset}[/]"),
        BarColumn(),
        TextColumn("{task.fields[files]} files"),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    ) as progress:
        task = progress.add_task("load", total=None, files="0/?")
        while True:
            job = fs.load_progress(job["id"])
            if reporter is not None:
                reporter.update(job)
            progress.update(
                task,
                completed=job["bytes_done"],
                total=job["bytes_total"] or None,
                files=f"{job['files_done']}/{job['files_total'] or '?'}",
            )
            if job["phase"] in ("Complete", "Failed"):
                return job
            time.sleep(0.2)


def cmd_mount(args: argparse.Namespace) -> int:
    from tidepool.fuse import run_mount

    return run_mount(args)


def cmd_gateway(args: argparse.Namespace) -> int:
    from tidepool.gateway.cli import run_gateway

    return run_gateway(args)


def cmd_operator(args: argparse.Namespace) -> int:
    from tidepool.operator.cli import run_operator

    return run_operator(args)


def cmd_render(args: argparse.Namespace) -> int:
    from tidepool.operator.cli import run_render

    return run_render(args)


def cmd_convert(args: argparse.Namespace) -> int:
    from tidepool.operator.cli import run_convert

    return run_convert(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from tidepool_lab.demo.run import run_demo

    return run_demo(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from tidepool_lab.bench.run import run_bench

    return run_bench(args)


COMMANDS = {
    "up": cmd_up,
    "validate": cmd_validate,
    "load": cmd_load,
    "ls": cmd_ls,
    "cat": cmd_cat,
    "status": cmd_status,
    "mount": cmd_mount,
    "gateway": cmd_gateway,
    "operator": cmd_operator,
    "render": cmd_render,
    "convert": cmd_convert,
    "demo": cmd_demo,
    "bench": cmd_bench,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return COMMANDS[args.command](args)
    except SpecError as exc:
        print("invalid spec:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_USAGE
    except (ConfigError, ValueError) as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except (TidepoolError, OSError) as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
