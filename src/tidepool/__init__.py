"""Tidepool: a shared, persistent cache of cloud datasets inside each edge node pool.

The package is layered, one folder a layer (enforced by import-linter, see pyproject.toml):

* ``core`` — pure data and policy (errors, paths, ranges, pages, ring, breaker); ``spec`` — the
  Fluid YAML models;
* ``origin``, ``store``, ``pool`` — adapters: the funnel to the cloud, the page and metadata
  stores on disk, pool membership;
* ``worker``, ``client`` — the cache service and the ``tidepool://`` client;
* ``fuse``, ``gateway``, ``operator``, ``cli`` — the surfaces.

The lab (real S3 server, WAN emulators, demo, benchmarks) is the separate ``tidepool_lab``
package; nothing here imports it.
"""

from __future__ import annotations

__version__ = "0.1.0"
