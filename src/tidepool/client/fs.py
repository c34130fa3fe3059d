"""``tidepool://`` for Python programs: an fsspec ``AsyncFileSystem`` over the workers of a pool.

``fsspec.open("tidepool://images/train/x.jpg")`` works in pandas, pyarrow and PyTorch data loaders
with no glue (registered through the ``fsspec.specs`` entry point). Paths are
``<dataset>/<path>``; the listing of ``tidepool://`` is the list of datasets. Configuration comes
from arguments or ``TIDEPOOL_ENDPOINT`` / ``TIDEPOOL_TOKEN`` / ``TIDEPOOL_NODEPOOL`` /
``TIDEPOOL_LOCAL_READS`` (``0`` turns the same-host fast path off).

One read, followed down: the path's metadata comes from the client's short-lived cache (filled by
listings and by the headers of earlier reads) or from the file's owner; on the worker's host the
cached pages are read straight from disk (:mod:`tidepool.client.local`); anything else is one
request routed to the file's owner (:mod:`tidepool.client.routing`) under the one read policy
(:mod:`tidepool.client.reads`: failover, retries, version pinning), sent by the blocking
transport from synchronous callers or by aiohttp from async ones
(:mod:`tidepool.client.transport`). A read whose version is known is pinned to it.

Thread and fork safety: one instance may be shared by many threads (PyTorch's thread pools do
this): synchronous reads use a keep-alive connection per thread, async calls fsspec's I/O loop,
and the caches are dicts updated atomically. A forked child (data-loader worker) gets a fresh
loop, session, connections and hit reporter.

Why this module is longer than ~400 lines: it is the fsspec surface itself — every method
fsspec calls (info, ls, find, cat, open, get, the async twins) with the pool's metadata cache and
the offline fallback — while routing, the read policy, transport and admin calls live in their
own modules; splitting the surface would scatter one user-visible API over several files.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from fsspec.asyn import AsyncFileSystem, get_loop, sync

from tidepool.client.admin import WorkerAdmin, pool_status
from tidepool.client.file import TidepoolFile
from tidepool.client.local import (
    HeldWindows,
    HitReporter,
    LocalFile,
    LocalLayout,
    LocalReader,
    fork_generation,
)
from tidepool.client.reads import Answer, Steps, json_steps, read_steps, run_async, run_sync
from tidepool.client.routing import PoolView
from tidepool.client.transport import AsyncTransport, SyncTransport
from tidepool.core.errors import BadRequestError, VersionChangedError, VersionGoneError
from tidepool.pool.hostid import host_id

if TYPE_CHECKING:
    from tidepool.client.direct import DirectDataset

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://127.0.0.1:8433"
DEFAULT_BLOCK_SIZE = 16 << 20
INFO_TTL_CAP = 60.0
"""Longest time the client trusts file metadata it remembered (the dataset's TTL when shorter)."""
CONNECT_TIMEOUT = 2.0
FIND_PAGE = 5000
"""Entries per page of a find asked of the worker."""
HELD_WINDOW = 1000
"""Files one window of what this host's worker holds lists at most (see :meth:`_local_info`)."""
HINT_CHUNK = 50_000
"""Paths per prefetch hint request (a worker takes at most 100,000 at once)."""


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("0", "false", "no", "off", "")


def _ignore(_base: str) -> None:
    return None


def _held_entry(e: Any) -> dict[str, Any]:
    """One file of a worker's ``cached`` window, checked: a file with a name, size and version
    (``TypeError``/``ValueError`` otherwise)."""
    name, size, version, mtime = e["name"], e["size"], e["version"], e.get("mtime")
    if not isinstance(name, str) or not name or not isinstance(version, str) or not version:
        raise ValueError(f"entry {str(e)[:200]!r} has no name or version")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"entry {name[:200]!r} has size {size!r}")
    if mtime is not None and not isinstance(mtime, int | float):
        raise ValueError(f"entry {name[:200]!r} has mtime {mtime!r}")
    return {"name": name, "type": "file", "size": size, "version": version, "mtime": mtime}


_PLAIN_KEYS = frozenset({"name", "type", "size", "version", "mtime"})
"""The fields of a plain file's entry, kept compactly by :meth:`TidepoolFileSystem._note`."""


def _expand(name: str, hit: tuple[Any, ...]) -> dict[str, Any]:
    """A remembered entry as fsspec answers it (a new dict: the caller may change it)."""
    if len(hit) == 2:
        return dict(hit[0])
    size, version, mtime, _ = hit
    return {"name": name, "type": "file", "size": size, "version": version, "mtime": mtime}


class TidepoolFileSystem(AsyncFileSystem):  # type: ignore[misc]
    """Read-only fsspec filesystem for datasets served by Tidepool workers."""

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
        self.nodepool = (
            nodepool if nodepool is not None else os.environ.get("TIDEPOOL_NODEPOOL", "")
        )
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.transport_sync = SyncTransport(headers, CONNECT_TIMEOUT, timeout)
        self.transport_async = AsyncTransport(headers, CONNECT_TIMEOUT, timeout)
        self.pool = PoolView(self.endpoint, self.nodepool)
        self.admin = WorkerAdmin(self.endpoint, self.transport_sync.send)
        self._infos: dict[str, tuple[Any, ...]] = {}
        """What this client knows of each file it met (see :meth:`_note`), by full name."""
        self._offline_noted = False
        """The worker was found unreachable and that was logged (once per outage)."""
        self._ttls: dict[str, float] = {}
        self._local: LocalReader | None = None
        self._local_endpoint = self.endpoint
        """The worker whose page files the fast path reads (the one on this host)."""
        self._held = HeldWindows(time.monotonic)
        self._held_flights: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self._reporter: HitReporter | None = None
        self._reporter_forks = 0
        self._readahead: ThreadPoolExecutor | None = None
        self._readahead_pid = 0
        self._finalizer_pid = 0
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

    @property
    def loop(self) -> Any:
        """fsspec's I/O loop. fsspec refuses an instance used after ``fork`` ("not fork-safe"),
        but data-loader workers do exactly that: a forked child takes the fresh loop fsspec gives
        it (the parent's loop thread does not exist there) and a new session."""
        if self._pid != os.getpid() and not self.asynchronous:
            self._loop = get_loop()
            self._pid = os.getpid()
        return self._loop

    async def set_session(self) -> Any:
        """The aiohttp session of this process (fsspec's convention)."""
        session = await self.transport_async.open()
        if not self.asynchronous and self._finalizer_pid != os.getpid():
            self._finalizer_pid = os.getpid()
            weakref.finalize(self, _close_transport, self.loop, self.transport_async)
        return session

    async def close_session(self) -> None:
        await self.transport_async.close()

    async def _call(self, steps: Steps[Any]) -> Any:
        await self.set_session()
        return await run_async(steps, self.transport_async.send)

    def readahead_pool(self) -> ThreadPoolExecutor:
        """A few threads shared by every open file for background read-ahead (never a thread per
        file or request); recreated in a forked child."""
        if self._readahead is None or self._readahead_pid != os.getpid():
            self._readahead = ThreadPoolExecutor(4, thread_name_prefix="tidepool-readahead")
            self._readahead_pid = os.getpid()
        return self._readahead

    # ---- the pool --------------------------------------------------------------------------

    def _node_steps(self) -> Steps[None]:
        """Learn the pool's members, each dataset's TTL, and whether pages are readable here."""
        first = not self.pool.known
        node = yield from json_steps([self.endpoint], "/v1/node", "", _ignore)
        self.pool.update(node)
        for ds, d in node.get("datasets", {}).items():
            self._ttls[ds] = float(d.get("metadata_ttl", 5.0))
        if not (first and self.local_reads):
            return
        # The worker on this host is usually the one we talk to; in Kubernetes the pool's
        # Service may have led us to a worker on another node, so the member named after this
        # node (TIDEPOOL_HOST_ID, the node's name, is also the worker's member name) is asked.
        address = self.endpoint
        me = os.environ.get("TIDEPOOL_HOST_ID", "").strip()
        if node.get("host_id") != host_id() and me:
            member = self.pool.member(me)
            if member is None or member.address == self.endpoint:
                return
            try:
                node = yield from json_steps([member.address], "/v1/node", "", _ignore)
            except OSError as exc:
                log.debug("the worker on this node (%s) did not answer: %s", member.address, exc)
                return
            address = member.address
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
                uid = node.get("uid")
                owner = int(uid) if isinstance(uid, int) else None
                index = d.get("index")
                layouts[ds] = LocalLayout(
                    ds, int(d["page_size"]), paths, owner, index if isinstance(index, str) else None
                )
        if layouts:
            self._local = LocalReader(layouts)
            self._local_endpoint = address.rstrip("/")

    async def _ensure_node(self) -> None:
        if not self.pool.due():
            return
        try:
            await self._call(self._node_steps())
        except OSError:
            if not self.pool.known:
                raise
            self.pool.touch()  # keep the last view while the worker is away

    def _ensure_node_sync(self) -> None:
        if not self.pool.due():
            return
        try:
            run_sync(self._node_steps(), self.transport_sync.send)
        except OSError:
            if not self.pool.known:
                raise
            self.pool.touch()

    def _direct_datasets(self, spec: str | list[str] | None) -> dict[str, DirectDataset]:
        """Datasets this client's node pool may not cache: they are read from their origin."""
        if not spec or not self.nodepool:
            return {}
        from tidepool.client.direct import DirectDataset
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

    # ---- metadata --------------------------------------------------------------------------

    def _note(self, ds: str, entry: dict[str, Any]) -> str:
        """Remember a file's metadata until the dataset's TTL (capped) runs out; its full name.

        A plain file's entry (name, type, size, version, mtime: every file a listing returns)
        is kept as ``(size, version, mtime, deadline)``, not a dict: a client that listed a
        million files keeps them all (its reads need no metadata request), and a dict per file
        was two thirds of its memory (560 bytes a file in all, 320 now). Other entries are
        kept whole, ``(dict, deadline)``."""
        name = f"{ds}/{entry['name']}" if entry["name"] else ds
        if entry["type"] == "file":
            deadline = time.monotonic() + min(self._ttls.get(ds, 5.0), INFO_TTL_CAP)
            if entry.keys() == _PLAIN_KEYS:
                self._infos[name] = (entry["size"], entry["version"], entry["mtime"], deadline)
            else:
                self._infos[name] = ({**entry, "name": name}, deadline)
        return name

    def _remember(self, ds: str, entry: dict[str, Any]) -> dict[str, Any]:
        """:meth:`_note`, and the entry as fsspec answers it (its full name)."""
        return {**entry, "name": self._note(ds, entry)}

    def _cached_info(self, path: str) -> dict[str, Any] | None:
        hit = self._infos.get(path)
        if hit is not None and hit[-1] > time.monotonic():
            return _expand(path, hit)
        return None

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """fsspec's blocking ``info``. A file whose metadata this client still holds (from a
        ``find``, ``ls`` or read, within its TTL) is answered here, without the round trip to
        fsspec's I/O thread that every other call makes: that hop was a third of the client's
        time in a warm epoch of small files (``open`` asks ``info`` first; py-spy)."""
        if not kwargs:
            stripped = self._strip_protocol(path)
            cached = self._cached_info(stripped) or self._local_info(stripped)
            if cached is not None:
                return cached
        return sync(self.loop, self._info, path, **kwargs)  # type: ignore[no-any-return]

    # ---- files held on this host -----------------------------------------------------------

    def _window_start(self, path: str) -> tuple[str, str, str] | None:
        """``(dataset, rel, start)`` when a read of ``path`` that has no metadata should first
        ask this host's worker which files it holds (the fast path is on for the dataset and no
        live window spans the path): from the start of the path's directory the first time,
        so one window serves a directory's files read in any order; else from the path."""
        if self._local is None:
            return None
        ds, rel = self._split(path)
        if not rel or ds in self._direct or ds not in self._local.layouts:
            return None
        if self._held.covers(ds, rel):
            return None
        folder = rel.rpartition("/")[0]
        start = f"{folder}/" if folder else ""
        return ds, rel, (rel if self._held.covers(ds, start) else start)

    def _window_steps(self, ds: str, start: str, path: str) -> Steps[Any]:
        query = urlencode({"start_at": start, "limit": str(HELD_WINDOW)})
        target = f"/v1/datasets/{quote(ds)}/cached?{query}"
        return json_steps([self._local_endpoint], target, path, _ignore)

    def _learn_window(self, ds: str, start: str, answer: Any) -> None:
        """Remember a window's files (their metadata, for the TTL) and its span. An answer that
        is not a window (an older worker, a failure: None) spans everything for the TTL, so the
        reads go on over HTTP without asking again."""
        ttl = min(self._ttls.get(ds, 5.0), INFO_TTL_CAP)
        try:
            through = answer["through"]
            entries = [_held_entry(e) for e in answer["files"]]
            if through is not None and not isinstance(through, str):
                raise TypeError(f"through is {type(through).__name__}")
        except (KeyError, TypeError, ValueError) as exc:
            if answer is not None:
                log.debug("worker %s: not a window of held files (%s)", self._local_endpoint, exc)
            self._held.add(ds, "", None, ttl)
            return
        for entry in entries:
            self._remember(ds, entry)
        self._held.add(ds, start, through, ttl)

    def _local_info(self, path: str) -> dict[str, Any] | None:
        """Metadata of a file that the worker on this host holds whole, for a read that has
        none (a first epoch that never listed): asks that worker once for a window of the files
        it holds (``GET …/cached``, up to :data:`HELD_WINDOW` of them from the path's directory
        on, with fresh metadata), so each of those is then read from its page files, not over
        HTTP. One request per window and metadata TTL; None when the file is not held here."""
        due = self._window_start(path)
        if due is None:
            return None
        ds, _, start = due
        answer: Any = None
        try:
            answer = run_sync(self._window_steps(ds, start, path), self.transport_sync.send)
        except Exception as exc:  # only a shortcut: the read itself reports what is wrong
            log.debug("no window of held files from %s: %s", self._local_endpoint, exc)
        self._learn_window(ds, start, answer)
        return self._cached_info(path)

    async def _local_info_async(self, path: str) -> dict[str, Any] | None:
        """:meth:`_local_info` for the I/O loop; concurrent reads (``cat_ranges``) that need the
        same window share one request."""
        due = self._window_start(path)
        if due is None:
            return None
        ds, _, start = due
        flight = self._held_flights.get((ds, start))
        if flight is None:
            flight = asyncio.get_running_loop().create_future()
            self._held_flights[(ds, start)] = flight
            answer: Any = None
            try:
                answer = await self._call(self._window_steps(ds, start, path))
            except Exception as exc:  # only a shortcut: the read itself reports what is wrong
                log.debug("no window of held files from %s: %s", self._local_endpoint, exc)
            finally:
                self._learn_window(ds, start, answer)
                del self._held_flights[(ds, start)]
                flight.set_result(None)
        else:
            await asyncio.shield(flight)
        return self._cached_info(path)

    def _last_known(self, path: str, exc: ConnectionError) -> dict[str, Any]:
        """The worker cannot be reached: the file's last known metadata however old, so its
        pages on this host stay readable (an edge node's worker restarting or crash-looping
        must not stop readers of data on the local disk); ``exc`` again when there is none."""
        hit = self._infos.get(path)
        if hit is None or self._local is None:
            raise exc
        if not self._offline_noted:
            self._offline_noted = True
            log.warning(
                "worker unreachable (%s): reading cached pages on this host with the last known "
                "metadata; reads of anything else fail until it is back",
                exc,
            )
        return _expand(path, hit)

    def _read_last_known(self, path: str, exc: ConnectionError) -> bytes:
        """A whole file from this host's pages at its last known version (worker unreachable)."""
        info = self._last_known(path, exc)
        data = self.read_local(path, info, 0, info["size"])
        if data is None:
            raise exc
        return data

    def _learned(self, ds: str, rel: str, answer: Answer) -> dict[str, Any]:
        """File metadata from a read's answer (the worker sends it with every file)."""
        entry = {
            "name": rel,
            "type": "file",
            "size": answer.size,
            "version": answer.version,
            "mtime": answer.mtime,
        }
        return self._remember(ds, entry)

    @staticmethod
    def _target(kind: str, ds: str, rel: str) -> str:
        return f"/v1/datasets/{quote(ds)}/{kind}/{quote(rel)}"

    async def _info(self, path: str, headers: bool = False, **kwargs: Any) -> dict[str, Any]:
        """``headers``: the answer carries the object's own HTTP metadata (Content-Type,
        ``x-amz-meta-*`` …) as ``headers`` when the origin has them (the S3 gateway asks)."""
        path = self._strip_protocol(path)
        if not path:
            return {"name": "", "type": "directory", "size": 0}
        cached = self._cached_info(path)
        if cached is not None and (not headers or "headers" in cached):
            return cached
        ds, rel = self._split(path)
        if ds in self._direct:
            return self._remember(ds, await self._direct[ds].info(rel))
        await self._ensure_node()
        # Ask the file's owner, as reads do: it holds the file's metadata, where another worker
        # of the pool would have to ask the origin across the WAN.
        target = self._target("info", ds, rel) + ("?headers=1" if headers else "")
        steps = json_steps(self.pool.targets(ds, rel), target, path, self.pool.mark_down)
        try:
            answer = await self._call(steps)
        except ConnectionError as exc:
            return self._last_known(path, exc)
        self._offline_noted = False
        return self._remember(ds, answer)

    async def _ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        ds, rel = self._split(path)
        if ds in self._direct:
            out = [self._remember(ds, e) for e in await self._direct[ds].ls(rel)]
            return out if detail else [e["name"] for e in out]
        await self._ensure_node()
        if not path:
            data = await self._call(json_steps([self.endpoint], "/v1/datasets", path, _ignore))
            out = [{"name": d["name"], "type": "directory", "size": 0} for d in data["datasets"]]
        else:
            steps = json_steps([self.endpoint], self._target("list", ds, rel), path, _ignore)
            try:
                data = await self._call(steps)
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
        folder_markers: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Every file below ``path``, asked of the worker a page at a time
        (:data:`FIND_PAGE` entries); ``folder_markers``: also the directories the origin holds
        a 0-byte ``dir/`` key for (entries of type ``directory`` with ``marker`` set; the S3
        gateway lists them as keys). ``maxdepth`` and ``withdirs`` walk the tree by ``ls``
        (fsspec's own find), one directory at a time."""
        path = self._strip_protocol(path)
        ds, _ = self._split(path)
        if not ds or maxdepth is not None or withdirs:
            return await super()._find(
                path, maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs
            )
        if detail:
            found: dict[str, dict[str, Any]] = {}
            async for page in self._find_pages(path, folder_markers=folder_markers, ahead=True):
                for e in page:
                    entry = self._remember(ds, e)
                    found[entry["name"]] = entry
            return {n: found[n] for n in sorted(found)}
        names: list[str] = []  # no dict per entry: a million names are a million names
        async for page in self._find_pages(path, folder_markers=folder_markers, ahead=True):
            names.extend(self._note(ds, e) for e in page)
        names.sort()
        return [n for i, n in enumerate(names) if not i or n != names[i - 1]]

    async def _find_pages(
        self,
        path: str,
        *,
        folder_markers: bool = False,
        size: int = 0,
        start_after: str = "",
        ahead: bool = False,
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """The entries of :meth:`find` of ``path`` (a file: itself) in pages of at most ``size``
        (:data:`FIND_PAGE`), named relative to the dataset as the worker sends them, those after
        the dataset path ``start_after`` only. A path that does not exist has no pages. ``path``
        names a dataset or something in one."""
        ds, rel = self._split(self._strip_protocol(path))
        keep = (lambda e: True) if folder_markers else (lambda e: e["type"] == "file")
        if ds in self._direct:  # read from the origin: listed whole there
            found = [e for e in await self._direct[ds].find(rel) if keep(e)]
            for start in range(0, len(found), size or FIND_PAGE):
                yield found[start : start + (size or FIND_PAGE)]
            return
        await self._ensure_node()
        try:
            info = await self._info(path)
        except FileNotFoundError:
            return
        if info["type"] == "file":
            if rel > start_after:
                yield [dict(info, name=rel)]
            return
        target = self._target("find", ds, rel)

        def ask(after: str) -> asyncio.Future[Any]:
            query = {"limit": str(size or FIND_PAGE)} | ({"start_after": after} if after else {})
            steps = json_steps([self.endpoint], f"{target}?{urlencode(query)}", path, _ignore)
            return asyncio.ensure_future(self._call(steps))

        # ``ahead`` (a caller that takes every page): the next page is asked for before this
        # one is handed on, so the worker reads and encodes it while the caller goes through
        # this one (at a million files the two took about as long, one after the other). A
        # caller that may stop early (iter_find, the S3 gateway's pages) asks page by page.
        after = start_after
        pending: asyncio.Future[Any] | None = ask(after)
        try:
            while pending is not None:
                data = await pending
                pending = None
                following = data.get("next")
                bad = bool(following) and following <= after
                if following and not bad and ahead:
                    pending = ask(following)
                yield [e for e in data["files"] if keep(e)]
                if following and not bad and pending is None:
                    pending = ask(following)
                if bad:
                    raise OSError(
                        errno.EIO,
                        f"worker {self.endpoint} answered a find page whose next cursor "
                        f"{following[:200]!r} does not follow {after[:200]!r}",
                        path,
                    )
                after = following or after
        finally:
            if pending is not None:
                pending.cancel()

    async def _named_pages(
        self, path: str, *, folder_markers: bool = False
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """:meth:`_find_pages` named as fsspec names them (``<dataset>/<path>``); the root
        (``""``) is every dataset's, one after the other."""
        path = self._strip_protocol(path)
        datasets = [path] if path else await self._ls("", detail=False)
        for where in datasets:
            ds, _ = self._split(where)
            async for page in self._find_pages(where, folder_markers=folder_markers):
                yield [self._named(ds, e) for e in page]

    async def _iter_find(
        self, path: str, *, folder_markers: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        """Async :meth:`iter_find`."""
        async for page in self._named_pages(path, folder_markers=folder_markers):
            for e in page:
                yield e

    def iter_find(self, path: str, *, folder_markers: bool = False) -> Iterator[dict[str, Any]]:
        """The info of every file below ``path``, in path order, a page of the worker's
        listing at a time: memory stays flat however many files there are (:meth:`find`
        returns them all at once). The entries are not kept in the client's metadata cache.
        From synchronous code (an ``asynchronous=True`` instance uses :meth:`_iter_find`)."""
        pages = self._named_pages(path, folder_markers=folder_markers)
        try:
            while True:
                try:
                    page = sync(self.loop, pages.__anext__)
                except StopAsyncIteration:
                    return
                yield from page
        finally:
            with contextlib.suppress(Exception):
                sync(self.loop, pages.aclose)

    @staticmethod
    def _named(ds: str, entry: dict[str, Any]) -> dict[str, Any]:
        """An entry as fsspec names it (``<dataset>/<path>``)."""
        out = dict(entry)
        out["name"] = f"{ds}/{entry['name']}" if entry["name"] else ds
        return out

    def modified(self, path: str) -> datetime:
        """Last modification time at the origin (UTC)."""
        info = self.info(path)
        if info["type"] != "file":
            raise IsADirectoryError(errno.EISDIR, "a directory has no modification time", path)
        if info.get("mtime") is None:
            raise OSError(errno.ENODATA, "the origin reports no modification time", path)
        return datetime.fromtimestamp(float(info["mtime"]), tz=UTC)

    # ---- data ------------------------------------------------------------------------------

    def read_local(
        self,
        path: str,
        info: dict[str, Any],
        start: int,
        end: int,
        opened: LocalFile | None = None,
    ) -> bytes | None:
        """``[start, end)`` of version ``info['version']`` from page files on this host, or None
        when any page is not there (then read it with :meth:`read_range`). ``opened``: the
        file's :meth:`local_file`, when an open file reads."""
        if self._local is None or info.get("type") != "file":
            return None
        if self._reporter is None or self._reporter_forks != fork_generation():
            self._hit_reporter()  # before the read: a forked child first drops inherited counts
        if opened is not None:
            return opened.read(start, end)
        ds, rel = self._split(path)
        return self._local.read(ds, rel, info["version"], info["size"], start, end)

    def local_file(self, path: str, info: dict[str, Any]) -> LocalFile | None:
        """Same-host reads of one open file (its extent kept open until it is closed), or None
        when this client has no fast path for it."""
        if self._local is None or info.get("type") != "file":
            return None
        ds, rel = self._split(path)
        return LocalFile(self._local, ds, rel, info["version"], info["size"])

    def read_range(self, path: str, info: dict[str, Any], start: int, end: int) -> bytes:
        """``[start, end)`` of version ``info['version']`` from the pool (blocking, pinned:
        :class:`~tidepool.core.errors.VersionGoneError` when that version is gone)."""
        if self._split(path)[0] in self._direct:
            return sync(self.loop, self._read_remote, path, info, start, end)  # type: ignore[no-any-return]
        self._ensure_node_sync()
        steps = self._read_steps(path, info, start, end)
        return self._settle(path, info, lambda: run_sync(steps, self.transport_sync.send))

    async def read_range_async(
        self, path: str, info: dict[str, Any], start: int, end: int
    ) -> bytes:
        """Async :meth:`read_local` then :meth:`read_range`: one pinned read of a version."""
        data = self.read_local(path, info, start, end)
        return data if data is not None else await self._read_remote(path, info, start, end)

    async def _read_remote(
        self, path: str, info: dict[str, Any] | None, start: int, end: int | None
    ) -> bytes:
        """Async :meth:`read_range`; ``info=None`` reads the whole file and learns its metadata."""
        ds, rel = self._split(path)
        if ds in self._direct:
            if info is None:
                info = await self._info(path)
                start, end = 0, info["size"]
            assert end is not None
            try:
                return await self._direct[ds].read(rel, info["version"], start, end)
            except VersionChangedError as exc:
                raise VersionGoneError(path, info["version"], str(exc)) from exc
        await self._ensure_node()
        await self.set_session()
        steps = self._read_steps(path, info, start, end)
        try:
            answer = await run_async(steps, self.transport_async.send)
        except VersionGoneError:
            self._infos.pop(path, None)
            raise
        if info is None:
            self._learned(ds, rel, answer)
        return answer.data

    def _read_steps(
        self, path: str, info: dict[str, Any] | None, start: int, end: int | None
    ) -> Steps[Answer]:
        ds, rel = self._split(path)
        whole = info is None or (start == 0 and end == info["size"])
        return read_steps(
            self.pool.targets(ds, rel, start),  # a large file's chunk is asked of its owner
            path,
            ds,
            rel,
            start,
            None if whole else end,
            None if info is None else info["version"],
            self.pool.mark_down,
        )

    def _settle(self, path: str, info: dict[str, Any] | None, read: Any) -> bytes:
        """Run a blocking read; forget metadata whose version turned out to be gone."""
        try:
            answer: Answer = read()
        except VersionGoneError:
            self._infos.pop(path, None)
            raise
        if info is None:
            ds, rel = self._split(path)
            self._learned(ds, rel, answer)
        return answer.data

    @staticmethod
    def _span(start: int | None, end: int | None, size: int) -> tuple[int, int]:
        s = 0 if start is None else (size + start if start < 0 else start)
        e = size if end is None else (size + end if end < 0 else end)
        return max(0, min(s, size)), max(0, min(e, size))

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        """Synchronous reads skip the I/O loop: cached pages on this host straight from disk,
        anything else over a keep-alive connection of the calling thread."""
        path = self._strip_protocol(path)
        ds, rel = self._split(path)
        if ds in self._direct:
            return sync(self.loop, self._cat_file, path, start, end)  # type: ignore[no-any-return]
        self._ensure_node_sync()
        info = self._cached_info(path) or self._local_info(path)
        if info is None:
            if start is None and end is None and rel:
                # a whole file whose metadata we don't hold: one request returns both (the
                # answer's headers carry size and version), instead of a stat and then a read
                steps = self._read_steps(path, None, 0, None)
                try:
                    return self._settle(
                        path, None, lambda: run_sync(steps, self.transport_sync.send)
                    )
                except ConnectionError as exc:
                    return self._read_last_known(path, exc)
            info = self.info(path)
        if info["type"] != "file":
            raise IsADirectoryError(errno.EISDIR, "is a directory", path)
        s, e = self._span(start, end, info["size"])
        if e <= s:
            return b""
        data = self.read_local(path, info, s, e)
        if data is not None:
            return data
        try:
            return self.read_range(path, info, s, e)
        except VersionGoneError:
            if start is not None or end is not None:
                raise
            # one call for a whole file is one request: the new version, whole, is the answer
            steps = self._read_steps(path, None, 0, None)
            return self._settle(path, None, lambda: run_sync(steps, self.transport_sync.send))

    async def _cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        path = self._strip_protocol(path)
        if self._cached_info(path) is None:
            await self._local_info_async(path)
        if start is None and end is None and "/" in path and self._cached_info(path) is None:
            try:
                return await self._read_remote(path, None, 0, None)
            except ConnectionError as exc:
                return self._read_last_known(path, exc)
        info = await self._info(path)
        if info["type"] != "file":
            raise IsADirectoryError(errno.EISDIR, "is a directory", path)
        s, e = self._span(start, end, info["size"])
        if e <= s:
            return b""
        data = self.read_local(path, info, s, e)
        if data is not None:
            return data
        try:
            return await self._read_remote(path, info, s, e)
        except VersionGoneError:
            if start is not None or end is not None:
                raise
            return await self._read_remote(path, None, 0, None)  # a whole file: the new one

    async def _cat_ranges(
        self,
        paths: list[str],
        starts: Any,
        ends: Any,
        max_gap: Any = None,
        on_error: str = "return",
        **kwargs: Any,
    ) -> list[Any]:
        import asyncio

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
        """Copy one file to the local disk a block at a time (what ``fs.get`` calls), every
        block of the version it started with."""
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
                stop = min(size, start + self.blocksize)
                data = self.read_local(rpath, info, start, stop)
                if data is None:
                    data = await self._read_remote(rpath, info, start, stop)
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

    # ---- hints -----------------------------------------------------------------------------

    def prefetch(self, paths: Iterable[str]) -> int:
        """Announce the files this program will read, in the order it will read them: each
        file's owner in the pool starts fetching them ahead (up to what its cache holds), and a
        read of a file not fetched yet still goes first. One request per owner (in parts of
        :data:`HINT_CHUNK`); unknown files are skipped by the workers. Returns how many paths the
        workers accepted. Hints never fail a program: a worker that cannot be reached is left
        out (and logged)."""
        self._ensure_node_sync()
        groups: dict[tuple[str, str], list[str]] = {}
        for path in paths:
            ds, rel = self._split(self._strip_protocol(path))
            if not rel or ds in self._direct:
                continue
            groups.setdefault((self.pool.targets(ds, rel)[0], ds), []).append(rel)
        accepted = 0
        for (base, ds), rels in groups.items():
            for lo in range(0, len(rels), HINT_CHUNK):
                try:
                    answer = self.admin.call(
                        f"/v1/datasets/{quote(ds)}/prefetch",
                        ds,
                        {"paths": rels[lo : lo + HINT_CHUNK]},
                        base=base,
                    )
                except OSError as exc:
                    log.info("prefetch hint to %s not delivered: %s", base, exc)
                    break
                accepted += int(answer.get("accepted", 0))
        return accepted

    # ---- same-host hit reports -------------------------------------------------------------

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
        self.admin.post_local_hits(self._local_endpoint, dataset, pages, nbytes)

    # ---- worker administration (used by the CLI) -------------------------------------------

    def datasets(self) -> list[str]:
        return self.admin.datasets()

    def status(self, dataset: str, refresh: bool = True) -> dict[str, Any]:
        return self.admin.status(dataset, refresh)

    def start_load(
        self, dataset: str, paths: list[str], concurrency: int | None = None
    ) -> dict[str, Any]:
        return self.admin.start_load(dataset, paths, concurrency)

    def load_progress(self, job_id: str) -> dict[str, Any]:
        return self.admin.load_progress(job_id)

    def refresh(self, path: str) -> dict[str, Any]:
        """Ask the worker to revalidate the metadata at and below ``DATASET[/PATH]`` now, and
        forget what this client remembered there."""
        path = self._strip_protocol(path)
        ds, rel = self._split(path)
        for name in [n for n in self._infos if n == path or n.startswith(path + "/")]:
            self._infos.pop(name, None)
        return self.admin.refresh(ds, rel)

    def metrics_text(self) -> str:
        return self.admin.metrics_text()

    def pool_status(self, datasets: list[str]) -> dict[str, Any]:
        return sync(self.loop, pool_status, self, datasets)  # type: ignore[no-any-return]

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


def _close_transport(loop: Any, transport: AsyncTransport) -> None:
    session = transport.session
    if session is None or session.closed:
        return
    if loop is not None and loop.is_running():
        with contextlib.suppress(Exception):
            sync(loop, transport.close, timeout=1.0)
            return
    connector = getattr(session, "_connector", None)
    if connector is not None:
        connector._close()


__all__ = ["BadRequestError", "TidepoolFile", "TidepoolFileSystem"]
