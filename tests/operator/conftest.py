"""Fixtures for the operator tests: an HTTP fake of the Kubernetes API (kmock) with our kinds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml

from tidepool.operator.crds import kinds
from tidepool.operator.render import RenderOptions, render_dataset
from tidepool.pool.kubeapi import BUILTIN, KubeConfig
from tidepool.spec.loader import load_text

from .rbac import LOAD_AGENTS, OPERATOR_AGENTS, WORKER_AGENTS, calls, denied
from .schema_check import problems

SEED = Path(__file__).parents[1] / "spec" / "fixtures" / "seed-demo.yaml"
POOL = "np763275de88194dabbb34b86ffaa2615e"
CHART_RBAC = Path(__file__).parents[2] / "deploy" / "helm" / "tidepool" / "templates" / "rbac.yaml"


def operator_rules() -> list[dict[str, Any]]:
    """The chart's ClusterRole rules (its template lines only touch metadata, so drop them)."""
    text = "\n".join(line for line in CHART_RBAC.read_text().splitlines() if "{{" not in line)
    role = next(d for d in yaml.safe_load_all(text) if d and d["kind"] == "ClusterRole")
    return list(role["rules"])


def pool_rules(account: str = "tidepool-images") -> list[dict[str, Any]]:
    """The rules of a Role the operator renders for the seed's dataset: ``tidepool-images`` for
    its workers (worker, reporter, fuse), ``tidepool-images-load`` for its DataLoad Jobs."""
    env = {
        "TIDEPOOL_SECRET_MYSECRET_FS_OSS_ACCESSKEYID": "x",
        "TIDEPOOL_SECRET_MYSECRET_FS_OSS_ACCESSKEYSECRET": "y",
    }
    dataset = load_text(SEED.read_text(), environ=env).dataset_models["images"]
    objs = render_dataset(dataset, None, RenderOptions())
    role = next(o for o in objs if o["kind"] == "Role" and o["metadata"]["name"] == account)
    return list(role["rules"])


def declare(api: kmock.KubernetesEmulator) -> None:
    """Declare every resource the operator reads or writes, as the real API's discovery would."""
    verbs = ["get", "list", "watch", "create", "update", "patch", "delete"]
    for res in BUILTIN.values():
        api.resources[res.group, res.version, res.plural] = {
            "kind": res.kind,
            "namespaced": res.namespaced,
            "verbs": verbs,
            "subresources": ["status"],
        }
    # kopf's backbone: it waits for these to be served before it watches anything
    api.resources["apiextensions.k8s.io", "v1", "customresourcedefinitions"] = {
        "kind": "CustomResourceDefinition",
        "namespaced": False,
        "verbs": verbs,
    }
    api.resources["", "v1", "namespaces"] = {
        "kind": "Namespace",
        "namespaced": False,
        "verbs": verbs,
    }
    for mode in ("tidepool", "fluid"):
        for k in kinds(mode):  # type: ignore[arg-type]
            api.resources[k.group, "v1alpha1", k.plural] = {
                "kind": k.kind,
                "namespaced": True,
                "verbs": verbs,
                "subresources": ["status", "scale"] if k.scale else ["status"],
            }


@pytest.fixture
async def api(kmock: kmock.KubernetesEmulator) -> AsyncIterator[kmock.KubernetesEmulator]:
    declare(kmock)
    yield kmock
    # every call a component made must be allowed by the RBAC rules it runs under in a cluster
    made = list(kmock)
    assert denied(operator_rules(), calls(made, OPERATOR_AGENTS)) == []
    assert denied(pool_rules(), calls(made, WORKER_AGENTS)) == []
    assert denied(pool_rules("tidepool-images-load"), calls(made, LOAD_AGENTS)) == []
    # every custom resource as stored must survive the API server's validation and pruning
    stored = [
        (res.group or "", res.plural or "", obj.raw)
        for (res, _ns, _name), obj in kmock.objects.items()
        if not obj.deleted
    ]
    assert problems(stored) == []


@pytest.fixture
def kube(api: kmock.KubernetesEmulator) -> KubeConfig:
    return KubeConfig(server=str(api.url).rstrip("/"), timeout=2.0)


def objects(api: kmock.KubernetesEmulator, kind: str) -> dict[str, dict[str, Any]]:
    """Live (not deleted) objects of a kind by name."""
    out = {}
    for (res, _ns, name), obj in api.objects.items():
        if obj.deleted:
            continue
        raw = obj.raw
        if raw.get("kind") == kind or (res.plural or "").lower() == kind.lower():
            out[name] = raw
    return out
