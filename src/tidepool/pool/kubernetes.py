"""Membership provider ``kubernetes``: a pool's workers from the EndpointSlices of its Service.

Each pool has its own headless worker Service (:mod:`.render`), so its EndpointSlices
(``kubernetes.io/service-name=<service>``) list exactly that pool's worker Pods; at the edge the
requests go through YurtHub, which answers from its cache when the cloud is unreachable. Ready
endpoints become members, named by their node (the worker's ``--node-name``), so placement on the
ring does not change when a Pod is recreated with a new IP.

Like the other providers (:mod:`tidepool.pool.membership`) it writes the member list it last saw to
``state_file`` and starts from it, and it keeps the last-known-good list while the API server is
unreachable. It never drops to an empty list because of an error, only when the API says so.

Limits: polls (``poll_interval``) instead of watching; a worker registers itself by being Ready,
so a member's removal takes the endpoints controller's delay plus one poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from tidepool.core.errors import ConfigError
from tidepool.core.ring import Member
from tidepool.pool.kubeapi import KubeClient, KubeConfig, KubeError, Resource, by_kind
from tidepool.pool.membership import PoolContext, load_last_known, save_members

log = logging.getLogger(__name__)

AGENT = "tidepool-members"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def parse_spec(spec: str, default_namespace: str = "default") -> tuple[str, str]:
    """``kubernetes:NAMESPACE/SERVICE`` or ``kubernetes:SERVICE`` -> (namespace, service)."""
    text = spec.removeprefix("kubernetes:").strip()
    ns, sep, service = text.rpartition("/")
    if not service:
        raise ConfigError(
            f"member source {spec!r} names no Service; use kubernetes:NAMESPACE/SERVICE"
        )
    return (ns if sep else default_namespace) or default_namespace, service


def members_from_slices(
    slices: list[dict[str, Any]], pool: str, port_name: str = "http"
) -> list[Member]:
    """Ready endpoints of EndpointSlices as members (pure), sorted, without duplicates."""
    found: dict[str, Member] = {}
    for s in slices:
        ports = s.get("ports") or []
        port = next((p.get("port") for p in ports if p.get("name") == port_name), None)
        if port is None and ports:
            port = ports[0].get("port")
        if port is None:
            continue
        for ep in s.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            addresses = ep.get("addresses") or []
            if not addresses:
                continue
            host = addresses[0]
            if ":" in host:
                host = f"[{host}]"
            ref = ep.get("targetRef") or {}
            name = ep.get("nodeName") or ep.get("hostname") or ref.get("name") or host
            found[name] = Member(name=name, address=f"http://{host}:{port}", pool=pool)
    return sorted(found.values())


class KubernetesMembership:
    """Members of one pool from its worker Service's EndpointSlices, with last-known-good."""

    def __init__(
        self,
        config: KubeConfig,
        namespace: str,
        service: str,
        pool: str,
        state_file: Path | None,
        *,
        poll_interval: float = 5.0,
    ) -> None:
        self.config = config
        self.namespace = namespace
        self.service = service
        self.pool = pool
        self.poll_interval = poll_interval
        self._state = state_file
        self._members = load_last_known(state_file)
        self._client: KubeClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._slices: Resource = by_kind("EndpointSlice")
        self.reachable = False
        self.last_sync: float | None = None

    @classmethod
    def from_source(cls, source: str, context: PoolContext) -> KubernetesMembership:
        """From ``NAMESPACE/SERVICE`` or ``SERVICE`` (namespace: ``POD_NAMESPACE``, the Pod's own,
        else ``default``), with the API server of :meth:`.KubeConfig.from_env`."""
        return from_spec(
            source,
            context.pool,
            context.state_file,
            namespace=os.environ.get("POD_NAMESPACE", "default"),
        )

    def members(self) -> list[Member]:
        return list(self._members)

    async def sync(self) -> None:
        """Read the slices once; raises :class:`KubeError` (the list is kept) on failure."""
        assert self._client is not None
        slices = await self._client.list(
            self._slices, self.namespace, {SERVICE_NAME_LABEL: self.service}
        )
        found = members_from_slices(slices, self.pool)
        self.reachable = True
        self.last_sync = time.time()
        if found != self._members:
            log.info("pool %s members: %s", self.pool, ", ".join(m.name for m in found) or "-")
            self._members = found
            save_members(self._state, found)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self.sync()
            except (KubeError, ConnectionError) as exc:
                if self.reachable:
                    log.warning(
                        "Kubernetes API unreachable (%s); keeping the last known %d members of %s",
                        exc,
                        len(self._members),
                        self.pool,
                    )
                self.reachable = False

    async def start(self) -> None:
        self._client = KubeClient(self.config, agent=AGENT)
        await self._client.__aenter__()
        try:
            await self.sync()
        except (KubeError, ConnectionError) as exc:
            log.warning(
                "Kubernetes API unreachable at start (%s); using the last known %d members",
                exc,
                len(self._members),
            )
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.close()
            self._client = None


def from_spec(
    spec: str,
    pool: str,
    state_file: Path | None,
    *,
    config: KubeConfig | None = None,
    namespace: str = "default",
    poll_interval: float = 5.0,
) -> KubernetesMembership:
    """Build the provider from ``[kubernetes:]NS/SERVICE``, with an explicit API server if given."""
    ns, service = parse_spec(spec, namespace)
    return KubernetesMembership(
        config or KubeConfig.from_env(), ns, service, pool, state_file, poll_interval=poll_interval
    )
