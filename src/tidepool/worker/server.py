"""A worker process: page stores, dataset services and the HTTP API, started and stopped as one.

``Worker`` is what ``tidepool up`` runs and what tests start in-process. Settings are a dataclass
passed explicitly (the CLI builds it from flags and ``TIDEPOOL_*`` variables).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tidepool.core.errors import ConfigError
from tidepool.core.ring import Member
from tidepool.origin.funnel import OriginSettings
from tidepool.pool.hostid import host_id
from tidepool.pool.membership import EtcdMembership, Membership, StaticMembership, parse_static
from tidepool.spec.config import DatasetConfig
from tidepool.store.metadata import MetadataStore
from tidepool.store.pagestore import PageStore
from tidepool.worker.app import WorkerApp
from tidepool.worker.dashboard import DashboardRoutes
from tidepool.worker.dataset import DatasetService
from tidepool.worker.history import History, HistorySampler, Totals
from tidepool.worker.members import PoolHealth
from tidepool.worker.metrics import (
    DatasetSample,
    OriginSample,
    StoreSample,
    WorkerMetrics,
    counter_value,
)
from tidepool.worker.placement import Placement

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8433


@dataclass
class WorkerSettings:
    """How one worker runs. Every field has a default; the CLI overrides from flags/env."""

    host: str = DEFAULT_HOST
    """Address to listen on; anything beyond loopback requires ``token``."""
    port: int = DEFAULT_PORT
    """TCP port (0 picks a free one)."""
    token: str | None = None
    """Bearer token clients must send; required when ``host`` is not loopback."""
    state_dir: Path = field(default_factory=lambda: Path("~/.local/state/tidepool").expanduser())
    """Where indexes and metadata live when a dataset has no persistent tier to hold them."""
    fetch_window: int = 8
    """Pages of one read fetched from the origin in parallel."""
    load_concurrency: int = 32
    """Files a warm-up job fetches at once."""
    io_threads: int = 4
    """Threads that write fetched pages to the store."""
    origin: OriginSettings = field(default_factory=OriginSettings)
    """Timeouts, retries and backoff for origin calls."""
    nodepool: str = ""
    """This node's pool (``apps.openyurt.io/nodepool``); empty for a single-node setup."""
    node_name: str = ""
    """This worker's stable name in the pool (default: the host name)."""
    advertise: str = ""
    """URL other workers and clients use to reach this one (default: from host and port)."""
    members: str = ""
    """``static:NAME=URL,...`` member list of the pool (empty: no peers unless ``etcd``)."""
    etcd: tuple[str, ...] = ()
    """etcd endpoints for lease-based pool membership."""
    membership: Membership | None = None
    """A ready-made provider (e.g. Kubernetes EndpointSlices), used instead of members/etcd."""
    history_interval: float = 2.0
    """Seconds between two samples of the dashboard's history (throughput, hit ratio, WAN)."""
    history_seconds: float = 600.0
    """How far back the dashboard's history goes (kept in memory, lost on restart)."""
    pool_probe_interval: float = 5.0
    """Seconds between two probes of the pool's members (dashboard, tidepool_pool_member_up)."""


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def state_dir_for(cfg: DatasetConfig, settings: WorkerSettings) -> Path:
    """Index and metadata sit beside the first persistent tier (MEM is lost on reboot)."""
    for tier in cfg.runtime.tiers:
        if tier.medium != "MEM":
            return Path(tier.path) / ".tidepool-state"
    return settings.state_dir / cfg.name


class Worker:
    def __init__(self, datasets: Iterable[DatasetConfig], settings: WorkerSettings | None = None):
        self.settings = settings or WorkerSettings()
        self.configs = {d.name: d for d in datasets}
        if not is_loopback(self.settings.host) and not self.settings.token:
            raise ConfigError(
                f"listening on {self.settings.host!r} (beyond loopback) requires a bearer token: "
                "pass --token or set TIDEPOOL_TOKEN, or listen on 127.0.0.1"
            )
        pool = self.settings.nodepool
        if pool:
            skipped = [
                d.name for d in self.configs.values() if d.nodepools and pool not in d.nodepools
            ]
            for name in skipped:
                log.warning(
                    "dataset %r is not served in node pool %r: its nodeAffinity allows %s",
                    name,
                    pool,
                    ", ".join(self.configs[name].nodepools),
                )
                del self.configs[name]
        self.metrics = WorkerMetrics()
        self.membership: Membership | None = None
        self.placement: Placement | None = None
        self._ready = False
        self.services: dict[str, DatasetService] = {}
        self.stores: dict[str, PageStore] = {}
        self.metas: dict[str, MetadataStore] = {}
        self._io_pool = ThreadPoolExecutor(self.settings.io_threads, "tidepool-io")
        self._runner: web.AppRunner | None = None
        self._flusher: asyncio.Task[None] | None = None
        self.port: int | None = None
        self.host_id = host_id()
        self.history = History(self.settings.history_seconds, self.settings.history_interval)
        self._sampler = HistorySampler(self.history, self._totals)
        self.pool_health: PoolHealth | None = None

    @property
    def endpoint(self) -> str:
        host = self.settings.host
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.port}"

    def _open_stores(self) -> None:
        for name, cfg in self.configs.items():
            state = state_dir_for(cfg, self.settings)
            state.mkdir(parents=True, exist_ok=True)
            store = PageStore(cfg.runtime.tiers, state, page_size=cfg.runtime.page_size)
            meta = MetadataStore(state)
            self.stores[name], self.metas[name] = store, meta
            self.services[name] = DatasetService(
                cfg,
                store,
                meta,
                self.metrics.dataset(name),
                self._io_pool,
                origin_settings=self.settings.origin,
                fetch_window=self.settings.fetch_window,
            )

    def _store_samples(self) -> list[StoreSample]:
        out = []
        for name, store in self.stores.items():
            stats = store.stats()
            levels = self.configs[name].runtime.tiers
            for t, level in zip(store.usage(), levels, strict=False):
                out.append(
                    StoreSample(
                        name,
                        t.medium,
                        str(t.path),
                        t.used,
                        t.capacity,
                        t.pages,
                        stats.evictions,
                        stats.corrupt,
                        high=int(level.high * t.capacity),
                        low=int(level.low * t.capacity),
                    )
                )
        return out

    def _dataset_samples(self) -> list[DatasetSample]:
        out = []
        for name, svc in self.services.items():
            total = svc.ufs_total
            out.append(
                DatasetSample(
                    name,
                    total[0] if total else None,
                    total[1] if total else None,
                    svc.store.dataset_bytes(name),
                    svc.store.dataset_files(name),
                    sum(t.capacity for t in svc.store.usage()),
                )
            )
        return out

    def _totals(self) -> Totals:
        served = wan = hits = misses = remote = 0
        for svc in self.services.values():
            c = svc.counters
            served += int(counter_value(c.bytes_cache) + counter_value(c.bytes_origin))
            wan += sum(o.stats.bytes_read for _, o in svc.mounts)
            hits, misses, remote = hits + svc.hits, misses + svc.misses, remote + svc.peer_hits
        return Totals(served, wan, hits, misses, remote)

    def _local_numbers(self) -> dict[str, tuple[int, int]]:
        return {
            name: (store.dataset_files(name), store.dataset_bytes(name))
            for name, store in self.stores.items()
        }

    def _pool_view(self) -> dict[str, Any]:
        if self.pool_health is None:  # still starting
            return {"nodepool": self.settings.nodepool, "replicas": 1, "members": []}
        return self.pool_health.view()

    def _origin_samples(self) -> list[OriginSample]:
        out = []
        for name, svc in self.services.items():
            for _, origin in svc.mounts:
                b = origin.breaker
                out.append(
                    OriginSample(
                        name,
                        origin.mount.name,
                        origin.reachable,
                        b.down_since,
                        b.opened,
                        origin.stats.fast_failures,
                        origin.stats.retries,
                        svc.stale_served,
                        origin.stats.bytes_read,
                    )
                )
        return out

    def node_info(self) -> dict[str, Any]:
        members = self.placement.members() if self.placement else []
        return {
            "host_id": self.host_id,
            "pid": os.getpid(),
            "nodepool": self.settings.nodepool,
            "node_name": self._me().name if self.port else "",
            "members": [m.__dict__ for m in members],
            "replicas": self.placement.replicas if self.placement else 1,
            "datasets": {
                name: {
                    "page_size": cfg.runtime.page_size,
                    "metadata_ttl": cfg.runtime.metadata_ttl,
                    "immutable": cfg.runtime.immutable,
                    "tiers": [{"medium": t.medium, "path": t.path} for t in cfg.runtime.tiers],
                }
                for name, cfg in self.configs.items()
            },
        }

    def _me(self) -> Member:
        s = self.settings
        name = s.node_name or socket.gethostname()
        address = s.advertise or f"http://{s.host}:{self.port}"
        return Member(name=name, address=address.rstrip("/"), pool=s.nodepool)

    async def _start_membership(self) -> None:
        s = self.settings
        if not s.members and not s.etcd and s.membership is None:
            return
        if s.host in ("0.0.0.0", "::") and not s.advertise:
            raise ConfigError("with --host 0.0.0.0 pass --advertise http://ADDRESS:PORT for peers")
        me = self._me()
        state = s.state_dir / f"members-{s.nodepool or 'default'}.json"
        if s.membership is not None:
            self.membership = s.membership
        elif s.etcd:
            self.membership = EtcdMembership(list(s.etcd), s.nodepool, me, state)
        else:
            self.membership = StaticMembership(parse_static(s.members, s.nodepool), state)
        await self.membership.start()
        replicas = max((c.runtime.data_replicas for c in self.configs.values()), default=1)
        self.placement = Placement(me, self.membership, replicas, token=s.token)
        for svc in self.services.values():
            svc.placement = self.placement

    async def start(self) -> None:
        self._open_stores()
        for svc in self.services.values():
            await svc.start()
        self.metrics.add_store_collector(self._store_samples)
        self.metrics.add_origin_collector(self._origin_samples)
        self.metrics.add_dataset_collector(self._dataset_samples)
        self.metrics.add_pool_collector(
            lambda: self.pool_health.samples() if self.pool_health is not None else []
        )
        dashboard = DashboardRoutes(
            token=self.settings.token, history=self.history, pool=self._pool_view
        )
        app = WorkerApp(
            self.services,
            self.metrics,
            token=self.settings.token,
            node_info=self.node_info,
            load_concurrency=self.settings.load_concurrency,
            ready=lambda: self._ready,
            dashboard=dashboard,
        ).build()
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port, backlog=1024)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.settings.port
        await self._start_membership()  # needs the bound port; /healthz says 503 until done
        me = self._me()
        placement = self.placement
        self.pool_health = PoolHealth(
            me,
            placement.members if placement is not None else lambda: [me],
            sorted(self.services),
            self._local_numbers,
            token=self.settings.token,
            replicas=placement.replicas if placement is not None else 1,
            interval=self.settings.pool_probe_interval,
        )
        self.pool_health.start()
        self._sampler.start()
        self._ready = True
        self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())
        log.info("worker serving %s on %s", ", ".join(sorted(self.configs)), self.endpoint)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            for store in self.stores.values():
                try:
                    await asyncio.get_running_loop().run_in_executor(self._io_pool, store.flush)
                except Exception:
                    log.exception("flushing the page index failed")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        await self._sampler.stop()
        if self.pool_health is not None:
            await self.pool_health.stop()
        if self.membership is not None:
            await self.membership.stop()
        if self.placement is not None:
            await self.placement.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for svc in self.services.values():
            await svc.close()
        for store in self.stores.values():
            store.flush()
            store.close()
        for meta in self.metas.values():
            meta.close()
        self._io_pool.shutdown(wait=True)

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
