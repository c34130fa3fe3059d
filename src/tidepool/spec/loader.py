"""Load spec files into resolved :class:`DatasetConfig` objects, reporting every problem at once.

The loader parses YAML documents, validates each against its model, binds runtimes to datasets by
name (Fluid's rule), resolves runtimes (:mod:`.runtime`), ``encryptOptions`` (:mod:`.secrets`) and
mount options (:mod:`.options`). It collects *all* problems across all files and raises them
together as one :class:`SpecError`, each worded by :mod:`.problems` with the file and line, the
document (index, kind, name), the field path, the bad value and what would be valid. Documents of
other kinds (Pods, PVCs …) are skipped with a notice, so a whole Fluid demo manifest can be passed
as is.

Secret values are never echoed: inputs under options, properties and Secret documents are left out
of messages, and every message is scrubbed of every secret value the loader has seen.

Limits: it reads local files and the environment only (no Kubernetes API); namespaces are matched
literally (a Secret or runtime binds only within its namespace, ``default`` when omitted).
"""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tidepool.core.errors import SpecError, redact
from tidepool.core.paths import normalize
from tidepool.core.quantity import format_bytes
from tidepool.spec.config import DatasetConfig, MountConfig, RuntimeConfig
from tidepool.spec.models import (
    KINDS,
    RUNTIME_KINDS,
    AnyDocument,
    DataLoad,
    Dataset,
    Runtime,
    Secret,
)
from tidepool.spec.options import mount_config
from tidepool.spec.problems import FieldErrors, Loc, Source, located, pydantic_problem, yaml_problem
from tidepool.spec.runtime import default_runtime, runtime_config
from tidepool.spec.secrets import SecretStore

_MODELS: dict[str, type[BaseModel]] = {
    "Dataset": Dataset,
    "CacheRuntime": Runtime,
    "AlluxioRuntime": Runtime,
    "DataLoad": DataLoad,
    "Secret": Secret,
}
# libyaml's loader is ~10x faster; both keep node marks (lines) and raise the same YAMLError types
_YamlLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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
            self.problems.append(yaml_problem(filename, exc))
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
                self.problems.append(pydantic_problem(source, node, model_cls, err))
            return
        self.documents.append((LoadedDocument(source, typing.cast(AnyDocument, model)), node))

    def report(self, doc: _Doc, loc: Loc, message: str) -> None:
        self.problems.append(located(doc[0].source, doc[1], loc, message))

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
        runtime_docs: dict[str, _Doc] = {}
        for doc in by_kind.get(Runtime, []):
            model = typing.cast(Runtime, doc[0].model)
            name = model.metadata.name
            if name in runtime_models:
                message = "a runtime of this name is already defined; one runtime per dataset"
                self.report(doc, ("metadata", "name"), message)
                continue
            runtime_models[name] = model
            runtime_docs[name] = doc
            bound = self._runtime(doc, datasets.get(name), default_cache_dir)
            if bound is not None:
                runtimes[name] = bound

        configs: dict[str, DatasetConfig] = {}
        for name, doc in datasets.items():
            config = self._dataset(doc, store, runtimes.get(name), default_cache_dir)
            if config is not None:
                configs[name] = config
        self._shared_tiers(configs, runtime_docs, datasets)
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

    def _shared_tiers(
        self,
        configs: Mapping[str, DatasetConfig],
        runtime_docs: Mapping[str, _Doc],
        datasets: Mapping[str, _Doc],
    ) -> None:
        """A tier directory serves one dataset unless every dataset using it marks it shared."""
        users: dict[str, list[tuple[str, bool]]] = {}
        for name, config in configs.items():
            for tier in config.runtime.tiers:
                users.setdefault(os.path.normpath(tier.path), []).append((name, tier.shared))
        for path, used in users.items():
            if len(used) < 2 or all(shared for _, shared in used):
                continue
            names = [n for n, _ in used]
            for name, shared in used:
                if shared:
                    continue
                others = ", ".join(repr(n) for n in names if n != name)
                message = (
                    f"directory {path!r} is also a tier of dataset(s) {others}; a tier serves one "
                    "dataset unless every runtime using it sets 'shared: true' on the level "
                    "(each dataset then caches in its own subdirectory)"
                )
                doc = runtime_docs.get(name)
                if doc is None:
                    self.report(datasets[name], ("metadata", "name"), message)
                    continue
                model = typing.cast(Runtime, doc[0].model)
                levels = model.spec.tieredstore.levels if model.spec.tieredstore else []
                index = next(
                    (
                        i
                        for i, lv in enumerate(levels)
                        if path in (os.path.normpath(os.path.expanduser(p)) for p in lv.paths())
                    ),
                    None,
                )
                loc: Loc = (
                    ("metadata", "name")
                    if index is None
                    else ("spec", "tieredstore", "levels", index, "path")
                )
                self.report(doc, loc, message)

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
