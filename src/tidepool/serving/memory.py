"""A global byte budget for the memory that answers hold while they are streamed.

A streamed answer holds memory for as long as it runs: the read window of the pages it sends
(fetched ahead of the socket) and the chunk waiting in the transport. A client that asks for a
large file and never reads pins that memory until the stall timeout cuts it (see
:mod:`tidepool.serving.budget`); sixty such clients took a worker from 95 MiB to 700 MiB. With a
:class:`MemoryBudget`, every stream reserves what it may hold before it starts, the reservations
of all streams together never exceed the budget, and a stream that does not fit waits (first
come, first served) instead of buffering. A wait longer than ``wait`` seconds gives up with
:class:`~tidepool.core.errors.TooManyRequestsError` (HTTP 429, sent before any byte of the
answer).

Limits: this bounds what streams *reserve*, which is what they may hold at most; answers small
enough to be sent in one piece are not streamed and not counted here (their memory is one page
at most per request, and requests are bounded by the connection cap).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from tidepool.core.errors import TooManyRequestsError

__all__ = ["MemoryBudget"]


class MemoryBudget:
    """``total`` bytes shared by all streams of one process; :meth:`reserve` takes a share."""

    def __init__(self, total: int, *, wait: float) -> None:
        if total < 1:
            raise ValueError("MemoryBudget.total must be at least 1 byte")
        self.total = total
        self.wait = wait
        self.in_use = 0
        """Bytes reserved by the streams running now."""
        self.waited = 0
        """Streams that had to wait for room."""
        self.refused = 0
        """Streams that gave up waiting (answered 429)."""
        self._queue: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> int:
        """Streams waiting for room now."""
        return len(self._queue)

    def _wake(self) -> None:
        while self._queue:
            size, fut = self._queue[0]
            if fut.done():  # gave up or was cancelled: its place is lost
                self._queue.popleft()
                continue
            if self.in_use + size > self.total:
                return  # first come, first served: nobody overtakes the head of the queue
            self._queue.popleft()
            self.in_use += size
            fut.set_result(None)

    async def _acquire(self, size: int) -> None:
        if not self._queue and self.in_use + size <= self.total:
            self.in_use += size
            return
        self.waited += 1
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((size, fut))
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.wait)
        except TimeoutError:
            if fut.done() and not fut.cancelled():  # granted at the last moment: keep it
                return
            fut.cancel()
            self.refused += 1
            self._wake()
            raise TooManyRequestsError(
                f"{self.in_use} bytes of the worker's stream memory ({self.total}) are held by "
                f"answers waiting for their readers; try again"
            ) from None
        except BaseException:
            if fut.done() and not fut.cancelled():
                self._release(size)
            else:
                fut.cancel()
                self._wake()
            raise

    def _release(self, size: int) -> None:
        self.in_use -= size
        self._wake()

    @contextlib.asynccontextmanager
    async def reserve(self, size: int) -> AsyncIterator[None]:
        """Hold ``size`` bytes (at most the whole budget) for the duration of the block."""
        size = max(1, min(size, self.total))
        await self._acquire(size)
        try:
            yield
        finally:
            self._release(size)
