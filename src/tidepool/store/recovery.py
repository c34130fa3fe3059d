"""What a restarted page store keeps: the index is the authority, the disk only confirms it.

When a page is put, its checksum is computed from the bytes the worker fetched and committed to
the index (:mod:`tidepool.store.index`) with the page's tier and size. At startup the page store
lists the page files in its tiers and reconciles the two with :func:`plan_recovery`, a pure
function of what the index says and what the disk holds:

1. An index row is **kept** when its tier is still configured and a page file of exactly the
   recorded size is at its path. Its content is not read at startup (that would read the whole
   cache); every read verifies the bytes against the checksum *in the row*, so a file that was
   swapped or torn since is dropped on its first read and never served.
2. A row whose file is missing (a MEM tier after a reboot), of another size (a torn or replaced
   file), or whose tier is no longer configured is **dropped** from the index.
3. A page file the index does not know is **deleted, never adopted**. Its bytes could only be
   checked against its own header, which whoever wrote the file also wrote, so adopting it would
   serve a file planted at a predictable page path. Such files are: a page whose ``put`` was
   interrupted between the rename and the index commit, the second copy left by an interrupted
   demotion, a planted file, and every page of a tier whose index was unreadable and rebuilt.
   In the last case the cache is lost and refills from the origin: a correct cache is worth more
   than a warm one.
4. Anything that is not a page file of this dataset (other names, links, directories, other
   datasets' directories) is **left alone** and reported: it is not Tidepool's to delete.

Limits: a row is trusted to be Tidepool's own because the index lives in a directory only the
worker's user can write (:mod:`tidepool.store.tierdir`); whoever can rewrite the index can also
rewrite the worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from tidepool.core.pages import HEADER_SIZE, PageKey
from tidepool.store.index import PageRow


@dataclass
class RecoveryPlan:
    """What to do with each index row and page file found at startup."""

    keep: list[tuple[int, PageRow]] = field(default_factory=list)
    """Rows whose file is present with the recorded size, with the index of their tier."""
    drop: list[PageKey] = field(default_factory=list)
    """Rows to delete from the index (file missing, wrong size, tier gone)."""
    delete: list[str] = field(default_factory=list)
    """Page files no row accounts for: removed from disk, never adopted."""


def plan_recovery(
    rows: Iterable[PageRow],
    found: Mapping[tuple[int, PageKey], tuple[str, int]],
    tier_roots: Sequence[str],
) -> RecoveryPlan:
    """Reconcile index ``rows`` with the page files ``found`` on disk.

    ``found`` maps ``(tier index, key)`` to ``(path, size)`` of each page-named regular file;
    ``tier_roots`` are the configured tiers' root paths, as rows record them.
    """
    plan = RecoveryPlan()
    tier_of = {root: i for i, root in enumerate(tier_roots)}
    accounted: set[tuple[int, PageKey]] = set()
    for row in rows:
        tier = tier_of.get(row.tier)
        slot = (tier, row.key) if tier is not None else None
        hit = found.get(slot) if slot is not None else None
        if slot is None or hit is None or hit[1] != row.size or row.size < HEADER_SIZE:
            plan.drop.append(row.key)
            continue
        accounted.add(slot)
        plan.keep.append((slot[0], row))
    plan.delete = [path for slot, (path, _) in found.items() if slot not in accounted]
    return plan
