"""The S3 gateway: an aiohttp server that serves Tidepool datasets as read-only buckets.

Each request goes through the same steps: verify its SigV4 signature (:mod:`.sigv4`), parse it
into one operation (:mod:`.operations`), ask the fsspec client
(:class:`tidepool.client.TidepoolFileSystem` in async mode) for metadata or bytes, and answer
with headers from :mod:`.objects` and XML from :mod:`.xml`. Handlers only move bytes; every
decision lives in those pure modules.

Reads go through the client, so on the worker's host cached pages are read straight from disk and
a warm GetObject of a small file costs no request to the worker at all. A large GetObject is
streamed in ranges that start small (:data:`FIRST_CHUNK`: a cold object's first byte does not wait
for a whole chunk) and double up to ``chunk_size``, the next fetched while the current one is
sent, so a stream holds at most three chunks whatever the object's size; every stream reserves
that from one budget for the process (:class:`~tidepool.serving.MemoryBudget`), so clients that
ask and never read cannot grow it without bound (a stream that waits too long for room is a 503
``SlowDown``, sent before any byte). Errors are S3 ``<Error>`` documents with
the code from :mod:`.errors` (bodiless for HEAD); an error after the first byte of a stream can
only cut the connection, which clients see as a short read.

Listings with the ``/`` delimiter (``aws s3 ls``, s3fs ``ls``) are one directory listing, which
the worker caches for the dataset's metadata TTL. Recursive listings (no delimiter) read the
worker's paged ``find`` of the prefix's directory from the key they resume after, only as far as
the page needs (the worker lists the origin once per TTL): a listing of a million keys is never
in the gateway whole. The worker's pages are in path order, S3's in key order; they differ only
by folder markers (``dir/`` sorts after ``dir.txt``; held back until the pages pass it) and by
escaped names (:mod:`tidepool.core.keys`: their keys can sort anywhere). A listing that meets an
escaped name falls back to the whole ``find`` of the directory, whose later pages reuse it for
up to ``LISTING_TTL`` seconds.

Every client value is parsed before use (:mod:`.operations`: bounded query values, keys and
prefixes that cannot name anything outside the dataset; :mod:`.objects`: header overrides
without control characters); the listener runs under a :class:`~tidepool.serving.ServerLimits`
budget (connection cap, header/idle/stall timeouts). Error answers never carry the worker's
address or the origin's error text: those go to the log with the request id.

Keys and dataset paths map through :mod:`tidepool.core.keys`: listings show the origin's keys
(folder markers ``dir/`` included, escaped names decoded back), and every listed key can be read.

Limits: path-style addressing only; no virtual-host buckets, no writes, no multipart; the bucket
list comes from the worker and is remembered for ``BUCKETS_TTL`` seconds; an empty directory the
origin reports shows up as a common prefix (S3 would hide it).

Why this module is longer than ~400 lines: it is the S3 request dispatcher (one method per S3
operation the gateway answers) with its streaming; signatures, request parsing, listings, object
headers, errors and XML are in their own modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import ssl
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiohttp import web

from tidepool.client import TidepoolFileSystem
from tidepool.core import keys
from tidepool.core.errors import OriginBucketMissingError, redact
from tidepool.gateway import xml
from tidepool.gateway.errors import S3Error, s3_error
from tidepool.gateway.hosts import host_matcher
from tidepool.gateway.listing import Entry, Page, list_page, listable_root
from tidepool.gateway.objects import part_number, plan_get
from tidepool.gateway.operations import Operation, parse_request
from tidepool.gateway.sigv4 import verify
from tidepool.serving import (
    BudgetSite,
    ConnectionBudget,
    MemoryBudget,
    ServerLimits,
    busy_response,
)

__all__ = ["BUCKETS_TTL", "DEFAULT_CHUNK", "LISTING_TTL", "Gateway"]

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 8 << 20
FIRST_CHUNK = 256 << 10
"""A stream's first range: a cold object's first byte waits for this much, not a whole chunk;
each next range doubles up to the chunk size."""
BUCKETS_TTL = 5.0
MAX_FIND_PAGE = 10_000
"""Most entries the worker answers in one page of a find."""
LISTING_TTL = 30.0
_XML = "application/xml"
_BUSY = busy_response(
    xml.error_xml("SlowDown", "Please reduce your request rate.", "", "", {}), _XML
)


class Gateway:
    """An S3 endpoint in front of the Tidepool worker at ``endpoint``."""

    def __init__(
        self,
        endpoint: str,
        token: str | None,
        credentials: Mapping[str, str],
        host: str = "127.0.0.1",
        port: int = 9000,
        region: str = "us-east-1",
        *,
        chunk_size: int = DEFAULT_CHUNK,
        ssl_context: ssl.SSLContext | None = None,
        public_hosts: Sequence[str] = (),
        limits: ServerLimits | None = None,
    ) -> None:
        if not credentials:
            raise ValueError("the S3 gateway needs at least one access key and secret")
        self.endpoint = endpoint
        self.token = token
        self.credentials = dict(credentials)
        self.host = host
        self.port = port
        self.region = region
        self.chunk_size = chunk_size
        self.ssl_context = ssl_context
        """The listener's TLS context (None: plain HTTP)."""
        self.fs: TidepoolFileSystem | None = None
        self._runner: web.ServerRunner | None = None
        self._buckets: tuple[float, frozenset[str]] = (0.0, frozenset())
        self._snapshots: dict[tuple[str, str], tuple[float, list[Entry]]] = {}
        self._started = time.time()
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid():x}{int(self._started):x}".upper()
        self._secrets = tuple(self.credentials.values()) + ((token,) if token else ())
        self.public_hosts = tuple(public_hosts)
        """Host names clients reach the gateway by (checked against the signed Host)."""
        self.limits = limits or ServerLimits()
        self.budget = ConnectionBudget(self.limits, _BUSY)
        self.streams = MemoryBudget(
            self.limits.stream_memory_mib << 20, wait=self.limits.stall_timeout
        )
        """What streamed answers may hold at once (chunks waiting for their readers)."""
        self._host_ok = host_matcher(host, port, self.public_hosts)

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect the client and listen; ``port=0`` picks a free port (see :attr:`url`)."""
        self.fs = TidepoolFileSystem(
            self.endpoint, self.token, asynchronous=True, skip_instance_cache=True
        )
        await self.fs.set_session()
        server = web.Server(self.budget.wrap(self._handle), access_log=None)
        self._runner = web.ServerRunner(server, handle_signals=False, **self.limits.server_kwargs())
        await self._runner.setup()
        site = BudgetSite(
            self._runner,
            self.host,
            self.port,
            self.budget,
            backlog=256,
            ssl_context=self.ssl_context,
        )
        await site.start()
        self.port = site.bound_port or self.port
        self._host_ok = host_matcher(self.host, self.port, self.public_hosts)
        log.info("S3 gateway on %s in front of %s", self.url, self.endpoint)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.fs is not None:
            await self.fs.close_session()
        self.fs = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context is not None else 'http'}://{self.host}:{self.port}"

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- request funnel --------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        request_id = f"{self._prefix}{next(self._ids):08X}"
        raw_path, _, raw_query = request.raw_path.partition("?")
        op: Operation | None = None
        try:
            verify(
                request.method,
                raw_path,
                raw_query,
                list(request.headers.items()),
                time.time(),
                self.credentials.get,
                region=self.region,
                host_ok=self._host_ok,
            )
            op = parse_request(request.method, raw_path, raw_query)
            resp = await self._dispatch(op, request)
        except Exception as exc:
            err = s3_error(exc)
            if err.status >= 500 and err.code != "ServiceUnavailable":
                log.error(
                    "%s %s failed (request %s): %s",
                    request.method,
                    redact(raw_path[:1024], self._secrets),
                    request_id,
                    redact(repr(exc), self._secrets),
                    exc_info=not isinstance(exc, S3Error),
                )
            elif err.status >= 500:
                log.warning(
                    "%s %s unavailable (request %s): %s",
                    request.method,
                    redact(raw_path[:1024], self._secrets),
                    request_id,
                    redact(str(exc), self._secrets),
                )
            else:
                log.debug("%s %s -> %s %s", request.method, raw_path[:1024], err.status, err.code)
            resp = self._error(err, request.method, raw_path, request_id, op)
        if request.body_exists and not request.content.at_eof():
            # a refused write's body was never read: the connection cannot be reused
            resp.force_close()
        resp.headers["x-amz-request-id"] = request_id
        resp.headers["x-amz-id-2"] = request_id
        resp.headers["Server"] = "Tidepool"
        return resp

    def _error(
        self, err: S3Error, method: str, resource: str, request_id: str, op: Operation | None
    ) -> web.Response:
        headers = dict(err.headers)
        if method == "HEAD":
            return web.Response(status=err.status, headers=headers)
        extra = {}
        if err.code == "NoSuchKey" and op is not None:
            extra["Key"] = op.key
        if err.code == "NoSuchBucket" and op is not None:
            extra["BucketName"] = op.bucket
        body = xml.error_xml(err.code, err.message, resource, request_id, extra)
        return web.Response(status=err.status, body=body, content_type=_XML, headers=headers)

    async def _dispatch(self, op: Operation, request: web.BaseRequest) -> web.StreamResponse:
        if op.name == "ListBuckets":
            body = xml.list_buckets_xml(sorted(await self._bucket_names()), self._started)
            return web.Response(body=body, content_type=_XML)
        await self._check_bucket(op.bucket)
        if op.name == "HeadBucket":
            return web.Response(headers={"x-amz-bucket-region": self.region})
        if op.name == "GetBucketLocation":
            return web.Response(body=xml.location_xml(self.region), content_type=_XML)
        if op.name in ("ListObjectsV2", "ListObjects"):
            return await self._list(op)
        return await self._object(op, request)

    # ---- buckets and listings --------------------------------------------------------------

    def _client(self) -> TidepoolFileSystem:
        if self.fs is None:
            raise RuntimeError("the gateway is not started")
        return self.fs

    async def _bucket_names(self, refresh: bool = False) -> frozenset[str]:
        stamp, names = self._buckets
        if refresh or time.monotonic() - stamp > BUCKETS_TTL:
            entries = await self._client()._ls("", detail=True)
            names = frozenset(str(e["name"]) for e in entries)
            self._buckets = (time.monotonic(), names)
        return names

    async def _check_bucket(self, bucket: str) -> None:
        names = await self._bucket_names()
        if bucket not in names and time.monotonic() - self._buckets[0] > 1.0:
            names = await self._bucket_names(refresh=True)
        if bucket not in names:
            raise S3Error("NoSuchBucket", "The specified bucket does not exist.", 404)

    async def _list(self, op: Operation) -> web.Response:
        assert op.listing is not None
        params = op.listing
        root = listable_root(params.prefix)
        if root is None:  # no key of a dataset can start with this prefix
            body = xml.list_objects_xml(op.bucket, params, Page(), v2=op.name == "ListObjectsV2")
            return web.Response(body=body, content_type=_XML)
        if params.delimiter == "/":
            entries = await self._children(op.bucket, root)
        else:
            window = await self._files_window(
                op.bucket, root, params.prefix, params.after, params.max_keys + 1
            )
            entries = (
                window
                if window is not None
                else await self._files(op.bucket, root, resume=bool(params.after))
            )
        if root:  # the directory's own folder marker is a key under the prefix too
            marker = await self._marker(op.bucket, root)
            if marker is not None:
                entries = sorted([*entries, marker], key=lambda e: e.key)
        page = list_page(entries, params.prefix, params.delimiter, params.after, params.max_keys)
        body = xml.list_objects_xml(op.bucket, params, page, v2=op.name == "ListObjectsV2")
        return web.Response(body=body, content_type=_XML)

    async def _marker(self, bucket: str, root: str) -> Entry | None:
        """The folder-marker key ``root/`` when the origin holds one."""
        try:
            info = await self._client()._info(f"{bucket}/{root}")
        except (FileNotFoundError, NotADirectoryError):
            return None
        if info.get("type") != "directory" or not info.get("marker"):
            return None
        return Entry(keys.marker_key(root), 0, str(info["version"]), info.get("mtime"))

    async def _children(self, bucket: str, root: str) -> list[Entry]:
        """Direct children of ``root``; a directory is the key ``dir/``, which the ``/``
        delimiter rolls up into its common prefix. The worker caches listings for the TTL."""
        where = f"{bucket}/{root}" if root else bucket
        try:
            found = await self._client()._ls(where, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return _entries(bucket, found, dirs=True)

    async def _files_window(
        self, bucket: str, root: str, prefix: str, after: str, want: int
    ) -> list[Entry] | None:
        """At most ``want`` keys below ``root`` (files and folder markers) that follow ``after``
        and start with ``prefix``, in key order, read from the worker's paged find only as far as
        they need; None when the pages hold an escaped name (then only a whole listing can put
        its key in order)."""
        held: list[tuple[str, int, Entry]] = []  # keys not yet known to be the smallest left
        out: list[Entry] = []
        order = itertools.count()
        where = f"{bucket}/{root}" if root else bucket
        size = min(max(want + 16, 64), MAX_FIND_PAGE)
        start = _path_before(max(after, prefix))
        last = start
        async for page in self._client()._find_pages(
            where, folder_markers=True, size=size, start_after=start
        ):
            for info in page:
                rel = str(info["name"])
                if keys.is_escaped(rel.rpartition("/")[2]):
                    return None
                entry = _entry(info, rel)
                if entry is not None and entry.key > after and entry.key.startswith(prefix):
                    heapq.heappush(held, (entry.key, next(order), entry))
                last = rel
            # every later path is past ``last``, and a key never sorts before its path
            while held and held[0][0] <= last:
                out.append(heapq.heappop(held)[2])
                if len(out) >= want:
                    return out
            if last > prefix and not last.startswith(prefix):
                break  # past every key with the prefix
        while held and len(out) < want:
            out.append(heapq.heappop(held)[2])
        return out

    async def _files(self, bucket: str, root: str, *, resume: bool) -> list[Entry]:
        """Every file below ``root``. The worker lists the origin on every ``find``, so the
        later pages of one listing (``resume``) reuse a snapshot up to ``LISTING_TTL`` old."""
        now = time.monotonic()
        hit = self._snapshots.get((bucket, root))
        if resume and hit is not None and now - hit[0] < LISTING_TTL:
            return hit[1]
        where = f"{bucket}/{root}" if root else bucket
        found = await self._client()._find(where, detail=True, folder_markers=True)
        entries = _entries(bucket, found.values(), dirs=False)
        self._snapshots[(bucket, root)] = (now, entries)
        for stale in [k for k, v in self._snapshots.items() if now - v[0] >= LISTING_TTL]:
            del self._snapshots[stale]
        return entries

    # ---- objects ---------------------------------------------------------------------------

    async def _object(self, op: Operation, request: web.BaseRequest) -> web.StreamResponse:
        fs = self._client()
        path, info = await self._lookup(op.bucket, op.key)
        headers = {k.lower(): v for k, v in request.headers.items()}
        query = op.query if op.name == "GetObject" else None
        plan = plan_get(info, op.key, headers, query, part_number(op.query))
        if plan.status == 304:
            out = {k: v for k, v in plan.headers.items() if k != "Content-Length"}
            return web.Response(status=304, headers=out)
        if op.name == "HeadObject":
            return web.Response(status=plan.status, headers=plan.headers)
        body_headers = {k: v for k, v in plan.headers.items() if k != "Content-Length"}
        length = plan.end - plan.start
        if length <= self.chunk_size:
            data = await fs.read_range_async(path, info, plan.start, plan.end) if length else b""
            _check_length(path, data, length)
            return web.Response(status=plan.status, body=data, headers=body_headers)
        # a stream holds the chunk being sent, the one fetched ahead and one in the transport
        async with self.streams.reserve(min(length, 3 * self.chunk_size)):
            return await self._stream(
                request, path, info, plan.status, plan.start, plan.end, body_headers
            )

    async def _lookup(self, bucket: str, key: str) -> tuple[str, dict[str, Any]]:
        """The dataset path and metadata of the object ``key`` names (:mod:`tidepool.core.keys`):
        a file, or a directory's folder marker (a 0-byte object); else ``NoSuchKey``."""
        fs = self._client()
        marker = keys.place(key, 0)
        if marker.kind == "marker":
            with contextlib.suppress(_NotThere):
                info = await _info_or_absent(fs, f"{bucket}/{marker.path}", headers=False)
                if info.get("type") == "directory" and info.get("marker"):
                    return f"{bucket}/{marker.path}", {
                        "name": info["name"],
                        "type": "file",
                        "size": 0,
                        "version": info["version"],
                        "mtime": info.get("mtime"),
                    }
        path = keys.place(key, 1).path
        tries = [path] if keys.is_escaped(path.rpartition("/")[2]) else [path, keys.escaped(path)]
        for rel in tries:  # a plain name that is a directory: the object took the escaped name
            try:
                info = await _info_or_absent(fs, f"{bucket}/{rel}", headers=True)
            except _NotThere:
                break
            if info.get("type") == "file":
                return f"{bucket}/{rel}", info
        raise S3Error("NoSuchKey", "The specified key does not exist.", 404)

    async def _stream(
        self,
        request: web.BaseRequest,
        path: str,
        info: dict[str, Any],
        status: int,
        start: int,
        end: int,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        fs = self._client()
        step = min(FIRST_CHUNK, self.chunk_size)

        async def chunk(pos: int) -> bytes:
            nonlocal step
            stop = min(end, pos + step)
            step = min(self.chunk_size, step * 2)  # small first (its first byte comes soon)
            data: bytes = await fs.read_range_async(path, info, pos, stop)
            _check_length(path, data, stop - pos)
            return data

        first = await chunk(start)  # errors before the first byte get a proper S3 error
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = end - start
        await resp.prepare(request)
        pos = start + len(first)
        ahead = asyncio.ensure_future(chunk(pos)) if pos < end else None
        try:
            await resp.write(first)
            del first
            while ahead is not None:
                data = await ahead
                pos += len(data)
                ahead = asyncio.ensure_future(chunk(pos)) if pos < end else None
                await resp.write(data)
        except Exception as exc:
            if ahead is not None:
                ahead.cancel()
            # The status line is gone: the only honest signal left is a cut connection, so the
            # client sees a short body at once (and retries) instead of waiting for the rest.
            log.warning(
                "GET %s failed at byte %d of %d after its headers were sent: %s; "
                "closing the connection",
                redact(path, self._secrets),
                pos - start,
                end - start,
                redact(str(exc), self._secrets),
            )
            if request.transport is not None:
                request.transport.abort()
            return resp
        except BaseException:
            if ahead is not None:
                ahead.cancel()
            raise
        await resp.write_eof()
        return resp


def _entry(info: dict[str, Any], rel: str) -> Entry | None:
    """The key of a find's entry (a file, or a folder marker ``dir/``), None for others."""
    if info.get("type") == "file":
        return Entry(keys.to_key(rel), int(info["size"]), str(info["version"]), info.get("mtime"))
    if info.get("marker"):
        return Entry(keys.marker_key(rel), 0, str(info["version"]), info.get("mtime"))
    return None


def _path_before(low: str) -> str:
    """A dataset path before every file or folder marker whose key is ``low`` or later (plain
    names: a file's key is its path, a marker's is its path and ``/``). A marker ``p/`` follows
    ``low`` when ``p`` is ``low`` cut before a character that sorts before ``/`` (``a/b`` for
    ``a/b.txt``); the shortest such cut, less its last character, comes before all of them. Cut
    again before any segment no path can spell (``x//y``, ``..``): a shorter path is earlier."""
    cuts = [i for i, ch in enumerate(low) if ch < "/" and i > 0]
    if low.endswith("/"):
        cuts.append(len(low) - 1)
    first = low[: min(cuts)] if cuts else low
    segments = first[:-1].split("/")
    plain = 0
    while plain < len(segments) and keys.is_plain(segments[plain]):
        plain += 1
    return "/".join(segments[:plain])


def _entries(bucket: str, found: Iterable[dict[str, Any]], *, dirs: bool) -> list[Entry]:
    cut = len(bucket) + 1
    out = []
    for info in found:
        name = str(info["name"])
        if not name.startswith(bucket + "/"):
            continue
        rel = name[cut:]
        if info.get("type") == "file":
            key = keys.to_key(rel)
            out.append(Entry(key, int(info["size"]), str(info["version"]), info.get("mtime")))
        elif dirs:
            out.append(Entry(keys.marker_key(rel), 0, "", None))
        elif info.get("marker"):  # a folder marker: the 0-byte key ``dir/``
            out.append(Entry(keys.marker_key(rel), 0, str(info["version"]), info.get("mtime")))
    out.sort(key=lambda e: e.key)
    return out


class _NotThere(Exception):
    """No object or directory at a path (the bucket itself exists)."""


async def _info_or_absent(fs: TidepoolFileSystem, path: str, *, headers: bool) -> dict[str, Any]:
    try:
        info: dict[str, Any] = await fs._info(path, headers=headers)
    except OriginBucketMissingError:
        raise  # NoSuchBucket, not NoSuchKey
    except (FileNotFoundError, NotADirectoryError):
        raise _NotThere(path) from None
    return info


def _check_length(path: str, data: bytes, expected: int) -> None:
    if len(data) != expected:
        raise OSError(f"read of {path} returned {len(data)} bytes, expected {expected}")
