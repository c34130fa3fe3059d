"""The worker's local storage: the tiered page cache and the persisted file metadata.

:class:`PageStore` keeps file pages on MEM/SSD/HDD tiers with quotas that hold at every moment,
LRU eviction with demotion, checksums verified on every read and an index that survives SIGKILL.
:class:`MetadataStore` keeps ``stat`` results and directory listings for offline ``ls``/``stat``.
Both are synchronous and thread-safe; this package imports only the pure core (pages, spec config).
"""

from __future__ import annotations

from tidepool.store.metadata import MetadataStore
from tidepool.store.pagestore import PageStore, StoreStats
from tidepool.store.tiers import TierUsage

__all__ = [
    "MetadataStore",
    "PageStore",
    "StoreStats",
    "TierUsage",
]
