"""The restart policy as a pure function: the index vouches for pages, the disk only confirms."""

from __future__ import annotations

from tidepool.core.pages import HEADER_SIZE
from tidepool.store.index import PageRow
from tidepool.store.recovery import plan_recovery

from .conftest import key

ROOTS = ["/t/mem/ds", "/t/ssd/ds"]
SIZE = HEADER_SIZE + 100


def row(n: int, tier: str = ROOTS[0], size: int = SIZE) -> PageRow:
    return PageRow(key(n), tier, size, checksum=n, atime=n)


def test_rows_with_their_file_are_kept_the_rest_dropped() -> None:
    rows = [row(1), row(2), row(3, size=SIZE + 1), row(4, tier="/gone/ds"), row(5, size=10)]
    found = {
        (0, key(1)): ("/t/mem/ds/p1", SIZE),
        (0, key(3)): ("/t/mem/ds/p3", SIZE),  # another size than recorded: torn or replaced
        (0, key(5)): ("/t/mem/ds/p5", 10),  # shorter than a header
    }
    plan = plan_recovery(rows, found, ROOTS)
    assert plan.keep == [(0, rows[0])]
    assert plan.drop == [key(2), key(3), key(4), key(5)]
    assert sorted(plan.delete) == ["/t/mem/ds/p3", "/t/mem/ds/p5"]


def test_files_without_a_row_are_deleted_never_adopted() -> None:
    found = {(1, key(7)): ("/t/ssd/ds/p7", SIZE), (0, key(8)): ("/t/mem/ds/p8", SIZE)}
    plan = plan_recovery([], found, ROOTS)
    assert plan.keep == [] and plan.drop == []
    assert sorted(plan.delete) == ["/t/mem/ds/p8", "/t/ssd/ds/p7"]


def test_the_copy_a_row_does_not_name_is_deleted() -> None:
    """An interrupted demotion leaves the page in two tiers; the row names one of them."""
    found = {(0, key(1)): ("/t/mem/ds/p1", SIZE), (1, key(1)): ("/t/ssd/ds/p1", SIZE)}
    plan = plan_recovery([row(1, tier=ROOTS[1])], found, ROOTS)
    assert plan.keep == [(1, row(1, tier=ROOTS[1]))]
    assert plan.delete == ["/t/mem/ds/p1"]
