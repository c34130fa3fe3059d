"""Human-readable summary of a loaded spec, for ``tidepool validate`` and ``tidepool up``.

It shows what Tidepool will do with the spec (mounts and their resolved protocol, node pools,
tiers, page size, replicas, metadata TTL) and the loader's notices. Option *keys* are listed;
values of secret options are shown as ``***`` (compared by exact value) and the whole text is
scrubbed of every secret value the bundle holds where it stands as a whole token, so the output is
safe to paste into an issue — and a tier path whose directory is named like the access key id
still prints intact (:func:`~tidepool.core.errors.redact` never replaces inside a path).

Limits: plain text only (no colours or tables); ordering follows the spec files.
"""

from __future__ import annotations

from tidepool.core.errors import redact
from tidepool.core.quantity import format_bytes
from tidepool.spec.config import DatasetConfig, MountConfig
from tidepool.spec.loader import SpecBundle
from tidepool.spec.models import Dataset, Mount


def describe(bundle: SpecBundle) -> str:
    """The summary text, one line per fact (no trailing newline, ready for ``print``)."""
    lines: list[str] = []
    for name, config in bundle.datasets.items():
        lines.extend(_dataset(config, bundle.dataset_models.get(name)))
    if not bundle.datasets:
        lines.append("no datasets")
    for load in bundle.dataloads:
        targets = ", ".join(t.path for t in load.spec.target) or "whole dataset"
        when = load.spec.policy + (f" ({load.spec.schedule})" if load.spec.schedule else "")
        lines.append(
            f"dataload {load.metadata.name}: dataset {load.spec.dataset.name}, {targets}, {when}"
            + (", with metadata" if load.spec.load_metadata else "")
        )
    if bundle.notices:
        lines.append("notices:")
        lines.extend(f"  - {notice}" for notice in bundle.notices)
    secrets = sorted(
        {v for c in bundle.datasets.values() for m in c.mounts for v in m.secret_values}
        | {v for s in bundle.secrets for v in s.decoded().values()},
        key=len,
        reverse=True,
    )
    return "\n".join(redact(line, secrets) for line in lines)


_PREFETCH = {
    "off": "off (only what programs read is fetched)",
    "pattern": "pattern (announced files and directories read in order are fetched ahead)",
    "dataset": "dataset (announced files, directory walks, and the whole dataset on its first "
    "read when it fits in the cache)",
}


def _dataset(config: DatasetConfig, model: Dataset | None) -> list[str]:
    runtime = config.runtime
    pools = ", ".join(config.nodepools) or "any"
    ttl = "immutable" if runtime.immutable else f"{runtime.metadata_ttl:g}s"
    lines = [
        f"dataset {config.name}",
        f"  node pools: {pools}",
        f"  workers: {runtime.replicas}, copies per file: {runtime.data_replicas}, "
        f"page size: {format_bytes(runtime.page_size)}, metadata TTL: {ttl}",
        f"  prefetch: {_PREFETCH[runtime.prefetch]}",
        "  mounts:",
    ]
    mount_models = {m.name or config.name: m for m in model.spec.mounts} if model else {}
    for mount in config.mounts:
        lines.extend(_mount(mount, mount_models.get(mount.name), model))
    lines.append("  tiers:")
    for tier in runtime.tiers:
        lines.append(
            f"    {tier.medium} {tier.path}: {format_bytes(tier.quota)}, "
            f"evict from {tier.high:.0%} down to {tier.low:.0%}"
        )
    return lines


def _mount(mount: MountConfig, model: Mount | None, dataset: Dataset | None) -> list[str]:
    lines = [
        f"    /{mount.path} <- {mount.url} ({mount.protocol}: {mount.root})",
    ]
    plain: dict[str, str] = {}
    secret_refs: dict[str, str] = {}
    if dataset is not None:
        plain.update(dataset.spec.shared_options)
        for option in dataset.spec.shared_encrypt_options:
            secret_refs[option.name] = option.value_from.secret_key_ref.name
    if model is not None:
        plain.update(model.options)
        for option in model.encrypt_options:
            secret_refs[option.name] = option.value_from.secret_key_ref.name
            plain.pop(option.name, None)
    for key in sorted({*plain, *secret_refs}):
        if key in secret_refs:
            shown = f"*** (secret {secret_refs[key]})"
        elif plain[key] in mount.secret_values:
            shown = "***"
        else:
            shown = plain[key]
        lines.append(f"      {key}: {shown}")
    return lines
