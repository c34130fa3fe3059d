"""A small asyncio client of the Kubernetes API: get, list, create, merge-patch, delete, apply.

Why not the official client: the worker side (membership, reporter) must stay light and share the
project's aiohttp; the operator side runs inside kopf, which brings its own API machinery but no
public CRUD helpers. This covers exactly the verbs Tidepool needs, on the real API paths, so it is
tested against an HTTP fake of the API server (kmock) rather than a mock of this class.

Every request is time-bounded (``timeout``); a connection failure, timeout or 5xx raises
:class:`KubeUnavailableError` (a :class:`ConnectionError`), so callers can fall back to what they
last knew. Other errors raise :class:`KubeApiError` carrying the status and the API's reason; the
response body is truncated in messages. Limits: no watch (callers poll or use kopf), no
server-side apply (``apply`` is get-then-create-or-merge-patch, which also works on API fakes).
"""

from __future__ import annotations

import json
import logging
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tidepool import __version__
from tidepool.core.errors import TidepoolError

log = logging.getLogger(__name__)

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
Obj = dict[str, Any]


class KubeError(TidepoolError):
    """Base of the Kubernetes adapter's errors."""


class KubeUnavailableError(KubeError, ConnectionError):
    """The API server did not answer (network, timeout, 5xx)."""


class KubeApiError(KubeError):
    """The API server answered with an error status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status, self.reason = status, reason
        super().__init__(f"{status} {reason}: {message[:300]}")


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the API."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


_BUILTIN = [
    Resource("", "v1", "services", "Service"),
    Resource("", "v1", "serviceaccounts", "ServiceAccount"),
    Resource("", "v1", "configmaps", "ConfigMap"),
    Resource("", "v1", "secrets", "Secret"),
    Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim"),
    Resource("", "v1", "persistentvolumes", "PersistentVolume", namespaced=False),
    Resource("", "v1", "nodes", "Node", namespaced=False),
    Resource("", "v1", "pods", "Pod"),
    Resource("", "v1", "events", "Event"),
    Resource("apps", "v1", "statefulsets", "StatefulSet"),
    Resource("apps", "v1", "daemonsets", "DaemonSet"),
    Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget"),
    Resource("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    Resource("batch", "v1", "jobs", "Job"),
    Resource("batch", "v1", "cronjobs", "CronJob"),
    Resource("coordination.k8s.io", "v1", "leases", "Lease"),
    Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"),
    Resource("apps.openyurt.io", "v1beta1", "nodepools", "NodePool", namespaced=False),
]
BUILTIN: dict[tuple[str, str], Resource] = {(r.api_version, r.kind): r for r in _BUILTIN}


def resource_of(obj: Mapping[str, Any], extra: Mapping[tuple[str, str], Resource] = {}) -> Resource:
    """The :class:`Resource` of an object from its apiVersion and kind."""
    key = (str(obj.get("apiVersion")), str(obj.get("kind")))
    found = extra.get(key) or BUILTIN.get(key)
    if found is None:
        raise KubeError(f"unknown kind {key[1]!r} of {key[0]!r}; add it to kube.BUILTIN")
    return found


def by_kind(kind: str) -> Resource:
    for res in _BUILTIN:
        if res.kind == kind:
            return res
    raise KubeError(f"unknown kind {kind!r}")


@dataclass(frozen=True)
class KubeConfig:
    """How to reach the API server."""

    server: str
    """Base URL, e.g. ``https://10.96.0.1:443``."""
    token: str | None = None
    ca_file: str | None = None
    ca_data: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False
    timeout: float = 10.0
    """Seconds for one request, connection included."""

    @classmethod
    def in_cluster(cls, sa_dir: Path = SA_DIR) -> KubeConfig:
        """From the Pod's service account (YurtHub at the edge proxies the same address)."""
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise KubeError(
                "no Kubernetes API server: not in a cluster (KUBERNETES_SERVICE_HOST is not set); "
                "outside a cluster set TIDEPOOL_KUBE_SERVER=https://HOST:PORT "
                "(and TIDEPOOL_KUBE_TOKEN)"
            )
        if ":" in host:
            host = f"[{host}]"
        token_file = sa_dir / "token"
        ca = sa_dir / "ca.crt"
        return cls(
            server=f"https://{host}:{port}",
            token=token_file.read_text().strip() if token_file.exists() else None,
            ca_file=str(ca) if ca.exists() else None,
        )

    @classmethod
    def from_env(cls, server: str | None = None, token: str | None = None) -> KubeConfig:
        """``server`` (or ``TIDEPOOL_KUBE_SERVER``) when given, else the in-cluster config."""
        server = server or os.environ.get("TIDEPOOL_KUBE_SERVER")
        if server:
            return cls(
                server=server.rstrip("/"), token=token or os.environ.get("TIDEPOOL_KUBE_TOKEN")
            )
        return cls.in_cluster()

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        if self.insecure:
            return False
        ctx = ssl.create_default_context(cafile=self.ca_file, cadata=self.ca_data)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


class KubeClient:
    """The verbs Tidepool needs, on the real API paths. Use as an async context manager."""

    def __init__(
        self,
        config: KubeConfig,
        extra: Mapping[tuple[str, str], Resource] = {},
        *,
        agent: str = "tidepool",
    ) -> None:
        self.config = config
        self.extra = dict(extra)
        self.agent = agent
        """Who is calling (``tidepool-operator``, ``tidepool-reporter``...): the User-Agent, so
        the API server's audit log (and RBAC checks in the tests) tell the components apart."""
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeClient:
        headers = {"Accept": "application/json", "User-Agent": f"{self.agent}/{__version__}"}
        if self.config.token:
            headers["Authorization"] = f"Bearer {self.config.token}"
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.config.timeout),
            connector=aiohttp.TCPConnector(ssl=self.config.ssl_context()),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """One API call; the decoded JSON answer."""
        if self._session is None:
            raise KubeError("KubeClient used outside 'async with'")
        data = json.dumps(body) if body is not None else None
        headers = {"Content-Type": content_type} if data is not None else {}
        url = self.config.server.rstrip("/") + path
        try:
            async with self._session.request(
                method, url, data=data, params=params, headers=headers
            ) as resp:
                text = await resp.text()
                if resp.status >= 500:
                    raise KubeUnavailableError(f"{method} {path}: API answered {resp.status}")
                if resp.status >= 400:
                    reason, message = "Error", text
                    try:
                        payload = json.loads(text)
                        reason = str(payload.get("reason", reason))
                        message = str(payload.get("message", text))
                    except (ValueError, AttributeError):
                        pass
                    raise KubeApiError(resp.status, reason, f"{method} {path}: {message}")
                return json.loads(text) if text else None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise KubeUnavailableError(f"{method} {path}: API unreachable ({exc!r})") from exc

    # ------------------------------------------------------------------ verbs

    async def get(self, res: Resource, namespace: str | None, name: str) -> Obj | None:
        try:
            found: Obj = await self.request("GET", res.path(namespace, name))
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise
        return found

    async def list(
        self, res: Resource, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[Obj]:
        """Objects of a kind, filtered by equality on ``labels`` (also checked client-side)."""
        params = {}
        if labels:
            params["labelSelector"] = ",".join(f"{k}={v}" for k, v in labels.items())
        try:
            answer = await self.request("GET", res.path(namespace), params=params)
        except KubeApiError as exc:
            if exc.status == 404:  # kind not served (e.g. no OpenYurt): nothing of it
                return []
            raise
        items: list[Obj] = list((answer or {}).get("items") or [])
        if labels:  # the selector is the server's job; double-check for simple API fakes
            items = [
                i
                for i in items
                if all(
                    ((i.get("metadata") or {}).get("labels") or {}).get(k) == v
                    for k, v in labels.items()
                )
            ]
        if namespace and res.namespaced:
            items = [
                i for i in items if (i.get("metadata") or {}).get("namespace") in (None, namespace)
            ]
        return items

    async def create(self, res: Resource, obj: Obj) -> Obj:
        ns = (obj.get("metadata") or {}).get("namespace")
        created: Obj = await self.request("POST", res.path(ns), body=obj)
        return created

    async def patch(
        self, res: Resource, namespace: str | None, name: str, body: Obj, *, subresource: str = ""
    ) -> Obj:
        path = res.path(namespace, name) + (f"/{subresource}" if subresource else "")
        patched: Obj = await self.request(
            "PATCH", path, body=body, content_type="application/merge-patch+json"
        )
        return patched

    async def delete(self, res: Resource, namespace: str | None, name: str) -> bool:
        """Delete with background propagation; False when it was already gone."""
        try:
            await self.request(
                "DELETE",
                res.path(namespace, name),
                body={
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "propagationPolicy": "Background",
                },
            )
        except KubeApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def apply(self, obj: Obj, *, create_only: bool = False) -> str:
        """Create ``obj`` or merge-patch it onto the existing one; returns what was done."""
        res = resource_of(obj, self.extra)
        meta = obj["metadata"]
        ns = meta.get("namespace") if res.namespaced else None
        existing = await self.get(res, ns, meta["name"])
        if existing is None:
            try:
                await self.create(res, obj)
            except KubeApiError as exc:
                if exc.status != 409:
                    raise
                return "exists"
            return "created"
        if create_only:
            return "kept"
        body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
        await self.patch(res, ns, meta["name"], body)
        return "patched"
