"""Kubernetes structural schemas from the pydantic spec models: one source of truth for the CRDs.

``Model.model_json_schema()`` is JSON Schema 2020-12 with ``$defs``/``$ref``, ``anyOf`` for
optionals and ``const`` for literals; a CRD needs a *structural* schema (apiextensions.k8s.io/v1):
every node typed, no ``$ref``, ``anyOf`` only as value validation, no ``additionalProperties:
false``, ``nullable`` instead of ``null`` types. :func:`structural` converts one into the other.

Where the models are lenient the schema is too, so that manifests the YAML loader accepts are also
accepted by ``kubectl apply`` (the seed's ``high: "0.99"``):

* fields typed ``Any`` (Fluid parts accepted but not acted on) and free-form dicts keep unknown
  fields (``x-kubernetes-preserve-unknown-fields``);
* integers parsed by a validator (``pageSize: 1Mi``) are ``x-kubernetes-int-or-string``;
* numbers (pydantic also takes ``"0.99"``, Fluid spells watermarks as strings) accept any scalar.

The API server then checks structure; the operator validates each object with the same model and
reports what is wrong in ``status`` (see :mod:`.handlers`). Limits: recursive models are refused
(none exist), and ``description`` comes from model docstrings only.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

_LENIENT = "x-tidepool-lenient"
_DROP = frozenset({"title", "default", "examples", "$schema", _LENIENT})
_SCALAR_TYPES = ("string", "integer", "number", "boolean")


class _MarkLenient(GenerateJsonSchema):
    """Marks fields whose value passes through a ``BeforeValidator`` (parsed, so lenient)."""

    def function_before_schema(
        self, schema: core_schema.BeforeValidatorFunctionSchema
    ) -> JsonSchemaValue:
        inner = super().function_before_schema(schema)
        return {**inner, _LENIENT: True}


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural schema of ``model`` as the YAML user spells it (camelCase aliases)."""
    raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_MarkLenient)
    return structural(raw)


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """Convert a pydantic JSON schema (with ``$defs``) to a Kubernetes structural schema."""
    defs: dict[str, Any] = schema.get("$defs", {})
    return _node(schema, defs, ())


def _resolve(node: dict[str, Any], defs: dict[str, Any], seen: tuple[str, ...]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    name = ref.rsplit("/", 1)[-1]
    if name in seen:
        raise ValueError(f"recursive model {name!r} cannot be inlined into a structural schema")
    target = defs[name]
    merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return _node(merged, defs, (*seen, name))


def _node(node: dict[str, Any], defs: dict[str, Any], seen: tuple[str, ...]) -> dict[str, Any]:
    if "$ref" in node:
        return _resolve(node, defs, seen)
    lenient = bool(node.get(_LENIENT))
    options = node.get("anyOf") or node.get("oneOf")
    if options is not None:
        return _union(node, options, defs, seen)
    out: dict[str, Any] = {}
    if "description" in node:
        out["description"] = node["description"]
    kind = node.get("type")
    if "const" in node:
        kind = kind or _json_type(node["const"])
        out["enum"] = [node["const"]]
    if kind is None:
        if "enum" in node:
            kind = _json_type(node["enum"][0])
        else:  # typed Any: keep whatever the user wrote
            out["x-kubernetes-preserve-unknown-fields"] = True
            return out
    if kind == "object":
        return {**out, **_object(node, defs, seen)}
    if kind == "array":
        out["type"] = "array"
        out["items"] = _node(node.get("items", {}), defs, seen)
        for key in ("minItems", "maxItems"):
            if key in node:
                out[key] = node[key]
        return out
    if kind == "number":  # pydantic takes "0.99" too; Fluid writes watermarks as strings
        out["x-kubernetes-preserve-unknown-fields"] = True
        return out
    if kind == "integer" and lenient:
        out["x-kubernetes-int-or-string"] = True
        return out
    out["type"] = kind
    if "enum" in node:
        out["enum"] = list(node["enum"])
    for key in ("minimum", "maximum", "minLength", "maxLength", "pattern"):
        if key in node:
            out[key] = node[key]
    return out


def _object(node: dict[str, Any], defs: dict[str, Any], seen: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object"}
    props = node.get("properties")
    if props:
        out["properties"] = {k: _node(v, defs, seen) for k, v in props.items()}
        required = [r for r in node.get("required", ()) if r in props]
        if required:
            out["required"] = required
        return out
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and extra:
        out["additionalProperties"] = _node(extra, defs, seen)
    else:  # dict[str, Any] or an empty model
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _union(
    node: dict[str, Any], options: list[dict[str, Any]], defs: dict[str, Any], seen: tuple[str, ...]
) -> dict[str, Any]:
    real = [o for o in options if o.get("type") != "null"]
    nullable = len(real) < len(options)
    if len(real) == 1:
        base = {k: v for k, v in node.items() if k not in ("anyOf", "oneOf")}
        out = _node({**real[0], **base}, defs, seen)
    else:
        types = {_node(o, defs, seen).get("type") for o in real}
        out = {"description": node["description"]} if "description" in node else {}
        if types <= {"integer", "string"}:
            out["x-kubernetes-int-or-string"] = True
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True
    if nullable:
        out["nullable"] = True
    return out


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def problems(schema: dict[str, Any], path: str = "") -> list[str]:
    """Violations of the structural-schema rules this module relies on (empty when valid).

    A check of our own output, not a full reimplementation of the API server's validation: every
    node has a type or a preserve/int-or-string marker, no ``$ref``, no ``additionalProperties``
    beside ``properties`` or set to ``false``, no ``const``.
    """
    found: list[str] = []
    here = path or "<root>"
    if "$ref" in schema or "$defs" in schema or "const" in schema:
        found.append(f"{here}: has $ref/$defs/const")
    markers = ("x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string")
    if "type" not in schema and not any(schema.get(m) for m in markers):
        found.append(f"{here}: has no type")
    if schema.get("additionalProperties") is False:
        found.append(f"{here}: additionalProperties: false")
    if "properties" in schema and "additionalProperties" in schema:
        found.append(f"{here}: properties and additionalProperties together")
    if "anyOf" in schema or "oneOf" in schema:
        found.append(f"{here}: anyOf/oneOf in a structural position")
    for name, sub in schema.get("properties", {}).items():
        found.extend(problems(sub, f"{path}.{name}"))
    if isinstance(schema.get("items"), dict):
        found.extend(problems(schema["items"], f"{path}[]"))
    if isinstance(schema.get("additionalProperties"), dict):
        found.extend(problems(schema["additionalProperties"], f"{path}{{}}"))
    return found
