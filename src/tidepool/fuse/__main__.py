"""``python -m tidepool.fuse [--all] [DATASET] MOUNTPOINT``: the mount without the full CLI."""

from __future__ import annotations

import sys

from tidepool.fuse.command import main

if __name__ == "__main__":
    sys.exit(main())
