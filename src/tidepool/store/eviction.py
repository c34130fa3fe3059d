"""Which cached page to give up first: eviction policies as pure bookkeeping, no I/O.

A policy only orders keys; the page store decides when to evict, moves or deletes the page files and
keeps the byte accounting of the tier. The store keeps one policy object per tier and talks to it
through :class:`EvictionPolicy`, so another policy (LFU, ARC, 2Q …) can be plugged in without
touching the store. :class:`LRUPolicy` is the default (Fluid/Alluxio's default too).

Limits: policies are not thread-safe; the store calls them under its own lock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Generic, Protocol, TypeVar

K = TypeVar("K", bound=Hashable)


class EvictionPolicy(Protocol[K]):
    """What the page store needs from a policy: membership, recency updates and victims."""

    def add(self, key: K, size: int) -> None:
        """Start tracking ``key`` (``size`` bytes) as the most recently used; re-adding touches."""

    def touch(self, key: K) -> bool:
        """Record a use of ``key``; False when the key is not tracked."""

    def remove(self, key: K) -> int | None:
        """Stop tracking ``key``; its size, or None when it was not tracked."""

    def victims(self) -> Iterator[K]:
        """Tracked keys, the one to evict first first (lazy; do not mutate while iterating)."""

    def pop_victim(self) -> tuple[K, int] | None:
        """Remove and return the first victim and its size, or None when empty."""

    def __contains__(self, key: object) -> bool: ...

    def __len__(self) -> int: ...

    @property
    def total(self) -> int:
        """Sum of the sizes of the tracked keys."""


class LRUPolicy(Generic[K]):
    """Least recently used first: an insertion-ordered dict moved to the end on each touch.

    All operations are O(1).
    """

    __slots__ = ("_order", "_total")

    def __init__(self) -> None:
        self._order: OrderedDict[K, int] = OrderedDict()
        self._total = 0

    def add(self, key: K, size: int) -> None:
        if size < 0:
            raise ValueError(f"size of {key!r} is {size}, expected >= 0")
        old = self._order.pop(key, None)
        if old is not None:
            self._total -= old
        self._order[key] = size
        self._total += size

    def touch(self, key: K) -> bool:
        try:
            self._order.move_to_end(key)
        except KeyError:
            return False
        return True

    def remove(self, key: K) -> int | None:
        size = self._order.pop(key, None)
        if size is not None:
            self._total -= size
        return size

    def victims(self) -> Iterator[K]:
        return iter(self._order)

    def pop_victim(self) -> tuple[K, int] | None:
        if not self._order:
            return None
        key, size = self._order.popitem(last=False)
        self._total -= size
        return key, size

    def __contains__(self, key: object) -> bool:
        return key in self._order

    def __len__(self) -> int:
        return len(self._order)

    @property
    def total(self) -> int:
        return self._total
