"""What a restarted page store keeps: the index is the authority, the disk only confirms it.

When a page is put, its checksum is computed from the bytes the worker fetched and committed to
the index (:mod:`tidepool.store.index`) with the page's tier and size. A restarted store serves at
once from its index (issue 16: a restart in bounded time, whatever the page count): every read
checks its bytes against the checksum *in the row*, and a page whose file is gone is dropped when
it is read, so nothing wrong is ever served meanwhile. The disk is then checked against the index
in the background (:meth:`tidepool.store.pagestore.PageStore.wait_verified`), by these rules:

1. A row is **kept** when a page file of exactly the recorded size is at its path. Its content
   is not read (that would read the whole cache); a file that was swapped or torn since is
   dropped on its first read and never served.
2. A row whose file is missing (a MEM tier after a reboot) or of another size (a torn or
   replaced file) is **dropped** from the index, and so is one whose tier is no longer
   configured (at once, at startup).
3. A page file the index does not know is **deleted, never adopted**. Its bytes could only be
   checked against its own header, which whoever wrote the file also wrote, so adopting it would
   serve a file planted at a predictable page path. Such files are: a page whose ``put`` was
   interrupted before the index commit (whole or half-written), the second copy left by an
   interrupted demotion, a planted file, and every page of a tier whose index was unreadable and
   rebuilt. In the last case the cache is lost and refills from the origin: a correct cache is
   worth more than a warm one.
4. The rows of a file kept as one extent (:mod:`tidepool.core.pages`) stand or fall together: all
   are kept when the extent file is there with exactly the length those rows imply (every page
   from 0 on, each but the last a full page), else all are dropped. An extent no rows account for
   is deleted like an unknown page file.
5. Anything that is not a page file of this dataset (other names, links, directories, other
   datasets' directories) is **left alone** and reported: it is not Tidepool's to delete.

The check runs while the store works, so it judges only what it can prove stale: a row is dropped
only if the page is still the one it looked at (not evicted, demoted or made an extent since), and
a file is deleted only if it was last written before the store opened (:func:`unvouched`) and is
still not indexed nor being written. The functions here are those rules, pure; the store applies
them (:meth:`tidepool.store.pagestore.PageStore._verify`).

Limits: a row is trusted to be Tidepool's own because the index lives in a directory only the
worker's user can write (:mod:`tidepool.store.tierdir`); whoever can rewrite the index can also
rewrite the worker. Until the check has passed a tier, its status counts rows whose files may be
gone (a MEM tier after a reboot), and files no row vouches for still take disk space.
"""

from __future__ import annotations

from collections.abc import Sequence

from tidepool.core.pages import HEADER_SIZE, extent_length


def page_backed(row_size: int, file_size: int | None) -> bool:
    """Rule 1: a row of ``row_size`` bytes is kept when its page file (``file_size``, None when
    there is none) has exactly that size."""
    return file_size is not None and file_size == row_size and row_size >= HEADER_SIZE


def extent_backed(pages: Sequence[tuple[int, int]], file_size: int | None, page_size: int) -> bool:
    """Rule 4: the rows of a file's extent, ``(page index, row size)`` each, are kept when the
    extent file (``file_size``) has exactly the length they imply."""
    expected = _extent_length(pages, page_size)
    return expected is not None and file_size == expected


def unvouched(indexed: bool, being_written: bool, mtime_ns: int, opened_ns: int) -> bool:
    """Rule 3, as the background check may apply it: a page-named file is deleted when no row
    vouches for it, no put is writing it, and it was last written before the store opened (a
    file written since is this process's own, on its way into the index)."""
    return not indexed and not being_written and mtime_ns < opened_ns


def _extent_length(pages: Sequence[tuple[int, int]], page_size: int) -> int | None:
    """The length of the extent ``pages`` describe, or None when they describe none (a page
    missing, a page other than the last not full, or a page size unknown)."""
    ordered = sorted(pages)
    lengths = [size - HEADER_SIZE for _, size in ordered]
    if (
        page_size <= 0
        or not ordered
        or [i for i, _ in ordered] != list(range(len(ordered)))
        or any(n != page_size for n in lengths[:-1])
        or not 0 < lengths[-1] <= page_size
    ):
        return None
    return extent_length(sum(lengths), len(ordered))
