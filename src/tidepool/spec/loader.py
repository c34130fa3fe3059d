"""Load spec files into resolved :class:`DatasetConfig` objects, reporting every problem at once.

The loader parses YAML documents, validates each against its model, binds runtimes to datasets by
name (Fluid's rule), resolves ``encryptOptions`` and maps mount options (:mod:`.options`). It
collects *all* problems across all files and raises them together as one :class:`SpecError`, each
naming the file and line, the document (index, kind, name), the field path, the bad value and what
would be valid. Documents of other kinds (Pods, PVCs …) are skipped with a notice, so a whole Fluid
demo manifest can be passed as is.

Secret values are never echoed: inputs under options, properties and Secret documents are left out
of messages, and every message is scrubbed of every secret value the loader has seen.

Limits: it reads local files and the environment only (no Kubernetes API); namespaces are matched
literally (a Secret or runtime binds only within its namespace, ``default`` when omitted).
"""

from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import SpecError, redact
from ..pages import DEFAULT_PAGE_SIZE, HEADER_SIZE, MAX_PAGE_SIZE, MIN_PAGE_SIZE
from ..paths import normalize
from ..quantity import format_bytes
from .config import MEDIUM_ORDER, DatasetConfig, MountConfig, RuntimeConfig, TierConfig
from .models import (
    KINDS,
    RUNTIME_KINDS,
    AnyDocument,
    DataLoad,
    Dataset,
    FieldErrors,
    Level,
    Loc,
    Runtime,
    Secret,
    parse_size,
    quantity,
)
from .options import mount_config

DEFAULT_CACHE_DIR = "~/.cache/tidepool"
DEFAULT_QUOTA = 10 << 30
PAGE_SIZE_PROPERTY = "alluxio.worker.page.store.page.size"
"""Alluxio property accepted as an alias of the runtime's ``pageSize``."""
_MODELS: dict[str, type[BaseModel]] = {
    "Dataset": Dataset,
    "CacheRuntime": Runtime,
    "AlluxioRuntime": Runtime,
    "DataLoad": DataLoad,
    "Secret": Secret,
}
# libyaml's loader is ~10x faster; both keep node marks (lines) and raise the same YAMLError types
_YamlLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_HIDDEN_INPUTS = frozenset({"options", "sharedOptions", "properties", "data", "stringData"})


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


@dataclass(frozen=True)
class LoadedDocument:
    source: Source
    model: AnyDocument


@dataclass(frozen=True)
class SpecBundle:
    """Everything a set of spec files defines, resolved and validated."""

    datasets: dict[str, DatasetConfig]
    """Resolved datasets by name, ready for the runtime."""
    dataset_models: dict[str, Dataset] = field(default_factory=dict)
    runtime_models: dict[str, Runtime] = field(default_factory=dict)
    """Runtimes by name (bound to the dataset of the same name, if any)."""
    dataloads: list[DataLoad] = field(default_factory=list)
    secrets: list[Secret] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    """Things skipped or defaulted; worth showing, not fatal."""
    documents: list[LoadedDocument] = field(default_factory=list)
    """Every model with its source, in file order."""


def secret_env_var(secret: str, key: str) -> str:
    """Environment variable for ``key`` of Secret ``secret``: ``TIDEPOOL_SECRET_<NAME>_<KEY>``."""
    return "TIDEPOOL_SECRET_" + re.sub(r"[^A-Z0-9]", "_", f"{secret}_{key}".upper())


def default_runtime(dataset: str, base_dir: Path | str | None = None) -> RuntimeConfig:
    """Runtime for a dataset without one: one SSD tier of 10Gi at ``<base_dir>/<dataset>``."""
    base = Path(base_dir if base_dir is not None else DEFAULT_CACHE_DIR).expanduser()
    return RuntimeConfig(tiers=(TierConfig("SSD", str(base / dataset), DEFAULT_QUOTA, 0.95, 0.7),))


def runtime_config(runtime: Runtime, default_tiers: Sequence[TierConfig] = ()) -> RuntimeConfig:
    """Resolve a runtime's spec; :class:`FieldErrors` lists problems with their field locations.

    ``default_tiers`` are used when the spec has no ``tieredstore``. Tiers come out fastest first.
    """
    spec, problems = runtime.spec, list[tuple[Loc, str]]()
    page_size, page_loc = spec.page_size, typing.cast(Loc, ("spec", "pageSize"))
    if PAGE_SIZE_PROPERTY in spec.properties:
        prop_loc: Loc = ("spec", "properties", PAGE_SIZE_PROPERTY)
        try:
            alias = parse_size(spec.properties[PAGE_SIZE_PROPERTY], alluxio=True)
        except ValueError as exc:
            problems.append((prop_loc, str(exc)))
        else:
            if page_size is not None and alias != page_size:
                message = f"{alias} bytes disagrees with pageSize {page_size}; set only one"
                problems.append((prop_loc, message))
            page_size, page_loc = alias, prop_loc
    page_size = DEFAULT_PAGE_SIZE if page_size is None else page_size
    if not MIN_PAGE_SIZE <= page_size <= MAX_PAGE_SIZE:
        valid = f"{format_bytes(MIN_PAGE_SIZE)} to {format_bytes(MAX_PAGE_SIZE)}"
        problems.append((page_loc, f"page size {page_size} bytes is outside {valid}"))
        page_size = DEFAULT_PAGE_SIZE
    tiers = list(default_tiers) if spec.tieredstore is None else []
    media: dict[str, int] = {}
    paths: dict[str, int] = {}
    for i, level in enumerate(spec.tieredstore.levels if spec.tieredstore else ()):
        loc: Loc = ("spec", "tieredstore", "levels", i)
        if level.mediumtype in media:
            message = (
                f"medium {level.mediumtype} is already used by levels[{media[level.mediumtype]}]"
                "; list each medium once, with several directories as a comma-separated path"
            )
            problems.append(((*loc, "mediumtype"), message))
        media.setdefault(level.mediumtype, i)
        for path, quota in _level_tiers(level, loc, page_size, problems):
            if path in paths:
                message = f"directory {path!r} is already used by levels[{paths[path]}]"
                problems.append(((*loc, "path"), message + "; every tier needs its own"))
            paths.setdefault(path, i)
            tiers.append(TierConfig(level.mediumtype, path, quota, level.high, level.low))
    if problems:
        raise FieldErrors(problems)
    tiers.sort(key=lambda t: MEDIUM_ORDER[t.medium])
    return RuntimeConfig(
        tiers=tuple(tiers),
        page_size=page_size,
        replicas=spec.replicas,
        data_replicas=spec.data.replicas,
    )


def _level_tiers(
    level: Level, loc: Loc, page_size: int, problems: list[tuple[Loc, str]]
) -> list[tuple[str, int]]:
    """``(path, quota)`` per directory of one level; appends its problems to ``problems``."""
    before = len(problems)
    if not 0 < level.high <= 1:
        problems.append(((*loc, "high"), f"{level.high} is not a fraction in (0, 1]"))
    if not 0 < level.low < 1:
        problems.append(((*loc, "low"), f"{level.low} is not a fraction in (0, 1)"))
    elif level.low >= level.high:
        message = f"low watermark {level.low} must be below high watermark {level.high}"
        problems.append(((*loc, "low"), message + " (eviction runs from high down to low)"))
    paths = [os.path.expanduser(p) for p in level.paths()]
    for path in (p for p in paths if not os.path.isabs(p)):
        problems.append(((*loc, "path"), f"{path[:200]!r} is not an absolute directory"))
    if not paths:
        problems.append(((*loc, "path"), "no directory given; write a path like /mnt/cache"))
    name = "quotaList" if level.quota_list is not None else "quota"
    raw = level.quota_list if level.quota_list is not None else level.quota
    if raw is None:
        problems.append(((*loc, "quota"), "required: the bytes this tier may hold, like 10Gi"))
        return []
    try:
        quotas = [quantity(q.strip()) for q in raw.split(",")]
    except ValueError as exc:
        problems.append(((*loc, name), str(exc)))
        return []
    if len(quotas) == 1 and name == "quota":  # Fluid: one quota is divided among the paths
        quotas = [quotas[0] // max(len(paths), 1)] * len(paths)
    elif len(quotas) != len(paths):
        message = f"{len(quotas)} quotas for {len(paths)} comma-separated paths"
        problems.append(((*loc, name), message + "; give one quota per path, in path order"))
        return []
    minimum = page_size + HEADER_SIZE
    if any(q < minimum for q in quotas):
        message = (
            f"quota {min(quotas)} bytes per directory is smaller than one page "
            f"({format_bytes(page_size)} page + {HEADER_SIZE}-byte header); "
            f"use at least {minimum} bytes, or a smaller pageSize"
        )
        problems.append(((*loc, name), message))
    return [] if len(problems) > before else list(zip(paths, quotas, strict=True))


class SecretStore:
    """Resolves Secret references from, in order: Secret documents, files, environment."""

    def __init__(
        self,
        documents: Sequence[Secret],
        secrets_dir: Path | None,
        environ: Mapping[str, str],
    ) -> None:
        self._docs = {(s.metadata.namespace, s.metadata.name): s.decoded() for s in documents}
        self._dir = secrets_dir
        self._environ = environ
        self.seen: set[str] = {v for values in self._docs.values() for v in values.values()}
        """Every secret value read so far, for redaction."""

    def lookup(self, namespace: str, name: str, key: str) -> str:
        value = self._docs.get((namespace, name), {}).get(key)
        if value is None and self._dir is not None:
            for candidate in (self._dir / name / key, self._dir / key):
                if candidate.is_file():
                    try:
                        value = candidate.read_text(encoding="utf-8").rstrip("\r\n")
                    except (OSError, UnicodeDecodeError) as exc:
                        raise LookupError(f"cannot read secret file {candidate}: {exc}") from None
                    break
        if value is None:
            value = self._environ.get(secret_env_var(name, key))
        if value is None:
            raise LookupError(self._missing(namespace, name, key))
        self.seen.add(value)
        return value

    def _missing(self, namespace: str, name: str, key: str) -> str:
        directory = str(self._dir) if self._dir is not None else "<secrets dir>"
        elsewhere = [ns for ns, n in self._docs if n == name and ns != namespace]
        note = f" (a Secret {name!r} exists in namespace {elsewhere[0]!r})" if elsewhere else ""
        return (
            f"secret {name!r} key {key!r} not found{note}; provide it as a Secret document "
            f"(apiVersion v1, name {name!r}, namespace {namespace!r}) with key {key!r} in the spec "
            f"files, or as the file {directory}/{name}/{key} (or {directory}/{key}), or as the "
            f"environment variable {secret_env_var(name, key)}"
        )


def load_text(
    text: str,
    filename: str = "<string>",
    *,
    secrets_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    default_cache_dir: Path | None = None,
) -> SpecBundle:
    """Load one YAML text (possibly several documents); :class:`SpecError` lists all problems."""
    collector = _Collector()
    collector.parse(text, filename)
    return collector.finish(secrets_dir, environ, default_cache_dir)


def load_files(
    paths: Sequence[str | Path],
    *,
    secrets_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    default_cache_dir: Path | None = None,
) -> SpecBundle:
    """Load spec files (a directory means its ``*.yaml``/``*.yml``) into one bundle.

    ``environ`` defaults to ``os.environ``; ``default_cache_dir`` is where datasets without a
    runtime keep their cache (default ``~/.cache/tidepool``).
    """
    collector = _Collector()
    for path in paths:
        path = Path(path)
        files = (
            sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
            if path.is_dir()
            else [path]
        )
        for file in files:
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                collector.problems.append(f"{file}: cannot read spec file: {exc}")
                continue
            collector.parse(text, str(file))
    return collector.finish(secrets_dir, environ, default_cache_dir)


_Doc = tuple[LoadedDocument, yaml.Node]
_TERMS: Loc = ("spec", "nodeAffinity", "required", "nodeSelectorTerms")


class _Collector:
    """Accumulates documents, problems and notices over several files."""

    def __init__(self) -> None:
        self.documents: list[_Doc] = []
        self.problems: list[str] = []
        self.notices: list[str] = []

    # ------------------------------------------------------------------ parsing

    def parse(self, text: str, filename: str) -> None:
        loader = _YamlLoader(text)
        index = 0
        try:
            while loader.check_node():
                node = loader.get_node()
                if node is None:
                    break
                index += 1
                data = loader.construct_document(node)
                self._document(filename, index, node, data)
        except yaml.YAMLError as exc:
            self.problems.append(_yaml_problem(filename, exc))
        except (ValueError, TypeError, RecursionError) as exc:  # e.g. timestamp 2024-13-01
            self.problems.append(f"{filename}: document {index + 1}: unreadable value: {exc}")
        finally:
            loader.dispose()

    def _document(self, filename: str, index: int, node: yaml.Node, data: Any) -> None:
        if data is None:
            return
        line = node.start_mark.line + 1
        if not isinstance(data, dict):
            self.problems.append(
                f"{filename}:{line}: document {index}: is a {type(data).__name__}; expected a "
                f"mapping with apiVersion, kind, metadata and spec"
            )
            return
        kind, meta = data.get("kind"), data.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        source = Source(
            filename,
            index,
            line,
            str(kind)[:60] if kind is not None else "?",
            str(name)[:80] if name is not None else "<no name>",
        )
        if not isinstance(kind, str):
            self.problems.append(
                f"{source.label()}: kind: missing or not a string; "
                f"expected one of {', '.join(KINDS)}"
            )
            return
        model_cls = _MODELS.get(kind)
        if model_cls is None:
            hint = f"; use {' or '.join(RUNTIME_KINDS)}" if kind.endswith("Runtime") else ""
            self.notices.append(f"{source.label()} skipped: not a Tidepool kind{hint}")
            return
        try:
            model = model_cls.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors():
                self.problems.append(_pydantic_problem(source, node, model_cls, err))
            return
        self.documents.append((LoadedDocument(source, typing.cast(AnyDocument, model)), node))

    def report(self, doc: _Doc, loc: Loc, message: str) -> None:
        source, node = doc[0].source, doc[1]
        path = _format_loc(loc)
        where = f"{source.label(_line(node, loc))}: {path + ': ' if path else ''}"
        self.problems.append(where + message)

    # ------------------------------------------------------------------ resolving

    def finish(
        self,
        secrets_dir: Path | None,
        environ: Mapping[str, str] | None,
        default_cache_dir: Path | None,
    ) -> SpecBundle:
        by_kind: dict[type[BaseModel], list[_Doc]] = {}
        for doc in self.documents:
            by_kind.setdefault(type(doc[0].model), []).append(doc)
        secrets = [typing.cast(Secret, d.model) for d, _ in by_kind.get(Secret, [])]
        store = SecretStore(secrets, secrets_dir, os.environ if environ is None else environ)

        datasets: dict[str, _Doc] = {}
        for doc in by_kind.get(Dataset, []):
            name = doc[0].model.metadata.name
            if name in datasets:
                first = datasets[name][0].source
                message = f"dataset {name!r} is already defined at {first.file}:{first.line}"
                self.report(doc, ("metadata", "name"), message + "; dataset names must be unique")
            else:
                datasets[name] = doc

        runtimes: dict[str, RuntimeConfig] = {}  # bound to a dataset, by dataset name
        runtime_models: dict[str, Runtime] = {}
        for doc in by_kind.get(Runtime, []):
            model = typing.cast(Runtime, doc[0].model)
            name = model.metadata.name
            if name in runtime_models:
                message = "a runtime of this name is already defined; one runtime per dataset"
                self.report(doc, ("metadata", "name"), message)
                continue
            runtime_models[name] = model
            bound = self._runtime(doc, datasets.get(name), default_cache_dir)
            if bound is not None:
                runtimes[name] = bound

        configs: dict[str, DatasetConfig] = {}
        for name, doc in datasets.items():
            config = self._dataset(doc, store, runtimes.get(name), default_cache_dir)
            if config is not None:
                configs[name] = config
        for doc in by_kind.get(DataLoad, []):
            self._dataload(doc, datasets)

        secret_values = sorted(store.seen, key=len, reverse=True)
        problems = list(dict.fromkeys(redact(p, secret_values) for p in self.problems))
        if problems:
            raise SpecError(problems)
        return SpecBundle(
            datasets=configs,
            dataset_models={n: typing.cast(Dataset, d[0].model) for n, d in datasets.items()},
            runtime_models=runtime_models,
            dataloads=[typing.cast(DataLoad, d.model) for d, _ in by_kind.get(DataLoad, [])],
            secrets=secrets,
            notices=[redact(n, secret_values) for n in self.notices],
            documents=[d for d, _ in self.documents],
        )

    def _runtime(
        self,
        doc: _Doc,
        dataset: _Doc | None,
        default_cache_dir: Path | None,
    ) -> RuntimeConfig | None:
        """The runtime's config if it is valid and serves ``dataset``; problems are reported."""
        model, label = typing.cast(Runtime, doc[0].model), doc[0].source.label()
        name, namespace = model.metadata.name, model.metadata.namespace
        bound = dataset is not None and dataset[0].model.metadata.namespace == namespace
        if not bound:
            self.notices.append(
                f"{label}: serves no dataset: no Dataset named {name!r} in namespace "
                f"{namespace!r} in these files"
            )
        if model.spec.data.replicas > model.spec.replicas:
            self.notices.append(
                f"{label}: data.replicas {model.spec.data.replicas} exceeds replicas "
                f"{model.spec.replicas}; files will have fewer copies"
            )
        try:
            config = runtime_config(model, default_runtime(name, default_cache_dir).tiers)
        except FieldErrors as exc:
            for loc, message in exc.problems:
                self.report(doc, loc, message)
            return None
        return config if bound else None

    def _dataset(
        self,
        doc: _Doc,
        store: SecretStore,
        runtime: RuntimeConfig | None,
        default_cache_dir: Path | None,
    ) -> DatasetConfig | None:
        model = typing.cast(Dataset, doc[0].model)
        spec, name, namespace = model.spec, model.metadata.name, model.metadata.namespace
        before = len(self.problems)

        def lookup(secret: str, key: str) -> str:
            return store.lookup(namespace, secret, key)

        mounts: list[MountConfig] = []
        for i, mount in enumerate(spec.mounts):
            loc: Loc = ("spec", "mounts", i)
            try:
                config = mount_config(
                    name,
                    mount,
                    lookup,
                    loc=loc,
                    shared_options=spec.shared_options,
                    shared_encrypt_options=spec.shared_encrypt_options,
                )
            except FieldErrors as exc:
                for problem_loc, message in exc.problems:
                    self.report(doc, problem_loc, message)
                continue
            for j, other in enumerate(mounts):
                if other.name == config.name:
                    message = f"mount name {config.name!r} is also used by mounts[{j}]"
                    self.report(doc, (*loc, "name"), message + "; mount names must be unique")
                if _overlaps(other.path, config.path):
                    message = f"mount path '/{config.path}' overlaps mounts[{j}] at '/{other.path}'"
                    self.report(doc, (*loc, "path"), message + "; mounts may not nest")
            mounts.append(config)

        affinity = spec.node_affinity
        terms = affinity.required.node_selector_terms if affinity and affinity.required else []
        for t, term in enumerate(terms):
            for e, expr in enumerate(term.match_expressions):
                if expr.operator in ("In", "NotIn") and not expr.values:
                    loc = (*_TERMS, t, "matchExpressions", e, "values")
                    self.report(doc, loc, f"operator {expr.operator} needs at least one value")
        if runtime is None:
            runtime = default_runtime(name, default_cache_dir)
            tier = runtime.tiers[0]
            self.notices.append(
                f"{doc[0].source.label()}: no runtime named {name!r}; caching in "
                f"one SSD tier of {format_bytes(tier.quota)} at {tier.path}"
            )
        policy = spec.metadata_sync_policy
        runtime = replace(runtime, metadata_ttl=policy.ttl, immutable=policy.immutable)
        if len(self.problems) > before:
            return None
        nodepools = affinity.nodepools() if affinity else ()
        return DatasetConfig(name=name, mounts=tuple(mounts), runtime=runtime, nodepools=nodepools)

    def _dataload(
        self,
        doc: _Doc,
        datasets: Mapping[str, _Doc],
    ) -> None:
        spec = typing.cast(DataLoad, doc[0].model).spec
        if spec.policy == "Cron" and not spec.schedule:
            self.report(
                doc,
                ("spec", "schedule"),
                "required when policy is Cron (a cron schedule like '0 */6 * * *')",
            )
        for i, target in enumerate(spec.target):
            try:
                normalize(target.path)
            except ValueError as exc:
                self.report(doc, ("spec", "target", i, "path"), str(exc))
        if spec.dataset.name not in datasets:
            self.notices.append(
                f"{doc[0].source.label()}: dataset {spec.dataset.name!r} is not "
                "defined in these files; it must exist where the load runs"
            )


def _overlaps(a: str, b: str) -> bool:
    if not a or not b:  # the dataset root may hold other mounts, like Alluxio's root UFS
        return False
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


# ---------------------------------------------------------------------- error formatting


def _yaml_problem(filename: str, exc: yaml.YAMLError) -> str:
    # str(exc) quotes the offending line, which may hold a secret: use the parts without it
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{filename}:{mark.line + 1}:{mark.column + 1}" if mark is not None else filename
    problem = getattr(exc, "problem", None) or type(exc).__name__
    context = getattr(exc, "context", None)
    return f"{where}: invalid YAML: {problem}{f' ({context})' if context else ''}"


def _format_loc(loc: Loc) -> str:
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


def _line(node: yaml.Node, loc: Loc) -> int:
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


def _pydantic_problem(source: Source, node: yaml.Node, model: type[BaseModel], err: Any) -> str:
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
    path = _format_loc(loc)
    return f"{source.label(_line(node, loc))}: {path + ': ' if path else ''}{message}"


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
