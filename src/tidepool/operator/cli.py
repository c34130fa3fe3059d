"""Command-line verbs of this package: ``tidepool operator``, ``render`` and ``convert``.

``tidepool.cli`` builds its parser and calls ``add_*_args(subparser)`` then ``run_*(args)``, which
return an exit code (0 ok, 1 runtime failure, 2 bad input). ``kopf`` is imported only by
``run_operator``, so ``render`` and ``convert`` work on the core install.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tidepool.core.errors import SpecError
from tidepool.operator.convert import convert_text
from tidepool.operator.crds import crds
from tidepool.operator.dataload import load_objects
from tidepool.operator.render import RenderOptions, pools_of, render_dataset, to_yaml
from tidepool.spec.credentials import add_secret_args, resolve_secret
from tidepool.spec.loader import load_files

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _env(name: str, default: str = "") -> str:
    return os.environ.get(f"TIDEPOOL_{name}", default)


class _ClusterSecrets(Mapping[str, str]):
    """An environment in which every ``TIDEPOOL_SECRET_*`` exists: rendering never needs values.

    Rendered containers reference the cluster's Secrets with ``valueFrom``; the loader only has to
    know that a value will be there.
    """

    def __init__(self, base: Mapping[str, str]) -> None:
        self._base = base

    def __getitem__(self, key: str) -> str:
        if key in self._base:
            return self._base[key]
        if key.startswith("TIDEPOOL_SECRET_"):
            return "<from-cluster-secret>"
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._base)

    def __len__(self) -> int:
        return len(self._base)


def _add_render_options(p: argparse.ArgumentParser) -> None:
    d = RenderOptions()
    p.add_argument("--image", default=_env("IMAGE", d.image), help="container image (%(default)s)")
    p.add_argument(
        "--workload",
        choices=("StatefulSet", "DaemonSet"),
        default=d.workload,
        help="kind of the cache workers' workload (default %(default)s)",
    )
    p.add_argument(
        "--membership",
        choices=("kubernetes", "etcd"),
        default=d.membership,
        help="how workers find their pool's peers (default %(default)s)",
    )
    p.add_argument("--etcd", default=_env("ETCD"), help="etcd endpoints for --membership etcd")
    p.add_argument(
        "--mount-root",
        default=d.mount_root,
        help="host directory of the fuse mounts (default %(default)s)",
    )


def _options(args: argparse.Namespace, **extra: Any) -> RenderOptions:
    return RenderOptions(
        image=args.image,
        workload=args.workload,
        membership=args.membership,
        etcd=args.etcd,
        mount_root=args.mount_root,
        **extra,
    )


# ----------------------------------------------------------------------------- render


def add_render_args(p: argparse.ArgumentParser) -> None:
    """``tidepool render -f FILE... [--nodepool P]``: print the manifests the operator creates."""
    p.add_argument(
        "-f",
        "--file",
        dest="files",
        action="append",
        required=True,
        metavar="FILE",
        help="spec YAML (Fluid or Tidepool kinds); repeatable",
    )
    p.add_argument("--nodepool", default=None, help="render for this pool only")
    p.add_argument("--crds", action="store_true", help="also print the CustomResourceDefinitions")
    p.add_argument("--fluid", action="store_true", help="with --crds: Fluid's group and kinds")
    add_secret_args(p, "token", "TIDEPOOL_TOKEN", "workers' bearer token (default: random)")
    _add_render_options(p)


def render_text(args: argparse.Namespace) -> tuple[str, list[str]]:
    """The YAML ``tidepool render`` prints and its notices; :class:`SpecError` on bad specs."""
    bundle = load_files(args.files, environ=_ClusterSecrets(dict(os.environ)))
    # the environment does not name the rendered Secret's token: only a flag or a file does
    token = resolve_secret(args.token, args.token_file, {}, name="token", env="TIDEPOOL_TOKEN")
    options = _options(args, token=token)
    objects: list[dict[str, Any]] = []
    notices = list(bundle.notices)
    if args.crds:
        objects.extend(crds("fluid" if args.fluid else "tidepool"))
    for name, dataset in bundle.dataset_models.items():
        runtime = bundle.runtime_models.get(name)
        allowed = pools_of(dataset)
        if args.nodepool is not None and allowed != [""] and args.nodepool not in allowed:
            notices.append(f"dataset {name}: pool {args.nodepool!r} is not in its nodeAffinity")
            continue
        pools = pools_of(dataset, args.nodepool)
        objects.extend(render_dataset(dataset, runtime, options, pools=pools))
    for load in bundle.dataloads:
        ds = bundle.dataset_models.get(load.spec.dataset.name)
        pools = pools_of(ds, args.nodepool) if ds is not None else [args.nodepool or ""]
        objects.extend(load_objects(load, pools, options))
    if bundle.secrets:
        notices.append("Secret documents are not rendered; create them in the cluster")
    return to_yaml(objects), notices


def run_render(args: argparse.Namespace) -> int:
    try:
        text, notices = render_text(args)
    except SpecError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    for notice in notices:
        print(f"# note: {notice}", file=sys.stderr)
    sys.stdout.write(text)
    return EXIT_OK


# ----------------------------------------------------------------------------- convert


def add_convert_args(p: argparse.ArgumentParser) -> None:
    """``tidepool convert -f FILE [-o OUT]``: Fluid manifests -> Tidepool's."""
    p.add_argument(
        "-f",
        "--file",
        dest="files",
        action="append",
        required=True,
        metavar="FILE",
        help="Fluid manifests to convert; repeatable",
    )
    p.add_argument("-o", "--output", type=Path, default=None, help="write here instead of stdout")


def run_convert(args: argparse.Namespace) -> int:
    out: list[str] = []
    try:
        for file in args.files:
            text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
            result = convert_text(text, file)
            for notice in result.notices:
                print(f"# note: {notice}", file=sys.stderr)
            out.append(result.to_yaml())
    except SpecError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    text = "---\n".join(out)
    if args.output is not None:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return EXIT_OK


# ----------------------------------------------------------------------------- operator


def add_operator_args(p: argparse.ArgumentParser) -> None:
    """``tidepool operator``: run the kopf operator (needs the ``k8s`` extra)."""
    p.add_argument(
        "--fluid",
        action="store_true",
        default=_env("FLUID_MODE") in ("1", "true"),
        help="serve data.fluid.io Dataset/AlluxioRuntime/DataLoad (env TIDEPOOL_FLUID_MODE)",
    )
    p.add_argument(
        "-n",
        "--namespace",
        dest="namespaces",
        action="append",
        default=[],
        help="namespace to serve (repeatable; default: all)",
    )
    p.add_argument("--server", default=_env("KUBE_SERVER") or None, help="API server URL")
    p.add_argument(
        "--resync",
        type=float,
        default=30.0,
        help="seconds between reconciliations (default %(default)s)",
    )
    p.add_argument(
        "--stale-after",
        type=float,
        default=120.0,
        help="seconds until a pool's reports are stale (default %(default)s)",
    )
    p.add_argument(
        "--finalizer-timeout",
        type=float,
        default=60.0,
        help="seconds a deletion may wait for cleanup before the finalizer is released "
        "(default %(default)s)",
    )
    p.add_argument(
        "--liveness",
        default=_env("OPERATOR_LIVENESS") or None,
        metavar="URL",
        help="serve a liveness probe at this URL, e.g. http://0.0.0.0:8080/healthz (the chart "
        "does); it answers 200 with the datasets and pools the operator serves",
    )
    _add_render_options(p)


def _api_reachable_by_default() -> bool:
    """Whether kopf's own login (service account, then kubeconfig) has anything to go on."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return True
    configs = os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())
    return any(Path(c).is_file() for c in configs.split(os.pathsep) if c)


def run_operator(args: argparse.Namespace) -> int:
    try:
        from tidepool.operator.handlers import OperatorSettings, run
        from tidepool.pool.kubeapi import KubeConfig
    except ImportError as exc:  # kopf is an optional dependency
        print(f"the operator needs kopf: pip install 'tidepool[k8s]' ({exc})", file=sys.stderr)
        return EXIT_FAIL
    if not args.server and not _api_reachable_by_default():
        print(
            "error: no Kubernetes API server: not in a cluster (KUBERNETES_SERVICE_HOST is not "
            "set) and no kubeconfig (KUBECONFIG or ~/.kube/config); pass --server URL or set "
            "TIDEPOOL_KUBE_SERVER",
            file=sys.stderr,
        )
        return EXIT_USAGE
    settings = OperatorSettings(
        mode="fluid" if args.fluid else "tidepool",
        render=_options(args),
        kube=KubeConfig.from_env(args.server) if args.server else None,
        resync=args.resync,
        stale_after=args.stale_after,
        finalizer_timeout=args.finalizer_timeout,
        namespaces=tuple(args.namespaces),
        liveness=args.liveness,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(settings))
    return EXIT_OK
