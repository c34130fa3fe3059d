"""CustomResourceDefinitions generated from the spec and status models (no hand-written schema).

Tidepool's own group ``tidepool.io/v1alpha1`` serves ``Dataset``, ``CacheRuntime`` and
``DataLoad``. The opt-in Fluid mode serves the same schemas under Fluid's group and kinds
(``data.fluid.io/v1alpha1`` ``Dataset``, ``AlluxioRuntime``, ``DataLoad``) for clusters without
Fluid, so the seed's manifests apply unchanged; never install it next to a real Fluid.

The YAML committed under ``deploy/helm/tidepool/crds/`` (and ``fluid-crds/``) is
:func:`write_crds`' output; a test regenerates it and fails when it drifts from the models.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel

from tidepool.operator.schema import model_schema
from tidepool.operator.status import DataLoadStatus, DatasetStatus, RuntimeStatus
from tidepool.spec.models import DataLoadSpec, DatasetSpec, RuntimeSpec

TIDEPOOL_GROUP = "tidepool.io"
FLUID_GROUP = "data.fluid.io"
VERSION = "v1alpha1"
Mode = Literal["tidepool", "fluid"]


@dataclass(frozen=True)
class Kind:
    """One custom resource kind: its names and the models of its spec and status."""

    group: str
    kind: str
    plural: str
    spec: type[BaseModel]
    status: type[BaseModel]
    columns: tuple[tuple[str, str, str], ...]
    """Printer columns: (name, type, JSON path)."""
    short_names: tuple[str, ...] = ()
    scale: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{VERSION}"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"


_DATASET_COLUMNS = (
    ("Phase", "string", ".status.phase"),
    ("UFS Total Size", "string", ".status.ufsTotal"),
    ("Cached", "string", ".status.cacheStates.cached"),
    ("Cached Percentage", "string", ".status.cacheStates.cachedPercentage"),
    ("Hit Ratio", "string", ".status.cacheStates.cacheHitRatio"),
)
_RUNTIME_COLUMNS = (
    ("Replicas", "integer", ".spec.replicas"),
    ("Ready", "integer", ".status.workerNumberReady"),
    ("Phase", "string", ".status.workerPhase"),
    ("Pools", "string", ".status.pools"),
)
_DATALOAD_COLUMNS = (
    ("Dataset", "string", ".spec.dataset.name"),
    ("Phase", "string", ".status.phase"),
    ("Progress", "string", ".status.progress.percent"),
    ("Duration", "string", ".status.duration"),
)


def kinds(mode: Mode = "tidepool") -> tuple[Kind, Kind, Kind]:
    """(Dataset, runtime, DataLoad) kinds of one mode."""
    if mode == "fluid":
        return (
            Kind(FLUID_GROUP, "Dataset", "datasets", DatasetSpec, DatasetStatus, _DATASET_COLUMNS),
            Kind(
                FLUID_GROUP,
                "AlluxioRuntime",
                "alluxioruntimes",
                RuntimeSpec,
                RuntimeStatus,
                _RUNTIME_COLUMNS,
                ("alluxio",),
                scale=True,
            ),
            Kind(
                FLUID_GROUP,
                "DataLoad",
                "dataloads",
                DataLoadSpec,
                DataLoadStatus,
                _DATALOAD_COLUMNS,
            ),
        )
    return (
        Kind(
            TIDEPOOL_GROUP,
            "Dataset",
            "datasets",
            DatasetSpec,
            DatasetStatus,
            _DATASET_COLUMNS,
            ("tpds",),
        ),
        Kind(
            TIDEPOOL_GROUP,
            "CacheRuntime",
            "cacheruntimes",
            RuntimeSpec,
            RuntimeStatus,
            _RUNTIME_COLUMNS,
            ("tprt",),
            scale=True,
        ),
        Kind(
            TIDEPOOL_GROUP,
            "DataLoad",
            "dataloads",
            DataLoadSpec,
            DataLoadStatus,
            _DATALOAD_COLUMNS,
            ("tpload",),
        ),
    )


def crd(kind: Kind) -> dict[str, Any]:
    """The ``apiextensions.k8s.io/v1`` CustomResourceDefinition of one kind."""
    schema = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": model_schema(kind.spec),
            "status": model_schema(kind.status),
        },
        "required": ["spec"],
    }
    subresources: dict[str, Any] = {"status": {}}
    if kind.scale:
        subresources["scale"] = {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.currentWorkerNumberScheduled",
            "labelSelectorPath": ".status.selector",
        }
    columns = [{"name": name, "type": typ, "jsonPath": path} for name, typ, path in kind.columns]
    columns.append({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})
    names: dict[str, Any] = {
        "kind": kind.kind,
        "listKind": f"{kind.kind}List",
        "plural": kind.plural,
        "singular": kind.kind.lower(),
        "categories": ["tidepool"] if kind.group == TIDEPOOL_GROUP else ["fluid", "tidepool"],
    }
    if kind.short_names:
        names["shortNames"] = list(kind.short_names)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {"app.kubernetes.io/part-of": "tidepool"},
        },
        "spec": {
            "group": kind.group,
            "scope": "Namespaced",
            "names": names,
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def crds(mode: Mode = "tidepool") -> list[dict[str, Any]]:
    return [crd(k) for k in kinds(mode)]


def to_yaml(doc: dict[str, Any]) -> str:
    """Stable YAML (key order kept, wide lines) so regenerated files diff cleanly."""
    header = "# Generated by tidepool.operator.crds from the spec models; do not edit.\n"
    return header + yaml.safe_dump(doc, sort_keys=False, width=100, allow_unicode=True)


def generated_files() -> dict[str, str]:
    """Chart-relative path -> YAML text of every generated CRD."""
    out = {}
    for mode, folder in (("tidepool", "crds"), ("fluid", "fluid-crds")):
        for doc in crds(mode):  # type: ignore[arg-type]
            name = doc["metadata"]["name"]
            out[f"{folder}/{name}.yaml"] = to_yaml(doc)
    return out


def write_crds(chart_dir: Path) -> list[Path]:
    """(Re)write the generated CRD files of the chart; returns the paths written."""
    written = []
    for rel, text in generated_files().items():
        path = chart_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":  # python -m tidepool.operator.crds [CHART_DIR]
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "deploy/helm/tidepool")
    for p in write_crds(target):
        print(p)
