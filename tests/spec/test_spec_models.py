"""Model-level parsing: scalars (sizes, durations), DataLoad, node pools, Secret decoding."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tidepool.spec import DataLoad, Dataset, Secret
from tidepool.spec.scalars import parse_duration, parse_size


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (90, 90.0),
        (1.5, 1.5),
        ("60", 60.0),
        ("60s", 60.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("2d", 172800.0),
        (0, 0.0),
    ],
)
def test_durations(value: Any, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["5 minutes", "-1", "1x", True, [], "", "1h 5m"])
def test_bad_durations(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "alluxio", "size"),
    [
        ("1Mi", False, 1 << 20),
        ("1M", False, 10**6),
        ("1MB", False, 1 << 20),
        ("1M", True, 1 << 20),
        ("64k", True, 64 << 10),
        ("64KB", True, 64 << 10),
        (4096, False, 4096),
        ("2GB", True, 2 << 30),
    ],
)
def test_sizes(value: Any, alluxio: bool, size: int) -> None:
    assert parse_size(value, alluxio=alluxio) == size


@pytest.mark.parametrize("value", ["1 bytes", "x", float("inf"), float("nan"), True, [1]])
def test_bad_sizes(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_size(value)


def dataload(spec: dict[str, Any]) -> DataLoad:
    return DataLoad.model_validate(
        {
            "apiVersion": "data.fluid.io/v1alpha1",
            "kind": "DataLoad",
            "metadata": {"name": "w"},
            "spec": spec,
        }
    )


def test_dataload_defaults() -> None:
    load = dataload({"dataset": {"name": "images", "namespace": "default"}})
    assert (load.spec.policy, load.spec.load_metadata, load.spec.target) == ("Once", False, [])
    assert load.spec.dataset.name == "images"


def test_dataload_fields() -> None:
    load = dataload(
        {
            "dataset": {"name": "images"},
            "loadMetadata": True,
            "policy": "Cron",
            "schedule": "@daily",
            "target": [{"path": "/train", "replicas": 2}, {"path": "/val"}],
        }
    )
    assert [(t.path, t.replicas) for t in load.spec.target] == [("/train", 2), ("/val", 1)]
    assert load.spec.schedule == "@daily"


@pytest.mark.parametrize(
    ("spec", "loc"),
    [
        ({"dataset": {"name": "d"}, "schedule": "every day"}, ("spec", "schedule")),
        (
            {"dataset": {"name": "d"}, "target": [{"path": "/a", "replicas": 0}]},
            ("spec", "target", 0, "replicas"),
        ),
        ({}, ("spec", "dataset")),
        ({"dataset": {"name": "d"}, "tagret": []}, ("spec", "tagret")),
    ],
)
def test_dataload_errors(spec: dict[str, Any], loc: tuple[Any, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        dataload(spec)
    assert [e["loc"] for e in info.value.errors()] == [loc]


def test_nodepools_from_affinity() -> None:
    def expr(key: str, op: str, *values: str) -> dict[str, Any]:
        return {"key": key, "operator": op, "values": list(values)}

    ds = Dataset.model_validate(
        {
            "apiVersion": "data.fluid.io/v1alpha1",
            "kind": "Dataset",
            "metadata": {"name": "d"},
            "spec": {
                "mounts": [{"mountPoint": "/x", "name": "x"}],
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    expr("apps.openyurt.io/nodepool", "In", "hz", "bj"),
                                    expr("kubernetes.io/os", "In", "linux"),
                                ]
                            },
                            {
                                "matchExpressions": [
                                    expr("openyurt.io/nodepool", "In", "bj", "sh"),
                                    expr("apps.openyurt.io/nodepool", "NotIn", "gz"),
                                ]
                            },
                        ]
                    }
                },
            },
        }
    )
    assert ds.spec.node_affinity is not None
    assert ds.spec.node_affinity.nodepools() == ("hz", "bj", "sh")


def test_secret_decoding_and_repr() -> None:
    secret = Secret.model_validate(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s"},
            "data": {"a": "aGVsbG8=", "b": "b2xk"},
            "stringData": {"b": "new", "c": 42},
        }
    )
    assert secret.decoded() == {"a": "hello", "b": "new", "c": "42"}
    assert "hello" not in repr(secret) and "new" not in repr(secret)


def test_lenient_fluid_fields_are_kept() -> None:
    ds = Dataset.model_validate(
        {
            "apiVersion": "data.fluid.io/v1alpha1",
            "kind": "Dataset",
            "metadata": {
                "name": "d",
                "namespace": "fluid",
                "labels": {"a": "b"},
                "uid": "123",
                "resourceVersion": "9",
            },
            "spec": {
                "mounts": [{"mountPoint": "/x", "name": "x", "readOnly": True, "shared": False}],
                "tolerations": [{"key": "k"}],
                "placement": "Exclusive",
                "accessModes": ["ReadOnlyMany"],
                "owner": {"uid": 0},
            },
            "status": {"phase": "Bound"},
        }
    )
    assert ds.spec.placement == "Exclusive" and ds.metadata.namespace == "fluid"
