"""``tidepool refresh DATASET[/PATH]``: see a change at the origin now, not after the TTL.

Stat and listings are trusted for the dataset's metadata TTL (``metadataSyncPolicy``; forever
when ``immutable``), so an object overwritten in the bucket, or a new one, stays invisible until
then. :func:`refresh_path` drops what the metadata store holds at and below a path and asks the
origin again at once (a stat, and a listing for a directory), so the next ``stat``/``ls``/read of
any client sees the origin's current state. Cached pages are never dropped: they are keyed by
version, so pages of an old version are simply not served as the current one.

Refused while the origin is unreachable: the dropped metadata is what lets a worker serve its
cached files offline, so nothing is touched then (HTTP 503, the cached state is kept).

Limits: clients keep their own short-lived metadata cache (at most the TTL, capped at 60 s, per
process); a Python program sees the change at once after ``fs.invalidate_cache(path)``.
"""

from __future__ import annotations

import logging
from typing import Any

from tidepool.core.errors import OriginUnavailableError
from tidepool.core.paths import normalize
from tidepool.worker.dataset import DatasetService

log = logging.getLogger(__name__)


async def refresh_path(svc: DatasetService, path: str) -> dict[str, Any]:
    """Forget the metadata at and below ``path`` and fetch it again; what the origin says now."""
    rel = normalize(path)
    if not svc.origin_reachable:
        raise OriginUnavailableError(
            svc.name,
            rel,
            "cannot refresh while the origin is unreachable; the cached metadata is kept so "
            "cached files stay readable",
        )
    before = svc.meta.get_info(svc.name, rel)
    dropped = svc.meta.drop_prefix(svc.name, rel)
    out: dict[str, Any] = {"dataset": svc.name, "path": rel, "dropped": dropped}
    if before is not None and not before[0].get("missing"):
        out["previous_version"] = before[0].get("version")
    try:
        info = await svc.stat(rel)
    except FileNotFoundError:
        out["exists"] = False
        log.info("refreshed %s/%s: gone at the origin", svc.name, rel)
        return out
    out.update(exists=True, type=info["type"], size=info.get("size", 0))
    if info["type"] == "directory":
        out["entries"] = len(await svc.ls(rel))
    else:
        out["version"] = info.get("version")
    log.info("refreshed %s/%s (%d metadata entries dropped)", svc.name, rel, dropped)
    return out


__all__ = ["refresh_path"]
