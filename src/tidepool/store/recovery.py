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
   interrupted before the index commit (whole or half-written), the second copy left by an
   interrupted demotion, a planted file, and every page of a tier whose index was unreadable and
   rebuilt.
   In the last case the cache is lost and refills from the origin: a correct cache is worth more
   than a warm one.
4. The rows of a file kept as one extent (:mod:`tidepool.core.pages`) stand or fall together: all
   are kept when the extent file is there with exactly the length those rows imply (every page
   from 0 on, each but the last a full page), else all are dropped. An extent no rows account for
   is deleted like an unknown page file (e.g. one written just before a crash, its pages still
   indexed as page files), and so are the page files of rows that moved into an extent.
5. Anything that is not a page file of this dataset (other names, links, directories, other
   datasets' directories) is **left alone** and reported: it is not Tidepool's to delete.

Limits: a row is trusted to be Tidepool's own because the index lives in a directory only the
worker's user can write (:mod:`tidepool.store.tierdir`); whoever can rewrite the index can also
rewrite the worker.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from tidepool.core.pages import HEADER_SIZE, PageKey, extent_length
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
    extents: Mapping[tuple[int, str], tuple[str, int]] | None = None,
    page_size: int = 0,
) -> RecoveryPlan:
    """Reconcile index ``rows`` with the page files ``found`` and the ``extents`` on disk.

    ``found`` maps ``(tier index, key)`` to ``(path, size)`` of each page-named regular file,
    ``extents`` ``(tier index, file key)`` to ``(path, size)`` of each extent-named one;
    ``tier_roots`` are the configured tiers' root paths, as rows record them; ``page_size`` the
    store's page size (the stride of an extent's pages).
    """
    extents = extents or {}
    plan = RecoveryPlan()
    tier_of = {root: i for i, root in enumerate(tier_roots)}
    accounted: set[tuple[int, PageKey]] = set()
    in_extents: dict[tuple[int, str], list[PageRow]] = defaultdict(list)
    for row in rows:
        tier = tier_of.get(row.tier)
        if row.extent and tier is not None:
            in_extents[(tier, row.key.file_key)].append(row)
            continue
        slot = (tier, row.key) if tier is not None else None
        hit = found.get(slot) if slot is not None else None
        if slot is None or hit is None or hit[1] != row.size or row.size < HEADER_SIZE:
            plan.drop.append(row.key)
            continue
        accounted.add(slot)
        plan.keep.append((slot[0], row))
    kept_extents: set[tuple[int, str]] = set()
    for (tier, fkey), members in in_extents.items():
        hit = extents.get((tier, fkey))
        if hit is not None and hit[1] == _extent_length(members, page_size):
            kept_extents.add((tier, fkey))
            plan.keep += [(tier, row) for row in members]
        else:
            plan.drop += [row.key for row in members]
    plan.delete = [path for slot, (path, _) in found.items() if slot not in accounted]
    plan.delete += [path for slot, (path, _) in extents.items() if slot not in kept_extents]
    return plan


def _extent_length(rows: list[PageRow], page_size: int) -> int | None:
    """The length of the extent ``rows`` describe, or None when they describe none (a page
    missing, a page other than the last not full, or a page size unknown)."""
    rows = sorted(rows, key=lambda r: r.key.index)
    lengths = [r.size - HEADER_SIZE for r in rows]
    if (
        page_size <= 0
        or [r.key.index for r in rows] != list(range(len(rows)))
        or any(n != page_size for n in lengths[:-1])
        or not 0 < lengths[-1] <= page_size
    ):
        return None
    return extent_length(sum(lengths), len(rows))
