"""The kopf operator: handlers that keep the cluster equal to the rendered Datasets.

* **Pools.** NodePool objects (``apps.openyurt.io/v1beta1``) and the ``apps.openyurt.io/nodepool``
  label of Nodes are indexed in memory; a change wakes every Dataset's reconciler, so a pool that
  appears gets its workers and one that disappears loses them.
* **Dataset.** One daemon per Dataset reconciles (:func:`.reconcile.reconcile`) and writes
  ``status`` from the workers' reports, every ``resync`` seconds or at once when the Dataset, its
  runtime or the pools change. An invalid spec is reported in ``status.message`` (phase
  ``Failed``) with the field path, as the YAML loader would word it.
* **Deletion.** The finalizer deletes what the Dataset owns (PersistentVolume included) and is
  released after ``finalizer_timeout`` seconds whatever the API says: a Dataset is never stuck in
  Terminating because a pool or the API is unreachable (Fluid's users report days).
* **Runtime.** Its ``status`` (Fluid's worker counters, ``selector`` for the scale subresource)
  is written by the Dataset's reconciler; scaling it wakes the reconciler.
* **DataLoad.** A Job (or CronJob) per served pool (:mod:`.dataload`); a timer maps the Jobs'
  state to ``status.phase`` and ``duration``, and folds the progress each Job's load writes onto
  it (:mod:`.loadreport`, edge to cloud) into ``status.progress``.

When the API server goes away, kopf's watchers retry and the reconcilers log and wait; nothing is
deleted for lack of an answer.

The handlers are module-level functions. They share one :class:`State` through kopf's ``memo``
(``memo.state``; kopf copies the memo per object, shallowly, so all copies hold the same State).
:func:`build_registry` registers them on a registry of their own, not kopf's global one, with the
resources of the settings' mode (Tidepool's or Fluid's kinds), so several operators can run in one
process (tests).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import kopf
from pydantic import ValidationError

from tidepool.operator import dataload as dl
from tidepool.operator.crds import kinds
from tidepool.operator.reconcile import (
    cleanup,
    read_status,
    read_workloads,
    reconcile,
    runtime_status,
    target_pools,
)
from tidepool.operator.render import POOL_LABEL, RenderOptions
from tidepool.operator.status import DEFAULT_STALE_AFTER, DatasetStatus, dump
from tidepool.pool.kubeapi import (
    KubeApiError,
    KubeClient,
    KubeConfig,
    KubeError,
    KubeUnavailableError,
    Resource,
    by_kind,
)
from tidepool.spec.models import DataLoad, Dataset, Runtime

log = logging.getLogger(__name__)

OPERATOR_AGENT = "tidepool-operator"


@dataclass(frozen=True)
class OperatorSettings:
    """How the operator runs; every field has a default."""

    mode: Literal["tidepool", "fluid"] = "tidepool"
    """``fluid``: serve ``data.fluid.io`` Dataset/AlluxioRuntime/DataLoad instead."""
    render: RenderOptions = field(default_factory=RenderOptions)
    kube: KubeConfig | None = None
    """API server for the operator's own calls; ``None``: in-cluster, then kubeconfig."""
    resync: float = 30.0
    """Seconds between two reconciliations of a Dataset when nothing happens."""
    stale_after: float = DEFAULT_STALE_AFTER
    """Seconds without a worker report after which a pool is marked ``Stale``."""
    finalizer_timeout: float = 60.0
    """Seconds a Dataset's deletion may wait for cleanup before its finalizer is released."""
    namespaces: tuple[str, ...] = ()
    """Namespaces to serve; empty: cluster-wide."""
    liveness: str | None = None
    """URL kopf serves the liveness probe on (``http://0.0.0.0:8080/healthz``); None: no probe."""

    @property
    def retry_delay(self) -> float:
        """Seconds between tries of a DataLoad and between its progress checks (1 to 10)."""
        return max(1.0, min(self.resync, 10.0))


@dataclass
class PoolIndex:
    """Pools that exist: NodePool objects and node labels."""

    nodepools: set[str] = field(default_factory=set)
    node_pools: dict[str, str] = field(default_factory=dict)

    def present(self) -> set[str]:
        return self.nodepools | set(self.node_pools.values())


@dataclass
class State:
    """What the handlers of one operator share (kopf's ``memo.state``)."""

    settings: OperatorSettings
    datasets: Resource
    """The Dataset kind of the settings' mode."""
    runtimes: Resource
    """The runtime kind (CacheRuntime or AlluxioRuntime) of the settings' mode."""
    render: RenderOptions
    """The settings' render options, owned by the mode's Dataset kind."""
    load_api_version: str
    """apiVersion of the mode's DataLoad kind (owner of the Jobs it renders)."""
    pools: PoolIndex = field(default_factory=PoolIndex)
    wakeups: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)
    kube: KubeConfig | None = None
    """The API server the operator logged in to (set by :func:`login`)."""

    @classmethod
    def of(cls, settings: OperatorSettings) -> State:
        ds_kind, rt_kind, load_kind = kinds(settings.mode)
        return cls(
            settings=settings,
            datasets=Resource(ds_kind.group, "v1alpha1", ds_kind.plural, ds_kind.kind),
            runtimes=Resource(rt_kind.group, "v1alpha1", rt_kind.plural, rt_kind.kind),
            render=replace(settings.render, owner_api_version=ds_kind.api_version),
            load_api_version=load_kind.api_version,
        )

    def wake(self, namespace: str | None = None, name: str | None = None) -> None:
        for (ns, n), event in self.wakeups.items():
            if (namespace is None or ns == namespace) and (name is None or n == name):
                event.set()

    def client(self) -> KubeClient:
        if self.kube is None:
            raise KubeError("the operator has not logged in yet")
        return KubeClient(self.kube, agent=OPERATOR_AGENT)


def _kube_from_info(info: kopf.ConnectionInfo) -> KubeConfig:
    ca_data = info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
    return KubeConfig(
        server=info.server,
        token=info.token,
        ca_file=str(info.ca_path) if info.ca_path else None,
        ca_data=ca_data,
        cert_file=str(info.certificate_path) if info.certificate_path else None,
        key_file=str(info.private_key_path) if info.private_key_path else None,
        insecure=bool(info.insecure),
    )


def _model(body: kopf.Body | dict[str, Any], model: type[Dataset | Runtime | DataLoad]) -> Any:
    data = {
        k: body.get(k)
        for k in ("apiVersion", "kind", "metadata", "spec")
        if body.get(k) is not None
    }
    meta = dict(data.get("metadata") or {})
    data["metadata"] = {
        k: meta[k]
        for k in ("name", "namespace", "labels", "annotations", "uid", "generation")
        if meta.get(k) is not None
    }
    return model.model_validate(data)


def _problems(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:10]:
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


# ---------------------------------------------------------------------- login & settings


def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    state: State = memo.state
    kube = state.settings.kube
    info: kopf.ConnectionInfo | None
    if kube is not None:
        info = kopf.ConnectionInfo(
            server=kube.server,
            token=kube.token,
            ca_path=kube.ca_file,
            insecure=kube.insecure or None,
            scheme="Bearer" if kube.token else None,
        )
    else:
        info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    if info is not None:
        state.kube = kube or _kube_from_info(info)
    return info


def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = "tidepool.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="tidepool.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="tidepool.io", key="last-handled-configuration"
    )
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    settings.posting.level = logging.WARNING


# ---------------------------------------------------------------------- liveness


def datasets_served(memo: kopf.Memo, **_: Any) -> int:
    """Datasets with a running reconciler (the liveness answer shows what the operator does)."""
    state: State = memo.state
    return len(state.wakeups)


def pools_known(memo: kopf.Memo, **_: Any) -> list[str]:
    state: State = memo.state
    return sorted(state.pools.present())


# ---------------------------------------------------------------------- pools


def nodepool_event(type: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    state: State = memo.state
    before = state.pools.present()
    if type == "DELETED":
        state.pools.nodepools.discard(name)
    else:
        state.pools.nodepools.add(name)
    if state.pools.present() != before:
        log.info("node pools now: %s", ", ".join(sorted(state.pools.present())) or "-")
        state.wake()


def node_event(type: str, name: str, labels: Mapping[str, str], memo: kopf.Memo, **_: Any) -> None:
    state: State = memo.state
    before = state.pools.present()
    pool = labels.get(POOL_LABEL)
    if type == "DELETED" or not pool:
        state.pools.node_pools.pop(name, None)
    else:
        state.pools.node_pools[name] = pool
    if state.pools.present() != before:
        state.wake()


# ---------------------------------------------------------------------- datasets


async def reconcile_once(state: State, body: kopf.Body, present: Collection[str]) -> None:
    """One reconciliation of a Dataset, then its status and its runtime's status."""
    meta = body.get("metadata") or {}
    name, ns = str(meta.get("name")), str(meta.get("namespace") or "default")
    async with state.client() as client:
        try:
            dataset = _model(body, Dataset)
        except ValidationError as exc:
            status = DatasetStatus(phase="Failed", message=f"invalid spec: {_problems(exc)}")
            await client.patch(
                state.datasets, ns, name, {"status": dump(status)}, subresource="status"
            )
            return
        runtime_body = await client.get(state.runtimes, ns, name)
        runtime = None
        message = ""
        if runtime_body is not None:
            try:
                runtime = _model(runtime_body, Runtime)
            except ValidationError as exc:
                message = f"runtime {name} is invalid, using defaults: {_problems(exc)}"
        outcome = await reconcile(client, dataset, runtime, present, state.render)
        if outcome.absent:
            absent = ", ".join(outcome.absent)
            message = "; ".join(filter(None, [message, f"pool(s) not in the cluster: {absent}"]))
        status = await read_status(
            client,
            dataset,
            present,
            now=time.time(),
            stale_after=state.settings.stale_after,
            message=message,
        )
        await client.patch(state.datasets, ns, name, {"status": dump(status)}, subresource="status")
        if runtime_body is not None:
            workloads = await read_workloads(client, name, ns)
            rt_status = runtime_status(workloads, outcome.pools, name)
            await client.patch(
                state.runtimes, ns, name, {"status": dump(rt_status)}, subresource="status"
            )


def not_deleting(meta: kopf.Meta, **_: Any) -> bool:
    return not meta.get("deletionTimestamp")


async def dataset_daemon(
    body: kopf.Body,
    name: str,
    namespace: str | None,
    stopped: kopf.DaemonStopped,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    state: State = memo.state
    namespace = namespace or "default"
    event = state.wakeups.setdefault((namespace, name), asyncio.Event())
    failing = False
    try:
        while not stopped:
            event.clear()
            try:
                await reconcile_once(state, body, state.pools.present())
                if failing:
                    log.info("dataset %s/%s: reconciled again", namespace, name)
                failing = False
            except (KubeUnavailableError, KubeApiError, KubeError) as exc:
                if not failing:
                    log.warning("dataset %s/%s: cannot reconcile now: %s", namespace, name, exc)
                failing = True
            resync = state.settings.resync
            delay = min(resync, 5.0) if failing else resync
            waits = [
                asyncio.ensure_future(event.wait()),
                asyncio.ensure_future(stopped.wait()),
            ]
            try:
                await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
    finally:
        state.wakeups.pop((namespace, name), None)


def dataset_changed(name: str, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    state: State = memo.state
    state.wake(namespace, name)


async def dataset_deleted(
    name: str,
    namespace: str | None,
    runtime: datetime.timedelta,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    state: State = memo.state
    namespace = namespace or "default"
    elapsed = runtime.total_seconds()
    finalizer_timeout = state.settings.finalizer_timeout
    budget = max(1.0, finalizer_timeout - elapsed)
    try:
        async with state.client() as client:
            left = await cleanup(client, name, namespace, timeout=min(budget, 20.0))
    except (KubeError, ConnectionError) as exc:
        left = [str(exc)]
    if not left:
        log.info("dataset %s/%s: cleaned up", namespace, name)
        return
    if elapsed + 5 >= finalizer_timeout:
        log.warning(
            "dataset %s/%s: released after %.0fs although %s could not be deleted; "
            "owner references and garbage collection will remove them",
            namespace,
            name,
            elapsed,
            ", ".join(left[:5]),
        )
        return
    raise kopf.TemporaryError(f"could not delete {', '.join(left[:5])}", delay=5)


# ---------------------------------------------------------------------- runtimes


def runtime_event(name: str, namespace: str | None, type: str, memo: kopf.Memo, **_: Any) -> None:
    if not type:  # the initial listing
        return
    state: State = memo.state
    state.wake(namespace, name)


# ---------------------------------------------------------------------- dataloads


async def dataload_apply(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    state: State = memo.state
    try:
        load = _model(body, DataLoad)
    except ValidationError as exc:
        patch.status["phase"] = "Failed"
        patch.status["message"] = f"invalid spec: {_problems(exc)}"
        return
    own_ns = load.metadata.namespace
    asked_ns = ((body.get("spec") or {}).get("dataset") or {}).get("namespace")
    if asked_ns and asked_ns != own_ns:
        # its Job needs the dataset's Secret and ServiceAccount, which live in that namespace
        patch.status["phase"] = "Failed"
        patch.status["message"] = (
            f"spec.dataset.namespace {asked_ns!r} is not this DataLoad's namespace "
            f"{own_ns!r}; create the DataLoad in the Dataset's namespace (as Fluid requires)"
        )
        return
    ds_ns = own_ns  # omitted: the DataLoad's own namespace, as in Fluid
    load = load.model_copy(
        update={
            "spec": load.spec.model_copy(
                update={"dataset": load.spec.dataset.model_copy(update={"namespace": ds_ns})}
            )
        }
    )
    async with state.client() as client:
        ds_body = await client.get(state.datasets, ds_ns, load.spec.dataset.name)
        if ds_body is None:
            waiting = f"waiting for Dataset {ds_ns}/{load.spec.dataset.name} to exist"
            if (body.get("status") or {}).get("message") != waiting:
                patch.status["phase"] = "Pending"
                patch.status["message"] = waiting
            raise kopf.TemporaryError(waiting, delay=state.settings.retry_delay)
        dataset = _model(ds_body, Dataset)
        pools, _absent = target_pools(dataset, state.pools.present())
        uid = (body.get("metadata") or {}).get("uid")
        opts = replace(state.render, owner_uid=uid, owner_api_version=state.load_api_version)
        objs = dl.load_objects(load, pools, opts)
        for obj in objs:
            meta = obj["metadata"]
            existing = await client.get(by_kind(obj["kind"]), meta["namespace"], meta["name"])
            replacing = dl.needs_replacing(existing, obj)
            if replacing:
                # a Job's template is immutable: the changed DataLoad runs again
                log.info("dataload %s/%s: spec changed, job replaced", own_ns, meta["name"])
                await client.delete(by_kind("Job"), meta["namespace"], meta["name"])
            if await client.apply(obj) == "exists" and replacing:
                raise kopf.TemporaryError(f"job {meta['name']} is still being deleted", delay=2)
    names = [o["metadata"]["name"] for o in objs]
    if ((body.get("status") or {}).get("message") or "").startswith("waiting for Dataset"):
        patch.status["message"] = ""
    if (body.get("status") or {}).get("jobs") != names:
        patch.status["jobs"] = names
        patch.status["phase"] = (body.get("status") or {}).get("phase") or "Pending"


async def dataload_progress(
    body: kopf.Body, namespace: str | None, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    state: State = memo.state
    status = body.get("status") or {}
    jobs = status.get("jobs") or []
    spec = body.get("spec") or {}
    cron = spec.get("policy") == "Cron"
    res = Resource("batch", "v1", "cronjobs" if cron else "jobs", "CronJob" if cron else "Job")
    name = str((body.get("metadata") or {}).get("name"))
    async with state.client() as client:
        found = [j for j in [await client.get(res, namespace, n) for n in jobs] if j]
        if cron:  # each run is a Job of its own; the newest per pool tells the progress
            runs = await client.list(by_kind("Job"), namespace, {dl.DATALOAD_LABEL: name})
            runs = dl.newest_per_pool(runs)
        else:
            runs = found
    if not jobs or (status.get("phase") == "Failed" and not found):
        return
    phase = dl.phase_of(found, len(jobs), cron=cron)
    why = dl.incomplete_message(runs)
    if why and phase in ("Complete", "Failed"):
        phase = "Incomplete"  # read in full, but the data does not fit under the quota
        if status.get("message") != why:
            patch.status["message"] = why
    if status.get("phase") != phase:
        patch.status["phase"] = phase
    progress = dump(dl.progress_of(runs, len(jobs)))
    if status.get("progress") != progress:
        patch.status["progress"] = progress
    duration = dl.duration_of(runs, time.time())
    if duration and status.get("duration") != duration:
        patch.status["duration"] = duration


# ---------------------------------------------------------------------- registration


def build_registry(settings: OperatorSettings) -> kopf.OperatorRegistry:
    """A kopf registry with every Tidepool handler, on the kinds of ``settings.mode``."""
    registry = kopf.OperatorRegistry()
    ds_kind, rt_kind, load_kind = kinds(settings.mode)
    ds = (ds_kind.group, "v1alpha1", ds_kind.plural)
    rt = (rt_kind.group, "v1alpha1", rt_kind.plural)
    load = (load_kind.group, "v1alpha1", load_kind.plural)

    kopf.on.login(registry=registry)(login)
    kopf.on.startup(registry=registry)(configure)
    kopf.on.probe(registry=registry, id="datasets")(datasets_served)
    kopf.on.probe(registry=registry, id="pools")(pools_known)

    kopf.on.event("apps.openyurt.io", "v1beta1", "nodepools", registry=registry)(nodepool_event)
    kopf.on.event("", "v1", "nodes", registry=registry)(node_event)

    kopf.daemon(
        *ds,
        registry=registry,
        id="reconciler",
        cancellation_timeout=5.0,
        when=not_deleting,
    )(dataset_daemon)
    kopf.on.update(*ds, registry=registry, field="spec")(dataset_changed)
    kopf.on.delete(*ds, registry=registry)(dataset_deleted)

    kopf.on.event(*rt, registry=registry)(runtime_event)

    kopf.on.resume(*load, registry=registry)(dataload_apply)
    kopf.on.create(*load, registry=registry)(dataload_apply)
    kopf.on.update(*load, registry=registry, field="spec")(dataload_apply)
    kopf.timer(*load, registry=registry, interval=settings.retry_delay, idle=0)(dataload_progress)
    return registry


async def run(
    settings: OperatorSettings, *, stop_flag: asyncio.Event | threading.Event | None = None
) -> None:
    """Run the operator until ``stop_flag`` is set (or forever)."""
    await kopf.operator(
        registry=build_registry(settings),
        clusterwide=not settings.namespaces,
        namespaces=list(settings.namespaces),
        standalone=True,
        stop_flag=stop_flag,
        memo=kopf.Memo(state=State.of(settings)),
        liveness_endpoint=settings.liveness,
    )
