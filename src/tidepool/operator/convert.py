"""Turn Fluid manifests into Tidepool's: same spec, Tidepool's group and kind names.

``data.fluid.io/v1alpha1`` ``Dataset`` and ``DataLoad`` keep their kind, ``AlluxioRuntime``
becomes ``CacheRuntime``; every other document (Secrets, Pods, PVCs …) passes through untouched,
so a whole demo file converts in one go. Each converted document is checked against its model, so
a manifest Tidepool would refuse is reported here rather than at ``kubectl apply``.

Limits: comments and YAML anchors are not kept (documents are re-serialised); Fluid kinds other
than these three (``JuiceFSRuntime``, ``DataBackup`` …) are passed through with a notice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tidepool.core.errors import SpecError
from tidepool.operator.crds import FLUID_GROUP, TIDEPOOL_GROUP, VERSION
from tidepool.spec.models import DataLoad, Dataset, Runtime

KIND_MAP = {"Dataset": "Dataset", "AlluxioRuntime": "CacheRuntime", "DataLoad": "DataLoad"}
"""Fluid kind -> Tidepool kind."""
_MODELS: dict[str, type[BaseModel]] = {
    "Dataset": Dataset,
    "CacheRuntime": Runtime,
    "DataLoad": DataLoad,
}


@dataclass
class Converted:
    documents: list[Any] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def to_yaml(self) -> str:
        return yaml.safe_dump_all(self.documents, sort_keys=False, width=100)


def convert_document(doc: Any) -> tuple[Any, str | None]:
    """One document converted (or passed through) and a notice when it was not converted."""
    if not isinstance(doc, dict):
        return doc, "a non-mapping document was passed through"
    api, kind = doc.get("apiVersion"), doc.get("kind")
    if api != f"{FLUID_GROUP}/{VERSION}":
        return doc, None
    if kind not in KIND_MAP:
        return doc, f"Fluid kind {kind!r} has no Tidepool equivalent; passed through"
    out = dict(doc)
    out["apiVersion"] = f"{TIDEPOOL_GROUP}/{VERSION}"
    out["kind"] = KIND_MAP[kind]
    out.pop("status", None)
    meta = dict(out.get("metadata") or {})
    for key in ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields"):
        meta.pop(key, None)
    out["metadata"] = meta
    return out, None


def convert_text(text: str, filename: str = "<string>") -> Converted:
    """Convert every document of a YAML text; :class:`SpecError` lists documents that fail."""
    result = Converted()
    problems: list[str] = []
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise SpecError([f"{filename}: not valid YAML: {exc}"]) from None
    for index, doc in enumerate(docs, 1):
        if doc is None:
            continue
        out, notice = convert_document(doc)
        if notice:
            result.notices.append(f"{filename}: document {index}: {notice}")
        model = _MODELS.get(out.get("kind", "")) if isinstance(out, dict) else None
        if model is not None and out.get("apiVersion", "").startswith(TIDEPOOL_GROUP):
            try:
                model.model_validate(out)
            except ValidationError as exc:
                for err in exc.errors():
                    loc = ".".join(str(p) for p in err["loc"])
                    problems.append(
                        f"{filename}: document {index} ({out['kind']}): {loc}: {err['msg']}"
                    )
        result.documents.append(out)
    if problems:
        raise SpecError(problems)
    return result
