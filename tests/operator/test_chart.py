"""The Helm chart, rendered by real Helm (libhelm through PyPI's helm-python-sdk) and validated."""

from __future__ import annotations

import json
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


# ---- monitoring (opt-in): ServiceMonitor, PrometheusRule, Grafana dashboard ---------------------

RULES_FILE = CHART / "files" / "prometheus-rules.yaml"
DASHBOARD_FILE = CHART / "files" / "grafana-dashboard.json"
LONG = "a-dataset-with-a-name-long-enough-to-be-cut-by-the-operator"
MONITORING = {
    "monitoring": {
        "serviceMonitor": {
            "enabled": True,
            "datasets": [{"name": "images", "namespace": "edge"}, {"name": LONG, "namespace": "x"}],
            "labels": {"release": "kube-prometheus-stack"},
        },
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Tidepool"}},
    }
}
_DURATION = r"^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_META = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {"name": {"type": "string", "maxLength": 63}, "namespace": {"type": "string"}},
}
# The fields of the Prometheus Operator's monitoring.coreos.com/v1 CRDs this chart sets, with
# their types as the CRDs declare them; anything else is refused (a typo would be pruned silently).
SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": _META,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": _LABELS},
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": _DURATION},
                            "authorization": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "type": {"type": "string"},
                                    "credentials": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "required": ["key"],
                                        "properties": {
                                            "name": {"type": "string"},
                                            "key": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
PROMETHEUS_RULE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": _META,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["expr"],
                                    "properties": {
                                        "record": {"type": "string"},
                                        "alert": {"type": "string"},
                                        "expr": {"type": "string"},
                                        "for": {"type": "string", "pattern": _DURATION},
                                        "labels": _LABELS,
                                        "annotations": _LABELS,
                                    },
                                    "oneOf": [{"required": ["record"]}, {"required": ["alert"]}],
                                },
                            },
                        },
                    },
                }
            },
        },
    },
}


def _kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_monitoring_is_opt_in() -> None:
    kinds = {d["kind"] for d in _render({})}
    assert not kinds & {"ServiceMonitor", "PrometheusRule", "ConfigMap"}


def test_monitoring_renders_valid_objects() -> None:
    import jsonschema

    docs = _render(MONITORING)
    for doc in docs:
        if doc["kind"] in ("ServiceMonitor", "PrometheusRule"):
            schema = SERVICE_MONITOR if doc["kind"] == "ServiceMonitor" else PROMETHEUS_RULE
            jsonschema.validate(doc, schema)
        else:
            for version in VERSIONS:
                kubernetes_validate.validate(doc, version, strict=True)

    monitors = _kind(docs, "ServiceMonitor")
    assert [(m["metadata"]["namespace"], m["metadata"]["name"]) for m in monitors] == [
        ("edge", "tidepool-images"),
        ("x", f"tidepool-{LONG}"[:63]),
    ]
    assert all(m["metadata"]["labels"]["release"] == "kube-prometheus-stack" for m in monitors)

    (rule,) = _kind(docs, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES_FILE.read_text())
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert alerts == {
        "TidepoolOriginUnreachable",
        "TidepoolCacheAboveHighWatermark",
        "TidepoolHitRatioCollapsing",
        "TidepoolPoolMemberDown",
        "TidepoolLoadFailing",
    }

    (cm,) = _kind(docs, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Tidepool"}
    dashboard = json.loads(cm["data"]["tidepool-cache.json"])
    assert dashboard == json.loads(DASHBOARD_FILE.read_text())
    assert dashboard["uid"] == "tidepool-cache" and dashboard["panels"]


def test_service_monitor_finds_the_operators_workers_and_token() -> None:
    """The ServiceMonitor selects the worker Services the operator renders, in their namespace,
    on their named port, and reads the token from the Secret the operator creates (names cut
    to the operator's limit the same way)."""
    from tidepool.operator.render import RenderOptions, render_dataset, token_secret_name
    from tidepool.spec.loader import load_text

    from .conftest import SEED

    env = {
        "TIDEPOOL_SECRET_MYSECRET_FS_OSS_ACCESSKEYID": "id",
        "TIDEPOOL_SECRET_MYSECRET_FS_OSS_ACCESSKEYSECRET": "key",
    }
    bundle = load_text(SEED.read_text(), environ=env)
    ds, rt = bundle.dataset_models["images"], bundle.runtime_models["images"]
    objs = render_dataset(ds, rt, RenderOptions(token="t"))
    services = [o for o in objs if o["kind"] == "Service"]
    secret = next(o for o in objs if o["kind"] == "Secret")
    values = {
        "monitoring": {
            "serviceMonitor": {
                "enabled": True,
                "datasets": [{"name": "images", "namespace": ds.metadata.namespace}],
            }
        }
    }
    (monitor,) = _kind(_render(values), "ServiceMonitor")
    spec = monitor["spec"]
    assert services
    for svc in services:
        labels = svc["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items()
        assert svc["metadata"]["namespace"] in spec["namespaceSelector"]["matchNames"]
        assert spec["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}
    credentials = spec["endpoints"][0]["authorization"]["credentials"]
    assert credentials == {"name": secret["metadata"]["name"], "key": "token"}
    assert "token" in secret["stringData"]

    names = ["images", LONG, "x" * 40, "y" * 37 + "-" + "z" * 10]
    values["monitoring"]["serviceMonitor"]["datasets"] = [
        {"name": n, "namespace": "edge"} for n in names
    ]
    rendered = [
        m["spec"]["endpoints"][0]["authorization"]["credentials"]["name"]
        for m in _kind(_render(values), "ServiceMonitor")
    ]
    assert rendered == [token_secret_name(n) for n in names]


def test_service_monitor_without_datasets_is_refused() -> None:
    values = {"monitoring": {"serviceMonitor": {"enabled": True}}}
    with pytest.raises(Exception, match=r"monitoring.serviceMonitor.datasets"):
        _render(values)
