"""Map a mount's URL and Alluxio/Hadoop-style option keys to an fsspec protocol, root and options.

Fluid manifests configure origins with Alluxio property names (``fs.oss.endpoint``,
``fs.s3a.access.key`` …); the runtime reaches origins through fsspec, which wants keyword arguments
(``endpoint_url=``, ``key=`` …). :func:`map_options` is the one pure translation between the two, so
the table is tested with plain values and every surface agrees on it. :func:`mount_config` adds the
dataset-level bits around it: default mount path, ``encryptOptions`` resolved through a lookup
function, and which values are secrets.

Aliyun OSS (``oss://``) is reached through OSS's S3-compatible API with s3fs (protocol ``s3``)
rather than through ossfs: one well-tested backend, one retry and error funnel, and the same code
path as the S3 origin used in tests. OSS only accepts virtual-hosted-style requests, so
``addressing_style`` is ``virtual`` for it. Every S3 request sets botocore's checksum options to
``when_required``: S3-compatible stores (OSS, MinIO, JuiceFS, rclone) may reject or mishandle the
CRC checksum headers that botocore >= 1.36 adds by default.

An S3 endpoint must say its scheme (``http://`` or ``https://``): guessing https for
``127.0.0.1:9000`` only fails later, at the first read, with an SSL error. An OSS endpoint may be
a bare host name (Alluxio's convention, as the talk's manifests write it) and means https.

Limits: only ``s3``, ``oss``, ``http(s)``, ``local``/``file`` and bare absolute paths are supported.
Unknown dotted keys are errors (they are almost always a misspelt Alluxio property); unknown keys
without a dot pass through to fsspec unchanged, with ``true``/``false`` turned into booleans for
s3fs's boolean options.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tidepool.core.errors import BadRequestError
from tidepool.core.paths import normalize
from tidepool.spec.config import MountConfig
from tidepool.spec.models import EncryptOption, Mount
from tidepool.spec.problems import FieldErrors, Loc

SUPPORTED_SCHEMES = ("s3", "oss", "http", "https", "local", "file")

CHECKSUM_CONFIG = {
    "request_checksum_calculation": "when_required",
    "response_checksum_validation": "when_required",
}

# option key -> meaning; meanings become s3fs keyword arguments in _s3_options
S3_ALIASES: dict[str, str] = {
    "fs.s3a.endpoint": "endpoint_url",
    "alluxio.underfs.s3.endpoint": "endpoint_url",
    "fs.s3a.access.key": "key",
    "aws.accessKeyId": "key",
    "s3a.accessKeyId": "key",
    "fs.s3a.secret.key": "secret",
    "aws.secretKey": "secret",
    "s3a.secretKey": "secret",
    "fs.s3a.session.token": "token",
    "fs.s3a.endpoint.region": "region",
    "alluxio.underfs.s3.region": "region",
    "fs.s3a.path.style.access": "path_style",
    "alluxio.underfs.s3.disable.dns.buckets": "path_style",
}
OSS_ALIASES: dict[str, str] = {
    "fs.oss.endpoint": "endpoint_url",
    "fs.oss.accessKeyId": "key",
    "fs.oss.accessKeySecret": "secret",
    "fs.oss.securityToken": "token",
}
NATIVE_S3 = {
    "endpoint_url": "endpoint_url",
    "key": "key",
    "secret": "secret",
    "token": "token",
    "region_name": "region",
}
CREDENTIALS = frozenset({"key", "secret", "token"})
S3_BOOLEANS = frozenset({"anon", "use_ssl", "requester_pays", "version_aware", "cache_regions"})
S3_JSON = frozenset({"client_kwargs", "config_kwargs", "s3_additional_kwargs"})

SecretLookup = Callable[[str, str], str]
"""``(secret name, key) -> value``; ``LookupError(message saying how to provide it)`` if missing."""


@dataclass(frozen=True)
class Origin:
    """Where a mount's data lives, in fsspec terms."""

    protocol: str
    root: str
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)
    credential_keys: frozenset[str] = frozenset()
    """Option keys (as written) whose values are credentials."""


class OptionError(ValueError):
    """Problems with a URL or options: ``(option key or None for the URL, message)`` pairs."""

    def __init__(self, problems: list[tuple[str | None, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(message for _, message in problems))


def known_keys(scheme: str) -> tuple[str, ...]:
    """Alluxio-style option keys understood for ``scheme``."""
    if scheme == "s3":
        return tuple(S3_ALIASES)
    if scheme == "oss":
        return tuple(OSS_ALIASES)
    return ()


def map_options(url: str, options: Mapping[str, str]) -> Origin:
    """Translate ``url`` + ``options`` into an :class:`Origin`; :class:`OptionError` if invalid."""
    scheme, root = _split_url(url)
    if scheme in ("s3", "oss"):
        aliases = S3_ALIASES if scheme == "s3" else OSS_ALIASES
        storage, creds = _s3_options(scheme, options, aliases)
        if scheme == "oss" and "endpoint_url" not in storage:
            raise OptionError(
                [
                    (
                        None,
                        "oss:// mounts need option fs.oss.endpoint "
                        "(e.g. oss-cn-beijing.aliyuncs.com)",
                    )
                ]
            )
        return Origin("s3", root, storage, creds)
    problems: list[tuple[str | None, str]] = []
    storage_options: dict[str, Any] = {}
    for key, value in options.items():
        if "." in key:
            problems.append(
                (key, f"unknown option {key!r} for {scheme}:// mounts; {_known(scheme)}")
            )
        else:
            storage_options[key] = value
    if problems:
        raise OptionError(problems)
    protocol = scheme if scheme in ("http", "https") else "file"
    return Origin(protocol, root, storage_options)


def _split_url(url: str) -> tuple[str, str]:
    """``(scheme, root)``; a bare absolute path is scheme ``file``."""
    supported = f"supported: {', '.join(s + '://' for s in SUPPORTED_SCHEMES)} or an absolute path"
    if url.startswith("/"):
        scheme, rest = "file", url
    elif "://" in url:
        scheme, rest = url.split("://", 1)
        scheme = scheme.lower()
    else:
        raise OptionError([(None, f"{url[:200]!r} is not a URL or an absolute path; {supported}")])
    if "\x00" in url:
        raise OptionError([(None, "the URL contains a NUL byte")])
    if scheme not in SUPPORTED_SCHEMES:
        hint = (
            " (a Kubernetes volume: in standalone mode use local:///path)"
            if scheme == "pvc"
            else ""
        )
        raise OptionError([(None, f"unsupported scheme {scheme[:40]!r}{hint}; {supported}")])
    if scheme in ("http", "https"):
        host = rest.split("/", 1)[0]
        if "@" in host:
            raise OptionError([(None, _NO_CREDENTIALS)])
        if not host:
            raise OptionError([(None, f"{url[:200]!r} has no host")])
        return scheme, url
    if scheme in ("local", "file"):
        if not rest.startswith("/"):
            raise OptionError(
                [(None, f"{url[:200]!r} is not an absolute path; write {scheme}:///dir/sub")]
            )
        return scheme, rest.rstrip("/") or "/"
    root = rest.strip("/")
    bucket = root.split("/", 1)[0]
    if "@" in bucket:
        raise OptionError([(None, _NO_CREDENTIALS)])
    if not bucket:
        raise OptionError(
            [(None, f"{url[:200]!r} names no bucket; write {scheme}://bucket/prefix")]
        )
    return scheme, root


_NO_CREDENTIALS = "credentials in the URL are not allowed; put them in encryptOptions"


def _known(scheme: str) -> str:
    keys = known_keys(scheme)
    native = "option names without a dot are passed to fsspec unchanged"
    return f"known keys: {', '.join(keys)}; {native}" if keys else native


def _s3_options(
    scheme: str, options: Mapping[str, str], aliases: Mapping[str, str]
) -> tuple[dict[str, Any], frozenset[str]]:
    problems: list[tuple[str | None, str]] = []
    meanings: dict[str, tuple[str, str]] = {}  # meaning -> (key that set it, value)
    extra: dict[str, Any] = {}
    creds: set[str] = set()
    for key, value in options.items():
        meaning = aliases.get(key) or NATIVE_S3.get(key)
        if meaning is not None:
            if meaning in meanings and meanings[meaning][1] != value:
                problems.append(
                    (key, f"{key!r} and {meanings[meaning][0]!r} both set {meaning}; keep one")
                )
            meanings[meaning] = (key, value)
            if meaning in CREDENTIALS:
                creds.add(key)
        elif "." in key:
            problems.append(
                (key, f"unknown option {key!r} for {scheme}:// mounts; {_known(scheme)}")
            )
        elif key in S3_BOOLEANS:
            flag = _boolean(value)
            if flag is None:
                problems.append((key, f"option {key!r} must be true or false"))
            extra[key] = flag
        elif key in S3_JSON:
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                problems.append((key, f"option {key!r} must be a JSON object"))
            extra[key] = parsed
        else:
            extra[key] = value
    path_style = None
    if "path_style" in meanings:
        key, value = meanings.pop("path_style")
        path_style = _boolean(value)
        if path_style is None:
            problems.append((key, f"option {key!r} must be true or false"))
    if problems:
        raise OptionError(problems)

    if "endpoint_url" in meanings:
        key, value = meanings["endpoint_url"]
        if "://" not in value and scheme == "s3":
            # https silently assumed for "127.0.0.1:9000" ends in an SSL error at the first read
            problems.append(
                (
                    key,
                    f"endpoint {value[:200]!r} has no scheme: write http://{value[:200]} or "
                    f"https://{value[:200]}",
                )
            )
        elif not value.startswith(("http://", "https://")) and "://" in value:
            problems.append((key, f"endpoint {value[:200]!r} must start with http:// or https://"))
    if problems:
        raise OptionError(problems)

    storage: dict[str, Any] = dict(extra)
    for meaning in ("endpoint_url", "key", "secret", "token"):
        if meaning in meanings:
            storage[meaning] = meanings[meaning][1]
    if "endpoint_url" in storage and "://" not in storage["endpoint_url"]:
        # OSS endpoints are host names by Alluxio's convention (the talk's manifests), always TLS
        storage["endpoint_url"] = "https://" + storage["endpoint_url"]
    client_kwargs = dict(storage.get("client_kwargs") or {})
    if "region" in meanings:
        client_kwargs["region_name"] = meanings["region"][1]
    if client_kwargs:
        storage["client_kwargs"] = client_kwargs
    config_kwargs: dict[str, Any] = {**CHECKSUM_CONFIG, **(storage.get("config_kwargs") or {})}
    style = "virtual" if scheme == "oss" else ("path" if path_style else None)
    if style is not None:
        config_kwargs["s3"] = {**config_kwargs.get("s3", {}), "addressing_style": style}
    storage["config_kwargs"] = config_kwargs
    return storage, frozenset(creds)


def _boolean(value: str) -> bool | None:
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0"):
        return False
    return None


def mount_config(
    dataset: str,
    mount: Mount,
    lookup_secret: SecretLookup,
    *,
    loc: Loc = ("spec", "mounts", 0),
    shared_options: Mapping[str, str] | None = None,
    shared_encrypt_options: Sequence[EncryptOption] = (),
) -> MountConfig:
    """Resolve one ``mounts[]`` entry; :class:`FieldErrors` carries problems located under ``loc``.

    Shared options (Dataset ``sharedOptions``/``sharedEncryptOptions``) apply first and a mount's
    own entries override them; their problems are located under ``spec.sharedOptions`` etc.
    """
    problems: list[tuple[Loc, str]] = []
    options: dict[str, str] = {}
    where: dict[str, Loc] = {}
    secret_keys: set[str] = set()
    sources: list[tuple[Loc, Mapping[str, str], Sequence[EncryptOption]]] = [
        (("spec",), shared_options or {}, shared_encrypt_options),
        (loc, mount.options, mount.encrypt_options),
    ]
    for base, plain, encrypted in sources:
        shared = base == ("spec",)
        opt_field = "sharedOptions" if shared else "options"
        enc_field = "sharedEncryptOptions" if shared else "encryptOptions"
        own: set[str] = set()
        for key, value in plain.items():
            options[key], where[key] = value, (*base, opt_field, key)
            secret_keys.discard(key)
            own.add(key)
        for i, option in enumerate(encrypted):
            option_loc: Loc = (*base, enc_field, i)
            if option.name in own:
                problems.append(
                    ((*option_loc, "name"), f"{option.name!r} is set in {opt_field} too; keep one")
                )
                continue
            ref = option.value_from.secret_key_ref
            try:
                options[option.name] = lookup_secret(ref.name, ref.key)
            except LookupError as exc:
                problems.append(((*option_loc, "valueFrom", "secretKeyRef"), str(exc.args[0])))
                continue
            where[option.name] = (*option_loc, "name")
            secret_keys.add(option.name)
            own.add(option.name)

    name = mount.name or dataset
    path = f"/{mount.name}" if mount.path is None else mount.path
    if mount.path is None and not mount.name:
        problems.append(((*loc,), "a mount needs a name or a path ('/' is the dataset root)"))
    try:
        rel = normalize(path)
    except BadRequestError as exc:
        problems.append(((*loc, "path"), str(exc)))
        rel = ""
    origin: Origin | None = None
    try:
        origin = map_options(mount.mount_point, options)
    except OptionError as exc:
        for opt, message in exc.problems:
            at = where.get(opt, (*loc, "options", opt)) if opt else (*loc, "mountPoint")
            problems.append((at, message))
    if problems or origin is None:
        raise FieldErrors(problems)
    secrets = {options[k] for k in secret_keys | origin.credential_keys if options.get(k)}
    return MountConfig(
        name=name,
        url=mount.mount_point,
        protocol=origin.protocol,
        root=origin.root,
        path=rel,
        storage_options=origin.storage_options,
        secret_values=tuple(sorted(secrets)),
    )
