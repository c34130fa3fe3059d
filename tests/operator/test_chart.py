"""The Helm chart, rendered by real Helm (libhelm through PyPI's helm-python-sdk) and validated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="pip install helm-python-sdk (real Helm v4)")

CHART = Path(__file__).parents[2] / "deploy" / "helm" / "tidepool"
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
FLUID = {
    "fluidCompat": {"enabled": True},
    "cloudPool": {"name": "cloud"},
    "workers": {"membership": "etcd", "etcd": "http://etcd:2379"},
    "operator": {"namespaces": ["edge"]},
}


def _render(values: dict[str, Any]) -> list[dict[str, Any]]:
    chart = helm.Chart.load(str(CHART))
    try:
        out = chart.render(values, name="tidepool", namespace="tidepool-system", is_install=True)
        crds = [yaml.safe_load(c["data"]) for c in chart.crds]
    finally:
        chart.close()
    return [d for text in out.values() for d in yaml.safe_load_all(text) if d] + crds


def test_chart_lints() -> None:
    result = helm.lint(str(CHART), strict=True)
    assert result["errors"] == []


@pytest.mark.parametrize("values", [{}, FLUID], ids=["defaults", "fluid-etcd"])
def test_chart_output_validates(values: dict[str, Any]) -> None:
    docs = _render(values)
    for doc in docs:
        for version in VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
    kinds = [d["kind"] for d in docs]
    assert kinds.count("CustomResourceDefinition") == (6 if values else 3)
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["openyurt.io/is-edge-worker"] == "false"
    args = pod["containers"][0]["args"]
    assert args[0] == "operator"
    assert "--liveness=http://0.0.0.0:8080/healthz" in args
    probe = pod["containers"][0]["livenessProbe"]["httpGet"]
    assert (probe["path"], probe["port"]) == ("/healthz", "health")
    if values:
        assert pod["nodeSelector"]["apps.openyurt.io/nodepool"] == "cloud"
        assert "--fluid" in args and "--namespace=edge" in args
