"""``tidepool render`` and ``tidepool convert``: pure functions of the spec, valid Kubernetes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tidepool.core.errors import SpecError
from tidepool.operator.cli import (
    add_convert_args,
    add_render_args,
    render_text,
    run_convert,
    run_render,
)
from tidepool.operator.convert import convert_text
from tidepool.operator.dataload import (
    duration_of,
    load_objects,
    newest_per_pool,
    phase_of,
    progress_of,
)
from tidepool.operator.loadreport import parse_job_ref, progress_patch
from tidepool.operator.render import POOL_NAME_LABEL, RenderOptions, render_dataset, short_name
from tidepool.operator.status import JobProgress
from tidepool.spec.loader import load_text

from .conftest import POOL, SEED

VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
ENV = {
    "TIDEPOOL_SECRET_MYSECRET_FS_OSS_ACCESSKEYID": "s3cr3t-id-value",
    "TIDEPOOL_SECRET_MYSECRET_FS_OSS_ACCESSKEYSECRET": "s3cr3t-key-value",
}
LOAD = """
apiVersion: data.fluid.io/v1alpha1
kind: DataLoad
metadata: {name: warm}
spec:
  dataset: {name: images, namespace: default}
  target: [{path: /train}]
  policy: Cron
  schedule: "0 */6 * * *"
"""


def _args(add: Any, argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add(p)
    return p.parse_args(argv)


def _by(objs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


@pytest.fixture(scope="module")
def seed_objects() -> list[dict[str, Any]]:
    bundle = load_text(SEED.read_text(), environ=ENV)
    ds, rt = bundle.dataset_models["images"], bundle.runtime_models["images"]
    return render_dataset(ds, rt, RenderOptions(token="t", owner_uid="u1"))


@pytest.mark.parametrize("version", VERSIONS)
def test_every_rendered_manifest_validates_strictly(
    seed_objects: list[dict[str, Any]], version: str
) -> None:
    load = load_text(LOAD, environ=ENV).dataloads[0]
    once = load.model_copy(update={"spec": load.spec.model_copy(update={"policy": "Once"})})
    extra = load_objects(load, [POOL], RenderOptions()) + load_objects(
        once, [POOL], RenderOptions()
    )
    daemonset = render_dataset(
        load_text(SEED.read_text(), environ=ENV).dataset_models["images"],
        None,
        RenderOptions(workload="DaemonSet", membership="etcd", etcd="http://etcd:2379"),
    )
    for obj in [*seed_objects, *extra, *daemonset]:
        kubernetes_validate.validate(obj, version, strict=True)


def test_seed_renders_the_talks_topology(seed_objects: list[dict[str, Any]]) -> None:
    objs = _by(seed_objects)
    worker = f"images-worker-{POOL}"
    sts = objs["StatefulSet", worker]
    pod = sts["spec"]["template"]["spec"]
    assert sts["spec"]["replicas"] == 2
    assert pod["nodeSelector"] == {"apps.openyurt.io/nodepool": POOL}
    args = pod["containers"][0]["args"]
    assert f"--nodepool={POOL}" in args
    assert f"--members=kubernetes:default/{worker}" in args
    assert {
        "name": "tier-0-0",
        "hostPath": {"path": "/mnt/images", "type": "DirectoryOrCreate"},
    } in pod["volumes"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    ref = env["TIDEPOOL_SECRET_MYSECRET_FS_OSS_ACCESSKEYID"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "mysecret", "key": "fs.oss.accessKeyId"}
    assert "s3cr3t" not in str(seed_objects)  # no secret value is ever rendered

    svc = objs["Service", worker]
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["metadata"]["annotations"] == {"openyurt.io/topologyKeys": "openyurt.io/nodepool"}

    fuse = objs["DaemonSet", f"images-fuse-{POOL}"]["spec"]["template"]["spec"]
    c = fuse["containers"][0]
    assert c["securityContext"]["privileged"] is True
    assert c["args"][0] == "mount"
    assert c["args"][c["args"].index("--") + 1 :] == ["images", "/run/tidepool/mnt/default/images"]
    assert any(m.get("mountPropagation") == "Bidirectional" for m in c["volumeMounts"])
    assert {"name": "dev-fuse", "hostPath": {"path": "/dev/fuse", "type": "CharDevice"}} in fuse[
        "volumes"
    ]

    pv = objs["PersistentVolume", "default-images"]
    assert "ownerReferences" not in pv["metadata"]  # cluster-scoped: removed by the finalizer
    assert pv["spec"]["hostPath"]["path"] == "/run/tidepool/mnt/default/images"
    terms = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"][0]["values"] == [POOL]
    pvc = objs["PersistentVolumeClaim", "images"]
    assert pvc["spec"]["volumeName"] == "default-images"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert objs["PodDisruptionBudget", worker]["spec"]["maxUnavailable"] == 1
    assert {"ServiceAccount", "Role", "RoleBinding", "Secret", "ConfigMap"} <= {k for k, _ in objs}
    for obj in seed_objects:
        if obj["kind"] != "PersistentVolume":
            assert obj["metadata"]["ownerReferences"][0]["uid"] == "u1"


def test_only_worker_containers_get_the_peer_credential(
    seed_objects: list[dict[str, Any]],
) -> None:
    """Workers authenticate each other with their own credential (create-only Secret, random);
    fuse and load Pods are clients and never see it."""
    objs = _by(seed_objects)
    secret = objs["Secret", "tidepool-images-peer"]
    assert secret["metadata"]["annotations"]["tidepool.io/create-only"] == "true"
    assert len(secret["stringData"]["peer-token"]) >= 32
    assert (
        secret["stringData"]["peer-token"]
        != objs["Secret", "tidepool-images-token"]["stringData"]["token"]
    )
    load = load_text(LOAD, environ=ENV).dataloads[0]
    pods = [
        (o["kind"], o["metadata"]["name"], c)
        for o in [*seed_objects, *load_objects(load, [POOL], RenderOptions())]
        for c in _pod_spec(o).get("containers", [])
    ]
    holders = {
        (kind, name)
        for kind, name, c in pods
        if any(e["name"] == "TIDEPOOL_PEER_TOKEN" for e in c.get("env", []))
    }
    assert holders == {(k, n) for k, n, c in pods if c["name"] == "worker"} != set()
    assert len(pods) > len(holders)


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec", {})
    while "template" in spec or "jobTemplate" in spec:
        spec = (spec.get("template") or spec["jobTemplate"])["spec"]
    return spec if "containers" in spec else {}


def test_names_stay_within_kubernetes_limits() -> None:
    name = short_name("a" * 40, "worker", "b" * 40)
    assert len(name) <= 52 and name == short_name("a" * 40, "worker", "b" * 40)


def test_dataload_jobs_and_phases() -> None:
    load = load_text(LOAD, environ=ENV).dataloads[0]
    (cron,) = load_objects(load, [POOL], RenderOptions())
    assert cron["kind"] == "CronJob" and cron["spec"]["schedule"] == "0 */6 * * *"
    job_pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert job_pod["nodeSelector"] == {"apps.openyurt.io/nodepool": POOL}
    load_args = job_pod["containers"][0]["args"]
    assert load_args[0] == "load" and load_args[load_args.index("--") + 1 :] == ["images", "/train"]
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    assert phase_of([], 1) == "Pending"
    assert phase_of([{"status": {"active": 1}}], 1) == "Executing"
    assert phase_of([done, {"status": {}}], 2) == "Executing"
    assert phase_of([done, done], 2) == "Complete"
    assert phase_of([done, failed], 2) == "Failed"
    assert phase_of([cron], 1, cron=True) == "Executing"


def test_load_pods_report_onto_their_own_job() -> None:
    load = load_text(LOAD, environ=ENV).dataloads[0]
    (cron,) = load_objects(load, [POOL], RenderOptions())
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["TIDEPOOL_REPORT_JOB"]["value"] == "$(POD_NAMESPACE)/$(JOB_NAME)"
    job_label = env["JOB_NAME"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert job_label == "metadata.labels['batch.kubernetes.io/job-name']"
    # the env it expands from comes first (Kubernetes expands only earlier variables)
    names = list(env)
    assert names.index("JOB_NAME") < names.index("TIDEPOOL_REPORT_JOB")
    assert pod["serviceAccountName"] == "tidepool-images-load"
    role = _by(
        render_dataset(
            load_text(SEED.read_text(), environ=ENV).dataset_models["images"], None, RenderOptions()
        )
    )[("Role", "tidepool-images-load")]
    assert role["rules"] == [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "patch"]}
    ]


def _job(pool: str, created: str, progress: JobProgress | None, **status: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": f"warm-{created}",
        "creationTimestamp": created,
        "labels": {POOL_NAME_LABEL: pool},
    }
    if progress is not None:
        meta["annotations"] = progress_patch(progress)["metadata"]["annotations"]
    return {"metadata": meta, "status": status}


def test_progress_sums_pools_and_counts_silent_jobs_as_zero() -> None:
    done = JobProgress(phase="Complete", files=10, files_total=10, bytes=1000, bytes_total=1000)
    half = JobProgress(files=3, files_total=10, bytes=500, bytes_total=1000)
    p = progress_of([_job("a", "1", done), _job("b", "1", half)], 2)
    assert (p.files, p.files_total, p.bytes, p.bytes_total) == (13, 20, 1500, 2000)
    assert p.percent == "75.0%" and p.reporting == 2
    # a pool that has not reported yet: one finished pool of two is 50%, not 100%
    assert progress_of([_job("a", "1", done), _job("b", "1", None)], 2).percent == "50.0%"
    # an unreadable annotation is skipped, never fatal
    bad = _job("a", "1", None)
    bad["metadata"]["annotations"] = {"tidepool.io/load-progress": "{not json"}
    assert progress_of([bad], 1).reporting == 0
    # an empty target that completed is 100%
    empty = JobProgress(phase="Complete")
    assert progress_of([_job("a", "1", empty)], 1).percent == "100.0%"


def test_newest_run_per_pool_and_duration() -> None:
    runs = [
        _job("a", "2026-01-01T00:00:00Z", None),
        _job("a", "2026-01-02T00:00:00Z", None),
        _job("b", "2026-01-01T06:00:00Z", None),
    ]
    newest = {j["metadata"]["name"] for j in newest_per_pool(runs)}
    assert newest == {"warm-2026-01-02T00:00:00Z", "warm-2026-01-01T06:00:00Z"}
    start = {"startTime": "2026-01-01T00:00:00Z"}
    finished = {**start, "completionTime": "2026-01-01T01:02:03Z"}
    t0 = 1767225600.0  # 2026-01-01T00:00:00Z
    assert duration_of([{"status": finished}], now=t0 + 99999) == "1h2m3s"
    assert duration_of([{"status": finished}, {"status": start}], now=t0 + 75) == "1m15s"
    assert duration_of([{"status": {}}], now=t0) == ""


def test_report_job_reference() -> None:
    assert parse_job_ref("edge/warm-load-a") == ("edge", "warm-load-a")
    assert parse_job_ref("warm", "ns1") == ("ns1", "warm")
    with pytest.raises(Exception, match="NAMESPACE/NAME"):
        parse_job_ref("edge/")
    with pytest.raises(Exception, match="NAMESPACE/NAME"):
        parse_job_ref("/warm")


def test_render_cli_with_nodepool(capsys: pytest.CaptureFixture[str]) -> None:
    args = _args(add_render_args, ["-f", str(SEED), "--nodepool", POOL, "--token", "t", "--crds"])
    assert run_render(args) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    kinds = [d["kind"] for d in docs]
    assert kinds.count("CustomResourceDefinition") == 3
    assert "StatefulSet" in kinds
    # a pool the dataset does not allow renders nothing for it
    text, notices = render_text(_args(add_render_args, ["-f", str(SEED), "--nodepool", "other"]))
    assert "StatefulSet" not in text and any("not in its nodeAffinity" in n for n in notices)


def test_render_cli_reports_spec_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SEED.read_text().replace("mediumtype: SSD", "mediumtype: TAPE"))
    assert run_render(_args(add_render_args, ["-f", str(bad)])) == 2
    assert "mediumtype" in capsys.readouterr().err


def test_convert_maps_kinds_and_keeps_spec(tmp_path: Path) -> None:
    result = convert_text(SEED.read_text(), "seed.yaml")
    kinds = [(d["apiVersion"], d["kind"]) for d in result.documents]
    assert kinds == [
        ("tidepool.io/v1alpha1", "Dataset"),
        ("tidepool.io/v1alpha1", "CacheRuntime"),
        ("v1", "Pod"),
    ]
    original = list(yaml.safe_load_all(SEED.read_text()))
    assert [d["spec"] for d in result.documents] == [d["spec"] for d in original]
    # the converted manifests load as they are
    bundle = load_text(result.to_yaml(), environ=ENV)
    assert bundle.runtime_models["images"].kind == "CacheRuntime"

    out = tmp_path / "tp.yaml"
    assert run_convert(_args(add_convert_args, ["-f", str(SEED), "-o", str(out)])) == 0
    assert "kind: CacheRuntime" in out.read_text()


def test_convert_rejects_what_tidepool_would_refuse() -> None:
    text = SEED.read_text().replace("quota: 10Gi", "quota: 10Gi\n        colour: blue")
    with pytest.raises(SpecError, match="colour"):
        convert_text(text, "seed.yaml")
