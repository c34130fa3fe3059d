"""Spec files for a dataset on a test S3 origin, written as a user would write them (Fluid YAML).

One builder for the tests, benchmarks and demos that start workers from spec files, so each says
only what it changes (page size, TTL, pools, replicas...) and the shape of a Dataset's S3 mount
lives in one place. The output goes through the same loader a user's file does.

Credentials are given one of three ways, as users do: ``secret_ref`` (``encryptOptions`` naming
a Secret ``cloud`` with keys ``access``/``secret``, resolved from ``--secrets-dir``, the
environment or a Secret document), ``secret_doc`` (that Secret as a document in the same file), or
``inline`` (plain ``options``, as some quick setups do).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

SECRET_NAME = "cloud"
"""The Secret the specs refer to: keys ``access`` and ``secret``."""


@dataclass(frozen=True)
class S3DatasetSpec:
    """A Dataset on an S3 origin and its runtime with one tier (SSD unless ``medium``)."""

    url: str
    """``s3://bucket/prefix/``"""
    endpoint: str
    cache: str | Path | None
    """Tier directory; None: no runtime document (defaults apply)."""
    name: str = "ds"
    kind: Literal["fluid", "tidepool"] = "fluid"
    credentials: Literal["secret_ref", "secret_doc", "inline"] = "secret_ref"
    access_key: str = ""
    secret_key: str = ""
    """Needed for ``secret_doc`` and ``inline``."""
    medium: str = "SSD"
    quota: str = "1Gi"
    watermarks: tuple[str, str] | None = None
    """(high, low) of the tier."""
    page_size: str | None = None
    metadata_sync: Mapping[str, Any] = field(default_factory=dict)
    """``metadataSyncPolicy``, e.g. ``{"ttl": "60s"}`` or ``{"immutable": True}``."""
    nodepools: Sequence[str] = ()
    """Pools of the dataset's ``nodeAffinity``; empty: none."""
    namespace: str | None = None
    replicas: int | None = None
    data_replicas: int | None = None
    prefetch: str | None = None
    """``spec.prefetch.policy`` of the runtime (None: the default)."""

    def documents(self) -> list[dict[str, Any]]:
        group = "data.fluid.io" if self.kind == "fluid" else "tidepool.io"
        api = f"{group}/v1alpha1"
        meta: dict[str, Any] = {"name": self.name}
        if self.namespace:
            meta["namespace"] = self.namespace
        options: dict[str, str] = {
            "fs.s3a.endpoint": self.endpoint,
            "fs.s3a.path.style.access": "true",
        }
        mount: dict[str, Any] = {
            "mountPoint": self.url,
            "name": self.name,
            "path": "/",
            "options": options,
        }
        if self.credentials == "inline":
            options["fs.s3a.access.key"] = self.access_key
            options["fs.s3a.secret.key"] = self.secret_key
        else:
            mount["encryptOptions"] = [
                {
                    "name": f"fs.s3a.{opt}.key",
                    "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": key}},
                }
                for opt, key in (("access", "access"), ("secret", "secret"))
            ]
        spec: dict[str, Any] = {}
        if self.nodepools:
            spec["nodeAffinity"] = {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "apps.openyurt.io/nodepool",
                                    "operator": "In",
                                    "values": list(self.nodepools),
                                }
                            ]
                        }
                    ]
                }
            }
        if self.metadata_sync:
            spec["metadataSyncPolicy"] = dict(self.metadata_sync)
        spec["mounts"] = [mount]
        docs: list[dict[str, Any]] = []
        if self.credentials == "secret_doc":
            docs.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": SECRET_NAME},
                    "stringData": {"access": self.access_key, "secret": self.secret_key},
                }
            )
        docs.append({"apiVersion": api, "kind": "Dataset", "metadata": meta, "spec": spec})
        if self.cache is not None:
            level: dict[str, Any] = {
                "mediumtype": self.medium,
                "path": str(self.cache),
                "quota": self.quota,
            }
            if self.watermarks:
                level["high"], level["low"] = self.watermarks
            runtime: dict[str, Any] = {}
            if self.replicas is not None:
                runtime["replicas"] = self.replicas
            if self.data_replicas is not None:
                runtime["data"] = {"replicas": self.data_replicas}
            if self.page_size:
                runtime["pageSize"] = self.page_size
            if self.prefetch is not None:
                runtime["prefetch"] = {"policy": self.prefetch}
            runtime["tieredstore"] = {"levels": [level]}
            docs.append(
                {
                    "apiVersion": api,
                    "kind": "AlluxioRuntime" if self.kind == "fluid" else "CacheRuntime",
                    "metadata": dict(meta),
                    "spec": runtime,
                }
            )
        return docs

    def text(self) -> str:
        return yaml.safe_dump_all(self.documents(), sort_keys=False)

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.text())
        return path


def write_secrets_dir(directory: Path, access_key: str, secret_key: str) -> Path:
    """A ``--secrets-dir`` holding the Secret the specs refer to; returns ``directory``."""
    secret = directory / SECRET_NAME
    secret.mkdir(parents=True, exist_ok=True)
    (secret / "access").write_text(access_key)
    (secret / "secret").write_text(secret_key)
    return directory


__all__ = ["SECRET_NAME", "S3DatasetSpec", "write_secrets_dir"]
