"""The file object behind ``TidepoolFileSystem.open()``: small first reads, then read-ahead.

fsspec's stock "readahead" cache fetches ``requested + block_size`` on every miss, which makes the
first byte of a cold file wait for a whole block to cross the WAN. This file instead answers a read
with at least ``MIN_FETCH`` bytes at once (so tiny reads from parsers don't become one request
each), and once the reader proves sequential it keeps one block fetched ahead in the background on
fsspec's I/O loop (no thread per file). On the worker's host the bytes come from the page files
directly and no read-ahead is needed.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from fsspec.spec import AbstractBufferedFile

if TYPE_CHECKING:
    from .fs import TidepoolFileSystem

MIN_FETCH = 256 << 10


class TidepoolFile(AbstractBufferedFile):  # type: ignore[misc]
    """A read-only file with one buffered block and one block of read-ahead."""

    def __init__(
        self, fs: TidepoolFileSystem, path: str, info: dict[str, Any], block_size: int
    ) -> None:
        self.info = info
        super().__init__(
            fs, path, mode="rb", block_size=block_size, cache_type="none", size=info["size"]
        )
        self._buf = b""
        self._buf_start = 0
        self._ahead: tuple[int, int, Future[bytes]] | None = None
        self._sequential = False

    def _slice(self, start: int, end: int) -> bytes | None:
        lo = start - self._buf_start
        if lo >= 0 and end - self._buf_start <= len(self._buf):
            if lo == 0 and end - start == len(self._buf):
                return self._buf
            return self._buf[lo : end - self._buf_start]
        return None

    def _fetch_range(self, start: int, end: int) -> bytes:
        fs: TidepoolFileSystem = self.fs
        end = min(end, self.size)
        if end <= start:
            return b""
        hit = self._slice(start, end)
        if hit is not None:
            return hit
        self._sequential = start == self._buf_start + len(self._buf)
        want_end = min(self.size, max(end, start + MIN_FETCH))
        local = fs._local_read(self.path, self.info, start, want_end)
        if local is not None:
            self._buf, self._buf_start = local, start
            return self._slice(start, end) or b""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == start:
            data = ahead[2].result()
            if ahead[1] < end:  # the reader jumped further than the read-ahead reached
                data += fs._fetch_sync(self.path, self.info, ahead[1], want_end)
        else:
            if ahead is not None:
                ahead[2].cancel()
            data = fs._fetch_sync(self.path, self.info, start, want_end)
        self._buf, self._buf_start = data, start
        buf_end = start + len(data)
        if self._sequential and buf_end < self.size:
            nxt = min(self.size, buf_end + max(self.blocksize, len(data)))
            fut = asyncio.run_coroutine_threadsafe(
                fs._fetch(self.path, self.info, buf_end, nxt), fs.loop
            )
            self._ahead = (buf_end, nxt, fut)
        return self._slice(start, end) or b""

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead[2].cancel()
            self._ahead = None
        self._buf = b""
        super().close()
