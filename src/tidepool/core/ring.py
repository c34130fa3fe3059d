"""Placement: which workers of a node pool own a file — rendezvous (highest random weight) hashing.

Every client and worker computes the same owners from the same member list, with no coordinator:
each member gets a score ``hash(member, key)`` and the ``r`` highest scores own the key. When one of
N members joins or leaves, only the keys it wins or held move (about 1/N of them), and the order of
the other members for every key stays the same, so failover walks the same list everywhere.

The hash is BLAKE2b (stable across processes and machines), never Python's salted ``hash()``.
Ownership is per chunk of a file: a file's first :data:`DEFAULT_CHUNK_SIZE` bytes (all of a small
file) are placed by ``(dataset, path)``, so one owner serves a small file and holds its metadata;
each further chunk of a large file is placed on its own (:func:`chunk_key`), so a multi-GiB model
read by every node of a site is served by every worker's disk and NIC, not by one. Pure functions,
no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Member:
    """One cache worker of a node pool."""

    name: str
    """Stable identity (the node name); placement depends on it, not on the address."""
    address: str
    """Base URL of its HTTP API, e.g. ``http://192.0.2.11:8433``."""
    pool: str = ""
    """Node pool it belongs to (``apps.openyurt.io/nodepool``)."""


def _score(member: str, key: str) -> int:
    digest = hashlib.blake2b(f"{member}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


DEFAULT_CHUNK_SIZE = 16 << 20
"""Bytes of a file placed together (rounded up to whole pages by the worker). Measured on the
pool bench's large case (1 GiB, three workers with 200 Mbit/s NICs, 8 parallel 8 MiB ranges):
16 MiB read 2.2x the one-owner rate, 64 MiB 1.7x: a reader's concurrent ranges then fall in
one or two chunks, so on one or two members, and 16 chunks spread less evenly than 64."""
MAX_CHUNK_SIZE = 1 << 40
"""The largest chunk size accepted (beyond it, placement is per file in practice)."""


def file_key(dataset: str, path: str) -> str:
    """The placement key of a file (and of its first chunk)."""
    return f"{dataset}\x00{path}"


def chunk_key(dataset: str, path: str, chunk: int) -> str:
    """The placement key of chunk ``chunk`` of a file: the file's own key for chunk 0 (small
    files and the head of every file are placed as whole files), ``dataset NUL path NUL chunk``
    after it (a path never holds NUL, so no file's key is another's chunk key)."""
    return file_key(dataset, path) if chunk <= 0 else f"{dataset}\x00{path}\x00{chunk}"


def chunk_of(offset: int, chunk_size: int) -> int:
    """The chunk holding byte ``offset`` (0 when files are placed whole: ``chunk_size`` 0)."""
    return offset // chunk_size if chunk_size > 0 else 0


def ranked(key: str, members: Iterable[Member]) -> list[Member]:
    """All members, best owner first (the failover order for ``key``)."""
    return sorted(members, key=lambda m: (_score(m.name, key), m.name), reverse=True)


def owners(key: str, members: Sequence[Member], replicas: int = 1) -> list[Member]:
    """The ``replicas`` members that own ``key`` (fewer when the pool is smaller)."""
    if replicas < 1:
        raise ValueError(f"replicas must be at least 1, got {replicas}")
    return ranked(key, members)[:replicas]


class DownMarks:
    """Members that failed recently, skipped for ``hold`` seconds before they are tried again.

    The one place that decides "this member is down" for a router (client) or a worker's view of
    its peers. Time comes from the caller, so the policy is tested without sleeping.
    """

    def __init__(self, hold: float = 2.0) -> None:
        self.hold = hold
        self._until: dict[str, float] = {}

    def mark(self, name: str, now: float) -> None:
        self._until[name] = now + self.hold

    def clear(self, name: str) -> None:
        self._until.pop(name, None)

    def is_down(self, name: str, now: float) -> bool:
        return self._until.get(name, float("-inf")) > now

    def order(self, names: Sequence[str], now: float) -> list[str]:
        """``names`` with the ones marked down moved to the end (kept as a last resort)."""
        up = [n for n in names if not self.is_down(n, now)]
        return up + [n for n in names if n not in up]


def spread(keys: Iterable[str], members: Sequence[Member]) -> dict[str, int]:
    """How many of ``keys`` each member owns (for ``tidepool status``)."""
    counts = {m.name: 0 for m in members}
    for k in keys:
        if members:
            counts[ranked(k, members)[0].name] += 1
    return counts
