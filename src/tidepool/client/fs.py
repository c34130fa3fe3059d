"""``tidepool://`` for Python programs: an fsspec ``AsyncFileSystem`` over a Tidepool worker.

``fsspec.open("tidepool://images/train/x.jpg")`` works in pandas, pyarrow and PyTorch data loaders
with no glue (the class is registered through the ``fsspec.specs`` entry point). Paths are
``<dataset>/<path>``; the listing of ``tidepool://`` is the list of datasets.

Configuration comes from arguments or ``TIDEPOOL_ENDPOINT`` / ``TIDEPOOL_TOKEN`` /
``TIDEPOOL_LOCAL_READS`` (``0`` turns the same-host fast path off).

Speed: one pooled aiohttp session per process (recreated after ``fork``, as data-loader workers
do); metadata from listings is remembered for the dataset's metadata TTL so a warm read of a small
file is one request, or none at all on the worker's host, where cached pages are read straight from
disk (:mod:`tidepool.client.local`). Sequential reads through ``open()`` prefetch the next block
while the caller consumes the current one.

Thread safety: one instance may be shared by many threads (PyTorch's thread pools do this): all
network I/O runs on fsspec's single I/O loop and the caches are plain dicts updated atomically.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import http.client
import json
import logging
import os
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from fsspec.asyn import AsyncFileSystem, get_loop, sync

from tidepool.client.direct import DirectDataset
from tidepool.client.file import TidepoolFile
from tidepool.client.local import HitReporter, LocalLayout, LocalReader, fork_generation
from tidepool.client.synchttp import SyncHTTP
from tidepool.core.errors import BadRequestError, from_http
from tidepool.core.ring import Member, ranked
from tidepool.core.ring import file_key as ring_key
from tidepool.pool.hostid import host_id

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://127.0.0.1:8433"
DEFAULT_BLOCK_SIZE = 16 << 20
MEMBERS_REFRESH = 5.0
"""Seconds between refreshes of the pool's member list."""
MEMBER_DOWN_FOR = 2.0
"""Seconds a worker that refused a connection is skipped before it is tried again."""
INFO_TTL_CAP = 60.0


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("0", "false", "no", "off", "")


class TidepoolFileSystem(AsyncFileSystem):  # type: ignore[misc]
    """Read-only fsspec filesystem for datasets served by a Tidepool worker."""

    protocol = "tidepool"
    root_marker = ""
    async_impl = True
    _pid: int  # set by AsyncFileSystem.__init__; see ``loop``

    def __init__(
        self,
        endpoint: str | None = None,
        token: str | None = None,
        *,
        local_reads: bool | None = None,
        nodepool: str | None = None,
        spec: str | list[str] | None = None,
        block_size: int | None = None,
        timeout: float = 120.0,
        asynchronous: bool = False,
        loop: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(asynchronous=asynchronous, loop=loop, **kwargs)
        self.endpoint = (
            endpoint or os.environ.get("TIDEPOOL_ENDPOINT") or DEFAULT_ENDPOINT
        ).rstrip("/")
        self.token = token or os.environ.get("TIDEPOOL_TOKEN") or None
        self.local_reads = (
            _env_flag("TIDEPOOL_LOCAL_READS", True) if local_reads is None else local_reads
        )
        self.blocksize = block_size or DEFAULT_BLOCK_SIZE
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._session_pid = 0
        self._infos: dict[str, tuple[dict[str, Any], float]] = {}
        self._ttls: dict[str, float] = {}
        self._local: LocalReader | None = None
        self._reporter: HitReporter | None = None
        self._local_endpoint = self.endpoint
        """The worker whose page files the fast path reads (the one on this host)."""
        self._reporter_forks = 0
        self._node_checked = False
        self._node_at = 0.0
        self.nodepool = (
            nodepool if nodepool is not None else os.environ.get("TIDEPOOL_NODEPOOL", "")
        )
        self._members: list[Member] = []
        self._replicas = 1
        self._down: dict[str, float] = {}
        self._synchttp: SyncHTTP | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._direct = self._direct_datasets(spec or os.environ.get("TIDEPOOL_SPEC"))

    # ---- plumbing --------------------------------------------------------------------------

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        if path.startswith("tidepool://"):
            path = path[len("tidepool://") :]
        elif path.startswith("tidepool:"):
            path = path[len("tidepool:") :]
        return path.strip("/")

    @staticmethod
    def _split(path: str) -> tuple[str, str]:
        ds, _, rel = path.partition("/")
        return ds, rel

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def loop(self) -> Any:
        """fsspec's I/O loop. fsspec refuses an instance used after ``fork`` ("not fork-safe"),
        but data-loader workers do exactly that: a forked child takes the fresh loop fsspec gives
        it (the parent's loop thread does not exist there) and ``set_session`` a new session."""
        if self._pid != os.getpid() and not self.asynchronous:
            self._loop = get_loop()
            self._pid = os.getpid()
        return self._loop

    async def set_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session_pid != os.getpid():
            connector = aiohttp.TCPConnector(limit=64, keepalive_timeout=60)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=2.0, sock_read=self.timeout),
                auto_decompress=False,
                # large socket reads: with the 64 KiB default a warm 8 MiB block reads at half
                # the speed (measured: ~400 vs ~800 MB/s on loopback)
                read_bufsize=4 << 20,
            )
            self._session_pid = os.getpid()
            if not self.asynchronous:
                weakref.finalize(self, _close_session, self.loop, self._session)
        return self._session

    def _url(self, kind: str, ds: str, rel: str = "", base: str | None = None) -> str:
        return f"{base or self.endpoint}/v1/datasets/{quote(ds)}/{kind}/{quote(rel)}"

    async def _get_json(self, url: str, path: str, base: str | None = None) -> Any:
        session = await self.set_session()
        try:
            async with session.get(url) as resp:
                body = await resp.read()
                if resp.status >= 400:
                    raise self._error(resp.status, body, path)
                return json.loads(body)
        except aiohttp.ClientConnectionError as exc:
            raise self._unreachable(exc, base) from exc

    def _unreachable(self, exc: Exception, base: str | None = None) -> ConnectionError:
        return ConnectionError(
            errno.ECONNREFUSED,
            f"cannot reach the Tidepool worker at {base or self.endpoint} ({exc}); "
            "is `tidepool up` "
            "running? set TIDEPOOL_ENDPOINT to its address",
        )

    @staticmethod
    def _error(status: int, body: bytes, path: str) -> Exception:
        try:
            data = json.loads(body)
        except ValueError:
            data = {"message": body[:200].decode(errors="replace")}
        return from_http(status, data if isinstance(data, dict) else {}, path)

    # ---- metadata --------------------------------------------------------------------------

    def _remember(self, ds: str, entry: dict[str, Any]) -> dict[str, Any]:
        out = dict(entry)
        out["name"] = f"{ds}/{entry['name']}" if entry["name"] else ds
        ttl = min(self._ttls.get(ds, 5.0), INFO_TTL_CAP)
        if out["type"] == "file":
            self._infos[out["name"]] = (out, time.monotonic() + ttl)
        return out

    def _cached_info(self, path: str) -> dict[str, Any] | None:
        hit = self._infos.get(path)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        return None

    async def _node(self) -> None:
        """Learn page sizes/TTLs, the pool's members, and whether local pages are readable."""
        if self._node_checked:
            if self._members and time.monotonic() - self._node_at > MEMBERS_REFRESH:
                self._node_at = time.monotonic()
                with contextlib.suppress(OSError):  # keep the last view if the worker is away
                    self._set_members(await self._get_json(f"{self.endpoint}/v1/node", ""))
            return
        info = await self._get_json(f"{self.endpoint}/v1/node", "")
        self._set_members(info)
        self._node_at = time.monotonic()
        for ds, d in info.get("datasets", {}).items():
            self._ttls[ds] = float(d.get("metadata_ttl", 5.0))
        if self.local_reads:
            await self._find_local_worker(info)
        self._node_checked = True

    async def _find_local_worker(self, info: dict[str, Any]) -> None:
        """Enable the fast path on the pages of the worker on this host, if there is one.

        That is usually the worker we talk to; in Kubernetes the pool's Service may have led us
        to a worker on another node, so the member named after this node (``TIDEPOOL_HOST_ID``,
        the node's name, is also the worker's member name) is asked too."""
        node, address = info, self.endpoint
        me = os.environ.get("TIDEPOOL_HOST_ID", "").strip()
        if info.get("host_id") != host_id() and me:
            member = next((m for m in self._members if m.name == me), None)
            if member is None or member.address == self.endpoint:
                return
            try:
                node, address = (
                    await self._get_json(f"{member.address}/v1/node", ""),
                    member.address,
                )
            except (OSError, ValueError) as exc:
                log.debug("the worker on this node (%s) did not answer: %s", member.address, exc)
                return
        if node.get("host_id") != host_id():
            return
        layouts = {}
        for ds, d in node.get("datasets", {}).items():
            # the tiers this process can read (a fuse Pod sees the worker's disk tiers, not its
            # memory tier): pages elsewhere are misses here and go over HTTP
            paths = tuple(
                t["path"] for t in d.get("tiers", []) if os.access(t["path"], os.R_OK | os.X_OK)
            )
            if paths:
                layouts[ds] = LocalLayout(ds, int(d["page_size"]), paths)
        if layouts:
            self._local = LocalReader(layouts)
            self._local_endpoint = address.rstrip("/")

    def _hit_reporter(self) -> HitReporter:
        """The thread reporting fast-path reads to the worker (one per process: after a fork the
        data-loader child starts its own)."""
        reporter = self._reporter
        if reporter is None or self._reporter_forks != fork_generation():
            assert self._local is not None
            if reporter is not None:  # a forked child: the parent reports what it inherited
                self._local.forget_pending()
            reporter = self._reporter = HitReporter(self._local, self._post_local_hits)
            self._reporter_forks = fork_generation()
        return reporter

    def _post_local_hits(self, dataset: str, pages: int, nbytes: int) -> None:
        """``POST /v1/datasets/{ds}/local-hits`` to the worker whose pages were read (the one on
        this host); OSError on failure."""
        url = urlsplit(self._local_endpoint)
        conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=2)
        try:
            conn.request(
                "POST",
                f"{url.path}/v1/datasets/{quote(dataset)}/local-hits",
                json.dumps({"pages": pages, "bytes": nbytes}),
                {**self._headers(), "Content-Type": "application/json"},
            )
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise OSError(f"worker answered {resp.status} to a local-hits report")
        except http.client.HTTPException as exc:
            raise OSError(str(exc)) from exc
        finally:
            conn.close()

    def _direct_datasets(self, spec: str | list[str] | None) -> dict[str, DirectDataset]:
        """Datasets this client's node pool may not cache: they are read from their origin."""
        if not spec or not self.nodepool:
            return {}
        from tidepool.spec import load_files

        files = spec.split(",") if isinstance(spec, str) else list(spec)
        bundle = load_files(files, environ=os.environ)
        direct = {}
        for name, cfg in bundle.datasets.items():
            if cfg.nodepools and self.nodepool not in cfg.nodepools:
                log.warning(
                    "dataset %r is not cached in node pool %r (its nodeAffinity allows %s): "
                    "reading it from its origin directly, never from another pool's cache",
                    name,
                    self.nodepool,
                    ", ".join(cfg.nodepools),
                )
                direct[name] = DirectDataset(cfg)
        return direct

    def _set_members(self, info: dict[str, Any]) -> None:
        pool = info.get("nodepool", "")
        if self.nodepool and pool and pool != self.nodepool:
            raise ConnectionError(
                errno.EACCES,
                f"the Tidepool worker at {self.endpoint} belongs to node pool {pool!r} but this "
                f"client is in {self.nodepool!r}: a client only uses its own pool's cache (never "
                "across the WAN); point TIDEPOOL_ENDPOINT at a worker of your pool",
            )
        members = [Member(**m) for m in info.get("members", [])]
        self._members = [m for m in members if not pool or m.pool == pool]
        self._replicas = int(info.get("replicas", 1))

    def _targets(self, ds: str, rel: str) -> list[str]:
        """Base URLs to try for a file, its owner first; the configured endpoint alone when the
        worker is not part of a pool."""
        if not self._members:
            return [self.endpoint]
        now = time.monotonic()
        order = [m.address for m in ranked(ring_key(ds, rel), self._members)]
        up = [a for a in order if self._down.get(a, 0.0) <= now]
        return up + [a for a in order if a not in up]

    async def _info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        if not path:
            return {"name": "", "type": "directory", "size": 0}
        cached = self._cached_info(path)
        if cached is not None:
            return cached
        ds, rel = self._split(path)
        if ds in self._direct:
            return self._remember(ds, await self._direct[ds].info(rel))
        await self._node()
        # Ask the file's owner, as reads do: it holds the file's metadata, where another worker
        # of the pool would revalidate it with the origin across the WAN.
        targets = self._targets(ds, rel) if rel else [self.endpoint]
        for i, base in enumerate(targets):
            try:
                entry = await self._get_json(self._url("info", ds, rel, base), path, base)
            except ConnectionError:
                if i == len(targets) - 1:
                    raise
                self._down[base] = time.monotonic() + MEMBER_DOWN_FOR
            else:
                return self._remember(ds, entry)
        raise AssertionError("unreachable")

    async def _ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        ds, rel = self._split(path)
        if ds in self._direct:
            out = [self._remember(ds, e) for e in await self._direct[ds].ls(rel)]
            return out if detail else [e["name"] for e in out]
        await self._node()
        if not path:
            data = await self._get_json(f"{self.endpoint}/v1/datasets", path)
            out = [{"name": d["name"], "type": "directory", "size": 0} for d in data["datasets"]]
        else:
            ds, rel = self._split(path)
            try:
                data = await self._get_json(self._url("list", ds, rel), path)
            except NotADirectoryError:  # ls of a file is the file (fsspec convention)
                data = {"entries": []}
            out = [self._remember(ds, e) for e in data["entries"]]
            if not out:
                info = await self._info(path)
                if info["type"] == "file":
                    out = [info]
        out.sort(key=lambda e: e["name"])
        return out if detail else [e["name"] for e in out]

    async def _find(
        self,
        path: str,
        maxdepth: int | None = None,
        withdirs: bool = False,
        detail: bool = False,
        **kwargs: Any,
    ) -> Any:
        path = self._strip_protocol(path)
        ds, rel = self._split(path)
        if ds in self._direct and maxdepth is None and not withdirs:
            found = {}
            for e in await self._direct[ds].find(rel):
                entry = self._remember(ds, e)
                found[entry["name"]] = entry
            return found if detail else sorted(found)
        if not ds or maxdepth is not None or withdirs:
            return await super()._find(
                path, maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs
            )
        await self._node()
        try:
            info = await self._info(path)
        except FileNotFoundError:
            return {} if detail else []
        if info["type"] == "file":
            found = {info["name"]: info}
        else:
            data = await self._get_json(self._url("find", ds, rel), path)
            found = {}
            for e in data["files"]:
                entry = self._remember(ds, e)
                found[entry["name"]] = entry
        names = sorted(found)
        return {n: found[n] for n in names} if detail else names

    # ---- data ------------------------------------------------------------------------------

    def _local_read(self, path: str, info: dict[str, Any], start: int, end: int) -> bytes | None:
        if self._local is None or info.get("type") != "file":
            return None
        ds, rel = self._split(path)
        if self._reporter is None or self._reporter_forks != fork_generation():
            self._hit_reporter()  # before the read: a forked child first drops inherited counts
        return self._local.read(ds, rel, info["version"], info["size"], start, end)

    @staticmethod
    def _span(start: int | None, end: int | None, size: int) -> tuple[int, int]:
        s = 0 if start is None else (size + start if start < 0 else start)
        e = size if end is None else (size + end if end < 0 else end)
        return max(0, min(s, size)), max(0, min(e, size))

    async def _cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        path = self._strip_protocol(path)
        if start is None and end is None and "/" in path and self._cached_info(path) is None:
            # a whole file whose metadata we don't hold: one request returns both (the answer's
            # headers carry size and version), instead of a stat and then a read
            return await self._fetch(path, None, 0, -1)
        info = await self._info(path)
        if info["type"] != "file":
            raise IsADirectoryError(errno.EISDIR, "is a directory", path)
        s, e = self._span(start, end, info["size"])
        if e <= s:
            return b""
        data = self._local_read(path, info, s, e)
        if data is not None:
            return data
        return await self._fetch(path, info, s, e)

    async def _fetch(self, path: str, info: dict[str, Any] | None, start: int, end: int) -> bytes:
        """Read bytes from the file's owner in the pool, failing over along the ring.

        ``info=None`` reads the whole file and learns its metadata from the answer."""
        ds, rel = self._split(path)
        if ds in self._direct:
            if info is None:
                info = await self._info(path)
                end = info["size"]
            return await self._direct[ds].read(rel, info["version"], start, end)
        await self._node()
        targets = self._targets(ds, rel)
        for i, base in enumerate(targets):
            try:
                return await self._fetch_from(base, path, info, start, end)
            except ConnectionError:
                if i == len(targets) - 1:
                    raise
                self._down[base] = time.monotonic() + MEMBER_DOWN_FOR
        raise AssertionError("unreachable")

    async def _fetch_from(
        self, base: str, path: str, info: dict[str, Any] | None, start: int, end: int
    ) -> bytes:
        ds, rel = self._split(path)
        session = await self.set_session()
        headers = {}
        if info is not None and (start > 0 or end < info["size"]):
            headers["Range"] = f"bytes={start}-{end - 1}"
        for attempt in range(2):
            try:
                url = self._url("files", ds, rel, base)
                async with session.get(url, headers=headers) as resp:
                    if resp.status >= 400:
                        body = await resp.read()
                        if resp.status == 409 and attempt == 0:  # changed mid-read: once more
                            self._infos.pop(path, None)
                            continue
                        raise self._error(resp.status, body, path)
                    version = resp.headers.get("X-Tidepool-Version")
                    if info is None:
                        info = self._from_headers(ds, rel, resp.headers)
                        end = info["size"]
                    elif version is not None and version != info.get("version"):
                        self._infos.pop(path, None)
                    data = await resp.read()
            except aiohttp.ClientPayloadError as exc:
                if attempt == 0:
                    self._infos.pop(path, None)
                    continue
                raise OSError(errno.EIO, f"read of {path} was cut short: {exc}") from exc
            except aiohttp.ClientConnectionError as exc:
                if attempt == 0 and isinstance(exc, aiohttp.ServerDisconnectedError):
                    continue  # a pooled keep-alive connection the worker had closed
                raise self._unreachable(exc, base) from exc
            if len(data) != end - start:
                raise OSError(
                    errno.EIO, f"read of {path} returned {len(data)} bytes, expected {end - start}"
                )
            return data
        raise OSError(errno.EIO, f"read of {path} failed twice")

    def _fetch_sync(self, path: str, info: dict[str, Any] | None, start: int, end: int) -> bytes:
        """:meth:`_fetch` for synchronous callers, without the I/O loop (see ``synchttp``)."""
        if self._split(path)[0] in self._direct:
            return sync(self.loop, self._fetch, path, info, start, end)  # type: ignore[no-any-return]
        if not self._node_checked or (
            self._members and time.monotonic() - self._node_at > MEMBERS_REFRESH
        ):
            sync(self.loop, self._node)
        ds, rel = self._split(path)
        targets = self._targets(ds, rel)
        for i, base in enumerate(targets):
            try:
                return self._fetch_sync_from(base, path, info, start, end)
            except ConnectionError:
                if i == len(targets) - 1:
                    raise
                self._down[base] = time.monotonic() + MEMBER_DOWN_FOR
        raise AssertionError("unreachable")

    def _fetch_sync_from(
        self, base: str, path: str, info: dict[str, Any] | None, start: int, end: int
    ) -> bytes:
        ds, rel = self._split(path)
        headers = {}
        if info is not None and (start > 0 or end < info["size"]):
            headers["Range"] = f"bytes={start}-{end - 1}"
        target = f"/v1/datasets/{quote(ds)}/files/{quote(rel)}"
        for attempt in range(2):
            try:
                status, answer, data = self._sync_http().get(base, target, headers)
            except http.client.IncompleteRead as exc:
                # the worker cut the answer short (it does when a read fails after its headers,
                # e.g. the object changed mid-read): once more, then report it
                self._infos.pop(path, None)
                if attempt == 0:
                    if info is not None and start == 0 and end == info["size"]:
                        info, headers = None, {}  # a whole file: learn its version anew
                    continue
                raise OSError(errno.EIO, f"read of {path} was cut short: {exc!r}") from exc
            except (OSError, http.client.HTTPException) as exc:
                raise self._unreachable(exc, base) from exc
            if status >= 400:
                if status == 409 and attempt == 0:  # changed mid-read: once more
                    self._infos.pop(path, None)
                    continue
                raise self._error(status, data, path)
            if info is None:
                info = self._from_headers(ds, rel, answer)
                end = info["size"]
            elif answer.get("X-Tidepool-Version") not in (None, info.get("version")):
                self._infos.pop(path, None)
            if len(data) != end - start:
                if attempt == 0:  # cut short (the worker aborts a failed stream): once more
                    self._infos.pop(path, None)
                    continue
                raise OSError(
                    errno.EIO, f"read of {path} returned {len(data)} bytes, expected {end - start}"
                )
            return data
        raise OSError(errno.EIO, f"read of {path} failed twice")

    def _readahead_pool(self) -> ThreadPoolExecutor:
        """A few threads shared by every open file for background read-ahead (never a thread per
        request); recreated in a forked child."""
        if self._pool is None or self._pool_pid != os.getpid():
            self._pool = ThreadPoolExecutor(4, thread_name_prefix="tidepool-readahead")
            self._pool_pid = os.getpid()
        return self._pool

    def _sync_http(self) -> SyncHTTP:
        if self._synchttp is None:
            self._synchttp = SyncHTTP(self._headers(), connect_timeout=2.0, timeout=self.timeout)
        return self._synchttp

    def _from_headers(self, ds: str, rel: str, headers: Any) -> dict[str, Any]:
        """File metadata from a read's answer (the worker sends it with every file)."""
        mtime = headers.get("X-Tidepool-Mtime")
        entry = {
            "name": rel,
            "type": "file",
            "size": int(headers["X-Tidepool-Size"]),
            "version": headers["X-Tidepool-Version"],
            "mtime": float(mtime) if mtime else None,
        }
        return self._remember(ds, entry)

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        """Synchronous reads skip the I/O loop: cached pages on this host straight from disk,
        anything else over a keep-alive connection of the calling thread (``synchttp``)."""
        path = self._strip_protocol(path)
        if not self._node_checked and self._split(path)[0] not in self._direct:
            sync(self.loop, self._node)
        info = self._cached_info(path)
        if info is None:
            if start is None and end is None and "/" in path:
                return self._fetch_sync(path, None, 0, -1)  # data and metadata in one request
            info = self.info(path)
        if info["type"] != "file":
            raise IsADirectoryError(errno.EISDIR, "is a directory", path)
        s, e = self._span(start, end, info["size"])
        if e <= s:
            return b""
        data = self._local_read(path, info, s, e)
        if data is not None:
            return data
        return self._fetch_sync(path, info, s, e)

    async def _cat_ranges(
        self,
        paths: list[str],
        starts: Any,
        ends: Any,
        max_gap: Any = None,
        on_error: str = "return",
        **kwargs: Any,
    ) -> list[Any]:
        if not isinstance(starts, list):
            starts = [starts] * len(paths)
        if not isinstance(ends, list):
            ends = [ends] * len(paths)
        if len(starts) != len(paths) or len(ends) != len(paths):
            raise ValueError("cat_ranges needs as many starts and ends as paths")
        coros = [self._cat_file(p, s, e) for p, s, e in zip(paths, starts, ends, strict=True)]
        results = await asyncio.gather(*coros, return_exceptions=True)
        if on_error == "raise":
            for r in results:
                if isinstance(r, BaseException):
                    raise r
        return list(results)

    async def _get_file(self, rpath: str, lpath: str, callback: Any = None, **kwargs: Any) -> None:
        """Copy one file to the local disk a block at a time (what ``fs.get`` calls)."""
        rpath = self._strip_protocol(rpath)
        info = await self._info(rpath)
        if info["type"] != "file":
            os.makedirs(lpath, exist_ok=True)
            return
        if os.path.isdir(lpath):
            return
        size = info["size"]
        if callback is not None:
            callback.set_size(size)
        with open(lpath, "wb") as f:
            for start in range(0, size, self.blocksize):
                data = await self._cat_file(rpath, start, min(size, start + self.blocksize))
                f.write(data)
                if callback is not None:
                    callback.relative_update(len(data))

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> TidepoolFile:
        if mode != "rb":
            raise PermissionError(
                errno.EROFS, f"tidepool:// is read-only; cannot open {path!r} with mode {mode!r}"
            )
        path = self._strip_protocol(path)
        info = self.info(path)
        if info["type"] != "file":
            raise IsADirectoryError(errno.EISDIR, "is a directory", path)
        return TidepoolFile(self, path, info, block_size or self.blocksize)

    # ---- worker administration (used by the CLI) -------------------------------------------

    async def _post_json(self, url: str, payload: Any, path: str) -> Any:
        session = await self.set_session()
        try:
            async with session.post(url, json=payload) as resp:
                body = await resp.read()
                if resp.status >= 400:
                    raise self._error(resp.status, body, path)
                return json.loads(body)
        except aiohttp.ClientConnectionError as exc:
            raise self._unreachable(exc) from exc

    def datasets(self) -> list[str]:
        """Names of the datasets the worker serves."""
        data = sync(self.loop, self._get_json, f"{self.endpoint}/v1/datasets", "")
        return [d["name"] for d in data["datasets"]]

    def status(self, dataset: str, refresh: bool = True) -> dict[str, Any]:
        """Fluid-style status of one dataset."""
        url = f"{self.endpoint}/v1/datasets/{quote(dataset)}/status?refresh={int(refresh)}"
        return sync(self.loop, self._get_json, url, dataset)  # type: ignore[no-any-return]

    def start_load(
        self, dataset: str, paths: list[str], concurrency: int | None = None
    ) -> dict[str, Any]:
        """Start a warm-up job; returns its first progress record (with ``id``)."""

        body: dict[str, Any] = {"paths": paths}
        if concurrency:
            body["concurrency"] = concurrency
        url = f"{self.endpoint}/v1/datasets/{quote(dataset)}/load"
        return sync(self.loop, self._post_json, url, body, dataset)  # type: ignore[no-any-return]

    def pool_status(self, datasets: list[str]) -> dict[str, Any]:
        """The pool as this client sees it: members, whether they answer, files each owns
        (by the ring, over the datasets' files) and bytes each has cached."""
        from tidepool.core.ring import spread

        async def go() -> dict[str, Any]:
            await self._node()
            session = await self.set_session()
            keys = []
            for ds in datasets:
                for name in await self._find(ds):
                    keys.append(ring_key(ds, name.partition("/")[2]))
            owned = spread(keys, self._members) if self._members else {}
            out = []
            for m in self._members:
                state, cached = "down", None
                try:
                    async with session.get(f"{m.address}/healthz") as r:
                        state = "up" if r.status == 200 else f"HTTP {r.status}"
                    cached = 0
                    for ds in datasets:
                        url = f"{m.address}/v1/datasets/{ds}/status?refresh=0"
                        async with session.get(url) as r:
                            if r.status == 200:
                                cached += int((await r.json())["raw"]["cached_bytes"])
                except (aiohttp.ClientError, OSError, ValueError):
                    pass
                out.append(
                    {
                        "name": m.name,
                        "address": m.address,
                        "state": state,
                        "files_owned": owned.get(m.name, 0),
                        "cached_bytes": cached,
                    }
                )
            return {
                "nodepool": self.nodepool or (self._members[0].pool if self._members else ""),
                "replicas": self._replicas,
                "members": out,
            }

        return sync(self.loop, go)  # type: ignore[no-any-return]

    def load_progress(self, job_id: str) -> dict[str, Any]:
        url = f"{self.endpoint}/v1/loads/{quote(job_id)}"
        return sync(self.loop, self._get_json, url, job_id)  # type: ignore[no-any-return]

    def metrics_text(self) -> str:
        async def go() -> str:
            session = await self.set_session()
            async with session.get(f"{self.endpoint}/metrics") as resp:
                return await resp.text()

        return sync(self.loop, go)  # type: ignore[no-any-return]

    # read-only filesystem: every mutation is refused with the path in the error
    async def _pipe_file(self, path: str, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EROFS, "tidepool:// is read-only", path)

    async def _rm_file(self, path: str, **kwargs: Any) -> None:
        raise PermissionError(errno.EROFS, "tidepool:// is read-only", path)

    async def _put_file(self, lpath: str, rpath: str, **kwargs: Any) -> None:
        raise PermissionError(errno.EROFS, "tidepool:// is read-only", rpath)

    async def _mkdir(self, path: str, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EROFS, "tidepool:// is read-only", path)

    async def _makedirs(self, path: str, exist_ok: bool = False) -> None:
        raise PermissionError(errno.EROFS, "tidepool:// is read-only", path)

    async def _cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        raise PermissionError(errno.EROFS, "tidepool:// is read-only", path2)

    def ukey(self, path: str) -> str:
        return str(self.info(path).get("version", ""))

    def invalidate_cache(self, path: str | None = None) -> None:
        if path is None:
            self._infos.clear()
        else:
            self._infos.pop(self._strip_protocol(path), None)
        super().invalidate_cache(path)


def _close_session(loop: Any, session: aiohttp.ClientSession) -> None:
    if loop is not None and loop.is_running() and not session.closed:
        try:
            sync(loop, session.close, timeout=1.0)
            return
        except Exception:
            pass
    connector = getattr(session, "_connector", None)
    if connector is not None:
        connector._close()


__all__ = ["BadRequestError", "TidepoolFile", "TidepoolFileSystem"]
