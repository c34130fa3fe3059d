"""Where a client sends each request: the worker pool as this client sees it.

A client learns its pool from the worker it was pointed at (``GET /v1/node``): the members, the
replica count and the node pool's name, refreshed every :data:`REFRESH` seconds. For each request
the router computes the file's targets once — its owners on the rendezvous ring, then the others —
with members that failed in the last :data:`DOWN_FOR` seconds moved to the end, and hands that
list to the read policy (:mod:`tidepool.client.reads`), which reports failures back through
:meth:`PoolView.mark_down`. A client only ever uses its own node pool's workers: a worker of
another pool is refused, never read across the WAN.

Pure state and decisions; the HTTP calls that feed it are the filesystem's.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from typing import Any

from tidepool.core.ring import DownMarks, Member, chunk_key, chunk_of, ranked

REFRESH = 5.0
"""Seconds between refreshes of the pool's member list."""
DOWN_FOR = 2.0
"""Seconds a worker that could not be reached is tried last."""


class PoolView:
    def __init__(
        self, endpoint: str, nodepool: str = "", clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.endpoint = endpoint
        self.nodepool = nodepool
        self.members: list[Member] = []
        self.replicas = 1
        self.chunk_size = 0
        """Bytes of a file placed together in the pool (0: whole files)."""
        self.pool = ""
        self.marks = DownMarks(DOWN_FOR)
        self.fetched_at: float | None = None
        self._clock = clock

    @property
    def known(self) -> bool:
        return self.fetched_at is not None

    def due(self) -> bool:
        """Whether the member list should be fetched (never yet, or a pool's list is old)."""
        if self.fetched_at is None:
            return True
        return bool(self.members) and self._clock() - self.fetched_at > REFRESH

    def update(self, node: dict[str, Any]) -> None:
        """Take a worker's ``/v1/node`` answer; refuses a worker of another node pool."""
        pool = str(node.get("nodepool", ""))
        if self.nodepool and pool and pool != self.nodepool:
            raise ConnectionError(
                errno.EACCES,
                f"the Tidepool worker at {self.endpoint} belongs to node pool {pool!r} but this "
                f"client is in {self.nodepool!r}: a client only uses its own pool's cache (never "
                "across the WAN); point TIDEPOOL_ENDPOINT at a worker of your pool",
            )
        members = [Member(**m) for m in node.get("members", [])]
        self.members = [m for m in members if not pool or m.pool == pool]
        self.replicas = int(node.get("replicas", 1))
        chunk = node.get("chunk_size", 0)
        self.chunk_size = chunk if isinstance(chunk, int) and chunk > 0 else 0
        self.pool = pool
        self.fetched_at = self._clock()

    def touch(self) -> None:
        """Keep the current list for another period (the worker did not answer a refresh)."""
        self.fetched_at = self._clock()

    def targets(self, dataset: str, rel: str, offset: int = 0) -> list[str]:
        """Workers to ask about a file (or the bytes at ``offset`` of a large one), its owner
        first; the endpoint alone outside a pool."""
        if not self.members or not rel:
            return [self.endpoint]
        key = chunk_key(dataset, rel, chunk_of(offset, self.chunk_size))
        order = [m.address for m in ranked(key, self.members)]
        return self.marks.order(order, self._clock())

    def mark_down(self, base: str) -> None:
        self.marks.mark(base, self._clock())

    def member(self, name: str) -> Member | None:
        return next((m for m in self.members if m.name == name), None)
