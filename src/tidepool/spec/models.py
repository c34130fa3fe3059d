"""Models of the YAML users write: Fluid's kinds as Fluid spells them, plus Tidepool extras.

The models are the *schema*: they check types, enumerations and single-field rules, so a wrong field
fails with its path (``spec.tieredstore.levels[0].mediumtype``). Rules that span fields or documents
(watermark order, quota versus page size, runtime-to-dataset binding, secrets) are applied when the
models are resolved into :mod:`tidepool.spec.config` (:mod:`.runtime`, :mod:`.secrets`,
:mod:`.options`, :mod:`.loader`), where a problem can still name the exact field it comes from.
Scalar values (sizes, durations, names) are parsed by :mod:`.scalars`.

Parts Tidepool implements are modelled fully with ``extra="forbid"``, so a typo is an error rather
than a silently ignored setting. Parts of Fluid that Tidepool accepts but does not act on yet
(runtime ``master``/``worker``/``fuse``, ``jvmOptions``, Dataset ``tolerations``, ``status`` …) are
typed ``Any`` so real Fluid manifests load unchanged; they are kept on the model but never read.

Limits: only ``v1alpha1`` of the Fluid API is accepted; Secret ``data`` must be valid base64.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasGenerator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
)
from pydantic.alias_generators import to_camel

from tidepool.spec.scalars import SecretValue, Str, StrMap, dns_label, parse_duration, parse_size

API_VERSIONS = ("data.fluid.io/v1alpha1", "tidepool.io/v1alpha1")
"""apiVersions accepted for Dataset, runtimes and DataLoad."""
RUNTIME_KINDS = ("CacheRuntime", "AlluxioRuntime")
"""Runtime kinds: Tidepool's own name and Fluid's, accepted as an alias."""
KINDS = ("Dataset", *RUNTIME_KINDS, "DataLoad", "Secret")
NODEPOOL_KEYS = ("apps.openyurt.io/nodepool", "openyurt.io/nodepool")
"""Node labels whose ``In`` values name the node pools a dataset is confined to."""

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?\-]+$")
_CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


# ----------------------------------------------------------------------------- bases


class Strict(BaseModel):
    """A part Tidepool implements: camelCase fields as in Fluid, unknown fields are errors."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
        frozen=True,
    )


class ObjectMeta(Strict):
    """Kubernetes ``metadata``; the server-managed fields are accepted so exported objects load."""

    name: str
    namespace: str = "default"
    labels: StrMap = Field(default_factory=dict)
    annotations: StrMap = Field(default_factory=dict)
    generate_name: Any = None
    uid: Any = None
    resource_version: Any = None
    generation: Any = None
    creation_timestamp: Any = None
    deletion_timestamp: Any = None
    deletion_grace_period_seconds: Any = None
    finalizers: Any = None
    owner_references: Any = None
    managed_fields: Any = None
    self_link: Any = None


class NamedMeta(ObjectMeta):
    """Metadata of a Dataset or runtime: the name is a DNS-1123 label, used as a directory name."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return dns_label(value)


class Document(Strict):
    """Fields every Tidepool kind shares."""

    api_version: str
    kind: str
    metadata: ObjectMeta
    status: Any = None

    @field_validator("api_version")
    @classmethod
    def _api(cls, value: str) -> str:
        if value not in API_VERSIONS:
            raise ValueError(
                f"{value[:80]!r} is not supported; use one of {', '.join(API_VERSIONS)}"
            )
        return value


# ----------------------------------------------------------------------------- Dataset


class SecretKeyRef(Strict):
    name: str
    key: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
            raise ValueError(f"{value[:80]!r} is not a valid Secret name (a DNS-1123 subdomain)")
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if value in (".", "..") or len(value) > 253 or not _SECRET_KEY.match(value):
            raise ValueError(
                f"{value[:80]!r} is not a valid Secret key: use letters, digits, '-', '_', '.'"
            )
        return value


class ValueFrom(Strict):
    secret_key_ref: SecretKeyRef


class EncryptOption(Strict):
    """An option whose value comes from a Secret (Fluid ``encryptOptions[]``)."""

    name: str
    value_from: ValueFrom


class Mount(Strict):
    """One origin of a dataset (Fluid ``mounts[]``)."""

    mount_point: str
    """Origin URL: ``s3://``, ``oss://``, ``http(s)://``, ``local://``, ``file://`` or ``/dir``."""
    name: str = ""
    path: str | None = None
    """Where the mount appears in the dataset; default ``/<name>``, ``/`` is the dataset root."""
    options: StrMap = Field(default_factory=dict)
    encrypt_options: list[EncryptOption] = Field(default_factory=list)
    read_only: bool = False
    shared: bool = False


class MatchExpression(Strict):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    values: list[Str] = Field(default_factory=list)


class NodeSelectorTerm(Strict):
    match_expressions: list[MatchExpression] = Field(default_factory=list)
    match_fields: list[MatchExpression] = Field(default_factory=list)


class NodeSelector(Strict):
    node_selector_terms: list[NodeSelectorTerm] = Field(default_factory=list)


class NodeAffinity(Strict):
    required: NodeSelector | None = None

    def nodepools(self) -> tuple[str, ...]:
        """Pools named by ``In`` expressions on a node-pool label, in order, without repeats."""
        pools: dict[str, None] = {}
        for term in self.required.node_selector_terms if self.required else ():
            for expr in term.match_expressions:
                if expr.key in NODEPOOL_KEYS and expr.operator == "In":
                    pools.update(dict.fromkeys(expr.values))
        return tuple(pools)


class MetadataSyncPolicy(Strict):
    """Tidepool extra (Fluid has no exact equivalent): how long cached stat/listings are trusted.

    ``ttl`` is seconds or a duration string (``60s``, ``5m``); ``immutable: true`` declares that the
    dataset never changes, so cached metadata is never revalidated against the origin.
    """

    ttl: Annotated[float, BeforeValidator(parse_duration)] = 60.0
    immutable: bool = False


class DatasetSpec(Strict):
    """Fluid ``Dataset.spec`` plus Tidepool's ``metadataSyncPolicy`` (see that model).

    ``sharedOptions``/``sharedEncryptOptions`` apply to every mount (a mount's own entries win).
    """

    mounts: list[Mount] = Field(min_length=1)
    node_affinity: NodeAffinity | None = None
    metadata_sync_policy: MetadataSyncPolicy = Field(default_factory=MetadataSyncPolicy)
    shared_options: StrMap = Field(default_factory=dict)
    shared_encrypt_options: list[EncryptOption] = Field(default_factory=list)
    # accepted and kept, not acted on yet
    access_modes: Any = None
    owner: Any = None
    placement: Any = None
    tolerations: Any = None
    runtime: Any = None
    runtimes: Any = None
    data_restore_location: Any = None


class Dataset(Document):
    kind: Literal["Dataset"]
    metadata: NamedMeta
    spec: DatasetSpec


# ----------------------------------------------------------------------------- runtimes


class Level(Strict):
    """One ``tieredstore.levels[]`` entry; ``path`` may list several comma-separated directories."""

    mediumtype: Literal["MEM", "SSD", "HDD"]
    path: str
    quota: Str | None = None
    """One quantity (divided equally among the paths) or a comma-separated list, one per path."""
    quota_list: Str | None = None
    high: float = 0.95
    low: float = 0.7
    shared: bool = False
    """Tidepool extra: other datasets may cache in these directories too (each in its own
    subdirectory). Every runtime using a directory must set it, else the second is refused."""
    volume_type: Any = None
    volume_source: Any = None

    def paths(self) -> list[str]:
        return [p.strip() for p in self.path.split(",") if p.strip()]


class TieredStore(Strict):
    levels: list[Level] = Field(min_length=1)


class DataSpec(Strict):
    replicas: int = Field(default=1, ge=1)
    """How many workers keep a copy of each file."""
    pin: Any = None


class PrefetchSpec(Strict):
    """Tidepool extra: what the workers fetch ahead of the programs (Fluid has no equivalent).

    ``policy``: ``off``; ``pattern`` (files a program announces, and directories read in
    listing order); ``dataset`` (the default: also the whole dataset on its first read, when it
    fits in the cache). ``maxInflight``: most prefetch requests at once (the link decides how
    many below that)."""

    policy: Literal["off", "pattern", "dataset"] = "dataset"
    max_inflight: int = Field(default=32, ge=1, le=256)


class RuntimeSpec(Strict):
    """Fluid ``AlluxioRuntime.spec`` / Tidepool ``CacheRuntime.spec``.

    Tidepool extra: ``pageSize`` (default 1Mi); the Alluxio property
    ``alluxio.worker.page.store.page.size`` in ``properties`` is accepted as an alias.
    """

    replicas: int = Field(default=1, ge=1)
    tieredstore: TieredStore | None = None
    data: DataSpec = Field(default_factory=DataSpec)
    page_size: Annotated[int, BeforeValidator(parse_size)] | None = None
    prefetch: PrefetchSpec = Field(default_factory=PrefetchSpec)
    properties: dict[str, Any] = Field(default_factory=dict)
    # accepted and kept, not acted on yet
    alluxio_version: Any = None
    master: Any = None
    job_master: Any = None
    worker: Any = None
    job_worker: Any = None
    api_gateway: Any = None
    init_users: Any = None
    fuse: Any = None
    jvm_options: Any = None
    run_as: Any = None
    disable_prometheus: Any = None
    hadoop_config: Any = None
    pod_metadata: Any = None
    volumes: Any = None
    management: Any = None
    image_pull_secrets: Any = None
    networkmode: Any = None
    runtime_management: Any = None


class Runtime(Document):
    """An ``AlluxioRuntime`` or ``CacheRuntime``; it serves the Dataset of the same name."""

    kind: Literal["CacheRuntime", "AlluxioRuntime"]
    metadata: NamedMeta
    spec: RuntimeSpec = Field(default_factory=RuntimeSpec)


# ----------------------------------------------------------------------------- DataLoad


_LABEL_SCHEMA: dict[str, Any] = {"pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
_TARGET_SCHEMA: dict[str, Any] = {"pattern": r"^[^-]", "maxLength": 4096}
"""The CRD's copy of :func:`_target_path`'s first rules: the API server refuses a target that
could be read as an option of ``tidepool load`` before the operator sees it."""


class DatasetRef(Strict):
    """The Dataset a DataLoad warms; both parts are DNS-1123 labels (they name Services)."""

    name: str = Field(json_schema_extra=_LABEL_SCHEMA)
    namespace: str = Field(default="default", json_schema_extra=_LABEL_SCHEMA)

    @field_validator("name", "namespace")
    @classmethod
    def _label(cls, value: str) -> str:
        return dns_label(value)


def _target_path(value: str) -> str:
    """A DataLoad target: a dataset path that can never be read as a command-line option."""
    if value.startswith("-"):
        raise ValueError(
            f"{value[:80]!r} starts with '-', which a command line reads as an option; "
            "target paths are dataset paths like /train (write /-name for a name starting "
            "with '-')"
        )
    if len(value) > 4096:
        raise ValueError(f"the path is {len(value)} characters long; at most 4096")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError(
            f"{value[:80]!r} holds a control character; target paths are one line of text"
        )
    return value


class LoadTarget(Strict):
    path: Annotated[str, AfterValidator(_target_path)] = Field(json_schema_extra=_TARGET_SCHEMA)
    replicas: int = Field(default=1, ge=1)


class DataLoadSpec(Strict):
    dataset: DatasetRef
    load_metadata: bool = False
    target: list[LoadTarget] = Field(default_factory=list)
    """Paths to warm; empty means the whole dataset."""
    policy: Literal["Once", "Cron"] = "Once"
    schedule: str | None = None
    """Cron schedule (five fields or ``@daily`` …); required when ``policy`` is ``Cron``."""
    options: StrMap = Field(default_factory=dict)
    # accepted and kept, not acted on yet
    affinity: Any = None
    node_selector: Any = None
    tolerations: Any = None
    scheduler_name: Any = None
    image_pull_secrets: Any = None
    run_after: Any = None
    ttl_seconds_after_finished: Any = None
    pod_metadata: Any = None
    resources: Any = None

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip()
        fields = text.split()
        ok = text in _CRON_MACROS or (
            len(fields) == 5 and all(_CRON_FIELD.match(f) for f in fields)
        )
        if not ok:
            raise ValueError(
                f"{value[:80]!r} is not a cron schedule; use five fields like '0 */6 * * *' "
                f"or one of {', '.join(_CRON_MACROS)}"
            )
        return text


class DataLoad(Document):
    kind: Literal["DataLoad"]
    spec: DataLoadSpec


# ----------------------------------------------------------------------------- Secret


class Secret(Strict):
    """A Kubernetes ``v1`` Secret holding values for ``encryptOptions``; values stay hidden."""

    api_version: Literal["v1"]
    kind: Literal["Secret"]
    metadata: ObjectMeta
    model_config = ConfigDict(**Strict.model_config, hide_input_in_errors=True)

    data: dict[str, SecretValue] = Field(default_factory=dict)
    """Base64-encoded values, as Kubernetes stores them."""
    string_data: dict[str, SecretValue] = Field(default_factory=dict)
    """Plain values; they win over ``data`` for the same key (as in Kubernetes)."""
    type: str = "Opaque"
    immutable: bool | None = None

    @field_validator("data")
    @classmethod
    def _base64(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for key, secret in value.items():
            try:
                base64.b64decode(secret.get_secret_value(), validate=True).decode()
            except (binascii.Error, ValueError):
                raise ValueError(
                    f"data[{key[:80]!r}] is not base64-encoded UTF-8 text "
                    "(put plain values under stringData instead)"
                ) from None
        return value

    def decoded(self) -> dict[str, str]:
        """Decoded key -> value map."""
        out = {k: base64.b64decode(v.get_secret_value()).decode() for k, v in self.data.items()}
        out.update({k: v.get_secret_value() for k, v in self.string_data.items()})
        return out


AnyDocument = Dataset | Runtime | DataLoad | Secret
