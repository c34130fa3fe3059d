"""Resolve a runtime's spec into a :class:`RuntimeConfig`: page size, tiers and replicas.

Fluid's ``AlluxioRuntime``/``CacheRuntime`` describes a tiered store as ``levels[]`` of a medium,
comma-separated directories and quotas. This module applies the rules that span fields: the page
size (``pageSize`` or its Alluxio property alias, within the page store's bounds), one level per
medium, one tier per directory, Fluid's division of a single quota among a level's paths, watermark
order, and quotas large enough for one page. Tiers come out fastest first (MEM, SSD, HDD). A
dataset without a runtime gets :func:`default_runtime`.

It is pure: it reads no files and creates no directories; ``~`` in paths is expanded, nothing else.
Limits: problems are raised as :class:`FieldErrors` with field locations; wording them with file
and line is the loader's job (:mod:`.problems`). Binding a runtime to its dataset is the loader's.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Sequence
from pathlib import Path

from tidepool.core.pages import DEFAULT_PAGE_SIZE, HEADER_SIZE, MAX_PAGE_SIZE, MIN_PAGE_SIZE
from tidepool.core.quantity import format_bytes
from tidepool.spec.config import MEDIUM_ORDER, RuntimeConfig, TierConfig
from tidepool.spec.models import Level, Runtime
from tidepool.spec.problems import FieldErrors, Loc
from tidepool.spec.scalars import parse_size, quantity

DEFAULT_CACHE_DIR = "~/.cache/tidepool"
DEFAULT_QUOTA = 10 << 30
PAGE_SIZE_PROPERTY = "alluxio.worker.page.store.page.size"
"""Alluxio property accepted as an alias of the runtime's ``pageSize``."""


def default_runtime(dataset: str, base_dir: Path | str | None = None) -> RuntimeConfig:
    """Runtime for a dataset without one: one SSD tier of 10Gi at ``<base_dir>/<dataset>``."""
    base = Path(base_dir if base_dir is not None else DEFAULT_CACHE_DIR).expanduser()
    return RuntimeConfig(tiers=(TierConfig("SSD", str(base / dataset), DEFAULT_QUOTA, 0.95, 0.7),))


def runtime_config(runtime: Runtime, default_tiers: Sequence[TierConfig] = ()) -> RuntimeConfig:
    """Resolve a runtime's spec; :class:`FieldErrors` lists problems with their field locations.

    ``default_tiers`` are used when the spec has no ``tieredstore``. Tiers come out fastest first.
    """
    spec, problems = runtime.spec, list[tuple[Loc, str]]()
    page_size, page_loc = spec.page_size, typing.cast(Loc, ("spec", "pageSize"))
    if PAGE_SIZE_PROPERTY in spec.properties:
        prop_loc: Loc = ("spec", "properties", PAGE_SIZE_PROPERTY)
        try:
            alias = parse_size(spec.properties[PAGE_SIZE_PROPERTY], alluxio=True)
        except ValueError as exc:
            problems.append((prop_loc, str(exc)))
        else:
            if page_size is not None and alias != page_size:
                message = f"{alias} bytes disagrees with pageSize {page_size}; set only one"
                problems.append((prop_loc, message))
            page_size, page_loc = alias, prop_loc
    page_size = DEFAULT_PAGE_SIZE if page_size is None else page_size
    if not MIN_PAGE_SIZE <= page_size <= MAX_PAGE_SIZE:
        valid = f"{format_bytes(MIN_PAGE_SIZE)} to {format_bytes(MAX_PAGE_SIZE)}"
        problems.append((page_loc, f"page size {page_size} bytes is outside {valid}"))
        page_size = DEFAULT_PAGE_SIZE
    tiers = list(default_tiers) if spec.tieredstore is None else []
    media: dict[str, int] = {}
    paths: dict[str, int] = {}
    for i, level in enumerate(spec.tieredstore.levels if spec.tieredstore else ()):
        loc: Loc = ("spec", "tieredstore", "levels", i)
        if level.mediumtype in media:
            message = (
                f"medium {level.mediumtype} is already used by levels[{media[level.mediumtype]}]"
                "; list each medium once, with several directories as a comma-separated path"
            )
            problems.append(((*loc, "mediumtype"), message))
        media.setdefault(level.mediumtype, i)
        for path, quota in _level_tiers(level, loc, page_size, problems):
            if path in paths:
                message = f"directory {path!r} is already used by levels[{paths[path]}]"
                problems.append(((*loc, "path"), message + "; every tier needs its own"))
            paths.setdefault(path, i)
            tiers.append(
                TierConfig(level.mediumtype, path, quota, level.high, level.low, level.shared)
            )
    if problems:
        raise FieldErrors(problems)
    tiers.sort(key=lambda t: MEDIUM_ORDER[t.medium])
    return RuntimeConfig(
        tiers=tuple(tiers),
        page_size=page_size,
        replicas=spec.replicas,
        data_replicas=spec.data.replicas,
        prefetch=spec.prefetch.policy,
        prefetch_inflight=spec.prefetch.max_inflight,
    )


def _level_tiers(
    level: Level, loc: Loc, page_size: int, problems: list[tuple[Loc, str]]
) -> list[tuple[str, int]]:
    """``(path, quota)`` per directory of one level; appends its problems to ``problems``."""
    before = len(problems)
    if not 0 < level.high <= 1:
        problems.append(((*loc, "high"), f"{level.high} is not a fraction in (0, 1]"))
    if not 0 < level.low < 1:
        problems.append(((*loc, "low"), f"{level.low} is not a fraction in (0, 1)"))
    elif level.low >= level.high:
        message = f"low watermark {level.low} must be below high watermark {level.high}"
        problems.append(((*loc, "low"), message + " (eviction runs from high down to low)"))
    paths = [os.path.expanduser(p) for p in level.paths()]
    for path in (p for p in paths if not os.path.isabs(p)):
        problems.append(((*loc, "path"), f"{path[:200]!r} is not an absolute directory"))
    if not paths:
        problems.append(((*loc, "path"), "no directory given; write a path like /mnt/cache"))
    name = "quotaList" if level.quota_list is not None else "quota"
    raw = level.quota_list if level.quota_list is not None else level.quota
    if raw is None:
        problems.append(((*loc, "quota"), "required: the bytes this tier may hold, like 10Gi"))
        return []
    try:
        quotas = [quantity(q.strip()) for q in raw.split(",")]
    except ValueError as exc:
        problems.append(((*loc, name), str(exc)))
        return []
    if len(quotas) == 1 and name == "quota":  # Fluid: one quota is divided among the paths
        quotas = [quotas[0] // max(len(paths), 1)] * len(paths)
    elif len(quotas) != len(paths):
        message = f"{len(quotas)} quotas for {len(paths)} comma-separated paths"
        problems.append(((*loc, name), message + "; give one quota per path, in path order"))
        return []
    minimum = page_size + HEADER_SIZE
    if any(q < minimum for q in quotas):
        message = (
            f"quota {min(quotas)} bytes per directory is smaller than one page "
            f"({format_bytes(page_size)} page + {HEADER_SIZE}-byte header); "
            f"use at least {minimum} bytes, or a smaller pageSize"
        )
        problems.append(((*loc, name), message))
    return [] if len(problems) > before else list(zip(paths, quotas, strict=True))
