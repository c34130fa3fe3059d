"""Dataset status in Fluid's vocabulary (``ufsTotal``, ``fileNum``, ``cacheStates``).

Fluid reports sizes as human strings ("1.50GiB") and ratios as percentages ("35.2%"); the same
fields are given here in that form for people and as ``raw`` numbers for programs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any

from tidepool.core.errors import OriginUnavailableError
from tidepool.core.quantity import format_bytes
from tidepool.worker.dataset import DatasetService
from tidepool.worker.history import wan_saved
from tidepool.worker.metrics import counter_value


def _pct(x: float) -> str:
    return f"{100.0 * x:.1f}%"


async def dataset_status(svc: DatasetService, *, refresh: bool = True) -> dict[str, Any]:
    """Status of one dataset; ``refresh`` re-lists the origin when the total is older than TTL."""
    stale = svc.ufs_total is None or (time.time() - svc.ufs_total[2]) > svc.ttl
    if refresh and stale:
        with contextlib.suppress(OriginUnavailableError, FileNotFoundError):
            await svc.find("")
    total, files = (svc.ufs_total[0], svc.ufs_total[1]) if svc.ufs_total else (None, None)
    cached = svc.store.dataset_bytes(svc.name)
    capacity = sum(t.capacity for t in svc.store.usage())
    lookups = svc.hits + svc.misses
    # Fluid's ratios: a remote hit is a miss here that another worker of the pool answered
    local = svc.hits / lookups if lookups else 0.0
    remote = svc.peer_hits / lookups if lookups else 0.0
    hit_ratio = local + remote
    pct = min(1.0, cached / total) if total else (1.0 if total == 0 else 0.0)
    tiers = []
    # usage() lists the tiers in the order of the runtime's levels
    for t, level in zip(svc.store.usage(), svc.cfg.runtime.tiers, strict=False):
        tiers.append(
            {
                "medium": t.medium,
                "path": str(t.path),
                "used": t.used,
                "capacity": t.capacity,
                "pages": t.pages,
                "high": level.high,
                "low": level.low,
                "high_bytes": int(level.high * t.capacity),
                "low_bytes": int(level.low * t.capacity),
            }
        )
    served = int(counter_value(svc.counters.bytes_cache) + counter_value(svc.counters.bytes_origin))
    wan = sum(o.stats.bytes_read for _, o in svc.mounts)
    origins = [
        {
            "mount": o.mount.name,
            "url": o.mount.url,
            "reachable": o.reachable,
            "down_since": o.breaker.down_since,
            "last_error": o.breaker.last_error,
        }
        for _, o in svc.mounts
    ]
    stats = dataclasses.asdict(svc.store.stats())
    return {
        "dataset": svc.name,
        "phase": "Bound",
        "mounts": [m.url for m in svc.cfg.mounts],
        "ufsTotal": format_bytes(total) if total is not None else "[Calculating]",
        "fileNum": str(files) if files is not None else "[Calculating]",
        "cacheStates": {
            "cacheCapacity": format_bytes(capacity),
            "cached": format_bytes(cached),
            "cachedPercentage": _pct(pct),
            "cacheHitRatio": _pct(hit_ratio),
            "localHitRatio": _pct(local),
            "remoteHitRatio": _pct(remote),
        },
        "raw": {
            "ufs_total_bytes": total,
            "file_num": files,
            "cached_bytes": cached,
            "cached_files": svc.store.dataset_files(svc.name),
            "cache_capacity_bytes": capacity,
            "cached_fraction": pct,
            "page_hits": svc.hits,
            "page_misses": svc.misses,
            "peer_hits": svc.peer_hits,
            "client_local_hits": svc.client_local_hits,
            "hit_ratio": hit_ratio,
            "origin_reachable": svc.origin_reachable,
            "origin_down_since": svc.origin_down_since,
            "stale_metadata_served": svc.stale_served,
            "origins": origins,
            "served_bytes": served,
            "origin_read_bytes": wan,
            "wan_saved_bytes": wan_saved(served, wan),
            "store": stats,
        },
        "tiers": tiers,
    }
