"""This worker's place in its node pool: who owns a file, and reading a file from a peer.

Ownership is decided once per request (:meth:`Placement.place`) on one view of the membership and
handed down: whether this worker keeps the file's pages, and which peers to ask before the origin.
A worker that misses a page asks the file's owners over the LAN before it goes to the origin
across the WAN, so no byte crosses the WAN twice for one pool. A worker that is not among a
file's owners (a client with a stale view, or failover) serves the read but does not cache it.

Peer reads carry the version they want (``If-Match``) and the peer header, so the peer answers
from its cache or its origin and never forwards; an answer of another version or length is
refused before its bytes are read (a peer never makes a worker buffer more than it asked for).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

from tidepool.core.errors import NotCachedError, from_http
from tidepool.core.ring import DEFAULT_CHUNK_SIZE, DownMarks, Member, chunk_key, file_key, ranked
from tidepool.pool.membership import Membership

log = logging.getLogger(__name__)

PEER_HEADER = "X-Tidepool-Peer"
"""Set on worker-to-worker reads: the receiver answers from its cache or origin, never forwards."""
CHUNK_HEADER = "X-Tidepool-Chunk-Size"
"""On peer requests: the asker's chunk size; members that place by different chunks would each
fetch what the other owns, so a mismatch is refused (403) and logged by both."""
PEER_DOWN_FOR = 2.0
"""Seconds a peer that could not be reached is skipped."""
ONLY_IF_CACHED = {"Cache-Control": "only-if-cached"}
"""On a peer read: answer from the cache or 504, never fetch (RFC 9111 §5.2.1.7)."""
REBALANCE_WINDOW = 900.0
"""Seconds after a change of the members (or this worker's start) during which an owner that
misses asks the members ranked after it whether they still hold the file (from before a join or
a leave), before the origin. Outside it they cannot hold what we own, and are not asked."""
MAX_PEER_JSON = 256 << 20
"""Most bytes read of a peer's metadata answer (a listing of a few million entries); a larger or
endless answer is refused before it is buffered whole."""
HOLDERS = 2
"""How many members ranked after the owners are asked (a join displaces the owner to the next
rank; a leave hands a file to the next, whose predecessor is the one after)."""


@dataclass(frozen=True, slots=True)
class FilePlace:
    """One file's placement in the pool, as seen at the start of one request."""

    mine: bool
    """This worker is one of the file's owners: it keeps the pages."""
    peers: tuple[Member, ...]
    """Other workers to ask for the bytes before the origin, best first."""
    owners: tuple[Member, ...]
    holders: tuple[Member, ...] = ()
    """Members that may still hold the file from before the last join or leave: asked only if
    they have it cached, after ``peers`` and before the origin."""


SOURCE_HEADER = "X-Tidepool-Source"
"""On answers to peers: ``cache`` when every byte was in the answering worker's cache, else
``origin`` (it fetched some for the asker), so the asker counts a remote hit only for the former."""


@dataclass(frozen=True, slots=True)
class PeerAnswer:
    data: bytes
    size: int
    version: str
    mtime: float | None
    cached: bool
    """The peer had every byte cached (a remote hit), rather than fetching them from the origin."""


def _size(text: str) -> int:
    """A peer's ``X-Tidepool-Size``; -1 when it is not a plain decimal number."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 19 else -1


class PeerError(OSError):
    """A peer could not serve a read (unreachable, wrong answer); the origin is asked instead."""


class Placement:
    def __init__(
        self,
        me: Member,
        membership: Membership,
        replicas: int = 1,
        peer_token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        self.me = me
        self.chunk_size = chunk_size
        """Bytes of a file placed together (0: whole files); the same on every member."""
        self.membership = membership
        self.replicas = max(1, replicas)
        self.peer_token = peer_token
        """The pool's peer credential, sent on every request to a peer (never the clients')."""
        self.ssl_context = ssl_context
        """How ``https://`` peers are verified (None: the system's CAs)."""
        self.marks = DownMarks(PEER_DOWN_FOR)
        self._session: aiohttp.ClientSession | None = None
        self.peer_reads = 0
        self.peer_bytes = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._view: frozenset[str] = frozenset()
        self.changed_at = time.monotonic()
        """When the members last changed (this worker's start counts: a new member is empty)."""
        self.probes = 0
        self.probe_hits = 0
        self._refusals: set[str] = set()

    def members(self) -> list[Member]:
        ms = self.membership.members()
        if self.me not in ms and all(m.name != self.me.name for m in ms):
            ms = [*ms, self.me]  # we are alive even if the registry lags
        view = frozenset(m.name for m in ms)
        if view != self._view:
            if self._view:
                log.info("pool members now %s", ", ".join(sorted(view)))
                self.changed_at = time.monotonic()
            self._view = view
        return ms

    def rebalancing(self, now: float | None = None) -> bool:
        """Within :data:`REBALANCE_WINDOW` of the last change of members."""
        return (now if now is not None else time.monotonic()) - self.changed_at < REBALANCE_WINDOW

    def place(self, dataset: str, path: str, chunk: int = 0) -> FilePlace:
        """Owners and peers of a file's chunk (chunk 0: the file's head and its metadata),
        decided once for a request.

        With r > 1 the first reachable other owner answers (from its cache, or from the origin
        for us), so the rest are asked only when every other owner is down. The next in rank is
        then the owner a join displaced (rendezvous keeps the others' order), which still holds
        the file. With r = 1 only the owner is asked: a cold read goes to the origin in one hop.
        """
        order = ranked(chunk_key(dataset, path, chunk), self.members())
        owners = tuple(order[: self.replicas])
        mine = any(m.name == self.me.name for m in owners)
        candidates = order if self.replicas > 1 else list(owners)
        now = time.monotonic()
        peers = tuple(
            m for m in candidates if m.name != self.me.name and not self.marks.is_down(m.name, now)
        )
        holders: tuple[Member, ...] = ()
        if mine and self.replicas == 1 and self.rebalancing(now):
            holders = tuple(
                m
                for m in order[1 : 1 + HOLDERS]
                if m.name != self.me.name and not self.marks.is_down(m.name, now)
            )
        return FilePlace(mine, peers, owners, holders)

    def metadata_owner(self, dataset: str, kind: str, rel: str) -> Member | None:
        """The member that fetches ``kind`` (info, list, find) of ``rel`` from the origin for the
        whole pool — the file's owner for ``info``, the directory's for listings — or None when
        that is this worker (or the owner is marked down)."""
        key = file_key(dataset, rel) if kind == "info" else file_key(dataset, rel + "/")
        owner = ranked(key, self.members())[0]
        if owner.name == self.me.name or self.marks.is_down(owner.name, time.monotonic()):
            return None
        return owner

    async def fetch_json(
        self, peer: Member, dataset: str, kind: str, rel: str, query: dict[str, str] | None = None
    ) -> Any:
        """A peer's answer to ``GET /v1/datasets/{ds}/{kind}/{rel}`` (it never forwards: it
        answers from its metadata or asks the origin itself); ``query``: passed on (a page of a
        find). :class:`PeerError` when it cannot answer; the error of the table
        (``FileNotFoundError`` …) when it answered one."""
        url = f"{peer.address}/v1/datasets/{quote(dataset)}/{kind}/{quote(rel)}"
        if query:
            url += "?" + urlencode(query)
        return await self._get_json(peer, url, f"{kind} {rel!r}", rel)

    async def list_held(
        self, peer: Member, dataset: str, start_after: str, limit: int
    ) -> dict[str, Any]:
        """One page of what ``peer`` holds cached of ``dataset`` that this worker owns now
        (``GET /v1/datasets/{ds}/held``, :mod:`tidepool.worker.rebalance`), after the path
        ``start_after``. :class:`PeerError` when it cannot answer."""
        query = urlencode({"member": self.me.name, "limit": limit, "start_after": start_after})
        url = f"{peer.address}/v1/datasets/{quote(dataset)}/held?{query}"
        # not marked down when it fails: a member still starting must not turn reads away
        data = await self._get_json(peer, url, "the files it holds", "", mark=False)
        if not isinstance(data, dict) or not isinstance(data.get("files"), list):
            raise PeerError(f"peer {peer.name} answered no list of the files it holds")
        return data

    async def _get_json(
        self, peer: Member, url: str, what: str, rel: str, *, mark: bool = True
    ) -> Any:
        """A peer's JSON answer, read up to :data:`MAX_PEER_JSON` bytes; ``mark``: a peer that
        cannot be reached is skipped by reads for :data:`PEER_DOWN_FOR` seconds."""
        session = await self._sess()
        try:
            async with session.get(url) as r:
                if (r.content_length or 0) > MAX_PEER_JSON:
                    raise PeerError(
                        f"peer {peer.name} answered {r.content_length} bytes for {what}; "
                        f"at most {MAX_PEER_JSON} are read"
                    )
                parts, got = [], 0
                async for part in r.content.iter_chunked(1 << 16):
                    got += len(part)
                    if got > MAX_PEER_JSON:
                        raise PeerError(
                            f"peer {peer.name} answered more than {MAX_PEER_JSON} bytes for {what}"
                        )
                    parts.append(part)
                body = b"".join(parts)
                if r.status >= 500:
                    raise PeerError(f"peer {peer.name} answered {r.status} for {what}")
                data = json.loads(body)
                if r.status >= 400:
                    raise from_http(r.status, data if isinstance(data, dict) else {}, rel)
                return data
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            if mark:
                self.marks.mark(peer.name, time.monotonic())
            raise PeerError(f"peer {peer.name} could not answer {what}: {exc}") from exc

    def is_owner(self, dataset: str, path: str, chunk: int = 0) -> bool:
        return self.place(dataset, path, chunk).mine

    async def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {PEER_HEADER: self.me.name, CHUNK_HEADER: str(self.chunk_size)}
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
        self,
        peer: Member,
        dataset: str,
        path: str,
        version: str | None,
        start: int,
        end: int,
        *,
        cached_only: bool = False,
    ) -> PeerAnswer:
        """Bytes ``[start, end)`` of a file from a peer; ``version=None`` takes the version the
        peer serves (the answer names it). :class:`PeerError` on any failure or mismatch.
        ``cached_only``: the peer answers only from its cache (:class:`NotCachedError` if not)."""
        session = await self._sess()
        url = f"{peer.address}/v1/datasets/{quote(dataset)}/files/{quote(path)}"
        headers = {"Range": f"bytes={start}-{end - 1}"}
        if version is not None:
            headers["If-Match"] = f'"{version}"'
        if cached_only:
            headers.update(ONLY_IF_CACHED)
            self.probes += 1
        try:
            async with session.get(url, headers=headers) as r:
                if r.status == 504 and cached_only:
                    await r.read()
                    raise NotCachedError(path)
                if r.status == 404:
                    raise FileNotFoundError(2, f"peer {peer.name} has no {dataset}/{path}", path)
                if r.status == 403:  # a pool set up differently (credential, chunk size)
                    why = (await r.content.read(4096)).decode("utf-8", "replace")
                    if peer.name not in self._refusals and len(self._refusals) < 64:
                        self._refusals.add(peer.name)  # once per peer: it is a set-up mistake
                        log.warning("peer %s refused us: %s", peer.name, why.replace("\n", " "))
                    raise PeerError(f"peer {peer.name} answered 403 for {dataset}/{path}")
                if r.status not in (200, 206):
                    raise PeerError(f"peer {peer.name} answered {r.status} for {dataset}/{path}")
                got = r.headers.get("X-Tidepool-Version", "")
                if version is not None and got != version:
                    raise PeerError(f"peer {peer.name} served another version of {path}")
                size = _size(r.headers.get("X-Tidepool-Size", ""))
                mtime = r.headers.get("X-Tidepool-Mtime")
                cached = r.headers.get(SOURCE_HEADER) == "cache"
                # Never read more than was asked for: a peer that announces or sends more
                # (a broken or hostile member) is refused before its bytes fill our memory.
                want = min(end, size) - start if size >= 0 else -1
                if want < 0 or r.content_length not in (None, want):
                    raise PeerError(
                        f"peer {peer.name} announced {r.content_length} bytes of a file of "
                        f"{size} for bytes {start}-{end - 1} of {path}"
                    )
                try:
                    data = await r.content.readexactly(want)
                except asyncio.IncompleteReadError as exc:
                    raise PeerError(
                        f"peer {peer.name} returned {len(exc.partial)} of {want} bytes"
                    ) from exc
                if await r.content.read(1):
                    raise PeerError(f"peer {peer.name} returned more than {want} bytes")
        except (TimeoutError, aiohttp.ClientError) as exc:
            self.marks.mark(peer.name, time.monotonic())
            raise PeerError(f"peer {peer.name} unreachable: {exc}") from exc
        self.peer_reads += 1
        self.peer_bytes += len(data)
        if cached_only:
            self.probe_hits += 1
        return PeerAnswer(data, size, got, float(mtime) if mtime else None, cached)

    def replicate(self, place: FilePlace, dataset: str, path: str) -> None:
        """Ask the file's other owners to copy it (from us, over the LAN) when r > 1."""
        if self.replicas < 2:
            return
        for peer in place.owners:
            if peer.name == self.me.name:
                continue
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
