"""Shared set-up for the loopback pool tests: real workers of one node pool, static membership.

Each worker gets its own tier and state directory; they all read one real S3 origin.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tidepool.core.ring import Member
from tidepool.spec.config import DatasetConfig, TierConfig

PEER_TOKEN = "pool-a-peer-credential"
POOL = "pool-a"


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all bound at once, so none repeats)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def per_worker(cfg: DatasetConfig, tmp: Path, name: str, **runtime: Any) -> DatasetConfig:
    """``cfg`` with a 1 GiB tier of worker ``name``'s own (and any runtime fields replaced)."""
    tiers = (TierConfig("SSD", str(tmp / f"cache-{name}"), 1 << 30),)
    return dataclasses.replace(
        cfg, runtime=dataclasses.replace(cfg.runtime, tiers=tiers, **runtime)
    )


def static_members(members: Sequence[Member]) -> str:
    """The ``--members`` value naming ``members``."""
    return "static:" + ",".join(f"{m.name}={m.address}" for m in members)


def start_pool(
    make_dataset: Any,
    start_worker: Any,
    tmp: Path,
    files: Mapping[str, bytes],
    *,
    n: int = 3,
    page_size: int = 1 << 20,
    replicas: int = 1,
    chunk_sizes: Sequence[int] | None = None,
) -> tuple[list[Any], list[Member]]:
    """``n`` workers ``w0…`` of pool ``pool-a`` caching dataset ``ds`` of ``files``; with
    ``chunk_sizes``, one chunk size per worker (and ``n`` is their count)."""
    cfg = make_dataset(files, page_size=page_size)
    n = len(chunk_sizes) if chunk_sizes is not None else n
    ports = free_ports(n)
    members = [Member(f"w{i}", f"http://127.0.0.1:{p}", POOL) for i, p in enumerate(ports)]
    extra = [{} if chunk_sizes is None else {"chunk_size": c} for c in chunk_sizes or [0] * n]
    workers = [
        start_worker(
            [per_worker(cfg, tmp, m.name, data_replicas=replicas)],
            port=ports[i],
            nodepool=POOL,
            node_name=m.name,
            members=static_members(members),
            state_dir=tmp / f"state-{m.name}",
            peer_token=PEER_TOKEN,
            **extra[i],
        )
        for i, m in enumerate(members)
    ]
    return workers, members
