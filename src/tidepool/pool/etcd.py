"""Membership provider ``etcd``: lease-based registration and polling of the pool's prefix.

Each worker registers ``/tidepool/v1/pools/<pool>/members/<name>`` under a lease it keeps alive,
and everyone polls the pool's prefix. It speaks etcd's v3 JSON gateway over aiohttp (no gRPC
dependency), which etcd 3.4+ serves on its client port. Entries are signed with the pool's peer
credential (:mod:`tidepool.pool.entries`); an unsigned or badly signed entry is ignored with a
warning, so write access to etcd alone does not make a member.

Like every provider (:mod:`tidepool.pool.membership`) it keeps the member list it last saw on disk
and starts from it. A worker whose lease expires (crash, SIGKILL, cut cable) drops out of the
other members' view within ``lease_ttl + poll_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from tidepool.core.errors import ConfigError
from tidepool.core.ring import Member
from tidepool.pool.entries import decode_entry, encode_entry
from tidepool.pool.membership import PoolContext, load_last_known, save_members

log = logging.getLogger(__name__)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _prefix_end(prefix: str) -> str:
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode()


class EtcdMembership:
    """Lease-based registration and polling through etcd's v3 JSON gateway.

    ``peer_token`` (the pool's peer credential) signs this worker's entry and verifies the
    others'; ``ssl_context`` verifies ``https://`` etcd endpoints (None: the system's CAs).
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        pool: str,
        me: Member | None,
        state_file: Path | None,
        *,
        peer_token: str,
        lease_ttl: int = 5,
        poll_interval: float = 1.0,
        root: str = "/tidepool/v1",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not endpoints:
            raise ConfigError("etcd membership needs at least one endpoint, e.g. http://HOST:2379")
        if not peer_token:
            raise ConfigError(
                "etcd membership needs the pool's peer credential to sign and check member "
                "entries: set TIDEPOOL_PEER_TOKEN or --peer-token-file on every worker"
            )
        self._key = peer_token
        self._ssl = ssl_context
        self._rejected: dict[str, str] = {}
        """Entries ignored so far (key -> the value's reason), so each is logged once."""
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.pool = pool
        self.me = me
        self.lease_ttl = lease_ttl
        self.poll_interval = poll_interval
        self.prefix = f"{root}/pools/{pool}/members/"
        self._state = state_file
        self._members = load_last_known(state_file)
        self._lease: int | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.reachable = False
        self.last_sync: float | None = None

    @classmethod
    def from_source(cls, source: str, context: PoolContext) -> EtcdMembership:
        """From ``URL,URL`` (etcd client endpoints)."""
        return cls(
            [e.strip() for e in source.split(",") if e.strip()],
            context.pool,
            context.me,
            context.state_file,
            peer_token=context.peer_token,
            ssl_context=context.ssl_context,
        )

    def members(self) -> list[Member]:
        return list(self._members)

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self._session is not None
        last: Exception | None = None
        for endpoint in self.endpoints:
            try:
                async with self._session.post(f"{endpoint}/v3/{path}", json=body) as resp:
                    data: dict[str, Any] = await resp.json(content_type=None)
                    if resp.status >= 400:
                        raise OSError(f"etcd {path} answered {resp.status}: {data}")
                    return data
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                last = exc
        raise ConnectionError(f"no etcd endpoint answered ({last})")

    async def _register(self) -> None:
        if self.me is None:
            return
        grant = await self._post("lease/grant", {"TTL": self.lease_ttl})
        self._lease = int(grant["ID"])
        value = encode_entry(self.me, self._key)
        await self._post(
            "kv/put",
            {"key": _b64(self.prefix + self.me.name), "value": _b64(value), "lease": self._lease},
        )

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(max(0.5, self.lease_ttl / 3))
            try:
                if self._lease is None:
                    await self._register()
                    continue
                data = await self._post("lease/keepalive", {"ID": self._lease})
                if int((data.get("result") or {}).get("TTL", 0)) <= 0:
                    self._lease = None  # expired while we were cut off: register again
            except (ConnectionError, OSError, KeyError, ValueError) as exc:
                log.debug("etcd keepalive failed: %s", exc)

    async def _sync(self) -> None:
        data = await self._post(
            "kv/range", {"key": _b64(self.prefix), "range_end": _prefix_end(self.prefix)}
        )
        found = []
        seen: set[str] = set()
        for kv in data.get("kvs", []):
            key = "?"
            try:
                key = base64.b64decode(kv.get("key", "")).decode("utf-8", "replace")
                seen.add(key)
                raw = base64.b64decode(kv.get("value", ""))
                found.append(decode_entry(raw, self._key, self.pool, key[len(self.prefix) :]))
            except ValueError as exc:
                reason = str(exc)
                if self._rejected.get(key) != reason:
                    self._rejected[key] = reason
                    log.warning(
                        "ignoring etcd member entry %s of pool %s: %s",
                        key[:300],
                        self.pool,
                        reason,
                    )
        for key in set(self._rejected) - seen:
            del self._rejected[key]
        found.sort()
        self.reachable = True
        self.last_sync = time.time()
        if found != self._members:
            log.info("pool %s members: %s", self.pool, ", ".join(m.name for m in found))
            self._members = found
            save_members(self._state, found)

    async def _poll_loop(self) -> None:
        while True:
            try:
                await self._sync()
            except (ConnectionError, OSError, KeyError, ValueError) as exc:
                if self.reachable:
                    log.warning(
                        "etcd unreachable (%s); keeping the last known %d members of pool %s",
                        exc,
                        len(self._members),
                        self.pool,
                    )
                self.reachable = False
            await asyncio.sleep(self.poll_interval)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=2.0, sock_connect=1.0),
            connector=aiohttp.TCPConnector(ssl=self._ssl or True),
        )
        try:
            await self._register()
            await self._sync()
        except (ConnectionError, OSError, KeyError, ValueError) as exc:
            log.warning(
                "etcd unreachable at start (%s); using the last known %d members",
                exc,
                len(self._members),
            )
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._keepalive_loop()),
            loop.create_task(self._poll_loop()),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._lease is not None and self._session is not None:
            with contextlib.suppress(ConnectionError, OSError, KeyError, ValueError):
                await self._post("lease/revoke", {"ID": self._lease})  # leave at once
        if self._session is not None:
            await self._session.close()
