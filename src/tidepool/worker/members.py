"""The node pool as this worker sees it: which members answer, and what each one holds.

For the dashboard (``GET /v1/pool``) and for ``tidepool_pool_member_up``. A background loop asks
every other member for the status of each of this worker's datasets (``?refresh=0``: no origin
call) every ``interval`` seconds, with a short timeout, so a dead member costs one timeout per
round, never a hanging page; the route and the metric only read the last round.

Limits: a member is "up" when it answered this worker within ``timeout`` at the last round, which
says nothing about whether clients can reach it; numbers are as old as the round (``checked_at``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from tidepool.core.errors import redact
from tidepool.core.ring import Member
from tidepool.worker.metrics import MemberSample

log = logging.getLogger(__name__)

LocalNumbers = Callable[[], dict[str, tuple[int, int]]]
"""This worker's ``{dataset: (cached_files, cached_bytes)}``."""


@dataclass
class MemberState:
    name: str
    address: str
    state: str = "unknown"
    """``up``, ``down`` or ``unknown`` (not probed yet)."""
    is_self: bool = False
    cached_files: int = 0
    cached_bytes: int = 0
    datasets: dict[str, dict[str, int]] = field(default_factory=dict)
    error: str = ""
    checked_at: float | None = None
    latency_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "state": self.state,
            "self": self.is_self,
            "cached_files": self.cached_files,
            "cached_bytes": self.cached_bytes,
            "datasets": self.datasets,
            "error": self.error,
            "checked_at": self.checked_at,
            "latency_ms": self.latency_ms,
        }


class PoolHealth:
    """Probes the pool's members; ``members()`` is the live list (it may change)."""

    def __init__(
        self,
        me: Member,
        members: Callable[[], list[Member]],
        datasets: list[str],
        local: LocalNumbers,
        *,
        token: str | None = None,
        replicas: int = 1,
        interval: float = 5.0,
        timeout: float = 1.0,
    ) -> None:
        self.me = me
        self._members = members
        self.datasets = datasets
        self._local = local
        self.token = token
        self.replicas = replicas
        self.interval = interval
        self.timeout = timeout
        self._states: dict[str, MemberState] = {}
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    def _self_state(self) -> MemberState:
        numbers = self._local()
        return MemberState(
            name=self.me.name,
            address=self.me.address,
            state="up",
            is_self=True,
            cached_files=sum(f for f, _ in numbers.values()),
            cached_bytes=sum(b for _, b in numbers.values()),
            datasets={ds: {"cached_files": f, "cached_bytes": b} for ds, (f, b) in numbers.items()},
            checked_at=time.time(),
        )

    def view(self) -> dict[str, Any]:
        """The pool for ``GET /v1/pool``: this worker first, then the others by name."""
        out = [self._self_state()]
        for m in sorted(self._members(), key=lambda m: m.name):
            if m.name == self.me.name:
                continue
            state = self._states.get(m.name) or MemberState(m.name, m.address)
            out.append(state)
        return {
            "nodepool": self.me.pool,
            "replicas": self.replicas,
            "interval_s": self.interval,
            "members": [s.as_dict() for s in out],
        }

    def samples(self) -> list[MemberSample]:
        out = [MemberSample(self.me.pool, self.me.name, True)]
        for m in self._members():
            if m.name != self.me.name:
                state = self._states.get(m.name)
                out.append(MemberSample(self.me.pool, m.name, bool(state and state.state == "up")))
        return out

    async def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            self._session = aiohttp.ClientSession(
                headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout)
            )
        return self._session

    async def _probe(self, member: Member) -> MemberState:
        state = MemberState(member.name, member.address, checked_at=time.time())
        session = await self._sess()
        t0 = time.perf_counter()
        try:
            for ds in self.datasets:
                url = f"{member.address}/v1/datasets/{quote(ds)}/status?refresh=0"
                async with session.get(url) as r:
                    if r.status == 404:
                        continue  # the member does not serve this dataset
                    if r.status != 200:
                        raise OSError(f"HTTP {r.status} for the status of {ds!r}")
                    raw = (await r.json())["raw"]
                files, nbytes = int(raw["cached_files"]), int(raw["cached_bytes"])
                state.datasets[ds] = {"cached_files": files, "cached_bytes": nbytes}
                state.cached_files += files
                state.cached_bytes += nbytes
            if not self.datasets:
                async with session.get(f"{member.address}/healthz") as r:
                    if r.status != 200:
                        raise OSError(f"HTTP {r.status} for /healthz")
            state.state = "up"
            state.latency_ms = round((time.perf_counter() - t0) * 1000, 1)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError, KeyError) as exc:
            state.state = "down"
            state.error = redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            log.debug("pool member %s did not answer: %s", member.name, state.error)
        return state

    async def probe_once(self) -> None:
        others = [m for m in self._members() if m.name != self.me.name]
        results = await asyncio.gather(*(self._probe(m) for m in others))
        self._states = {s.name: s for s in results}

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self.probe_once()
            except Exception:
                log.exception("probing the pool's members failed")
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None
