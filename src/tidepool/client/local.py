"""Same-host fast path: read cached pages straight from the worker's tier directories.

When the client runs on the worker's host (same boot, hostname and network namespace, see
:mod:`tidepool.hostid`) it can skip HTTP entirely: a page's location is a pure function of
``(dataset, path, version, index)`` (:mod:`tidepool.pages`), and every page file carries its own
checksum, so a reader needs no index and no lock. A page that is missing, being evicted or fails its
checksum makes the fast path give up on that read; the caller then asks the worker over HTTP, which
also fetches and caches what was missing.

Page files are immutable once renamed into place and named by version, so a reader never sees a
half-written page or bytes of another version; an eviction that unlinks a file after it was opened
does not disturb the read.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from ..pages import HEADER_SIZE, PageKey, checksum, decode_header, file_key, pages_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalLayout:
    """Where one dataset's pages live on this host."""

    dataset: str
    page_size: int
    tier_paths: tuple[str, ...]


class LocalReader:
    """Reads byte ranges of cached files from page files, verifying every page."""

    def __init__(self, layouts: dict[str, LocalLayout]) -> None:
        self.layouts = layouts
        self.hits = 0
        self.misses = 0

    def read(
        self, dataset: str, rel: str, version: str, size: int, start: int, end: int
    ) -> bytes | None:
        """Bytes ``[start, end)`` of the file, or None if any page is not on local disk."""
        layout = self.layouts.get(dataset)
        if layout is None:
            return None
        end = min(end, size)
        if end <= start:
            return b""
        ps = layout.page_size
        fkey = file_key(dataset, rel, version)
        idxs = pages_for(start, end, ps)
        if len(idxs) == 1 and start == idxs[0] * ps and end == min(size, start + ps):
            # the common small-file case: one whole page, returned without a copy
            data = self._whole_page(layout, PageKey(dataset, fkey, idxs[0]).relpath(), end - start)
            if data is None:
                self.misses += 1
            else:
                self.hits += 1
            return data
        pieces: list[bytes | memoryview] = []
        for idx in idxs:
            pstart = idx * ps
            plen = min(ps, size - pstart)
            page = self._whole_page(layout, PageKey(dataset, fkey, idx).relpath(), plen)
            if page is None:
                self.misses += 1
                return None
            lo, hi = max(start, pstart) - pstart, min(end, pstart + plen) - pstart
            pieces.append(page if (lo == 0 and hi == plen) else memoryview(page)[lo:hi])
        self.hits += 1
        return b"".join(pieces)

    @staticmethod
    def _open(layout: LocalLayout, rel_page: str) -> int | None:
        for tier in layout.tier_paths:
            try:
                return os.open(f"{tier}/{rel_page}", os.O_RDONLY)
            except OSError:
                continue
        return None

    def _whole_page(self, layout: LocalLayout, rel_page: str, plen: int) -> bytes | None:
        fd = self._open(layout, rel_page)
        if fd is None:
            return None
        try:
            length, digest = decode_header(os.pread(fd, HEADER_SIZE, 0))
            data = os.pread(fd, plen, HEADER_SIZE)
            if length != plen or len(data) != plen or checksum(data) != digest:
                log.debug("fast path: page %s is short or failed its checksum", rel_page)
                return None
            return data
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)
