"""The kopf operator against an HTTP fake of the API server (kmock): create, update, scale, delete,
a pool that appears and disappears, worker reports, and the API going away."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import kmock
import pytest
import yaml

from tidepool.client import TidepoolFileSystem
from tidepool.operator import reporter
from tidepool.operator.handlers import OperatorSettings, run
from tidepool.operator.render import RenderOptions
from tidepool.pool.kubeapi import KubeClient, KubeConfig, Resource, by_kind
from tidepool_lab.testbed.s3server import free_port

from .conftest import POOL, SEED, objects

DATASETS = Resource("tidepool.io", "v1alpha1", "datasets", "Dataset")
RUNTIMES = Resource("tidepool.io", "v1alpha1", "cacheruntimes", "CacheRuntime")
DATALOADS = Resource("tidepool.io", "v1alpha1", "dataloads", "DataLoad")
NODEPOOLS = by_kind("NodePool")
NODES = by_kind("Node")


def dataset(pool: str = POOL) -> dict[str, Any]:
    return {
        "apiVersion": "tidepool.io/v1alpha1",
        "kind": "Dataset",
        "metadata": {
            "name": "images",
            "namespace": "default",
            "uid": "uid-images",
            "resourceVersion": "1",
        },
        "spec": {
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "apps.openyurt.io/nodepool",
                                    "operator": "In",
                                    "values": [pool],
                                }
                            ]
                        }
                    ]
                }
            },
            "mounts": [
                {
                    "mountPoint": "oss://test-fluid/images/images/",
                    "name": "images",
                    "path": "/",
                    "options": {"fs.oss.endpoint": "oss-cn-beijing.aliyuncs.com"},
                    "encryptOptions": [
                        {
                            "name": "fs.oss.accessKeyId",
                            "valueFrom": {
                                "secretKeyRef": {"name": "mysecret", "key": "fs.oss.accessKeyId"}
                            },
                        }
                    ],
                }
            ],
        },
    }


def runtime(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "tidepool.io/v1alpha1",
        "kind": "CacheRuntime",
        "metadata": {
            "name": "images",
            "namespace": "default",
            "uid": "uid-rt",
            "resourceVersion": "1",
        },
        "spec": {
            "replicas": replicas,
            "tieredstore": {
                "levels": [
                    {
                        "mediumtype": "SSD",
                        "path": "/mnt/images",
                        "quota": "10Gi",
                        "high": "0.99",
                        "low": "0.8",
                    }
                ]
            },
        },
    }


def dataload(name: str, **spec: Any) -> dict[str, Any]:
    """A DataLoad as the API server stores it (namespace, uid, resourceVersion)."""
    return {
        "apiVersion": "tidepool.io/v1alpha1",
        "kind": "DataLoad",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": f"uid-{name}",
            "resourceVersion": "1",
        },
        "spec": {"dataset": {"name": "images", "namespace": "default"}, **spec},
    }


def nodepool(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps.openyurt.io/v1beta1",
        "kind": "NodePool",
        "metadata": {"name": name},
        "spec": {"type": "Edge"},
    }


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except (KeyError, AssertionError):
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout}s: {check}")
        await asyncio.sleep(0.05)


@pytest.fixture
def liveness() -> str:
    return f"http://127.0.0.1:{free_port()}/healthz"


@pytest.fixture
def mode() -> str:
    """Which kinds the operator serves; a test overrides it with ``parametrize``."""
    return "tidepool"


@pytest.fixture
async def operator(
    api: kmock.KubernetesEmulator, kube: KubeConfig, mode: Any, liveness: str
) -> AsyncIterator[None]:
    """The operator in a thread of its own (as in a Pod), talking HTTP to the fake API."""
    settings = OperatorSettings(
        mode=mode,
        render=RenderOptions(token="t0k3n", image="tidepool:test"),
        kube=kube,
        resync=0.3,
        stale_after=30.0,
        finalizer_timeout=3.0,
        liveness=liveness,
    )
    stop = threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(run(settings, stop_flag=stop)))
    thread.start()
    yield
    stop.set()
    await asyncio.to_thread(thread.join, 15)
    assert not thread.is_alive()


async def test_dataset_lifecycle(
    api: kmock.KubernetesEmulator, kube: KubeConfig, operator: None, liveness: str
) -> None:
    async with KubeClient(kube) as client:
        await client.create(NODEPOOLS, nodepool(POOL))
        await client.create(RUNTIMES, runtime(2))
        await client.create(DATASETS, dataset())

        sts_name = f"images-worker-{POOL}"
        await eventually(lambda: objects(api, "DaemonSet")[f"images-fuse-{POOL}"])
        sts = objects(api, "StatefulSet")[sts_name]
        assert sts["spec"]["replicas"] == 2
        assert sts["spec"]["template"]["spec"]["nodeSelector"] == {
            "apps.openyurt.io/nodepool": POOL
        }
        assert sts["metadata"]["ownerReferences"][0]["uid"] == "uid-images"
        svc = objects(api, "Service")[sts_name]
        assert svc["metadata"]["annotations"]["openyurt.io/topologyKeys"] == "openyurt.io/nodepool"
        assert "default-images" in objects(api, "PersistentVolume")
        assert "images" in objects(api, "PersistentVolumeClaim")
        assert f"images-fuse-{POOL}" in objects(api, "DaemonSet")

        # scale: the runtime's replicas reach the StatefulSet, without rolling the workers
        def spec_hash() -> str:
            template = objects(api, "StatefulSet")[sts_name]["spec"]["template"]
            return str(template["metadata"]["annotations"]["tidepool.io/spec-hash"])

        first_hash = spec_hash()
        await client.patch(RUNTIMES, "default", "images", {"spec": {"replicas": 3}})
        await eventually(lambda: objects(api, "StatefulSet")[sts_name]["spec"]["replicas"] == 3)
        assert spec_hash() == first_hash
        rt = await client.get(RUNTIMES, "default", "images")
        assert rt is not None and rt["status"]["desiredWorkerNumberScheduled"] >= 2

        # a worker reports (edge -> cloud): the Dataset's status shows it with Fluid's names
        async def read() -> dict[str, Any]:
            return {
                "dataset": "images",
                "raw": {
                    "ufs_total_bytes": 1000,
                    "file_num": 10,
                    "cached_bytes": 500,
                    "cache_capacity_bytes": 10_000,
                    "page_hits": 3,
                    "page_misses": 1,
                },
            }

        async with KubeClient(kube, agent=reporter.AGENT) as edge:
            await reporter.report_once(
                edge, read, dataset="images", namespace="default", pool=POOL, node="n1", interval=5
            )

        def bound() -> bool:
            status = objects(api, "Dataset")["images"].get("status") or {}
            return (
                status.get("phase") == "Bound"
                and status["cacheStates"]["cachedPercentage"] == "50.0%"
            )

        await eventually(bound)
        status = objects(api, "Dataset")["images"]["status"]
        assert status["cacheStates"]["cacheHitRatio"] == "75.0%"

        # the liveness probe (the chart's livenessProbe) says what the operator serves
        async with aiohttp.ClientSession() as http, http.get(liveness) as r:
            assert r.status == 200
            probes = await r.json()
        assert probes["datasets"] == 1 and probes["pools"] == [POOL]
        assert status["fileNum"] == "10"
        assert status["pools"][0]["name"] == POOL and status["pools"][0]["phase"] == "Ready"

        # update: a changed spec reaches the spec ConfigMap the workers serve
        await client.patch(
            DATASETS, "default", "images", {"spec": {"metadataSyncPolicy": {"ttl": "5m"}}}
        )

        def spec_served() -> str:
            return str(objects(api, "ConfigMap")["tidepool-images-spec"]["data"]["spec.yaml"])

        await eventually(lambda: "ttl: 300.0" in spec_served())
        # ...and rolls the workers, which read their spec at start
        await eventually(lambda: spec_hash() != first_hash)

        # delete: owned objects and the PersistentVolume go, the finalizer is released
        await client.delete(DATASETS, "default", "images")
        await eventually(lambda: "images" not in objects(api, "Dataset"))
        assert "default-images" not in objects(api, "PersistentVolume")
        assert sts_name not in objects(api, "StatefulSet")


async def test_pool_appears_and_disappears(
    api: kmock.KubernetesEmulator, kube: KubeConfig, operator: None
) -> None:
    sts_name = f"images-worker-{POOL}"
    async with KubeClient(kube) as client:
        await client.create(RUNTIMES, runtime(1))
        await client.create(DATASETS, dataset())

        def absent() -> bool:
            status = objects(api, "Dataset")["images"].get("status") or {}
            return bool(status.get("pools")) and status["pools"][0]["phase"] == "Absent"

        await eventually(absent)
        assert sts_name not in objects(api, "StatefulSet")

        # the pool appears (a node is labelled into it): its workers are created
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "edge-1", "labels": {"apps.openyurt.io/nodepool": POOL}},
        }
        await client.create(NODES, node)
        await eventually(lambda: objects(api, "StatefulSet")[sts_name])

        # it disappears: its per-pool objects are deleted, the dataset objects stay
        await client.delete(NODES, None, "edge-1")
        await eventually(lambda: sts_name not in objects(api, "StatefulSet"))
        assert sts_name not in objects(api, "Service")
        assert "images" in objects(api, "PersistentVolumeClaim")


async def test_api_going_away_then_back(
    api: kmock.KubernetesEmulator,
    kube: KubeConfig,
    operator: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    down = {"on": False}
    api[lambda request: down["on"]] << 503
    sts_name = f"images-worker-{POOL}"
    async with KubeClient(kube) as client:
        await client.create(NODEPOOLS, nodepool(POOL))
        await client.create(RUNTIMES, runtime(1))
        await client.create(DATASETS, dataset())
        await eventually(lambda: objects(api, "StatefulSet")[sts_name])

        down["on"] = True
        await asyncio.sleep(1.0)
        assert sts_name in objects(api, "StatefulSet")  # nothing deleted for lack of an answer
        down["on"] = False

        await client.patch(RUNTIMES, "default", "images", {"spec": {"replicas": 4}})
        await eventually(
            lambda: objects(api, "StatefulSet")[sts_name]["spec"]["replicas"] == 4, timeout=15
        )


async def test_finalizer_never_hangs(
    api: kmock.KubernetesEmulator, kube: KubeConfig, operator: None
) -> None:
    async with KubeClient(kube) as client:
        await client.create(NODEPOOLS, nodepool(POOL))
        await client.create(DATASETS, dataset())
        await eventually(lambda: objects(api, "PersistentVolume")["default-images"])
        # the PersistentVolume can never be deleted (e.g. a pool's API proxy keeps failing)
        api[kmock.resource("", "v1", "persistentvolumes")]["delete"] << 503
        await client.delete(DATASETS, "default", "images")
        await eventually(lambda: "images" not in objects(api, "Dataset"), timeout=15)


async def test_dataload_job_and_phases(
    api: kmock.KubernetesEmulator, kube: KubeConfig, operator: None
) -> None:
    async with KubeClient(kube) as client:
        await client.create(NODEPOOLS, nodepool(POOL))
        await client.create(DATASETS, dataset())
        await client.create(DATALOADS, dataload("warm", target=[{"path": "/train"}]))
        job_name = f"warm-load-{POOL}"
        job = await eventually(lambda: objects(api, "Job")[job_name])
        assert job["spec"]["template"]["spec"]["nodeSelector"] == {
            "apps.openyurt.io/nodepool": POOL
        }
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[0] == "load" and args[args.index("--") + 1 :] == ["images", "/train"]
        await eventually(
            lambda: (
                (objects(api, "DataLoad")["warm"].get("status") or {}).get("phase") == "Executing"
            )
        )
        await client.patch(
            by_kind("Job"),
            "default",
            job_name,
            {"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}},
        )
        await eventually(lambda: objects(api, "DataLoad")["warm"]["status"]["phase"] == "Complete")

        # update: a Job's template is immutable, so a changed target replaces the Job
        await client.patch(DATALOADS, "default", "warm", {"spec": {"target": [{"path": "/val"}]}})

        def rerun() -> bool:
            args = objects(api, "Job")[job_name]["spec"]["template"]["spec"]["containers"][0]
            return bool(args["args"][-1] == "/val")

        await eventually(rerun)
        assert "status" not in objects(api, "Job")[job_name]  # a new Job, not the old one patched
        await eventually(lambda: objects(api, "DataLoad")["warm"]["status"]["phase"] == "Executing")


async def test_dataload_that_does_not_fit_is_incomplete_with_the_reason(
    api: kmock.KubernetesEmulator, kube: KubeConfig, operator: None
) -> None:
    """A load Job that ended Incomplete (exit 3: its podFailurePolicy fails the Job at once)
    makes the DataLoad Incomplete, with the pool's reason and setting as its message."""
    why = "only 15.0 MiB of 66.2 MiB (60/249 files) stayed in the cache: raise the quota"
    async with KubeClient(kube) as client:
        await client.create(NODEPOOLS, nodepool(POOL))
        await client.create(DATASETS, dataset())
        await client.create(DATALOADS, dataload("big", target=[{"path": "/train"}]))
        job_name = f"big-load-{POOL}"
        job = await eventually(lambda: objects(api, "Job")[job_name])
        rules = job["spec"]["podFailurePolicy"]["rules"]
        assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [3]
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
        progress = {
            "phase": "Incomplete",
            "files": 249,
            "filesTotal": 249,
            "bytes": 69_400_000,
            "bytesTotal": 69_400_000,
            "bytesCached": 15_728_640,
            "message": why,
            "time": time.time(),
        }
        await client.patch(
            by_kind("Job"),
            "default",
            job_name,
            {
                "metadata": {"annotations": {"tidepool.io/load-progress": json.dumps(progress)}},
                "status": {"failed": 1, "conditions": [{"type": "Failed", "status": "True"}]},
            },
        )

        def incomplete() -> dict[str, Any]:
            status = objects(api, "DataLoad")["big"].get("status") or {}
            return status if status.get("phase") == "Incomplete" else {}

        status = await eventually(incomplete)
        assert status["message"] == f"pool {POOL}: {why}"
        assert status["progress"]["bytesCached"] == 15_728_640


def pod_env(container: dict[str, Any], fields: dict[str, str]) -> dict[str, str]:
    """A container's environment as the kubelet builds it: downward-API fields, then ``$(VAR)``."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            value = item["value"]
            for k, v in env.items():
                value = value.replace(f"$({k})", v)
            env[item["name"]] = value
        elif "fieldRef" in item.get("valueFrom", {}):
            env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


@pytest.mark.integration
async def test_dataload_progress_from_a_real_load(
    api: kmock.KubernetesEmulator,
    kube: KubeConfig,
    operator: None,
    make_dataset: Any,
    start_worker: Any,
) -> None:
    """The Job's own command, run against a real worker and S3 origin, fills DataLoad.progress."""
    files = {f"train/{i:02d}.jpg": os.urandom(30_000 + 7 * i) for i in range(12)}
    files["val/skip.jpg"] = b"not part of the load"
    worker = start_worker([make_dataset(files, name="images")])
    async with KubeClient(kube) as client:
        await client.create(NODEPOOLS, nodepool(POOL))
        await client.create(DATASETS, dataset())
        await client.create(DATALOADS, dataload("warm", target=[{"path": "/train"}]))
        job_name = f"warm-load-{POOL}"
        job = await eventually(lambda: objects(api, "Job")[job_name])

        # run the Job's container as the kubelet would, the Service address swapped for ours
        (container,) = job["spec"]["template"]["spec"]["containers"]
        args = list(container["args"])
        at = next(i for i, a in enumerate(args) if a.startswith("--endpoint="))
        args[at] = f"--endpoint={worker.endpoint}"
        fields = {
            "metadata.namespace": "default",
            "metadata.labels['batch.kubernetes.io/job-name']": job_name,
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEPOOL_")}
        env.update(pod_env(container, fields))
        env.pop("TIDEPOOL_TOKEN", None)  # a secretKeyRef: the test worker wants no token
        env["TIDEPOOL_KUBE_SERVER"] = kube.server
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "tidepool.cli", *args],
            capture_output=True,
            env=env,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr.decode()
        assert b"Complete: 12/12 files" in done.stdout

        want = sum(len(v) for k, v in files.items() if k.startswith("train/"))
        annotated = objects(api, "Job")[job_name]["metadata"]["annotations"]
        assert f'"bytes":{want}' in annotated["tidepool.io/load-progress"]

        def progressed() -> dict[str, Any]:
            status = objects(api, "DataLoad")["warm"].get("status") or {}
            progress = status.get("progress") or {}
            return progress if progress.get("percent") == "100.0%" else {}

        progress = await eventually(progressed)
        assert (progress["files"], progress["filesTotal"]) == (12, 12)
        assert (progress["bytes"], progress["bytesTotal"]) == (want, want)
        assert progress["errors"] == 0 and progress["reporting"] == 1

    # what the load warmed is what the origin holds, and it now comes from the cache
    fs = TidepoolFileSystem(worker.endpoint, local_reads=False, skip_instance_cache=True)
    svc = worker.worker.services["images"]
    misses = svc.misses
    for name, data in files.items():
        if name.startswith("train/"):
            assert fs.cat_file(f"images/{name}") == data, name
    assert svc.misses == misses


async def test_cron_dataload_progress_follows_the_newest_run(
    api: kmock.KubernetesEmulator, kube: KubeConfig, operator: None
) -> None:
    async with KubeClient(kube) as client:
        await client.create(NODEPOOLS, nodepool(POOL))
        await client.create(DATASETS, dataset())
        await client.create(DATALOADS, dataload("nightly", policy="Cron", schedule="0 3 * * *"))
        cron = await eventually(lambda: objects(api, "CronJob")[f"nightly-load-{POOL}"])
        template = cron["spec"]["jobTemplate"]

        # the CronJob controller's runs: an old finished one and the current one
        for run, stamp, done in (
            ("a", "2026-01-01T03:00:00Z", 40),
            ("b", "2026-01-02T03:00:00Z", 1),
        ):
            progress = {
                "phase": "Executing",
                "files": done,
                "filesTotal": 40,
                "bytes": done * 10,
                "bytesTotal": 400,
                "errors": 0,
                "time": 0,
            }
            job = {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {
                    "name": f"nightly-{run}",
                    "namespace": "default",
                    "creationTimestamp": stamp,
                    "resourceVersion": "1",
                    "labels": template["metadata"]["labels"],
                    "annotations": {"tidepool.io/load-progress": json.dumps(progress)},
                },
                "spec": template["spec"],
            }
            await client.create(by_kind("Job"), job)

        def progress() -> dict[str, Any]:
            status = objects(api, "DataLoad")["nightly"].get("status") or {}
            return status.get("progress") if status.get("phase") == "Executing" else {}  # type: ignore[return-value]

        await eventually(lambda: (progress() or {}).get("files") == 1)
        assert progress()["percent"] == "2.5%"


FLUID_DATASETS = Resource("data.fluid.io", "v1alpha1", "datasets", "Dataset")
FLUID_RUNTIMES = Resource("data.fluid.io", "v1alpha1", "alluxioruntimes", "AlluxioRuntime")
FLUID_DATALOADS = Resource("data.fluid.io", "v1alpha1", "dataloads", "DataLoad")


def as_applied(doc: dict[str, Any], uid: str) -> dict[str, Any]:
    """A manifest as the API server stores it after ``kubectl apply``: namespace, uid, version."""
    meta = {**doc["metadata"], "namespace": "default", "uid": uid, "resourceVersion": "1"}
    return {**doc, "metadata": meta}


@pytest.mark.parametrize("mode", ["fluid"])
async def test_fluid_mode_serves_the_seed_manifests_unchanged(
    api: kmock.KubernetesEmulator, kube: KubeConfig, operator: None
) -> None:
    """For a cluster without Fluid: the talk's data.fluid.io manifests, applied as written."""
    docs = {d["kind"]: d for d in yaml.safe_load_all(SEED.read_text())}
    sts_name = f"images-worker-{POOL}"
    async with KubeClient(kube) as client:
        await client.create(NODEPOOLS, nodepool(POOL))
        await client.create(FLUID_DATASETS, as_applied(docs["Dataset"], "uid-fluid-ds"))
        await client.create(FLUID_RUNTIMES, as_applied(docs["AlluxioRuntime"], "uid-fluid-rt"))
        await client.create(by_kind("Pod"), as_applied(docs["Pod"], "uid-pod"))

        sts = await eventually(lambda: objects(api, "StatefulSet")[sts_name])
        assert sts["spec"]["replicas"] == 2  # the AlluxioRuntime's replicas
        owner = sts["metadata"]["ownerReferences"][0]
        assert (owner["apiVersion"], owner["kind"], owner["uid"]) == (
            "data.fluid.io/v1alpha1",
            "Dataset",
            "uid-fluid-ds",
        )
        # the inference Pod's claim is served by the PVC named after the dataset
        claim = docs["Pod"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
        assert claim in objects(api, "PersistentVolumeClaim")
        tier = sts["spec"]["template"]["spec"]["volumes"]
        assert any((v.get("hostPath") or {}).get("path") == "/mnt/images" for v in tier)

        # scale through Fluid's runtime kind
        await client.patch(FLUID_RUNTIMES, "default", "images", {"spec": {"replicas": 3}})
        await eventually(lambda: objects(api, "StatefulSet")[sts_name]["spec"]["replicas"] == 3)
        rt = await eventually(lambda: objects(api, "AlluxioRuntime")["images"]["status"])
        assert rt["desiredWorkerNumberScheduled"] >= 2 and rt["selector"]

        # a worker report lands in Fluid's Dataset status
        async def read() -> dict[str, Any]:
            return {"dataset": "images", "raw": {"ufs_total_bytes": 400, "cached_bytes": 100}}

        async with KubeClient(kube, agent=reporter.AGENT) as edge:
            await reporter.report_once(
                edge, read, dataset="images", namespace="default", pool=POOL, node="n1", interval=5
            )

        def bound() -> dict[str, Any]:
            status = objects(api, "Dataset")["images"].get("status") or {}
            return status if status.get("phase") == "Bound" else {}

        status = await eventually(bound)
        assert status["cacheStates"]["cachedPercentage"] == "25.0%"

        # a Fluid DataLoad becomes a Job owned by it
        load = {
            "apiVersion": "data.fluid.io/v1alpha1",
            "kind": "DataLoad",
            "metadata": {"name": "warm"},
            "spec": {"dataset": {"name": "images", "namespace": "default"}},
        }
        await client.create(FLUID_DATALOADS, as_applied(load, "uid-fluid-load"))
        job = await eventually(lambda: objects(api, "Job")[f"warm-load-{POOL}"])
        ref = job["metadata"]["ownerReferences"][0]
        assert (ref["apiVersion"], ref["kind"]) == ("data.fluid.io/v1alpha1", "DataLoad")

        # deleting Fluid's Dataset cleans up what the operator made for it
        await client.delete(FLUID_DATASETS, "default", "images")
        await eventually(lambda: "images" not in objects(api, "Dataset"))
        assert sts_name not in objects(api, "StatefulSet")
        assert "default-images" not in objects(api, "PersistentVolume")


async def test_dataload_waits_for_its_dataset_and_refuses_another_namespace(
    api: kmock.KubernetesEmulator, kube: KubeConfig, operator: None
) -> None:
    def status(name: str) -> dict[str, Any]:
        return objects(api, "DataLoad")[name].get("status") or {}

    async with KubeClient(kube) as client:
        await client.create(NODEPOOLS, nodepool(POOL))
        # another namespace: its Job could not use the dataset's Secret and ServiceAccount
        away = dataload("away", dataset={"name": "images", "namespace": "prod"})
        await client.create(DATALOADS, away)
        await eventually(lambda: status("away").get("phase") == "Failed")
        assert "'prod'" in status("away")["message"] and "'default'" in status("away")["message"]

        # before its Dataset exists it says what it waits for; then it runs
        await client.create(DATALOADS, dataload("early", dataset={"name": "images"}))
        await eventually(lambda: "waiting for Dataset default/images" in status("early")["message"])
        assert status("early")["phase"] == "Pending"
        await client.create(DATASETS, dataset())
        job = await eventually(lambda: objects(api, "Job")[f"early-load-{POOL}"])
        assert job["metadata"]["namespace"] == "default"
        await eventually(lambda: status("early").get("message") == "")
        assert "away-load-" + POOL not in objects(api, "Job")
