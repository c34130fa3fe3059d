"""Command-line options of ``tidepool bench`` (kept apart so ``--help`` imports nothing heavy)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--files", type=int, default=600, help="small files in the epoch (default 600)")
    p.add_argument(
        "--only",
        choices=["all", "first-epoch"],
        default="all",
        help="run every section, or only the first-epoch cases (default %(default)s)",
    )
    p.add_argument(
        "--size-kib", type=int, default=100, help="small file size in KiB (default %(default)s)"
    )
    p.add_argument(
        "--big-mib",
        type=int,
        default=256,
        help="size of the large file in MiB (default %(default)s)",
    )
    p.add_argument(
        "--load-mib",
        type=int,
        default=64,
        help="MiB of fresh data `tidepool load` warms for the link-rate figure (default "
        "%(default)s)",
    )
    p.add_argument(
        "--rtt-ms",
        type=float,
        default=40.0,
        help="emulated WAN round trip, ms (default %(default)s)",
    )
    p.add_argument(
        "--rate-mbit",
        type=float,
        default=100.0,
        help="emulated WAN rate, Mbit/s (default %(default)s)",
    )
    p.add_argument(
        "--threads", type=int, default=8, help="threads sharing one client (default %(default)s)"
    )
    p.add_argument(
        "--skip-direct",
        action="store_true",
        help="skip the slow direct-s3fs rows (about a minute on the reference WAN)",
    )
    p.add_argument(
        "--json",
        type=Path,
        default=Path("out/bench.json"),
        metavar="PATH",
        help="where to write the results (default %(default)s)",
    )
    p.add_argument("--workdir", type=Path, default=None, help="keep the bench's files here")
    p.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="FILE",
        help="draw the results as a PNG beside the JSON; needs matplotlib "
        "(pip install 'tidepool[plot]')",
    )
