"""The Kubernetes objects that serve one Dataset: pure functions of its spec (``tidepool render``).

For every node pool the dataset's ``nodeAffinity`` allows (``apps.openyurt.io/nodepool In [...]``):

* a worker StatefulSet (or DaemonSet) with the runtime's ``replicas``, one worker per node
  (pod anti-affinity on the hostname), pinned with a nodeSelector on the pool label, a hostPath
  volume per tiered-store directory (``emptyDir`` in memory for ``MEM``), the worker arguments
  (``--nodepool``, ``--members kubernetes:NS/SERVICE`` or ``--etcd``) and a reporter sidecar that
  writes the worker's cache statistics to the API server (:mod:`.reporter`);
* a headless Service annotated ``openyurt.io/topologyKeys: openyurt.io/nodepool`` (OpenYurt's
  service topology: a client resolves only its own pool's workers);
* a fuse DaemonSet (privileged, ``/dev/fuse``, ``Bidirectional`` mount propagation) running
  ``tidepool mount`` under a host directory;
* a PodDisruptionBudget for the workers.

Once per dataset: a PersistentVolume (hostPath to the fuse mount directory, restricted to the
pools by node affinity, as Fluid's hostPath mode does) and a PersistentVolumeClaim named after the
dataset, a ConfigMap holding the spec the workers serve, a Secret with the workers' bearer token
and another with the pool's peer credential, which only worker containers get (both created once,
never overwritten), and a ServiceAccount, Role and RoleBinding. Credentials of
``encryptOptions`` never leave their Secret: containers reference them with ``valueFrom``.

Namespaced objects carry an owner reference to the Dataset when its uid is known (the operator);
the cluster-scoped PersistentVolume cannot, so the operator's finalizer deletes it.

Every command line rendered here is quoted the same way (:func:`option`, and ``--`` before
positional arguments): a value taken from a spec (a pool name, a dataset name, a path) travels as
``--flag=value`` or after ``--``, so no value can become an option of the command it is given to.

Everything here is pure (no I/O); ``token`` and ``peer_token`` are the only random inputs and can
be passed in.
"""

from __future__ import annotations

import hashlib
import secrets as _secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from tidepool.operator.crds import TIDEPOOL_GROUP, VERSION
from tidepool.spec.models import Dataset, Runtime
from tidepool.spec.secrets import secret_env_var

POOL_LABEL = "apps.openyurt.io/nodepool"
TOPOLOGY_ANNOTATION = "openyurt.io/topologyKeys"
DATASET_LABEL = "tidepool.io/dataset"
POOL_NAME_LABEL = "tidepool.io/nodepool"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY = {"app.kubernetes.io/managed-by": "tidepool-operator"}
CREATE_ONLY = "tidepool.io/create-only"
SPEC_HASH_ANNOTATION = "tidepool.io/spec-hash"
"""On the worker Pod template: a changed Dataset or runtime spec rolls the workers, which read
their spec file at start (the cache and state survive on hostPath)."""
"""Annotation: the operator creates this object when missing and never overwrites it."""
ANY_POOL = ""
"""Pool value for a dataset without pool affinity: one unpinned set of workloads."""

Obj = dict[str, Any]


@dataclass(frozen=True)
class RenderOptions:
    """Settings of the rendered objects; every field has a default."""

    image: str = "ghcr.io/tidepool-io/tidepool:0.1.0"
    """Container image of worker, fuse, reporter and load jobs (one image)."""
    image_pull_policy: str = "IfNotPresent"
    workload: Literal["StatefulSet", "DaemonSet"] = "StatefulSet"
    """StatefulSet honours the runtime's ``replicas``; DaemonSet runs on every node of the pool."""
    membership: Literal["kubernetes", "etcd"] = "kubernetes"
    etcd: str = ""
    """etcd endpoints (comma-separated) when ``membership`` is ``etcd``."""
    port: int = 8433
    mount_root: str = "/run/tidepool/mnt"
    """Host directory under which the fuse DaemonSet mounts ``<namespace>/<dataset>``."""
    state_root: str = "/var/lib/tidepool"
    """Host directory for worker state (page index, metadata, last-known-good members)."""
    storage_class: str = "tidepool"
    report_interval: float = 15.0
    owner_uid: str | None = None
    """uid of the Dataset; when set, namespaced objects get an owner reference to it."""
    owner_api_version: str = f"{TIDEPOOL_GROUP}/{VERSION}"
    token: str | None = None
    """Workers' bearer token; random when not given."""
    peer_token: str | None = None
    """The workers' peer credential (worker to worker only, never given to clients); random
    when not given."""
    extra_labels: dict[str, str] = field(default_factory=dict)


def short_name(*parts: str, limit: int = 52) -> str:
    """``-``-joined DNS-1123 name, cut to ``limit`` with a stable hash suffix when too long.

    52 leaves room for the StatefulSet controller's ``-<hash>`` revision label (63 chars).
    """
    name = "-".join(p for p in parts if p).lower()
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


def option(flag: str, value: str | int | float) -> str:
    """``--flag=value``: one argument, so a value that starts with ``-`` stays a value."""
    if not flag.startswith("--") or "=" in flag:
        raise ValueError(f"{flag!r} is not a long option name")
    return f"{flag}={value}"


def pool_suffix(pool: str) -> str:
    return pool or "all"


def worker_name(dataset: str, pool: str) -> str:
    return short_name(dataset, "worker", pool_suffix(pool))


def fuse_name(dataset: str, pool: str) -> str:
    return short_name(dataset, "fuse", pool_suffix(pool))


def service_account_name(dataset: str) -> str:
    return short_name("tidepool", dataset)


def load_service_account_name(dataset: str) -> str:
    """The DataLoad Jobs' account: it may only write progress onto Jobs (least privilege)."""
    return short_name("tidepool", dataset, "load")


def _account(
    name: str, ns: str, rules: list[Obj], labels: Obj, options: RenderOptions, dataset: str
) -> list[Obj]:
    """A ServiceAccount with a Role of ``rules`` bound to it."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": meta_for(name, ns, labels, options, dataset),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta_for(name, ns, labels, options, dataset),
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta_for(name, ns, labels, options, dataset),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}],
        },
    ]


def token_secret_name(dataset: str) -> str:
    return short_name("tidepool", dataset, "token")


def peer_secret_name(dataset: str) -> str:
    return short_name("tidepool", dataset, "peer")


def spec_configmap_name(dataset: str) -> str:
    return short_name("tidepool", dataset, "spec")


def pv_name(namespace: str, dataset: str) -> str:
    return short_name(namespace, dataset, limit=253)


def mount_path(options: RenderOptions, namespace: str, dataset: str) -> str:
    return f"{options.mount_root}/{namespace}/{dataset}"


def pools_of(dataset: Dataset, only: str | None = None) -> list[str]:
    """Pools to render for: the affinity's pools (or ``[ANY_POOL]``), optionally just ``only``."""
    affinity = dataset.spec.node_affinity
    pools = list(affinity.nodepools()) if affinity else []
    if only is not None:
        return [only]
    return pools or [ANY_POOL]


# ----------------------------------------------------------------------------- helpers


def labels_for(dataset: str, component: str, pool: str | None, options: RenderOptions) -> Obj:
    labels = {
        "app.kubernetes.io/name": "tidepool",
        "app.kubernetes.io/instance": dataset,
        COMPONENT_LABEL: component,
        DATASET_LABEL: dataset,
        **MANAGED_BY,
        **options.extra_labels,
    }
    if pool is not None:
        labels[POOL_NAME_LABEL] = pool_suffix(pool)
    return labels


def _selector(dataset: str, component: str, pool: str) -> dict[str, str]:
    return {DATASET_LABEL: dataset, COMPONENT_LABEL: component, POOL_NAME_LABEL: pool_suffix(pool)}


def meta_for(
    name: str, namespace: str | None, labels: Obj, options: RenderOptions, dataset: str
) -> Obj:
    meta: Obj = {"name": name, "labels": labels}
    if namespace is not None:
        meta["namespace"] = namespace
        if options.owner_uid:
            meta["ownerReferences"] = [
                {
                    "apiVersion": options.owner_api_version,
                    "kind": "Dataset",
                    "name": dataset,
                    "uid": options.owner_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
    return meta


def node_selector(pool: str) -> dict[str, str]:
    return {POOL_LABEL: pool} if pool else {}


def field_env(name: str, path: str) -> Obj:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def host_id_env() -> Obj:
    """Worker and fuse Pods of one node share a host identity (see :mod:`tidepool.pool.hostid`)."""
    return {"name": "TIDEPOOL_HOST_ID", "value": "$(NODE_NAME)"}


def secret_env(dataset: Dataset) -> list[Obj]:
    """Env vars the spec loader reads for ``encryptOptions`` (``TIDEPOOL_SECRET_<S>_<K>``)."""
    refs: dict[str, Obj] = {}
    spec = dataset.spec
    options = [*spec.shared_encrypt_options]
    for mount in spec.mounts:
        options.extend(mount.encrypt_options)
    for opt in options:
        ref = opt.value_from.secret_key_ref
        refs[secret_env_var(ref.name, ref.key)] = {
            "secretKeyRef": {"name": ref.name, "key": ref.key}
        }
    return [{"name": k, "valueFrom": v} for k, v in sorted(refs.items())]


def token_env(dataset: str) -> Obj:
    return {
        "name": "TIDEPOOL_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": token_secret_name(dataset), "key": "token"}},
    }


def peer_token_env(dataset: str) -> Obj:
    """The pool's peer credential, for worker containers only (clients never get it)."""
    return {
        "name": "TIDEPOOL_PEER_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": peer_secret_name(dataset), "key": "peer-token"}},
    }


def _spec_docs(dataset: Dataset, runtime: Runtime | None) -> list[Obj]:
    docs = []
    for model, kind in ((dataset, "Dataset"), (runtime, "CacheRuntime")):
        if model is None:
            continue
        doc = model.model_dump(by_alias=True, exclude_none=True, exclude={"status"}, mode="json")
        doc["apiVersion"], doc["kind"] = f"{TIDEPOOL_GROUP}/{VERSION}", kind
        doc["metadata"] = {"name": model.metadata.name, "namespace": model.metadata.namespace}
        docs.append(doc)
    return docs


def spec_yaml(dataset: Dataset, runtime: Runtime | None) -> str:
    """The spec the workers serve: Dataset (and runtime) as Tidepool documents, status dropped."""
    return yaml.safe_dump_all(_spec_docs(dataset, runtime), sort_keys=False)


def spec_hash(dataset: Dataset, runtime: Runtime | None) -> str:
    """What a worker's behaviour depends on, hashed: the spec without the runtime's ``replicas``
    (scaling adds or removes workers; it must not restart the others)."""
    docs = _spec_docs(dataset, runtime)
    for doc in docs[1:]:
        doc.get("spec", {}).pop("replicas", None)
    return hashlib.sha256(yaml.safe_dump_all(docs).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- per dataset


def dataset_objects(
    dataset: Dataset, runtime: Runtime | None, pools: Sequence[str], options: RenderOptions
) -> list[Obj]:
    """Objects shared by every pool of the dataset."""
    name, ns = dataset.metadata.name, dataset.metadata.namespace
    labels = labels_for(name, "dataset", None, options)
    sa = service_account_name(name)
    token = options.token or _secrets.token_urlsafe(32)
    peer_token = options.peer_token or _secrets.token_urlsafe(32)
    pinned = [p for p in pools if p]
    path = mount_path(options, ns, name)
    access = dataset.spec.access_modes or ["ReadOnlyMany"]
    pv_spec: Obj = {
        "capacity": {"storage": "100Pi"},
        "accessModes": list(access),
        "persistentVolumeReclaimPolicy": "Retain",
        "storageClassName": options.storage_class,
        "hostPath": {"path": path, "type": "DirectoryOrCreate"},
        "claimRef": {"namespace": ns, "name": name},
    }
    if pinned:
        pv_spec["nodeAffinity"] = {
            "required": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": POOL_LABEL, "operator": "In", "values": pinned}]}
                ]
            }
        }
    worker_rules: list[Obj] = [
        {  # membership: the pool's workers from their Service's EndpointSlices
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"],
        },
        {  # the reporter's Lease (edge to cloud)
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "list", "create", "update", "patch"],
        },
    ]
    load_rules: list[Obj] = [
        {  # DataLoad Jobs write their progress onto themselves (loadreport)
            "apiGroups": ["batch"],
            "resources": ["jobs"],
            "verbs": ["get", "patch"],
        },
    ]
    return [
        *_account(sa, ns, worker_rules, labels, options, name),
        *_account(load_service_account_name(name), ns, load_rules, labels, options, name),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                **meta_for(token_secret_name(name), ns, labels, options, name),
                "annotations": {CREATE_ONLY: "true"},
            },
            "type": "Opaque",
            "stringData": {"token": token},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                **meta_for(peer_secret_name(name), ns, labels, options, name),
                "annotations": {CREATE_ONLY: "true"},
            },
            "type": "Opaque",
            "stringData": {"peer-token": peer_token},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta_for(spec_configmap_name(name), ns, labels, options, name),
            "data": {"spec.yaml": spec_yaml(dataset, runtime)},
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": meta_for(pv_name(ns, name), None, labels, options, name),
            "spec": pv_spec,
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": meta_for(name, ns, labels, options, name),
            "spec": {
                "accessModes": list(access),
                "storageClassName": options.storage_class,
                "volumeName": pv_name(ns, name),
                "resources": {"requests": {"storage": "100Pi"}},
            },
        },
    ]


# ----------------------------------------------------------------------------- per pool


def _tier_volumes(runtime: Runtime | None) -> tuple[list[Obj], list[Obj]]:
    volumes: list[Obj] = []
    mounts: list[Obj] = []
    levels = runtime.spec.tieredstore.levels if runtime and runtime.spec.tieredstore else []
    for i, level in enumerate(levels):
        for j, path in enumerate(level.paths()):
            vol = f"tier-{i}-{j}"
            if level.mediumtype == "MEM":
                source: Obj = {"emptyDir": {"medium": "Memory"}}
                if level.quota and "," not in level.quota:
                    source["emptyDir"]["sizeLimit"] = level.quota
            else:
                source = {"hostPath": {"path": path, "type": "DirectoryOrCreate"}}
            volumes.append({"name": vol, **source})
            mounts.append({"name": vol, "mountPath": path})
    return volumes, mounts


def _members_args(dataset: str, ns: str, pool: str, options: RenderOptions) -> list[str]:
    if options.membership == "etcd":
        return [option("--etcd", options.etcd)]
    return [option("--members", f"kubernetes:{ns}/{worker_name(dataset, pool)}")]


def worker_workload(
    dataset: Dataset, runtime: Runtime | None, pool: str, options: RenderOptions
) -> Obj:
    """The pool's cache workers: a StatefulSet (``replicas`` from the runtime) or a DaemonSet."""
    name, ns = dataset.metadata.name, dataset.metadata.namespace
    wname = worker_name(name, pool)
    labels = labels_for(name, "worker", pool, options)
    selector = _selector(name, "worker", pool)
    tier_volumes, tier_mounts = _tier_volumes(runtime)
    state = f"{options.state_root}/{ns}/{name}"
    url = f"http://$(POD_IP):{options.port}"
    env = [
        field_env("NODE_NAME", "spec.nodeName"),
        host_id_env(),
        field_env("POD_IP", "status.podIP"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        {"name": "TIDEPOOL_NODEPOOL", "value": pool},
        token_env(name),
        peer_token_env(name),
    ]
    worker = {
        "name": "worker",
        "image": options.image,
        "imagePullPolicy": options.image_pull_policy,
        "args": [
            "up",
            option("--file", "/etc/tidepool/spec/spec.yaml"),
            option("--host", "0.0.0.0"),
            option("--port", options.port),
            option("--state-dir", "/var/lib/tidepool/state"),
            option("--nodepool", pool),
            option("--node-name", "$(NODE_NAME)"),
            option("--advertise", url),
            *_members_args(name, ns, pool, options),
        ],
        "env": [*env, *secret_env(dataset)],
        "ports": [{"name": "http", "containerPort": options.port, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 5,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 20,
            "failureThreshold": 6,
        },
        "volumeMounts": [
            {"name": "spec", "mountPath": "/etc/tidepool/spec", "readOnly": True},
            {"name": "state", "mountPath": "/var/lib/tidepool/state"},
            *tier_mounts,
        ],
    }
    reporter = {
        "name": "reporter",
        "image": options.image,
        "imagePullPolicy": options.image_pull_policy,
        "command": ["python", "-m", "tidepool.operator.reporter"],
        "args": [
            option("--dataset", name),
            option("--namespace", "$(POD_NAMESPACE)"),
            option("--pool", pool),
            option("--node", "$(NODE_NAME)"),
            option("--endpoint", f"http://127.0.0.1:{options.port}"),
            option("--interval", f"{options.report_interval:g}"),
        ],
        "env": env,
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}},
    }
    pod_spec: Obj = {
        "serviceAccountName": service_account_name(name),
        "containers": [worker, reporter],
        "volumes": [
            {"name": "spec", "configMap": {"name": spec_configmap_name(name)}},
            {"name": "state", "hostPath": {"path": state, "type": "DirectoryOrCreate"}},
            *tier_volumes,
        ],
        "affinity": {
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "labelSelector": {"matchLabels": selector},
                        "topologyKey": "kubernetes.io/hostname",
                    }
                ]
            }
        },
    }
    if pool:
        pod_spec["nodeSelector"] = node_selector(pool)
    template = {
        "metadata": {
            "labels": labels,
            "annotations": {SPEC_HASH_ANNOTATION: spec_hash(dataset, runtime)},
        },
        "spec": pod_spec,
    }
    spec: Obj = {"selector": {"matchLabels": selector}, "template": template}
    if options.workload == "StatefulSet":
        replicas = runtime.spec.replicas if runtime else 1
        spec = {
            "replicas": replicas,
            "serviceName": wname,
            "podManagementPolicy": "Parallel",
            **spec,
        }
    return {
        "apiVersion": "apps/v1",
        "kind": options.workload,
        "metadata": meta_for(wname, ns, labels, options, name),
        "spec": spec,
    }


def worker_service(dataset: Dataset, pool: str, options: RenderOptions) -> Obj:
    """Headless Service of the pool's workers with OpenYurt's node-pool topology annotation."""
    name, ns = dataset.metadata.name, dataset.metadata.namespace
    meta = meta_for(
        worker_name(name, pool), ns, labels_for(name, "worker", pool, options), options, name
    )
    meta["annotations"] = {TOPOLOGY_ANNOTATION: "openyurt.io/nodepool"}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "clusterIP": "None",
            "selector": _selector(name, "worker", pool),
            "ports": [{"name": "http", "port": options.port, "targetPort": "http"}],
        },
    }


def worker_pdb(dataset: Dataset, pool: str, options: RenderOptions) -> Obj:
    name, ns = dataset.metadata.name, dataset.metadata.namespace
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta_for(
            worker_name(name, pool), ns, labels_for(name, "worker", pool, options), options, name
        ),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(name, "worker", pool)}},
    }


def fuse_daemonset(
    dataset: Dataset, runtime: Runtime | None, pool: str, options: RenderOptions
) -> Obj:
    """Privileged DaemonSet exposing the dataset under the host's mount root with FUSE.

    It mounts the workers' disk tiers read-only at the same paths and shares their host identity
    (``TIDEPOOL_HOST_ID``), so cached pages on its node are read straight from disk, not over
    HTTP; pages in a memory tier, or on other nodes, still come from the workers."""
    name, ns = dataset.metadata.name, dataset.metadata.namespace
    labels = labels_for(name, "fuse", pool, options)
    selector = _selector(name, "fuse", pool)
    target = mount_path(options, ns, name)
    endpoint = f"http://{worker_name(name, pool)}.{ns}.svc:{options.port}"
    tier_volumes, tier_mounts = _tier_volumes(runtime)
    disk = {v["name"] for v in tier_volumes if "hostPath" in v}
    disk_volumes = [v for v in tier_volumes if v["name"] in disk]
    disk_mounts = [{**m, "readOnly": True} for m in tier_mounts if m["name"] in disk]
    container = {
        "name": "fuse",
        "image": options.image,
        "imagePullPolicy": options.image_pull_policy,
        # --mkdir: the hostPath volume creates only the mount root, not the dataset's directory
        "args": [
            "mount",
            option("--endpoint", endpoint),
            "--allow-other",
            "--mkdir",
            "--",
            name,
            target,
        ],
        "env": [
            field_env("NODE_NAME", "spec.nodeName"),
            host_id_env(),
            {"name": "TIDEPOOL_NODEPOOL", "value": pool},
            token_env(name),
        ],
        "securityContext": {
            "privileged": True,
            "capabilities": {"add": ["SYS_ADMIN"]},
        },
        "lifecycle": {"preStop": {"exec": {"command": ["fusermount3", "-uz", target]}}},
        "volumeMounts": [
            {"name": "dev-fuse", "mountPath": "/dev/fuse"},
            {
                "name": "mount-root",
                "mountPath": f"{options.mount_root}/{ns}",
                "mountPropagation": "Bidirectional",
            },
            *disk_mounts,
        ],
    }
    pod_spec: Obj = {
        "containers": [container],
        "serviceAccountName": service_account_name(name),
        "volumes": [
            {"name": "dev-fuse", "hostPath": {"path": "/dev/fuse", "type": "CharDevice"}},
            {
                "name": "mount-root",
                "hostPath": {"path": f"{options.mount_root}/{ns}", "type": "DirectoryOrCreate"},
            },
            *disk_volumes,
        ],
    }
    if pool:
        pod_spec["nodeSelector"] = node_selector(pool)
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": meta_for(fuse_name(name, pool), ns, labels, options, name),
        "spec": {
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def pool_objects(
    dataset: Dataset, runtime: Runtime | None, pool: str, options: RenderOptions
) -> list[Obj]:
    """Everything one pool runs for the dataset."""
    return [
        worker_service(dataset, pool, options),
        worker_workload(dataset, runtime, pool, options),
        worker_pdb(dataset, pool, options),
        fuse_daemonset(dataset, runtime, pool, options),
    ]


def render_dataset(
    dataset: Dataset,
    runtime: Runtime | None,
    options: RenderOptions,
    *,
    pools: Sequence[str] | None = None,
) -> list[Obj]:
    """All objects of one dataset for ``pools`` (default: the pools its affinity allows)."""
    chosen = list(pools) if pools is not None else pools_of(dataset)
    out = dataset_objects(dataset, runtime, chosen, options)
    for pool in chosen:
        out.extend(pool_objects(dataset, runtime, pool, options))
    return out


def to_yaml(objects: Sequence[Obj]) -> str:
    return yaml.safe_dump_all(list(objects), sort_keys=False, width=100)
