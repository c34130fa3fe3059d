"""Reconciliation: make the cluster hold what :mod:`.render` says, and read back status.

Level-triggered and idempotent: every call renders the desired objects for the pools that exist
now, applies them (create or merge-patch; ``create-only`` objects such as the token Secret are never
overwritten), and deletes the dataset's per-pool objects that are no longer desired (a pool that
disappeared, a workload kind that changed). It is called by the operator's handlers
(:mod:`.handlers`) and never by the edge.

``cleanup`` deletes everything a dataset owns, cluster-scoped PersistentVolume included (an owner
reference cannot point from a cluster-scoped object to a namespaced Dataset). It is bounded by a
deadline: objects the API will not delete in time are logged and left to garbage collection, so a
Dataset's finalizer never hangs on an unreachable pool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from tidepool.operator.render import (
    ANY_POOL,
    CREATE_ONLY,
    DATASET_LABEL,
    MANAGED_BY,
    POOL_NAME_LABEL,
    RenderOptions,
    pools_of,
    pv_name,
    render_dataset,
)
from tidepool.operator.reporter import REPORT_LABEL
from tidepool.operator.status import DatasetStatus, RuntimeStatus, aggregate, parse_reports
from tidepool.pool.kubeapi import (
    KubeApiError,
    KubeClient,
    KubeUnavailableError,
    Obj,
    Resource,
    by_kind,
)
from tidepool.spec.models import Dataset, Runtime

log = logging.getLogger(__name__)

PRUNED_KINDS = ("Service", "StatefulSet", "DaemonSet", "PodDisruptionBudget")
"""Per-pool kinds that are deleted when their pool is no longer served."""
OWNED_KINDS = (
    *PRUNED_KINDS,
    "ConfigMap",
    "Secret",
    "PersistentVolumeClaim",
    "RoleBinding",
    "Role",
    "ServiceAccount",
)


@dataclass
class Outcome:
    """What one reconciliation did."""

    pools: list[str] = field(default_factory=list)
    """Pools served now."""
    absent: list[str] = field(default_factory=list)
    """Pools the dataset allows that do not exist in the cluster."""
    actions: dict[str, str] = field(default_factory=dict)
    """``Kind/name`` -> created, patched, kept, deleted."""


def target_pools(dataset: Dataset, present: Collection[str]) -> tuple[list[str], list[str]]:
    """(pools to serve, allowed pools that are absent) given the pools that exist (pure).

    A dataset without pool affinity is served in every existing pool, or unpinned when the
    cluster has no pools at all (plain Kubernetes).
    """
    allowed = pools_of(dataset)
    if allowed == [ANY_POOL]:
        return (sorted(present) or [ANY_POOL]), []
    return [p for p in allowed if p in present], [p for p in allowed if p not in present]


def _key(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


async def reconcile(
    client: KubeClient,
    dataset: Dataset,
    runtime: Runtime | None,
    present: Collection[str],
    options: RenderOptions,
) -> Outcome:
    """Apply the dataset's objects for the pools present; delete the per-pool leftovers."""
    name, ns = dataset.metadata.name, dataset.metadata.namespace
    pools, absent = target_pools(dataset, present)
    outcome = Outcome(pools=pools, absent=absent)
    opts = replace(options, owner_uid=options.owner_uid or _uid(dataset))
    desired = render_dataset(dataset, runtime, opts, pools=pools)
    for obj in desired:
        create_only = (obj["metadata"].get("annotations") or {}).get(CREATE_ONLY) == "true"
        outcome.actions[_key(obj)] = await client.apply(obj, create_only=create_only)
    wanted = {_key(o) for o in desired}
    for kind in PRUNED_KINDS:
        res = by_kind(kind)
        for obj in await client.list(res, ns, {DATASET_LABEL: name, **MANAGED_BY}):
            key = f"{kind}/{obj['metadata']['name']}"
            if key not in wanted:
                await client.delete(res, ns, obj["metadata"]["name"])
                outcome.actions[key] = "deleted"
                log.info("dataset %s/%s: deleted %s (pool no longer served)", ns, name, key)
    return outcome


def _uid(dataset: Dataset) -> str | None:
    uid = dataset.metadata.uid
    return str(uid) if uid else None


async def cleanup(client: KubeClient, name: str, namespace: str, *, timeout: float) -> list[str]:
    """Delete what the dataset owns within ``timeout`` seconds; returns what could not be deleted.

    Raises nothing for an unreachable API: the caller decides whether to retry or release.
    """
    deadline = time.monotonic() + timeout
    left: list[str] = []

    async def gone(res: Resource, ns: str | None, obj_name: str) -> None:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            await asyncio.wait_for(client.delete(res, ns, obj_name), remaining)
        except (KubeUnavailableError, KubeApiError, TimeoutError) as exc:
            left.append(f"{res.kind}/{obj_name}")
            log.warning(
                "dataset %s/%s: could not delete %s/%s: %s",
                namespace,
                name,
                res.kind,
                obj_name,
                exc,
            )

    await gone(by_kind("PersistentVolume"), None, pv_name(namespace, name))
    for kind in OWNED_KINDS:
        res = by_kind(kind)
        try:
            remaining = max(0.1, deadline - time.monotonic())
            objs = await asyncio.wait_for(
                client.list(res, namespace, {DATASET_LABEL: name, **MANAGED_BY}), remaining
            )
        except (KubeUnavailableError, KubeApiError, TimeoutError):
            left.append(f"{kind}/*")
            continue
        for obj in objs:
            await gone(res, namespace, obj["metadata"]["name"])
    return left


async def read_status(
    client: KubeClient,
    dataset: Dataset,
    present: Collection[str],
    *,
    now: float,
    stale_after: float,
    message: str = "",
) -> DatasetStatus:
    """``Dataset.status`` from the report Leases of the dataset's workers."""
    name, ns = dataset.metadata.name, dataset.metadata.namespace
    leases = await client.list(by_kind("Lease"), ns, {DATASET_LABEL: name, REPORT_LABEL: "true"})
    reports = parse_reports(
        (lease.get("metadata") or {}).get("annotations") or {} for lease in leases
    )
    pools, _ = target_pools(dataset, present)
    allowed = pools_of(dataset)
    shown = pools if allowed == [ANY_POOL] else allowed
    generation = dataset.metadata.generation
    return aggregate(
        shown,
        reports,
        now,
        present=set(present) | ({ANY_POOL} if shown == [ANY_POOL] else set()),
        stale_after=stale_after,
        generation=int(generation) if isinstance(generation, int) else None,
        message=message,
    )


def runtime_status(
    workloads: Iterable[dict[str, Any]], pools: list[str], name: str
) -> RuntimeStatus:
    """Worker counters of a runtime from its StatefulSets/DaemonSets (pure)."""
    desired = current = ready = 0
    for w in workloads:
        status = w.get("status") or {}
        if w.get("kind") == "DaemonSet":
            desired += int(status.get("desiredNumberScheduled") or 0)
            current += int(status.get("currentNumberScheduled") or 0)
            ready += int(status.get("numberReady") or 0)
        else:
            desired += int((w.get("spec") or {}).get("replicas") or 0)
            current += int(status.get("replicas") or 0)
            ready += int(status.get("readyReplicas") or 0)
    if desired and ready >= desired:
        phase = "Ready"
    elif ready:
        phase = "PartialReady"
    else:
        phase = "NotReady"
    return RuntimeStatus(
        worker_phase=phase,  # type: ignore[arg-type]
        desired_worker_number_scheduled=desired,
        current_worker_number_scheduled=current,
        worker_number_ready=ready,
        selector=f"{DATASET_LABEL}={name},app.kubernetes.io/component=worker",
        pools=[p or "all" for p in pools],
    )


async def read_workloads(client: KubeClient, name: str, namespace: str) -> list[Obj]:
    out: list[Obj] = []
    for kind in ("StatefulSet", "DaemonSet"):
        for obj in await client.list(by_kind(kind), namespace, {DATASET_LABEL: name, **MANAGED_BY}):
            if (obj.get("metadata", {}).get("labels") or {}).get(
                "app.kubernetes.io/component"
            ) == "worker":
                out.append(obj)
    return out


__all__ = [
    "POOL_NAME_LABEL",
    "Outcome",
    "cleanup",
    "read_status",
    "read_workloads",
    "reconcile",
    "runtime_status",
    "target_pools",
]
