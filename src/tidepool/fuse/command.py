"""``tidepool mount``: the arguments, and the run that wires client, inode table and handlers.

``tidepool.cli`` adds the verb with :func:`add_mount_args` and calls :func:`run_mount`; the same
pair backs ``python -m tidepool.fuse``. pyfuse3 and trio are imported only when a mount runs, so
the rest of the CLI works without them (the error says how to install them).

Exit codes follow the CLI: 0 after a clean unmount, 1 when mounting fails, 2 for bad arguments
or an unknown dataset.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path

from tidepool.core.errors import redact
from tidepool.fuse.mount import MountError, MountSettings
from tidepool.spec.credentials import add_secret_args, resolve_secret

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
INSTALL_HINT = (
    "the FUSE mount needs pyfuse3 and trio: `apt-get install fuse3 libfuse3-dev pkg-config` "
    "(pyfuse3 builds against libfuse3), then `pip install pyfuse3 trio`"
)


def add_mount_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``tidepool mount [--all] [DATASET] MOUNTPOINT``."""
    p.add_argument("dataset", nargs="?", metavar="DATASET", help="dataset to expose")
    p.add_argument("mountpoint", type=Path, metavar="MOUNTPOINT", help="existing directory")
    p.add_argument(
        "--all",
        action="store_true",
        help="expose every dataset of the worker as a directory under MOUNTPOINT",
    )
    p.add_argument(
        "--endpoint",
        default=os.environ.get("TIDEPOOL_ENDPOINT", "http://127.0.0.1:8433"),
        help="worker URL (env TIDEPOOL_ENDPOINT, default %(default)s)",
    )
    add_secret_args(p, "token", "TIDEPOOL_TOKEN", "bearer token of the worker")
    p.add_argument(
        "--foreground",
        action="store_true",
        default=True,
        help="stay in the foreground (the only mode, so the default: run it under a supervisor)",
    )
    p.add_argument(
        "--mkdir",
        action="store_true",
        help="create MOUNTPOINT (and its parents) when missing, as the fuse DaemonSet does",
    )
    p.add_argument(
        "--allow-other",
        action="store_true",
        help="let other users read the mount (fuse.conf user_allow_other unless root)",
    )
    p.add_argument(
        "--read-ahead-kb",
        type=int,
        default=MountSettings.read_ahead_kb,
        help="kernel read-ahead for the mount, KiB (0: kernel default; default %(default)s)",
    )


def settings_from_args(args: argparse.Namespace) -> MountSettings:
    """Validate the arguments; raises ``ValueError`` with a message naming the problem."""
    if args.all and args.dataset:
        raise ValueError("give either DATASET or --all, not both")
    if not args.all and not args.dataset:
        raise ValueError("name the DATASET to mount, or pass --all to mount every dataset")
    if args.dataset is not None and ("/" in args.dataset.strip("/") or not args.dataset.strip()):
        raise ValueError(f"DATASET {args.dataset!r} must be a dataset name without '/'")
    return MountSettings(
        mountpoint=Path(args.mountpoint).absolute(),
        dataset=None if args.all else args.dataset.strip("/"),
        endpoint=args.endpoint,
        token=resolve_secret(
            args.token, args.token_file, os.environ, name="token", env="TIDEPOOL_TOKEN"
        ),
        allow_other=args.allow_other,
        read_ahead_kb=args.read_ahead_kb,
    )


def run_mount(args: argparse.Namespace) -> int:
    """Mount, serve until unmounted or signalled, unmount. Returns the exit code."""
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        import pyfuse3  # noqa: F401
        import trio  # noqa: F401
    except ImportError as exc:
        print(f"error: {exc}; {INSTALL_HINT}", file=sys.stderr)
        return EXIT_FAIL
    from tidepool.client import TidepoolFileSystem
    from tidepool.fuse.inodes import InodeTable
    from tidepool.fuse.mount import prepare_mountpoint, serve
    from tidepool.fuse.ops import TidepoolOperations
    from tidepool.fuse.source import Source

    fs = TidepoolFileSystem(settings.endpoint, settings.token, skip_instance_cache=True)
    source = Source(fs)
    root = settings.dataset or ""
    table = InodeTable(root)
    if args.mkdir:
        # a stale mount point makes this fail: prepare_mountpoint below recovers or explains it
        with contextlib.suppress(OSError):
            os.makedirs(settings.mountpoint, exist_ok=True)
    try:
        prepare_mountpoint(settings.mountpoint)
    except MountError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    try:  # learn TTLs, page sizes and the fast path, and warm the root listing
        table.set_listing(root, source.ls(root), source.ttl(root))
    except FileNotFoundError:
        try:
            known = ", ".join(fs.datasets()) or "none"
        except OSError:
            known = "?"
        print(
            f"error: the worker at {fs.endpoint} has no dataset {root!r}; it serves: {known}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except OSError as exc:  # keep going: programs get EIO until the worker answers
        log.warning("mounting without a first listing: %s", redact(str(exc)))
    fsname = f"tidepool:{root}" if root else "tidepool"
    ops = TidepoolOperations(source, table)
    log.info(
        "mounting %s on %s (worker %s, same-host reads %s)",
        fsname,
        settings.mountpoint,
        fs.endpoint,
        "on" if source.has_local else "off",
    )
    try:
        serve(settings, ops, fsname)
    except RuntimeError as exc:
        print(f"error: cannot mount on {settings.mountpoint}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """``python -m tidepool.fuse`` (the same as ``tidepool mount``)."""
    parser = argparse.ArgumentParser(
        prog="tidepool mount", description="Mount Tidepool datasets read-only with FUSE."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    add_mount_args(parser)
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.verbose < 2:
        logging.getLogger("pyfuse3").setLevel(logging.WARNING)
    return run_mount(args)
