"""The file object behind ``TidepoolFileSystem.open()``: small first reads, then read-ahead.

fsspec's stock "readahead" cache fetches ``requested + block_size`` on every miss, which makes the
first byte of a cold file wait for a whole block to cross the WAN. This file instead answers a read
with at least ``MIN_FETCH`` bytes at once (so tiny reads from parsers don't become one request
each), and once the reader proves sequential it keeps one block fetched ahead in the background on
fsspec's I/O loop (no thread per file). On the worker's host the bytes come from the page files
directly and no read-ahead is needed.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from fsspec.spec import AbstractBufferedFile

if TYPE_CHECKING:
    from tidepool.client.fs import TidepoolFileSystem

MIN_FETCH = 256 << 10
AHEAD_BLOCKS = 2


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
        self._ahead: deque[tuple[int, int, Future[bytes]]] = deque()
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
        buf_end = self._buf_start + len(self._buf)
        parts: list[bytes] = []
        pos = start
        if self._buf_start <= start < buf_end:  # the buffer holds the beginning
            parts.append(self._buf[start - self._buf_start :])
            pos = buf_end
        self._sequential = pos == buf_end
        want_end = min(self.size, max(end, pos + MIN_FETCH))
        local = fs._local_read(self.path, self.info, pos, want_end)
        if local is not None:
            parts.append(local)
            pos += len(local)
        while pos < end and self._ahead and self._ahead[0][0] == pos:
            _, _, fut = self._ahead.popleft()
            data = fut.result()
            parts.append(data)
            pos += len(data)
        if pos < end:  # a jump, or the read-ahead fell behind: read the rest now
            self._cancel_ahead()
            parts.append(fs._fetch_sync(self.path, self.info, pos, max(end, want_end)))
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self._buf, self._buf_start = data, start
        if self._sequential and local is None:
            self._read_ahead(fs, start + len(data))
        return self._slice(start, end) or b""

    def _read_ahead(self, fs: TidepoolFileSystem, after: int) -> None:
        """Keep ``AHEAD_BLOCKS`` blocks in flight past ``after`` (two: the worker sends one while
        this process takes in the other). They are fetched on the filesystem's small read-ahead
        pool with blocking sockets, whose receive copies run without the GIL: through the asyncio
        loop, a warm 256 MiB read was bound by this process's CPU at ~550 MB/s."""
        nxt = self._ahead[-1][1] if self._ahead else after
        while len(self._ahead) < AHEAD_BLOCKS and nxt < self.size:
            stop = min(self.size, nxt + self.blocksize)
            fut = fs._readahead_pool().submit(fs._fetch_sync, self.path, self.info, nxt, stop)
            self._ahead.append((nxt, stop, fut))
            nxt = stop

    def _cancel_ahead(self) -> None:
        while self._ahead:
            self._ahead.popleft()[2].cancel()

    def close(self) -> None:
        self._cancel_ahead()
        self._buf = b""
        super().close()
