"""This worker's place in its node pool: who owns a file, and which peers to ask for it.

A worker reads a page it lacks from the file's other owners over the LAN before it goes to the
origin across the WAN, so no byte crosses the WAN twice for one pool. A worker that is not among
a file's owners (a client with a stale view sent it there) serves the read anyway but does not
cache it: the owners hold the pool's copy.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from urllib.parse import quote

import aiohttp

from tidepool.core.errors import VersionChangedError
from tidepool.core.ring import Member, file_key, owners, ranked
from tidepool.pool.membership import Membership

log = logging.getLogger(__name__)

PEER_HEADER = "X-Tidepool-Peer"
"""Set on worker-to-worker reads: the receiver answers from its cache or origin, never forwards."""


class Placement:
    def __init__(
        self,
        me: Member,
        membership: Membership,
        replicas: int = 1,
        peer_token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.me = me
        self.membership = membership
        self.replicas = max(1, replicas)
        self.peer_token = peer_token
        """The pool's peer credential, sent on every request to a peer (never the clients')."""
        self.ssl_context = ssl_context
        """How ``https://`` peers are verified (None: the system's CAs)."""
        self._session: aiohttp.ClientSession | None = None
        self._down: dict[str, float] = {}
        self.peer_reads = 0
        self.peer_bytes = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def members(self) -> list[Member]:
        ms = self.membership.members()
        if self.me not in ms and all(m.name != self.me.name for m in ms):
            ms = [*ms, self.me]  # we are alive even if the registry lags
        return ms

    def owners(self, dataset: str, path: str) -> list[Member]:
        return owners(file_key(dataset, path), self.members(), self.replicas)

    def is_owner(self, dataset: str, path: str) -> bool:
        return any(m.name == self.me.name for m in self.owners(dataset, path))

    def peers_for(self, dataset: str, path: str) -> list[Member]:
        """Other workers to ask for a file's bytes, best first (owners, then the rest if r > 1).

        With r > 1 the first reachable other owner answers (from its cache, or from the origin
        for us), so the rest are asked only when every other owner is down. The next in rank is
        then the owner a join displaced (rendezvous keeps the others' order), which still holds
        the file: after a join and a crash, the new owner copies it over the LAN, not the WAN.
        A worker that lacks it fetches it from the origin for us: the same WAN bytes.
        """
        now = time.monotonic()
        order = ranked(file_key(dataset, path), self.members())
        if self.replicas < 2:
            order = order[: self.replicas]  # r = 1: a cold read goes to the origin in one hop
        return [m for m in order if m.name != self.me.name and self._down.get(m.name, 0.0) < now]

    async def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {PEER_HEADER: self.me.name}
            if self.peer_token:
                headers["Authorization"] = f"Bearer {self.peer_token}"
            self._session = aiohttp.ClientSession(
                headers=headers,
                connector=aiohttp.TCPConnector(ssl=self.ssl_context or True),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=1.0, sock_read=10.0),
                read_bufsize=4 << 20,
            )
        return self._session

    async def read(
        self, peer: Member, dataset: str, path: str, version: str, start: int, end: int
    ) -> bytes:
        """Bytes ``[start, end)`` of a file version from a peer; raises on any mismatch."""
        session = await self._sess()
        url = f"{peer.address}/v1/datasets/{quote(dataset)}/files/{quote(path)}"
        try:
            async with session.get(url, headers={"Range": f"bytes={start}-{end - 1}"}) as r:
                if r.status not in (200, 206):
                    raise OSError(f"peer {peer.name} answered {r.status}")
                if r.headers.get("X-Tidepool-Version") != version:
                    raise VersionChangedError(
                        f"peer {peer.name} holds another version of {dataset}/{path}"
                    )
                data = await r.read()
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            self._down[peer.name] = time.monotonic() + 2.0
            raise ConnectionError(f"peer {peer.name} unreachable: {exc}") from exc
        if len(data) != end - start:
            raise OSError(f"peer {peer.name} returned {len(data)} of {end - start} bytes")
        self.peer_reads += 1
        self.peer_bytes += len(data)
        return data

    def replicate(self, dataset: str, path: str) -> None:
        """Ask the file's other owners to copy it (from us, over the LAN) when r > 1."""
        if self.replicas < 2:
            return
        targets = [m for m in self.owners(dataset, path) if m.name != self.me.name]
        for peer in targets:
            task = asyncio.get_running_loop().create_task(self._ask_load(peer, dataset, path))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _ask_load(self, peer: Member, dataset: str, path: str) -> None:
        await asyncio.sleep(0.05)  # let our own fetch get ahead; the peer's reads join it
        session = await self._sess()
        url = f"{peer.address}/v1/datasets/{quote(dataset)}/load"
        try:
            async with session.post(url, json={"paths": [path], "concurrency": 1}) as r:
                await r.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.debug("could not ask %s to replicate %s/%s: %s", peer.name, dataset, path, exc)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._session is not None:
            await self._session.close()
