"""Command-line options of ``tidepool demo`` (kept apart so ``--help`` imports nothing heavy)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--files", type=int, default=300, help="number of JPEG images (default 300)")
    p.add_argument(
        "--size-kib",
        type=int,
        default=100,
        help="approximate image size in KiB (default %(default)s)",
    )
    p.add_argument(
        "--seed", type=int, default=7, help="seed of the sample images (default %(default)s)"
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
        "--origin",
        choices=("juicefs", "rclone"),
        default="juicefs",
        help="S3 server playing the cloud (default juicefs gateway)",
    )
    p.add_argument(
        "--model",
        choices=("none", "resnet18"),
        default="none",
        help="inference step after decode+resize: resnet18 needs torch installed (default "
        "%(default)s)",
    )
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write results here")
    p.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="FILE",
        help="draw the before/after chart as a PNG (with its JSON beside it unless --json); "
        "needs matplotlib (pip install 'tidepool[plot]')",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the demo's files here (default: a temporary directory, removed at the end)",
    )
