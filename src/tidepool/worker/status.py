"""Dataset status in Fluid's vocabulary (``ufsTotal``, ``fileNum``, ``cacheStates``), true in every
state of the origin.

Fluid reports sizes as human strings ("1.50GiB") and ratios as percentages ("35.2%"); the same
fields are given here in that form for people and as ``raw`` numbers for programs.

What is shown is what is known, and says where it comes from:

* the dataset's total at the origin is listed again when older than the metadata TTL; the last
  known total is persisted, so after a restart (or while the origin is unreachable) the cached
  percentage is computed against it and ``ufsTotalAsOf`` says when it was measured;
* ``origin.state`` says what the origin answered: ``reachable``, ``unreachable`` (with since when),
  ``no-bucket``, ``refused`` (credentials), ``tls``, ``empty`` (no objects under the mount: the
  prefix is missing or empty) or ``error``, with a message naming the bucket and the endpoint;
* ``[Calculating]`` only while nothing was ever measured and the answer is still coming; a total
  that cannot be known is ``[Unknown]``, never a guess;
* a dataset with no files has no cached percentage (``-``), never "100%" (a missing prefix is not
  a fully cached dataset).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from tidepool.core.errors import (
    OriginBucketMissingError,
    OriginError,
    OriginRefusedError,
    OriginTLSError,
    OriginUnavailableError,
    redact,
)
from tidepool.core.quantity import format_bytes
from tidepool.worker.dataset import DatasetService
from tidepool.worker.history import wan_saved
from tidepool.worker.metrics import counter_value

UNKNOWN = "[Unknown]"
CALCULATING = "[Calculating]"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100.0 * x:.1f}%"


def _origin_problem(exc: BaseException) -> tuple[str, str]:
    """``(state, message)`` for a failed listing of the whole dataset."""
    if isinstance(exc, OriginUnavailableError):
        return "unreachable", exc.reason
    if isinstance(exc, OriginBucketMissingError):
        return "no-bucket", exc.strerror or str(exc)
    if isinstance(exc, OriginRefusedError):
        return "refused", exc.strerror or str(exc)
    if isinstance(exc, OriginTLSError):
        return "tls", exc.reason
    if isinstance(exc, FileNotFoundError):
        return "empty", exc.strerror or str(exc)
    return "error", redact(f"{type(exc).__name__}: {exc}")


async def _measure(svc: DatasetService) -> tuple[str, str]:
    """List the whole dataset at the origin (refreshing ``svc.ufs_total``); the origin's state."""
    stale_before = svc.stale_served
    try:
        await svc.metadata.ensure_found("")  # the totals, without building the whole list
    except (OriginError, FileNotFoundError) as exc:
        return _origin_problem(exc)
    if svc.stale_served > stale_before:  # the origin did not answer: the last listing was used
        return "unreachable", "the origin did not answer; listings and totals are the last known"
    return "reachable", ""


def _total(svc: DatasetService) -> tuple[int, int, float] | None:
    """The freshest known ``(bytes, files, when)``: measured in this run, else persisted."""
    saved = svc.meta.get_total(svc.name)
    now = svc.ufs_total
    if now is not None and (saved is None or now[2] > saved[2]):
        svc.meta.put_total(svc.name, now[0], now[1], now[2])
        return now
    return saved or now


async def dataset_status(svc: DatasetService, *, refresh: bool = True) -> dict[str, Any]:
    """Status of one dataset; ``refresh`` re-lists the origin when the total is older than TTL."""
    stale = svc.ufs_total is None or (time.time() - svc.ufs_total[2]) > svc.ttl
    state, message = "reachable", ""
    if refresh and stale:
        state, message = await _measure(svc)
    if not svc.origin_reachable:
        state = "unreachable"
        message = message or f"unreachable since {_since(svc.origin_down_since)}"
    known = _total(svc)
    total, files, as_of = known if known is not None else (None, None, None)
    if state == "reachable" and files == 0:
        state = "empty"
        urls = ", ".join(m.url for m in svc.cfg.mounts)
        message = f"no objects under {urls} (the prefix is missing or empty)"
    cached = svc.store.dataset_bytes(svc.name)
    capacity = sum(t.capacity for t in svc.store.usage())
    lookups = svc.hits + svc.misses
    # Fluid's ratios: a remote hit is a miss here that another worker of the pool answered
    local = svc.hits / lookups if lookups else 0.0
    remote = svc.peer_hits / lookups if lookups else 0.0
    hit_ratio = local + remote
    # nothing to cache, or an unknown total: no percentage is true
    fraction = None if not files or total is None else min(1.0, cached / total) if total else 1.0
    unknown_text = CALCULATING if state == "reachable" and not refresh else UNKNOWN
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
    wan = sum(o.stats.bytes_read for o in svc.origins)
    origins = [
        {
            "mount": o.mount.name,
            "url": o.mount.url,
            "reachable": o.reachable,
            "down_since": o.breaker.down_since,
            "last_error": o.breaker.last_error,
        }
        for o in svc.origins
    ]
    stats = dataclasses.asdict(svc.store.stats())
    fresh = svc.ufs_total is not None and as_of == svc.ufs_total[2]
    return {
        "dataset": svc.name,
        "phase": "Bound",
        "mounts": [m.url for m in svc.cfg.mounts],
        "ufsTotal": format_bytes(total) if total is not None else unknown_text,
        "fileNum": str(files) if files is not None else unknown_text,
        "ufsTotalAsOf": _since(as_of) if as_of is not None and not fresh else None,
        "cacheStates": {
            "cacheCapacity": format_bytes(capacity),
            "cached": format_bytes(cached),
            "cachedPercentage": _pct(fraction),
            "cacheHitRatio": _pct(hit_ratio),
            "localHitRatio": _pct(local),
            "remoteHitRatio": _pct(remote),
        },
        "origin": {"state": state, "message": message, "since": svc.origin_down_since},
        "raw": {
            "ufs_total_bytes": total,
            "file_num": files,
            "ufs_total_at": as_of,
            "cached_bytes": cached,
            "cached_files": svc.store.dataset_files(svc.name),
            "cache_capacity_bytes": capacity,
            "cached_fraction": fraction,
            "page_hits": svc.hits,
            "page_misses": svc.misses,
            "peer_hits": svc.peer_hits,
            "client_local_hits": svc.client_local_hits,
            "hit_ratio": hit_ratio,
            "origin_reachable": svc.origin_reachable,
            "origin_state": state,
            "origin_down_since": svc.origin_down_since,
            "stale_metadata_served": svc.stale_served,
            "origins": origins,
            "served_bytes": served,
            "origin_read_bytes": wan,
            "wan_saved_bytes": wan_saved(served, wan),
            "store": stats,
            "peer_check": svc.peer_check_status(),
            "rebalance": svc.rebalance_status(),
            "prefetch": {
                **svc.prefetch.status(),
                "wasted_bytes": svc.reader.prefetch_wasted(),
            },
        },
        "tiers": tiers,
    }


def _since(ts: float | None) -> str:
    if ts is None:
        return "?"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


__all__ = ["CALCULATING", "UNKNOWN", "dataset_status"]
