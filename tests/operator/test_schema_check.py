"""The API-server emulation the operator tests run on stored custom resources, checked itself."""

from __future__ import annotations

from typing import Any

from tidepool.operator.status import DataLoadStatus, dump

from .schema_check import problems, prune, schemas


def _load(status: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    obj = {
        "apiVersion": "tidepool.io/v1alpha1",
        "kind": "DataLoad",
        "metadata": {"name": "warm"},
        "spec": {"dataset": {"name": "images"}},
        "status": status,
    }
    return "tidepool.io", "dataloads", obj


def test_what_the_operator_writes_passes() -> None:
    assert problems([_load(dump(DataLoadStatus(phase="Executing")))]) == []


def test_an_undeclared_field_would_be_dropped_and_a_bad_value_refused() -> None:
    status = dump(DataLoadStatus())
    status["progress"]["etaSeconds"] = 12
    status["phase"] = "Running"
    found = problems([_load(status)])
    assert any("status.progress.etaSeconds" in p for p in found)
    assert any("status.phase" in p and "Running" in p for p in found)


def test_nulls_of_non_nullable_fields_are_dropped_quietly() -> None:
    schema = schemas()["tidepool.io", "dataloads"]["properties"]["status"]
    assert prune({"phase": None, "jobs": ["a"]}, schema) == {"jobs": ["a"]}
    assert problems([_load({"phase": None})]) == []
