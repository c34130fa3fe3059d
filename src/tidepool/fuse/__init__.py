"""FUSE mount: datasets as a read-only POSIX tree, for programs that only speak files.

``tidepool mount DATASET MOUNTPOINT`` (or ``--all``) serves one dataset (or every dataset as a
top-level directory) through pyfuse3 on Debian's libfuse3, reading through the same client and
same-host fast path as ``tidepool://``. A surface: it imports ``tidepool.client``,
``tidepool.core.errors`` and ``tidepool.core.paths`` only, never the worker.

Importing this package does not import pyfuse3 or trio; only a running mount needs them.
"""

from __future__ import annotations

from tidepool.fuse.command import add_mount_args, run_mount

__all__ = ["add_mount_args", "run_mount"]
