"""Fixtures for the operator tests: an HTTP fake of the Kubernetes API (kmock) with our kinds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kmock
import pytest

from tidepool.operator.crds import kinds
from tidepool.operator.kube import BUILTIN, KubeConfig

SEED = Path(__file__).parents[1] / "spec" / "fixtures" / "seed-demo.yaml"
POOL = "np763275de88194dabbb34b86ffaa2615e"


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
