"""Spec problems: where each one is (file, line, document, field path) and how it is worded.

Every problem the spec layer reports names the file and line, the document (index, kind, name),
the field path (``spec.tieredstore.levels[0].quota``), the bad value and what would be valid. This
module turns YAML syntax errors, pydantic validation errors and :class:`FieldErrors` locations into
such messages; the loader only decides *which* problems there are. Field paths are mapped back to
YAML lines by walking the composed node tree, so a problem points at the line that holds the field.

Secret values are never echoed: inputs under options, properties and Secret documents are left out
of messages, and YAML errors are worded without the offending line (which may hold a secret).
Limits: a path the YAML tree does not reach points at the deepest line it does reach; the loader
still scrubs every message of every secret value it has seen.
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel

Loc = tuple[str | int, ...]
"""A field location, as pydantic reports it: ``("spec", "mounts", 0, "name")``."""

_HIDDEN_INPUTS = frozenset({"options", "sharedOptions", "properties", "data", "stringData"})


class FieldErrors(ValueError):
    """Problems found while resolving a document, each as ``(field location, message)``."""

    def __init__(self, problems: list[tuple[Loc, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(message for _, message in problems))


@dataclass(frozen=True)
class Source:
    """Where a document came from."""

    file: str
    index: int
    """1-based position of the document in its file (empty documents count)."""
    line: int
    kind: str
    name: str

    def label(self, line: int | None = None) -> str:
        return f"{self.file}:{line or self.line}: document {self.index} ({self.kind} {self.name})"


def located(source: Source, node: yaml.Node, loc: Loc, message: str) -> str:
    """``message`` prefixed with the file, line, document and field path ``loc`` points at."""
    path = format_loc(loc)
    return f"{source.label(node_line(node, loc))}: {path + ': ' if path else ''}{message}"


def yaml_problem(filename: str, exc: yaml.YAMLError) -> str:
    """One message for a YAML syntax error: file, line and column, and what is wrong."""
    # str(exc) quotes the offending line, which may hold a secret: use the parts without it
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{filename}:{mark.line + 1}:{mark.column + 1}" if mark is not None else filename
    problem = getattr(exc, "problem", None) or type(exc).__name__
    context = getattr(exc, "context", None)
    return f"{where}: invalid YAML: {problem}{f' ({context})' if context else ''}"


def format_loc(loc: Loc) -> str:
    """``spec.mounts[0].name`` for ``("spec", "mounts", 0, "name")``, as written in YAML."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            continue
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def node_line(node: yaml.Node, loc: Loc) -> int:
    """Line of the deepest YAML node ``loc`` reaches (1-based)."""
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if str(getattr(k, "value", None)) == str(part)]
            if not match:
                break
            key, node = match[0]
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def pydantic_problem(source: Source, node: yaml.Node, model: type[BaseModel], err: Any) -> str:
    """One located message for pydantic error ``err`` of ``model``; hidden inputs left out."""
    loc: Loc = tuple(err["loc"])
    kind, message = err["type"], str(err["msg"])
    if kind == "extra_forbidden":
        fields = _fields_at(model, loc[:-1])
        valid = f"; valid fields here: {', '.join(fields)}" if fields else ""
        message = f"unknown field {str(loc[-1])[:80]!r}{valid}"
    elif kind == "missing":
        message = "required field is missing"
    elif message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    elif _show_input(source, loc, err.get("input")):
        message = f"{message}, got {_short(err['input'])}"
        if isinstance(err["input"], bool) and kind == "string_type":
            # YAML 1.1 reads off/on/no/yes/true/false as booleans
            message += " (YAML reads unquoted off/on/no/yes as booleans: quote the value)"
    return located(source, node, loc, message)


def _show_input(source: Source, loc: Loc, value: object) -> bool:
    if source.kind == "Secret" or _HIDDEN_INPUTS.intersection(p for p in loc if isinstance(p, str)):
        return False
    return value is None or isinstance(value, str | int | float | bool)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fields_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """Names (as written in YAML) of the fields of the model found at ``loc``, if any."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        origin = typing.get_origin(current)
        if isinstance(part, int) and origin is list:
            current = typing.get_args(current)[0]
        elif isinstance(part, str) and origin is dict:
            current = typing.get_args(current)[1]
        elif isinstance(current, type) and issubclass(current, BaseModel):
            found = [
                f.annotation
                for n, f in current.model_fields.items()
                if (f.validation_alias or f.alias or n) == part
            ]
            if not found:
                return []
            current = found[0]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [str(f.validation_alias or f.alias or n) for n, f in current.model_fields.items()]
    return []


def _unwrap(tp: Any) -> Any:
    if typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return tp
