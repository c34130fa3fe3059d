"""Resolve the Secret references of ``encryptOptions`` to values, and remember them for redaction.

A mount's ``encryptOptions`` name a Secret and a key, as in Fluid. Outside Kubernetes the value is
looked up, in order, in the Secret documents among the spec files, in a secrets directory
(``<dir>/<secret>/<key>`` or ``<dir>/<key>``, as a mounted Secret volume lays them out) and in the
environment (:func:`secret_env_var`). A missing value is reported with every place it could go.

Every value read is kept in :attr:`SecretStore.seen`, so the loader can scrub it from every message.
Limits: no Kubernetes API; a Secret document only serves its own namespace (matched literally), but
files and environment variables are not namespaced.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from tidepool.spec.models import Secret


def secret_env_var(secret: str, key: str) -> str:
    """Environment variable for ``key`` of Secret ``secret``: ``TIDEPOOL_SECRET_<NAME>_<KEY>``."""
    return "TIDEPOOL_SECRET_" + re.sub(r"[^A-Z0-9]", "_", f"{secret}_{key}".upper())


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
