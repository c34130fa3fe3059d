"""Tidepool: a shared, persistent cache of cloud datasets inside each edge node pool.

The package is layered (enforced by import-linter, see pyproject.toml): pure data and policy at
the bottom (``errors``, ``paths``, ``ranges``, ``pages``, ``quantity``, ``spec``), I/O adapters
above (``origin``, ``store``), the runtime (``worker``, ``client``) and the surfaces on top
(``cli``, ``demo``, ``bench``).
"""

from __future__ import annotations

__version__ = "0.1.0"
