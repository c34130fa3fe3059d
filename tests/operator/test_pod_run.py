"""The rendered worker Pod run from its manifest (worker and reporter), as a kubelet would run it.

``render`` gives the pool's StatefulSet; :mod:`.kubelet` turns its two containers into processes
(entrypoint, args, env from the downward API and Secrets, the spec ConfigMap as a file, hostPath
tiers). The worker finds its pool from the EndpointSlices of its Service and the reporter writes
its Lease, both against the fake API server (which also checks their calls against the rendered
Role). Reads through the worker must return the origin's bytes.

Two things differ from a cluster, because a process is not a Pod: the worker listens on
127.0.0.1 instead of 0.0.0.0 (a Pod has a network namespace of its own; this machine's servers bind
to loopback only), and the API server is given by ``TIDEPOOL_KUBE_SERVER`` instead of the
in-cluster service account.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import pytest

from tidepool.client import TidepoolFileSystem
from tidepool.operator.render import RenderOptions, render_dataset, worker_name
from tidepool.operator.reporter import lease_name
from tidepool.operator.status import parse_reports
from tidepool.pool.kubeapi import KubeConfig
from tidepool.pool.kubernetes import SERVICE_NAME_LABEL
from tidepool.spec.loader import load_text
from tidepool_lab.testbed.s3server import free_port
from tidepool_lab.testbed.specs import S3DatasetSpec

from .conftest import POOL, objects
from .kubelet import container_process

pytestmark = pytest.mark.integration


def spec_text(bucket: str, endpoint: str, tier: Path) -> str:
    return S3DatasetSpec(
        url=f"s3://{bucket}/data/",
        endpoint=endpoint,
        cache=tier,
        name="images",
        kind="tidepool",
        namespace="default",
        nodepools=[POOL],
        replicas=1,
    ).text()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(15)
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


async def test_rendered_worker_pod_serves_and_reports(
    api: kmock.KubernetesEmulator,
    kube: KubeConfig,
    make_dataset: Any,
    s3_server: Any,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    files = {f"train/{i:02d}.jpg": os.urandom(50_000 + i) for i in range(8)}
    make_dataset(files, name="images")
    environ = {
        "TIDEPOOL_SECRET_CLOUD_ACCESS": s3_server.access_key,
        "TIDEPOOL_SECRET_CLOUD_SECRET": s3_server.secret_key,
    }
    text = spec_text(make_dataset.bucket, s3_server.endpoint, tmp_path / "tier")
    bundle = load_text(text, environ=environ)
    port = free_port()
    options = RenderOptions(
        token="pod-token-123", port=port, state_root=str(tmp_path / "state"), report_interval=0.3
    )
    rendered = render_dataset(
        bundle.dataset_models["images"], bundle.runtime_models["images"], options
    )
    user_secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "cloud", "namespace": "default"},
        "stringData": {"access": s3_server.access_key, "secret": s3_server.secret_key},
    }
    sts = next(o for o in rendered if o["kind"] == "StatefulSet")
    pod = sts["spec"]["template"]["spec"]

    # the endpoints controller's view of the pool: this one worker, ready
    service = worker_name("images", POOL)
    api.objects[("discovery.k8s.io", "v1", "endpointslices"), "default", f"{service}-abc"] = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service}-abc",
            "namespace": "default",
            "labels": {SERVICE_NAME_LABEL: service},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["127.0.0.1"], "nodeName": "edge-1", "conditions": {"ready": True}}
        ],
    }

    fields = {
        "spec.nodeName": "edge-1",
        "status.podIP": "127.0.0.1",
        "metadata.namespace": "default",
    }
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDEPOOL_", "AWS_"))}
    base_env["TIDEPOOL_KUBE_SERVER"] = kube.server
    for name in ("worker", "reporter"):
        proc = container_process(
            pod,
            name,
            objects=[*rendered, user_secret],
            fields=fields,
            volumes_dir=tmp_path / "volumes",
        )
        argv = ["127.0.0.1" if a == "0.0.0.0" else a for a in proc.argv]  # loopback, see above
        log = (tmp_path / f"{name}.log").open("wb")
        processes.append(
            subprocess.Popen(
                argv,
                env={**base_env, **proc.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        log.close()

    def logs() -> str:
        return "\n".join(
            f"--- {n}\n" + (tmp_path / f"{n}.log").read_text(errors="replace")
            for n in ("worker", "reporter")
        )

    # the readiness probe, as the kubelet would ask it
    probe = pod["containers"][0]["readinessProbe"]["httpGet"]["path"]
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while True:
            assert all(p.poll() is None for p in processes), logs()
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{endpoint}{probe}") as r:
                    if r.status == 200:
                        break
            assert time.monotonic() < deadline, f"worker never became ready\n{logs()}"
            await asyncio.sleep(0.1)
        headers = {"Authorization": "Bearer pod-token-123"}
        async with session.get(f"{endpoint}/v1/node", headers=headers) as r:
            node = await r.json()
    # its pool came from the EndpointSlices of its Service
    assert node["nodepool"] == POOL and node["node_name"] == "edge-1"
    assert [(m["name"], m["address"]) for m in node["members"]] == [("edge-1", endpoint)]

    def read_all() -> int:
        fs = TidepoolFileSystem(
            endpoint, "pod-token-123", local_reads=False, skip_instance_cache=True
        )
        for name, data in files.items():
            assert fs.cat_file(f"images/{name}") == data, name
        return sum(len(d) for d in files.values())

    total = await asyncio.to_thread(read_all)

    # the reporter sidecar wrote the worker's numbers to its Lease (edge to cloud)
    lease = lease_name("images", "edge-1")

    def reported() -> bool:
        found = objects(api, "Lease").get(lease)
        if not found:
            return False
        (report,) = parse_reports([found["metadata"].get("annotations") or {}])
        return report.cached_bytes == total and report.pool == POOL

    deadline = time.monotonic() + 30
    while not reported():
        assert time.monotonic() < deadline, f"no report with the cached bytes\n{logs()}"
        await asyncio.sleep(0.1)

    # the fuse Pod on the same node: with the rendered environment (TIDEPOOL_HOST_ID from the
    # node's name) and the worker's disk tier mounted, it reads cached pages straight from disk
    fuse = next(o for o in rendered if o["kind"] == "DaemonSet")["spec"]["template"]["spec"]
    fuse_proc = container_process(
        fuse,
        "fuse",
        objects=[*rendered, user_secret],
        fields=fields,
        volumes_dir=tmp_path / "fuse-volumes",
    )
    tier_mounts = [m for m in fuse["containers"][0]["volumeMounts"] if m.get("readOnly")]
    assert [m["mountPath"] for m in tier_mounts] == [str(tmp_path / "tier")]
    # as the mount does: stat (lookup), then read
    script = f"""
import hashlib, json
from tidepool.client import TidepoolFileSystem
fs = TidepoolFileSystem({endpoint!r}, "pod-token-123", skip_instance_cache=True)
sums = {{}}
for name in {list(files)!r}:
    fs.info("images/" + name)
    sums[name] = hashlib.sha256(fs.cat_file("images/" + name)).hexdigest()
print(json.dumps({{"sums": sums, "local": fs._local.hits if fs._local else 0}}))
"""
    want = {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    for same_node in (True, False):
        env = {**base_env, **fuse_proc.env}
        if not same_node:
            env.pop("TIDEPOOL_HOST_ID")  # a process that is not the node's fuse Pod
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", script],
            env=env,
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr.decode()
        answer = json.loads(done.stdout)
        assert answer["sums"] == want
        assert answer["local"] == (len(files) if same_node else 0)
        if same_node:
            # the reads never reached the worker, but the client reported them (at exit)
            async with (
                aiohttp.ClientSession(headers=headers) as session,
                session.get(f"{endpoint}/v1/datasets/images/status?refresh=0") as r,
            ):
                raw = (await r.json())["raw"]
            assert raw["client_local_hits"] == len(files)

    # the Pod is deleted: each container's main process gets SIGTERM and must exit cleanly at
    # once (a container's PID 1 ignores SIGTERM it does not handle: the Pod would hang until
    # SIGKILL at the end of its grace period)
    for p in processes:
        os.kill(p.pid, signal.SIGTERM)
    codes = [await asyncio.to_thread(p.wait, 15) for p in processes]
    assert codes == [0, 0], logs()
