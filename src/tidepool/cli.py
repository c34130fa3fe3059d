"""The ``tidepool`` command: a thin layer that builds settings and calls the library.

Verbs: ``up`` (serve datasets), ``validate`` (``--check`` asks the origin too), ``load`` (warm-up
with progress), ``refresh`` (see origin changes now), ``ls``, ``cat``, ``status`` (``-o wide|json``,
``--watch``), ``demo``, ``bench``. What is printed lives in :mod:`tidepool.console`. Exit codes:
0 ok, 1 runtime failure, 2 bad input (spec or arguments), 3 load incomplete (the data does not fit
the cache), 130 interrupted.
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tidepool.core.errors import ConfigError, SpecError, TidepoolError, redact

log = logging.getLogger("tidepool")

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3


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
        help="directory of secret files (<secret>/<key> or <key>, as Kubernetes mounts them; "
        "env TIDEPOOL_SECRETS_DIR; default none: Secret documents and TIDEPOOL_SECRET_* only)",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=_env("CACHE_DIR"),
        help="where datasets without a runtime keep their cache (env TIDEPOOL_CACHE_DIR; "
        "default ~/.cache/tidepool)",
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
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more logging: -v info and tracebacks of failed requests, -vv debug (default: "
        "warnings only)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # no abbreviations: "--peer-token SECRET" must not be taken for --peer-token-file SECRET
    p = sub.add_parser(
        "up", help="serve the datasets of spec files on this host", allow_abbrev=False
    )
    _add_spec_args(p)
    p.add_argument(
        "--host",
        default=_env("HOST", "127.0.0.1"),
        help="listen address; beyond loopback a token is required (env TIDEPOOL_HOST, "
        "default %(default)s)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=int(_env("PORT", "8433") or 8433),
        help="TCP port of the worker API; 0 picks a free one (env TIDEPOOL_PORT, default "
        "%(default)s); clients find it through TIDEPOOL_ENDPOINT",
    )
    _add_token_args(p)  # required off loopback
    p.add_argument(
        "--state-dir",
        type=Path,
        default=_env("STATE_DIR"),
        help="where pool membership and the index and metadata of datasets without a disk tier "
        "are kept (env TIDEPOOL_STATE_DIR, default ~/.local/state/tidepool)",
    )
    p.add_argument(
        "--nodepool",
        default=_env("NODEPOOL", ""),
        help="this node's pool (apps.openyurt.io/nodepool; env TIDEPOOL_NODEPOOL; default none: "
        "a single node)",
    )
    p.add_argument(
        "--node-name",
        default=_env("NODE_NAME", ""),
        help="this worker's name in the pool (env TIDEPOOL_NODE_NAME, default: the host name)",
    )
    p.add_argument(
        "--advertise",
        default=_env("ADVERTISE", ""),
        help="URL peers and clients use to reach this worker (default http://HOST:PORT)",
    )
    p.add_argument(
        "--members",
        default=_env("MEMBERS", ""),
        help="pool membership: static:NAME=http://HOST:PORT,... or kubernetes:NAMESPACE/SERVICE "
        "(or a file with @PATH; env TIDEPOOL_MEMBERS; default none)",
    )
    p.add_argument(
        "--etcd",
        default=_env("ETCD", ""),
        help="etcd endpoints for pool membership, comma-separated (http://HOST:2379; env "
        "TIDEPOOL_ETCD; default none)",
    )
    p.add_argument(
        "--chunk-size",
        default=_env("CHUNK_SIZE", ""),
        help="bytes of a large file placed together on one member of the pool; each further "
        "chunk goes to its own owner so reads and space spread over the pool; the same on every "
        "member, a multiple of the page size, 0 places files whole (env TIDEPOOL_CHUNK_SIZE; "
        "default 16Mi, rounded up to whole pages)",
    )
    p.add_argument(
        "--rebalance-rate",
        default=_env("REBALANCE_RATE", "64Mi"),
        help="bytes a second at most for copying, after a member joins, the files this worker "
        "now owns from the members that hold them (over the LAN; 0: copy nothing, take each "
        "file over when it is first read; env TIDEPOOL_REBALANCE_RATE; default %(default)s)",
    )
    _add_pool_security_args(p)

    p = sub.add_parser("validate", help="check spec files and print what was understood")
    _add_spec_args(p)
    p.add_argument(
        "--check",
        action="store_true",
        help="also ask each origin for one object with the spec's credentials and say what is "
        "wrong: bucket missing, prefix empty, credentials refused, endpoint unreachable, TLS "
        "(default: the spec alone, no network)",
    )

    p = sub.add_parser("load", help="warm the cache with a dataset or some of its paths")
    p.add_argument("dataset", help="the dataset to warm")
    p.add_argument("paths", nargs="*", help="paths inside the dataset (default: all of it)")
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="files fetched at once (default: the worker's, 32)",
    )
    p.add_argument("--no-wait", action="store_true", help="start the job, print its id and return")
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
    p.add_argument(
        "path", nargs="?", default="", help="DATASET/PATH (default: the list of datasets)"
    )
    p.add_argument("-l", "--long", action="store_true", help="sizes and versions")
    p.add_argument("-R", "--recursive", action="store_true", help="every file below the path")
    _add_client_args(p)

    p = sub.add_parser("cat", help="write a file's bytes to standard output")
    p.add_argument("path", help="DATASET/PATH of a file")
    _add_client_args(p)

    p = sub.add_parser(
        "refresh", help="see changes at the origin now: ask it again for a path's metadata"
    )
    p.add_argument(
        "path", help="DATASET or DATASET/PATH: the metadata at and below it is fetched again"
    )
    _add_client_args(p)

    p = sub.add_parser("status", help="cache state per dataset (Fluid cacheStates)")
    p.add_argument("dataset", nargs="?", help="one dataset (default: every dataset served)")
    p.add_argument(
        "-o",
        "--output",
        choices=("table", "wide", "json"),
        default="table",
        help="table (fits 80 columns), wide (more columns) or json (default %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="same as -o json")
    p.add_argument(
        "-w", "--watch", action="store_true", help="keep showing it, refreshed (Ctrl-C ends)"
    )
    p.add_argument(
        "--interval",
        type=float,
        default=2.0,
        help="seconds between refreshes with --watch (default %(default)s)",
    )
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
    if problems:
        return EXIT_USAGE
    if not args.check:
        return EXIT_OK
    from tidepool.console import check_lines
    from tidepool.origin.probe import probe_datasets

    results = asyncio.run(probe_datasets(bundle.datasets.values()))
    print("\n".join(check_lines(results)))
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAIL


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
    settings = WorkerSettings(
        host=args.host,
        port=args.port,
        token=_token(args),
        nodepool=args.nodepool,
        node_name=args.node_name,
        advertise=args.advertise,
        members=members,
        etcd=tuple(e.strip() for e in args.etcd.split(",") if e.strip()),
        peer_token=_secret(args.peer_token_file, "PEER_TOKEN"),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_ca=args.tls_ca,
        chunk_size=_chunk_size(args.chunk_size),
        rebalance_rate=_rebalance_rate(args.rebalance_rate),
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


def _chunk_size(text: str) -> int | None:
    from tidepool.core.quantity import parse_bytes

    if not text:
        return None  # the worker's default for its datasets' page sizes
    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise ConfigError(
            f"--chunk-size {text!r} is not a size: write bytes or a quantity such as 16Mi, or 0 "
            "to place files whole"
        ) from exc


def _rebalance_rate(text: str) -> int:
    from tidepool.core.quantity import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise ConfigError(
            f"--rebalance-rate {text!r} is not a byte rate: write bytes a second or a quantity "
            "such as 64Mi, or 0 to copy nothing in the background"
        ) from exc


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
    entries = fs.iter_find(path) if args.recursive else fs.ls(path, detail=True)
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
    from rich.console import Console, Group, RenderableType

    from tidepool.console import pool_table, status_view, watch_status

    fs = _fs(args)
    output = "json" if args.json else args.output
    console = Console()
    if output == "wide":  # like kubectl -o wide: wider than the terminal rather than cut
        console = Console(width=max(console.width, 160))

    def view() -> RenderableType:
        names = [args.dataset] if args.dataset else fs.datasets()
        statuses = [fs.status(n) for n in names]
        if output == "json":
            return json.dumps(statuses, indent=2)
        parts = [status_view(statuses, args.endpoint, wide=output == "wide")]
        try:
            pool = fs.pool_status(names)
        except OSError as exc:  # a dataset whose origin fails: the table already says so
            log.debug("no pool view: %s", exc)
        else:
            if pool["members"]:
                parts.append(pool_table(pool))
        return Group(*parts)

    if not args.watch:
        if output == "json":
            print(view())
        else:
            console.print(view())
        return EXIT_OK
    with contextlib.suppress(KeyboardInterrupt):
        watch_status(view, console, max(0.1, args.interval))
    return EXIT_OK


def cmd_refresh(args: argparse.Namespace) -> int:
    fs = _fs(args)
    path = fs._strip_protocol(args.path)
    dataset, _, rel = path.partition("/")
    result = _refresh(args, dataset, rel)
    where = f"{dataset}/{rel}" if rel else dataset
    if not result.get("exists"):
        print(f"{where}: gone at the origin ({result['dropped']} cached entries dropped)")
        return EXIT_OK
    if result.get("type") == "directory":
        now = f"directory, {result.get('entries', 0)} entries"
    else:
        now = f"file, {result.get('size', 0)} bytes, version {result.get('version')}"
        was = result.get("previous_version")
        if was and was != result.get("version"):
            now += f" (was {was})"
    print(f"{where}: refreshed from the origin: {now}")
    return EXIT_OK


def _refresh(args: argparse.Namespace, dataset: str, rel: str) -> dict[str, Any]:
    """``POST /v1/datasets/{ds}/refresh/{path}`` to the worker."""
    result: dict[str, Any] = _fs(args).refresh(f"{dataset}/{rel}" if rel else dataset)
    return result


def cmd_load(args: argparse.Namespace) -> int:
    from rich.console import Console

    from tidepool.console import follow_load, load_summary

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
    job_id = job["id"]
    try:
        job = follow_load(
            lambda: fs.load_progress(job_id),
            args.dataset,
            Console(),
            on_update=reporter.update if reporter is not None else None,
        )
    finally:
        if reporter is not None:
            reporter.close()
    load_summary(job, sys.stdout, sys.stderr)
    if job["phase"] == "Incomplete":
        return EXIT_INCOMPLETE
    return EXIT_OK if job["phase"] == "Complete" else EXIT_FAIL


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
    "refresh": cmd_refresh,
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
