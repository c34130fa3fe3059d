"""What the API server would do to our custom resources: validate them and prune unknown fields.

kmock stores whatever it is sent; a real API server validates a custom resource against its CRD's
structural schema and silently drops ("prunes") every field the schema does not declare, and every
``null`` of a field not marked ``nullable``. A status field the operator writes but the CRD lacks
would vanish on a live cluster without an error, so the operator tests check every stored Dataset,
runtime and DataLoad: pruning must leave no declared-and-set field out, and what remains must
validate against the generated CRD.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jsonschema

from tidepool.operator.crds import crds

_ROOT = ("apiVersion", "kind", "metadata")


def schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(group, plural) -> openAPIV3Schema, for both modes."""
    out = {}
    for mode in ("tidepool", "fluid"):
        for crd in crds(mode):  # type: ignore[arg-type]
            spec = crd["spec"]
            schema = spec["versions"][0]["schema"]["openAPIV3Schema"]
            out[spec["group"], spec["names"]["plural"]] = schema
    return out


def prune(value: Any, schema: dict[str, Any]) -> Any:
    """``value`` with the fields ``schema`` does not declare removed, as the API server does."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return value
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        out = {}
        for key, item in value.items():
            if item is None and not (props.get(key) or {}).get("nullable"):
                continue  # the API server drops nulls of non-nullable fields (not an error)
            if key in props:
                out[key] = prune(item, props[key])
            elif isinstance(extra, dict):
                out[key] = prune(item, extra)
            elif extra is True:
                out[key] = item
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune(item, schema["items"]) for item in value]
    return value


def problems(objects: Iterable[tuple[str, str, dict[str, Any]]]) -> list[str]:
    """For (group, plural, object) triples of our kinds: what a live API server would refuse or
    drop, one line each."""
    known = schemas()
    out = []
    for group, plural, obj in objects:
        schema = known.get((group, plural))
        if schema is None:
            continue
        name = f"{plural}.{group}/{(obj.get('metadata') or {}).get('name')}"
        body = {k: v for k, v in obj.items() if k not in _ROOT}
        props = schema["properties"]
        pruned = {k: prune(v, props[k]) for k, v in body.items() if k in props}
        dropped = [p for p in _diff(body, pruned) if not _is_null(body, p)]
        if dropped:
            out.append(f"{name}: the API server would drop fields: {dropped}")
        body_schema = {**schema, "properties": {k: v for k, v in props.items() if k not in _ROOT}}
        validator = jsonschema.Draft7Validator(as_jsonschema(body_schema))
        for err in validator.iter_errors(pruned):
            path = ".".join(str(p) for p in err.absolute_path)
            out.append(f"{name}: {path}: {err.message}")
    return out


def _diff(full: Any, pruned: Any, path: str = "") -> list[str]:
    if isinstance(full, dict) and isinstance(pruned, dict):
        out = []
        for key, value in full.items():
            sub = f"{path}.{key}" if path else key
            if key not in pruned:
                out.append(sub)
            else:
                out.extend(_diff(value, pruned[key], sub))
        return out
    if isinstance(full, list) and isinstance(pruned, list):
        pairs = enumerate(zip(full, pruned, strict=False))
        return [d for i, (a, b) in pairs for d in _diff(a, b, f"{path}[{i}]")]
    return []


def as_jsonschema(node: dict[str, Any]) -> dict[str, Any]:
    """What the API server checks, approximately: structural schema -> JSON Schema."""
    if node.get("x-kubernetes-int-or-string"):
        return {"type": ["integer", "string"]}
    out: dict[str, Any] = {}
    if node.get("type"):
        out["type"] = [node["type"], "null"] if node.get("nullable") else node["type"]
    for key in ("enum", "minimum", "maximum", "minItems", "required", "pattern", "maxLength"):
        if key in node:
            out[key] = node[key] + [None] if key == "enum" and node.get("nullable") else node[key]
    if "properties" in node:
        out["properties"] = {k: as_jsonschema(v) for k, v in node["properties"].items()}
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if "items" in node:
        out["items"] = as_jsonschema(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = as_jsonschema(node["additionalProperties"])
    return out


def _is_null(body: Any, path: str) -> bool:
    """Whether the field at ``path`` (``a.b[0].c``) holds null: dropping it loses nothing."""
    value = body
    for part in path.replace("[", ".[").split("."):
        value = value[int(part[1:-1])] if part.startswith("[") else value.get(part)
    return value is None
