"""A worker process: page stores, dataset services and the HTTP API, started and stopped as one.

``Worker`` is what ``tidepool up`` runs and what tests start in-process. Settings are a dataclass
passed explicitly (the CLI builds it from flags and ``TIDEPOOL_*`` variables).

Credentials: clients send ``token``; the workers of a node pool talk to each other with a separate
``peer_token`` (required as soon as the worker has pool membership), so a client never passes
for a peer. With ``tls_cert``/``tls_key`` the listener speaks HTTPS and the advertised address is
``https://``; ``tls_ca`` verifies peers (and etcd) signed by a private CA.

Why this module is longer than ~400 lines: it wires one worker together (settings, stores,
datasets, membership, listener, background tasks, shutdown order); each part it starts lives in
its own module, and the order of start and stop is easiest to check in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import math
import os
import socket
import ssl
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tidepool.core.errors import ConfigError
from tidepool.core.quantity import format_bytes
from tidepool.core.ring import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, Member
from tidepool.origin.funnel import OriginSettings
from tidepool.origin.probe import warn_about_origins
from tidepool.pool.hostid import host_id
from tidepool.pool.membership import Membership, PoolContext, choose_provider, open_membership
from tidepool.pool.tls import client_context, scheme, server_context
from tidepool.serving import (
    BudgetSite,
    ConnectionBudget,
    MemoryBudget,
    ServerLimits,
    busy_response,
)
from tidepool.spec.config import DatasetConfig
from tidepool.store.metadata import MetadataStore
from tidepool.store.pagestore import PageStore
from tidepool.store.tierdir import state_dir_in
from tidepool.worker.app import WorkerApp
from tidepool.worker.dashboard import DashboardRoutes
from tidepool.worker.dataset import DatasetService
from tidepool.worker.history import History, HistorySampler, Totals
from tidepool.worker.loads import LoadTable
from tidepool.worker.localuser import LocalUsers
from tidepool.worker.members import PoolHealth
from tidepool.worker.metrics import (
    DatasetSample,
    OriginSample,
    StoreSample,
    WorkerMetrics,
    counter_value,
)
from tidepool.worker.placement import Placement
from tidepool.worker.rebalance import Rebalancer
from tidepool.worker.verify import FILE_NAME as PEER_CHECK_FILE
from tidepool.worker.verify import PeerCheck

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8433
VERIFY_AFTER = 2.0
"""Seconds after a page store opens before its background check of the tiers starts
(:mod:`tidepool.store.recovery`): the worker's start-up and first reads go first."""


@dataclass
class WorkerSettings:
    """How one worker runs. Every field has a default; the CLI overrides from flags/env."""

    host: str = DEFAULT_HOST
    """Address to listen on; anything beyond loopback requires ``token``."""
    port: int = DEFAULT_PORT
    """TCP port (0 picks a free one)."""
    token: str | None = field(default=None, repr=False)
    """Bearer token clients must send; required when ``host`` is not loopback."""
    state_dir: Path = field(default_factory=lambda: Path("~/.local/state/tidepool").expanduser())
    """Where indexes and metadata live when a dataset has no persistent tier to hold them."""
    fetch_window: int = 8
    """Pages of one read fetched from the origin in parallel."""
    chunk_size: int | None = None
    """Bytes of a file placed together in the pool (0: whole files); the same on every member
    and a whole multiple of every dataset's page size. None: :func:`default_chunk_size`."""
    rebalance_rate: int = 64 << 20
    """Bytes a second at most that copying what this worker owns from its peers after a change
    of members may take (0: no copying; a file is then taken over when it is first read); see
    :mod:`tidepool.worker.rebalance`."""
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
    """``[PROVIDER:]SOURCE``: ``static:NAME=URL,...`` or ``kubernetes:NS/SERVICE`` (see
    :func:`tidepool.pool.membership.choose_provider`; empty: no peers unless ``etcd``)."""
    etcd: tuple[str, ...] = ()
    """etcd endpoints for lease-based pool membership."""
    membership: Membership | None = None
    """A ready-made provider object (embedding, tests), used instead of members/etcd."""
    peer_token: str | None = field(default=None, repr=False)
    """The node pool's peer credential (the same on every worker, never the clients' token):
    sent to and required from peers, and the key that signs etcd member entries."""
    tls_cert: Path | None = None
    """PEM certificate chain: with ``tls_key``, the listener speaks HTTPS."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert``."""
    tls_ca: Path | None = None
    """PEM CA bundle that peers' and etcd's certificates are checked against (default: the
    system's)."""
    limits: ServerLimits = field(default_factory=ServerLimits)
    """Connection cap, header/idle/stall timeouts and header size caps of the HTTP listener."""
    max_loads_running: int = 4
    """Load jobs of one dataset that run at once (more wait, see :class:`LoadTable`)."""
    max_loads_waiting: int = 256
    """Load jobs of one dataset that may wait for a slot; beyond that a load answers 429."""
    check_origins: bool = True
    """At start, check each origin and log what is wrong (never fatal)."""
    check_wait: float = 3.0
    """Seconds the start waits for that check before going on without it (offline, the check
    finishes in the background): a reachable origin is checked before the worker says it
    serves, so the check's few bytes never mix with the traffic of what runs next."""
    history_interval: float = 2.0
    """Seconds between two samples of the dashboard's history (throughput, hit ratio, WAN)."""
    history_seconds: float = 600.0
    """How far back the dashboard's history goes (kept in memory, lost on restart)."""
    pool_probe_interval: float = 5.0
    """Seconds between two probes of the pool's members (dashboard, tidepool_pool_member_up)."""


_BUSY = busy_response(
    b'{"error":"ServiceUnavailable","message":"too many connections; try again"}',
    "application/json",
)


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def port_in_use(host: str, port: int) -> str:
    """The hint for a port another process holds (often a second ``tidepool up``)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    other = port + 1 if 0 < port < 65535 else 8434
    return (
        f"{host}:{port} is already in use (another `tidepool up`, or another program): pick "
        f"another port with --port (e.g. --port {other}, or TIDEPOOL_PORT={other}) and point "
        f"clients at it with TIDEPOOL_ENDPOINT=http://{shown}:{other} (or --endpoint)"
    )


def state_dir_for(cfg: DatasetConfig, settings: WorkerSettings) -> Path:
    """Index and metadata sit in the dataset's directory of its first persistent tier (MEM is
    lost on reboot)."""
    for tier in cfg.runtime.tiers:
        if tier.medium != "MEM":
            return state_dir_in(tier.path, cfg.name)
    return settings.state_dir / cfg.name


def default_chunk_size(datasets: Iterable[DatasetConfig]) -> int:
    """:data:`DEFAULT_CHUNK_SIZE` rounded up to a whole number of every dataset's pages (the
    same on every member that serves the same datasets)."""
    grain = math.lcm(*(cfg.runtime.page_size for cfg in datasets))
    return -(-DEFAULT_CHUNK_SIZE // grain) * grain


def check_rebalance_rate(rate: int) -> None:
    """A byte rate of 0 (no background copying) or more, or a ConfigError naming the value."""
    if rate < 0:
        raise ConfigError(
            f"--rebalance-rate {rate} is negative: give bytes a second such as 64Mi, or 0 to "
            "copy nothing in the background"
        )


def check_chunk_size(chunk_size: int, datasets: Iterable[DatasetConfig]) -> None:
    """A chunk size every dataset's pages divide (0: files placed whole), or a ConfigError that
    names the value and what is valid."""
    if chunk_size == 0:
        return
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise ConfigError(
            f"--chunk-size {chunk_size} is out of range: give 0 (place files whole) or a size "
            f"from the page size up to {format_bytes(MAX_CHUNK_SIZE)}, e.g. 16Mi"
        )
    for cfg in datasets:
        page = cfg.runtime.page_size
        if chunk_size % page:
            raise ConfigError(
                f"--chunk-size {format_bytes(chunk_size)} is not a whole number of pages of "
                f"dataset {cfg.name!r} (page size {format_bytes(page)}): give a multiple of it, "
                f"e.g. {format_bytes(max(1, chunk_size // page) * page)}"
            )


class Worker:
    def __init__(self, datasets: Iterable[DatasetConfig], settings: WorkerSettings | None = None):
        self.settings = settings or WorkerSettings()
        self.configs = {d.name: d for d in datasets}
        if not is_loopback(self.settings.host) and not self.settings.token:
            raise ConfigError(
                f"listening on {self.settings.host!r} (beyond loopback) requires a bearer token: "
                "pass --token-file or set TIDEPOOL_TOKEN, or listen on 127.0.0.1"
            )
        s = self.settings
        if (s.members or s.etcd or s.membership is not None) and not s.peer_token:
            raise ConfigError(
                "a worker in a node pool needs the pool's peer credential, the same on every "
                "worker and different from the clients' token: set TIDEPOOL_PEER_TOKEN or pass "
                "--peer-token-file"
            )
        self.chunk_size = (
            default_chunk_size(self.configs.values()) if s.chunk_size is None else s.chunk_size
        )
        """Bytes of a file placed together in the pool (see :class:`WorkerSettings`)."""
        check_chunk_size(self.chunk_size, self.configs.values())
        check_rebalance_rate(s.rebalance_rate)
        if s.peer_token and s.peer_token == s.token:
            raise ConfigError(
                "the peer credential equals the clients' token; peers need their own, so a "
                "client cannot pose as a peer: generate another one"
            )
        if (s.tls_cert is None) != (s.tls_key is None):
            raise ConfigError("TLS needs both a certificate (--tls-cert) and its key (--tls-key)")
        self._server_ssl: ssl.SSLContext | None = (
            server_context(s.tls_cert, s.tls_key)
            if s.tls_cert is not None and s.tls_key is not None
            else None
        )
        self._peer_ssl = client_context(s.tls_ca) if s.tls_ca is not None else None
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
        self.budget = ConnectionBudget(self.settings.limits, _BUSY)
        limits = self.settings.limits
        self.streams = MemoryBudget(limits.stream_memory_mib << 20, wait=limits.stall_timeout)
        self.api: WorkerApp | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._origin_check: asyncio.Task[Any] | None = None
        self.port: int | None = None
        self.host_id = host_id()
        self.history = History(self.settings.history_seconds, self.settings.history_interval)
        self._sampler = HistorySampler(self.history, self._totals)
        self.pool_health: PoolHealth | None = None
        self.rebalancer: Rebalancer | None = None

    @property
    def endpoint(self) -> str:
        host = self.settings.host
        local = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"{scheme(self._server_ssl is not None)}://{local}:{self.port}"

    def _open_stores(self) -> None:
        try:
            for name, cfg in self.configs.items():
                state = state_dir_for(cfg, self.settings)
                self.stores[name] = PageStore(
                    cfg.runtime.tiers,
                    state,
                    dataset=name,
                    page_size=cfg.runtime.page_size,
                    verify_after=VERIFY_AFTER,
                )
                self.metas[name] = MetadataStore(state)
        except BaseException:  # release the tiers claimed so far: a retry must not find them locked
            for store in self.stores.values():
                store.close()
            for meta in self.metas.values():
                meta.close()
            self.stores.clear()
            self.metas.clear()
            raise
        for name, cfg in self.configs.items():
            store, meta = self.stores[name], self.metas[name]
            self.services[name] = DatasetService(
                cfg,
                store,
                meta,
                self.metrics.dataset(name),
                self._io_pool,
                origin_settings=self.settings.origin,
                fetch_window=self.settings.fetch_window,
                peer_check=PeerCheck(state_dir_for(cfg, self.settings) / PEER_CHECK_FILE),
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
                        stats.read_errors,
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
            wan += sum(o.stats.bytes_read for o in svc.origins)
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
            for origin in svc.origins:
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
            "uid": os.geteuid(),
            "nodepool": self.settings.nodepool,
            "node_name": self._me().name if self.port else "",
            "members": [m.__dict__ for m in members],
            "replicas": self.placement.replicas if self.placement else 1,
            "chunk_size": self.placement.chunk_size if self.placement else 0,
            "datasets": {
                name: {
                    "page_size": cfg.runtime.page_size,
                    "metadata_ttl": cfg.runtime.metadata_ttl,
                    "immutable": cfg.runtime.immutable,
                    "index": self.stores[name].index_path(),
                    "tiers": [
                        {"medium": t.medium, "path": root}
                        for t, root in zip(
                            cfg.runtime.tiers, self.stores[name].tier_roots(), strict=True
                        )
                    ],
                }
                for name, cfg in self.configs.items()
            },
        }

    def _me(self) -> Member:
        s = self.settings
        name = s.node_name or socket.gethostname()
        address = s.advertise or f"{scheme(self._server_ssl is not None)}://{s.host}:{self.port}"
        return Member(name=name, address=address.rstrip("/"), pool=s.nodepool)

    def _local_users(self) -> LocalUsers | None:
        """Without a token, who may start loads and report hits (None: anyone)."""
        if self.settings.token:
            return None
        users = LocalUsers()
        if not users.available:
            log.warning(
                "cannot tell local users apart here (no /proc/net/tcp): without a token, any "
                "local user can start loads and report hits; set one with --token-file"
            )
            return None
        return users

    async def _start_membership(self) -> None:
        s = self.settings
        me = self._me()
        state = s.state_dir / f"members-{s.nodepool or 'default'}.json"
        source = choose_provider(s.members, s.etcd)
        if s.membership is not None:
            membership = s.membership
        elif source is not None:
            context = PoolContext(s.nodepool, me, state, s.peer_token or "", self._peer_ssl)
            membership = open_membership(*source, context)
        else:
            return
        if s.host in ("0.0.0.0", "::") and not s.advertise:
            raise ConfigError("with --host 0.0.0.0 pass --advertise http://ADDRESS:PORT for peers")
        self.membership = membership
        await membership.start()
        replicas = max((c.runtime.data_replicas for c in self.configs.values()), default=1)
        self.placement = Placement(
            me,
            membership,
            replicas,
            peer_token=s.peer_token,
            ssl_context=self._peer_ssl,
            chunk_size=self.chunk_size,
        )
        for svc in self.services.values():
            svc.placement = self.placement
        if s.rebalance_rate > 0:
            self.rebalancer = Rebalancer(self.services, self.placement, rate=s.rebalance_rate)

    async def start(self) -> None:
        if self.settings.check_origins:
            self._origin_check = asyncio.get_running_loop().create_task(
                warn_about_origins(self.configs.values())
            )
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
        self.api = WorkerApp(
            self.services,
            self.metrics,
            token=self.settings.token,
            node_info=self.node_info,
            load_concurrency=self.settings.load_concurrency,
            ready=lambda: self._ready,
            peer_token=self.settings.peer_token,
            local_user=self._local_users(),
            stall_timeout=self.settings.limits.stall_timeout,
            chunk_size=self.chunk_size,
            loads=LoadTable(
                max_running=self.settings.max_loads_running,
                max_waiting=self.settings.max_loads_waiting,
            ),
            dashboard=dashboard,
            streams=self.streams,
        )
        app = self.api.build(self.budget)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, **self.settings.limits.server_kwargs()
        )
        await self._runner.setup()
        site = BudgetSite(
            self._runner,
            self.settings.host,
            self.settings.port,
            self.budget,
            backlog=1024,
            ssl_context=self._server_ssl,
        )
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(port_in_use(self.settings.host, self.settings.port)) from exc
            raise
        self.port = site.bound_port
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
        if self.rebalancer is not None:  # a start is a change of members: a pass now
            self.rebalancer.start()
        self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())
        if self._origin_check is not None:  # bounded: the edge starts without its cloud
            await asyncio.wait({self._origin_check}, timeout=self.settings.check_wait)
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
        if self._origin_check is not None:
            self._origin_check.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._origin_check
        await self._sampler.stop()
        if self.rebalancer is not None:
            await self.rebalancer.stop()
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
