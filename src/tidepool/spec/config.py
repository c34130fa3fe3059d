"""Resolved, runtime-ready configuration: plain frozen dataclasses built from the spec models.

The YAML models (``models.py``) mirror what users write; these dataclasses are what the runtime
(origin, page store, worker) consumes after defaults, aliases and secrets are resolved. Keeping the
two apart lets the runtime stay ignorant of Fluid's field names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Medium = Literal["MEM", "SSD", "HDD"]
MEDIUM_ORDER: dict[str, int] = {"MEM": 0, "SSD": 1, "HDD": 2}

DEFAULT_METADATA_TTL = 60.0


@dataclass(frozen=True)
class TierConfig:
    """One level of the tiered store (Fluid ``tieredstore.levels[]``)."""

    medium: Medium
    """MEM, SSD or HDD; pages go to the top tier first and are demoted downwards on eviction."""
    path: str
    """Directory that holds this level's pages (MEM: a tmpfs such as /dev/shm/...)."""
    quota: int
    """Bytes this level may hold, counted as page files on disk; never exceeded."""
    high: float = 0.95
    """High watermark (fraction of quota): crossing it triggers eviction down to ``low``."""
    low: float = 0.7
    """Low watermark (fraction of quota) that eviction stops at."""
    shared: bool = False
    """Other datasets may cache in the same directory (each in its own subdirectory); every
    dataset using the directory must say so, else the second one is refused."""


@dataclass(frozen=True)
class MountConfig:
    """One origin mount of a dataset, with its storage options already resolved."""

    name: str
    """The mount's name (Fluid ``mounts[].name``)."""
    url: str
    """The origin URL as written (``s3://bucket/prefix/``); never holds credentials."""
    protocol: str
    """fsspec protocol used to reach it (``s3``, ``file``, ``http`` …)."""
    root: str
    """Origin path of the mount root for that protocol (``bucket/prefix`` for s3)."""
    path: str
    """Where the mount appears inside the dataset, normalised (``""`` is the dataset root)."""
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)
    """Keyword arguments for the fsspec filesystem, secrets included: never log these."""
    secret_values: tuple[str, ...] = field(default=(), repr=False)
    """The secret strings among the options, so errors and logs can redact them."""


@dataclass(frozen=True)
class RuntimeConfig:
    """How a dataset is cached (Fluid ``AlluxioRuntime`` / Tidepool ``CacheRuntime``)."""

    tiers: tuple[TierConfig, ...]
    """Tiered store levels, top (fastest) first."""
    page_size: int = 1 << 20
    """Bytes per cached page."""
    replicas: int = 1
    """Number of cache workers (one per node of the pool)."""
    data_replicas: int = 1
    """How many workers keep a copy of each file (node-pool issue)."""
    metadata_ttl: float = DEFAULT_METADATA_TTL
    """Seconds a cached stat or listing is trusted before it is revalidated with the origin."""
    immutable: bool = False
    """Dataset never changes: skip revalidation entirely."""
    prefetch: Literal["off", "pattern", "dataset"] = "dataset"
    """What the worker fetches ahead of programs: nothing; hinted files and directory walks
    (``pattern``); or also the whole dataset on first touch when it fits in the cache
    (``dataset``)."""
    prefetch_inflight: int = 32
    """Most prefetch requests in flight at once (the link decides how many, up to this)."""


@dataclass(frozen=True)
class DatasetConfig:
    """Everything the runtime needs to serve one dataset."""

    name: str
    mounts: tuple[MountConfig, ...]
    runtime: RuntimeConfig
    nodepools: tuple[str, ...] = ()
    """Node pools the dataset's ``nodeAffinity`` allows (empty: any pool)."""
