"""CRDs are generated from the spec models; the committed YAML must not drift from them."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tidepool.operator.convert import convert_text
from tidepool.operator.crds import crds, generated_files
from tidepool.operator.schema import problems
from tidepool.spec.loader import load_text

from .conftest import SEED
from .schema_check import as_jsonschema

CHART = Path(__file__).parents[2] / "deploy" / "helm" / "tidepool"
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


def test_committed_crds_match_the_models() -> None:
    """Regenerate with: python -m tidepool.operator.crds deploy/helm/tidepool"""
    for rel, text in generated_files().items():
        path = CHART / rel
        assert path.exists(), f"{rel} is missing; run python -m tidepool.operator.crds"
        assert path.read_text(encoding="utf-8") == text, (
            f"{rel} drifted from the models; run python -m tidepool.operator.crds"
        )


@pytest.mark.parametrize("mode", ["tidepool", "fluid"])
@pytest.mark.parametrize("version", VERSIONS)
def test_crds_are_valid_and_structural(mode: str, version: str) -> None:
    for crd in crds(mode):  # type: ignore[arg-type]
        kubernetes_validate.validate(crd, version, strict=True)
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert problems(schema) == []
        names = {c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]}
        assert "Phase" in names or "Ready" in names


def test_runtime_has_scale_and_dataset_has_fluid_columns() -> None:
    dataset, runtime, _ = crds("fluid")
    assert runtime["spec"]["names"]["kind"] == "AlluxioRuntime"
    sub = runtime["spec"]["versions"][0]["subresources"]
    assert sub["scale"]["specReplicasPath"] == ".spec.replicas"
    paths = {c["jsonPath"] for c in dataset["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert {".status.phase", ".status.cacheStates.cachedPercentage"} <= paths
    assert ".status.cacheStates.cacheHitRatio" in paths


EXAMPLES = CHART.parents[1] / "examples"


@pytest.mark.parametrize("mode", ["tidepool", "fluid"])
def test_example_manifests_fit_the_crd_schema_and_load(mode: str) -> None:
    """deploy/examples apply as they are (fluid mode) or converted, and load as specs do."""
    for path in sorted(EXAMPLES.glob("*.yaml")):
        text = path.read_text()
        docs = list(yaml.safe_load_all(text)) if mode == "fluid" else convert_text(text).documents
        by_kind = {c["spec"]["names"]["kind"]: c for c in crds(mode)}  # type: ignore[arg-type]
        for doc in docs:
            crd = by_kind[doc["kind"]]
            schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            jsonschema.validate(doc, as_jsonschema(schema))
        loaded = load_text(yaml.safe_dump_all(docs), path.name)
        assert [d.metadata.name for d in loaded.dataloads] == ["images-warmup", "images-refresh"]


@pytest.mark.parametrize("mode", ["tidepool", "fluid"])
def test_seed_manifests_fit_the_crd_schema(mode: str) -> None:
    """The seed's Fluid manifests apply unchanged (fluid mode) and converted (tidepool mode)."""
    text = SEED.read_text()
    docs = list(yaml.safe_load_all(text)) if mode == "fluid" else convert_text(text).documents
    by_kind = {c["spec"]["names"]["kind"]: c for c in crds(mode)}  # type: ignore[arg-type]
    checked = 0
    for doc in docs:
        crd = by_kind.get(doc["kind"])
        if crd is None:
            continue
        schema = as_jsonschema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        jsonschema.validate(doc, schema)
        checked += 1
    assert checked == 2
    # and a typo is refused by the schema, as by the loader
    bad = dict(docs[0], spec={**docs[0]["spec"], "mountz": []})
    schema = as_jsonschema(by_kind["Dataset"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
