"""The worker's HTTP API (aiohttp): a thin layer that parses requests and moves bytes.

Routes (all JSON unless noted; a bearer token guards everything but ``/healthz`` when set)::

    GET  /healthz                              liveness
    GET  /metrics                              Prometheus text
    GET  /v1/node                              host identity + tier paths (client fast path)
    GET  /v1/datasets                          datasets served here
    GET  /v1/datasets/{ds}/status              Fluid-style cacheStates
    GET  /v1/datasets/{ds}/info/{path}         stat (file or directory)
    GET  /v1/datasets/{ds}/list/{path}         direct children
    GET  /v1/datasets/{ds}/find/{path}         every file below path, in path order; paged
                                               with ?limit=N&start_after=P ("next": the
                                               cursor of the following page)
    GET  /v1/datasets/{ds}/files/{path}        bytes (Range -> 206/416); HEAD: headers only
    POST /v1/datasets/{ds}/load                start a warm-up job {"paths": [...]}
    POST /v1/datasets/{ds}/refresh/{path}      drop the metadata at and below path, ask again
    POST /v1/datasets/{ds}/prefetch            the files a program will read, in its order
                                               {"paths": [...]} (prefetch hints)
    POST /v1/datasets/{ds}/local-hits          pages a same-host client read from our pages
                                               itself {"pages": n, "bytes": n} (hit counters)
    GET  /v1/datasets/{ds}/held                pool peers only: what this worker holds cached
                                               that ?member= owns (paged: limit, start_after;
                                               :mod:`tidepool.worker.rebalance`)
    GET  /v1/datasets/{ds}/cached              files held whole here with fresh metadata, from
                                               ?start_at=P (at most ?limit=N; "through": the
                                               last path covered): same-host clients
    GET  /v1/loads/{id}                        progress of a warm-up job
    GET  /, /v1/history, /v1/loads, /v1/pool   the dashboard and its views (worker.dashboard)

Errors are ``{"error": code, "message": text, "dataset", "path", "request_id"}`` with the status
from the one table in :mod:`tidepool.core.errors` (named origin errors add ``bucket``,
``endpoint`` and ``key_id``); every answer carries ``X-Request-Id`` and every failed request is
logged as one line (:mod:`tidepool.worker.requestlog`).

Pool peers authenticate with their own credential, not the clients' token: a request that carries
``X-Tidepool-Peer`` (a peer read is answered without forwarding, caching or counting) is served
only with ``Authorization: Bearer <peer token>``, and answered 403 otherwise — also by a worker
that has no peer token, which therefore serves no peer requests at all.

Every query parameter, header and body a handler uses is parsed and bounded by
:mod:`tidepool.worker.requests` first (a bad value is a 400 naming it); load jobs live in a
bounded :class:`~tidepool.worker.loads.LoadTable`. Without a token (loopback only), the routes
that change state (``load``, ``local-hits``) answer only the worker's own user and root
(:mod:`tidepool.worker.localuser`); reads stay open to local users.

Why this module is longer than ~400 lines: it is the worker's whole HTTP surface (routes,
middlewares for errors, auth and parsing, and the read handler with its streaming, ``sendfile``
and memory-budget paths); request models live in :mod:`tidepool.worker.requests` and the
decisions of a read in :mod:`tidepool.worker.dataset`, so what is left is one route table.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tidepool.core import jsoncodec
from tidepool.core.conditions import parse_if_match
from tidepool.core.errors import (
    AuthError,
    BadRequestError,
    ForbiddenError,
    NotCachedError,
    PeerAuthError,
    UnknownDatasetError,
    VersionGoneError,
    error_details,
    http_status,
    redact,
)
from tidepool.core.fileinfo import FileInfo
from tidepool.core.inputs import bad_value
from tidepool.core.ranges import content_range, parse_range
from tidepool.serving import ConnectionBudget, MemoryBudget
from tidepool.serving.sendfile import SendStalled, raw_socket
from tidepool.worker import requests
from tidepool.worker.dashboard import DashboardRoutes
from tidepool.worker.dataset import DatasetService, ReadPlan
from tidepool.worker.held import cached_window, held_page
from tidepool.worker.loads import LoadJob, LoadTable
from tidepool.worker.metrics import WorkerMetrics
from tidepool.worker.placement import CHUNK_HEADER, PEER_HEADER, SOURCE_HEADER
from tidepool.worker.reads import Chunk
from tidepool.worker.refresh import refresh_path
from tidepool.worker.requestlog import REQUEST_ID_HEADER, log_failure, request_id
from tidepool.worker.status import dataset_status

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LocalUserCheck = Callable[[web.BaseRequest], bool]
"""True when the connection comes from a user allowed to change state without a token."""
REQUEST_ID = web.RequestKey("request_id", str)

MUTATING_ROUTES = frozenset({"/v1/datasets/{ds}/load", "/v1/datasets/{ds}/local-hits"})
"""Routes that change the worker's state (start jobs, move counters)."""


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=jsoncodec.dumpb(data),
        status=status,
        content_type="application/json",
    )


def error_response(
    exc: BaseException, dataset: str = "", path: str = "", rid: str = ""
) -> web.Response:
    status, code = http_status(exc)
    if status == 500:
        message = f"internal error: {type(exc).__name__}: {exc}"
    elif isinstance(exc, OSError) and exc.strerror:
        message = exc.strerror  # the client adds errno and path back; don't repeat them
    else:
        message = str(exc)
    body = {"error": code, "message": redact(message), "dataset": dataset, "path": path}
    body.update(error_details(exc))
    if rid:
        body["request_id"] = rid
    resp = _json(body, status)
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="tidepool"'
    return resp


_RANGE_START = re.compile(r"bytes=([0-9]{1,19})-")


def _range_start(header: str | None) -> int:
    """Where a ``Range`` starts, read before the file's size is known (0 when unsure; the
    header is parsed properly once the size is)."""
    m = _RANGE_START.match(header or "")
    return int(m.group(1)) if m else 0


class WorkerApp:
    """Routes bound to the worker's datasets; owns no state beyond the job table."""

    def __init__(
        self,
        services: dict[str, DatasetService],
        metrics: WorkerMetrics,
        *,
        token: str | None,
        node_info: Callable[[], dict[str, Any]],
        load_concurrency: int = 32,
        ready: Callable[[], bool] = lambda: True,
        peer_token: str | None = None,
        local_user: LocalUserCheck | None = None,
        loads: LoadTable | None = None,
        dashboard: DashboardRoutes | None = None,
        streams: MemoryBudget | None = None,
        stall_timeout: float = 60.0,
        chunk_size: int = 0,
    ) -> None:
        self.services = services
        self.chunk_size = chunk_size
        """Bytes of a file placed together in the pool: a peer must use the same."""
        self._chunk_warned: set[str] = set()
        self.metrics = metrics
        self.token = token
        self.peer_token = peer_token
        """The pool peers' credential (None: requests that claim to be a peer's are refused)."""
        self.node_info = node_info
        self.load_concurrency = load_concurrency
        self.ready = ready
        """False while the worker is still joining its pool: /healthz answers 503, so no
        readiness probe (nor Service endpoint) sends reads to it before it knows the owners."""
        self.local_user = local_user
        """Who may use the mutating routes when there is no token (None: anyone)."""
        self.loads = loads or LoadTable()
        self.dashboard = dashboard
        """The page at ``/`` and its read-only views; it may let a browser's login cookie
        through to those views (see :mod:`tidepool.worker.dashboard.session`)."""
        self.streams = streams or MemoryBudget(512 << 20, wait=60.0)
        """What streamed answers may hold at once (read windows waiting for their readers)."""
        self._request_counters: dict[tuple[str, int], Any] = {}
        self.stall_timeout = stall_timeout
        """Seconds a sendfile answer may wait for its reader to take a byte."""
        self._budget: ConnectionBudget | None = None

    def build(self, budget: ConnectionBudget | None = None) -> web.Application:
        """The aiohttp application; ``budget`` (the listener's) marks requests in progress."""
        self._budget = budget
        outer = [budget.middleware] if budget is not None else []
        app = web.Application(
            middlewares=[*outer, self._errors, self._auth, self._parse], client_max_size=1 << 20
        )
        app.on_cleanup.append(self._close_loads)
        app.on_response_prepare.append(self._echo_request_id)
        r = app.router
        r.add_get("/healthz", self.healthz)
        r.add_get("/metrics", self.metrics_text)
        r.add_get("/v1/node", self.node)
        r.add_get("/v1/datasets", self.datasets)
        r.add_get("/v1/datasets/{ds}/status", self.status)
        r.add_get("/v1/datasets/{ds}/info/{path:.*}", self.info)
        r.add_get("/v1/datasets/{ds}/list/{path:.*}", self.list)
        r.add_get("/v1/datasets/{ds}/find/{path:.*}", self.find)
        r.add_route("GET", "/v1/datasets/{ds}/files/{path:.*}", self.file)
        r.add_route("HEAD", "/v1/datasets/{ds}/files/{path:.*}", self.file)
        r.add_post("/v1/datasets/{ds}/load", self.load)
        r.add_post("/v1/datasets/{ds}/refresh/{path:.*}", self.refresh)
        r.add_post("/v1/datasets/{ds}/local-hits", self.local_hits)
        r.add_post("/v1/datasets/{ds}/prefetch", self.prefetch)
        r.add_get("/v1/datasets/{ds}/held", self.held)
        r.add_get("/v1/datasets/{ds}/cached", self.cached)
        r.add_get("/v1/loads/{id}", self.load_status)
        if self.dashboard is not None:
            self.dashboard.register(r, self.loads.jobs)
        return app

    async def _close_loads(self, app: web.Application) -> None:
        await self.loads.close()

    # ---- middleware ------------------------------------------------------------------------

    @staticmethod
    async def _echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
        response.headers[REQUEST_ID_HEADER] = request.get(REQUEST_ID) or request_id(None)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request[REQUEST_ID] = request_id(request.headers.get(REQUEST_ID_HEADER))
        route = _route(request)
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            self._count(route, exc.status)
            raise
        except Exception as exc:
            resp = self._error_answer(request, exc)
        self._count(route, resp.status)
        return resp

    def _count(self, route: str, status: int) -> None:
        child = self._request_counters.get((route, status))
        if child is None:
            child = self.metrics.requests.labels(route, str(status))
            self._request_counters[(route, status)] = child
        child.inc()

    def _error_answer(self, request: web.Request, exc: Exception) -> web.Response:
        # echoed in the error body: bounded like any value a client sent
        ds = request.match_info.get("ds", "")[:256]
        path = request.match_info.get("path", "")[:1024]
        rid = request.get(REQUEST_ID, "")
        log_failure(log, rid, request.method, ds, path, exc)
        return error_response(exc, ds, path, rid)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if PEER_HEADER in request.headers:
            self._check_peer(request)
            return await handler(request)
        if self.token is not None and request.path != "/healthz":
            header = request.headers.get("Authorization", "")
            scheme, _, given = header.partition(" ")
            if (
                scheme.lower() != "bearer"
                or not hmac.compare_digest(
                    given.strip().encode("utf-8", "surrogateescape"), self.token.encode()
                )
            ) and not (self.dashboard is not None and self.dashboard.allows(request)):
                raise AuthError(
                    "missing or wrong bearer token (send 'Authorization: Bearer <token>'; "
                    "the CLI and the fsspec client read it from TIDEPOOL_TOKEN or "
                    "--token-file)"
                )
        elif (
            self.token is None
            and self.local_user is not None
            and _route(request) in MUTATING_ROUTES
            and not self.local_user(request)
        ):
            raise ForbiddenError(
                "this worker has no token, so only its own user (and root) may start loads "
                "or report hits; give the worker a token (--token-file or TIDEPOOL_TOKEN) to "
                "let others in with it"
            )
        return await handler(request)

    @web.middleware
    async def _parse(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Nothing reaches a handler unparsed: the query is checked against the route's model."""
        requests.check_query(request, _route(request))
        return await handler(request)

    def _check_peer(self, request: web.Request) -> None:
        """A request that claims to be a pool peer's must carry the peer credential."""
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if (
            self.peer_token is None
            or scheme.lower() != "bearer"
            or not hmac.compare_digest(
                given.strip().encode("utf-8", "surrogateescape"), self.peer_token.encode()
            )
        ):
            raise PeerAuthError(
                f"{PEER_HEADER} requests are for the workers of this node pool and need the "
                "pool's peer credential (TIDEPOOL_PEER_TOKEN or --peer-token-file on every "
                "worker); clients read without that header"
            )
        theirs = request.headers.get(CHUNK_HEADER)
        if theirs is not None and theirs != str(self.chunk_size):
            peer = request.headers.get(PEER_HEADER, "?")[:64]
            message = (
                f"peer {peer!r} places large files by chunks of {theirs[:24]!r} bytes but this "
                f"worker by {self.chunk_size}: give every member of the pool the same "
                "--chunk-size (TIDEPOOL_CHUNK_SIZE)"
            )
            if peer not in self._chunk_warned and len(self._chunk_warned) < 64:
                self._chunk_warned.add(peer)  # once per peer: it is a set-up mistake
                log.warning("%s", message)
            raise PeerAuthError(message)

    def _svc(self, request: web.Request) -> DatasetService:
        name = requests.dataset_name(request)
        svc = self.services.get(name)
        if svc is None:
            raise UnknownDatasetError(name, list(self.services))
        return svc

    # ---- simple routes ---------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        # no dataset names here: /healthz answers without the token
        if not self.ready():
            return _json({"status": "starting"}, status=503)
        return _json({"status": "ok"})

    async def metrics_text(self, request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(self.metrics.registry))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    async def node(self, request: web.Request) -> web.Response:
        return _json(self.node_info())

    async def datasets(self, request: web.Request) -> web.Response:
        return _json(
            {
                "datasets": [
                    {"name": n, "mounts": [m.url for m in s.cfg.mounts]}
                    for n, s in sorted(self.services.items())
                ]
            }
        )

    async def status(self, request: web.Request) -> web.Response:
        svc = self._svc(request)
        query = requests.query(request, requests.StatusQuery)
        return _json(await dataset_status(svc, refresh=query.refresh))

    async def info(self, request: web.Request) -> web.Response:
        svc = self._svc(request)
        from_peer = PEER_HEADER in request.headers
        full = requests.query(request, requests.InfoQuery).headers
        return _json(await svc.stat(requests.rel_path(request), from_peer=from_peer, full=full))

    async def list(self, request: web.Request) -> web.Response:
        svc = self._svc(request)
        entries = await svc.ls(requests.rel_path(request), from_peer=PEER_HEADER in request.headers)
        return _json({"entries": entries})

    async def find(self, request: web.Request) -> web.Response:
        svc = self._svc(request)
        rel = requests.rel_path(request)
        query = requests.query(request, requests.FindQuery)
        from_peer = PEER_HEADER in request.headers
        if query.limit is None and query.start_after is None:
            return _json({"files": await _whole_find(svc, rel, from_peer)})
        page = await svc.find_page(
            rel,
            start_after=query.start_after or "",
            limit=query.limit or requests.MAX_FIND_LIMIT,
            from_peer=from_peer,
        )
        body: dict[str, Any] = {"files": page.files}
        if page.next is not None:
            body["next"] = page.next
        return _json(body)

    async def cached(self, request: web.Request) -> web.Response:
        """A window of the files this worker holds whole, with fresh metadata (see
        :func:`~tidepool.worker.held.cached_window`): a client on this host reads them from the
        page files without asking for each."""
        svc = self._svc(request)
        q = requests.query(request, requests.CachedQuery)
        return _json(await asyncio.to_thread(cached_window, svc, q.start_at, q.limit))

    async def held(self, request: web.Request) -> web.Response:
        """One page of the files this worker holds that a member owns now (its rebalance)."""
        if PEER_HEADER not in request.headers:  # with it, _auth checked the peer credential
            raise PeerAuthError(
                "the held-files listing is for the workers of this node pool (they send "
                f"{PEER_HEADER} and the pool's peer credential); clients list with /find"
            )
        svc = self._svc(request)
        q = requests.query(request, requests.HeldQuery)
        members = sorted(m.name for m in svc.placement.members()) if svc.placement else []
        if q.member not in members:
            valid = (
                f"a member of this pool ({', '.join(members[:20])})"
                if members
                else ("nothing: this worker is in no pool")
            )
            raise bad_value("query parameter member", q.member, valid)
        return _json(await asyncio.to_thread(held_page, svc, q.member, q.start_after, q.limit))

    # ---- data ------------------------------------------------------------------------------

    async def file(self, request: web.Request) -> web.StreamResponse:
        svc = self._svc(request)
        t0 = time.perf_counter()
        rel = requests.rel_path(request)
        range_header = requests.range_header(request)
        pinned = parse_if_match(request.headers.get("If-Match"))
        if request.method == "HEAD":
            info = await svc.stat(rel)
            if info["type"] != "file":
                raise IsADirectoryError(21, f"{rel!r} is a directory; list it instead", rel)
            if pinned is not None and pinned != info["version"]:
                raise VersionGoneError(rel, pinned)
            span = parse_range(range_header, info["size"])
            start, end = span if span is not None else (0, info["size"])
            headers = self._headers(info, start, end, partial=span is not None)
            return web.Response(status=206 if span is not None else 200, headers=headers)
        from_peer = PEER_HEADER in request.headers
        cached_only = from_peer and "only-if-cached" in request.headers.get("Cache-Control", "")
        plan = await svc.open_read(
            rel,
            pinned,
            from_peer=from_peer,
            cached_only=cached_only,
            start=_range_start(range_header),
        )
        info = plan.info
        size = info["size"]
        span = parse_range(range_header, size)
        start, end = span if span is not None else (0, size)
        if cached_only and not svc.reader.holds(info, start, end):
            raise NotCachedError(rel)
        headers = self._headers(info, start, end, partial=span is not None)
        status = 206 if span is not None else 200
        counted = not from_peer  # the asking worker counts the read (as a remote hit)
        if from_peer:
            cached = plan.first is None and svc.reader.holds(info, start, end)
            headers[SOURCE_HEADER] = "cache" if cached else "origin"
        resp: web.StreamResponse
        if end - start <= svc.page_size:
            body = await svc.read_all(plan, start, end, counted=counted)
            resp = web.Response(status=status, body=body, headers=headers)
        else:
            if plan.first is None and svc.reader.stored(info, start, end):
                # warm: sent from the page files with sendfile, holding no memory here
                resp = await self._stream(
                    request, svc, rel, plan, start, end, status, headers, counted, zero_copy=True
                )
            else:
                # A stream holds its read window (fetched ahead of the socket) and the chunk in the
                # transport until its reader takes them: reserve that before the first page is read.
                pages = -(-(end - start) // svc.page_size) + 1
                hold = min(pages, svc.reader.fetch_window + 2) * svc.page_size
                async with self.streams.reserve(hold):
                    resp = await self._stream(
                        request, svc, rel, plan, start, end, status, headers, counted
                    )
        self.metrics.read_seconds.labels(svc.name).observe(time.perf_counter() - t0)
        return resp

    async def _stream(
        self,
        request: web.Request,
        svc: DatasetService,
        rel: str,
        plan: ReadPlan,
        start: int,
        end: int,
        status: int,
        headers: dict[str, str],
        counted: bool,
        *,
        zero_copy: bool = False,
    ) -> web.StreamResponse:
        """Send ``[start, end)`` page by page as the reader takes it; with ``zero_copy`` (every
        page in the store) straight from the page files with ``sendfile`` when the connection
        allows it (plain TCP), reading the rest the ordinary way if a page left the store."""
        sresp = web.StreamResponse(status=status, headers=headers)
        chunks: AsyncGenerator[Chunk, None] | None = None
        first: Chunk | None = None
        sock_fd = None
        if zero_copy:
            await sresp.prepare(request)
            sock_fd = raw_socket(request.transport)  # after the headers: nothing queued
        else:
            chunks = svc.read(plan, start, end, counted=counted)
            first = await anext(chunks, None)  # errors before the first byte: a clean status
            await sresp.prepare(request)
        try:
            pos = start
            if sock_fd is not None:
                pos = await svc.send_stored(
                    plan, start, end, sock_fd, idle_timeout=self.stall_timeout, counted=counted
                )
            if chunks is None and pos < end:  # no sendfile here, or a page left the store
                chunks = svc.read(plan, pos, end, counted=counted)
                first = await anext(chunks, None)
            if first is not None:
                await sresp.write(first)
            if chunks is not None:
                async for chunk in chunks:
                    await sresp.write(chunk)
        except Exception as exc:
            # The status line is gone: the only honest signal left is a cut connection, so
            # the reader sees a short body (and retries) instead of waiting for bytes that
            # will never come or reading an error document as file data.
            if isinstance(exc, SendStalled) and self._budget is not None:
                self._budget.stalled += 1  # the listener's watchdog sees no queued bytes
            log.warning(
                "read of %s/%s failed after its headers were sent: %s; closing the connection",
                svc.name,
                rel,
                redact(str(exc)),
            )
            if request.transport is not None:
                request.transport.abort()
            return sresp
        finally:
            if chunks is not None:
                await chunks.aclose()
        await sresp.write_eof()
        return sresp

    @staticmethod
    def _headers(info: FileInfo, start: int, end: int, *, partial: bool) -> dict[str, str]:
        h = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "ETag": f'"{info["version"]}"',
            "X-Tidepool-Size": str(info["size"]),
            "X-Tidepool-Version": info["version"],
            "Content-Length": str(end - start),
        }
        if info.get("mtime") is not None:
            h["X-Tidepool-Mtime"] = repr(info["mtime"])
        if partial:
            h["Content-Range"] = content_range(start, end, info["size"])
        return h

    # ---- load jobs -------------------------------------------------------------------------

    async def load(self, request: web.Request) -> web.Response:
        svc = self._svc(request)
        body = await requests.load_request(request)
        job = LoadJob(svc, list(body.paths), concurrency=body.concurrency or self.load_concurrency)
        self.loads.start(job)
        return _json(job.progress.as_dict(), 202)

    async def refresh(self, request: web.Request) -> web.Response:
        svc = self._svc(request)
        return _json(await refresh_path(svc, request.match_info["path"]))

    async def prefetch(self, request: web.Request) -> web.Response:
        svc = self._svc(request)
        body = await requests.prefetch_request(request)
        accepted = svc.prefetch.hint(body.paths)
        return _json({"accepted": accepted, "queued": svc.prefetch.queued()}, 202)

    async def local_hits(self, request: web.Request) -> web.Response:
        svc = self._svc(request)
        hits = await requests.local_hits(request, svc.page_size)
        svc.count_local_hits(hits.pages, hits.bytes)
        return _json({"pages": hits.pages, "bytes": hits.bytes})

    async def load_status(self, request: web.Request) -> web.Response:
        job_id = requests.load_id(request)
        job = self.loads.get(job_id) if job_id is not None else None
        if job is None:
            return _json(
                {
                    "error": "NoSuchLoad",
                    "message": "unknown load id (finished jobs are kept for an hour at most)",
                },
                404,
            )
        return _json(job.progress.as_dict())


async def _whole_find(svc: DatasetService, rel: str, from_peer: bool) -> list[FileInfo]:
    """A find in one answer (clients that do not page), refused past
    :data:`~tidepool.worker.requests.MAX_UNPAGED_FIND` entries before the answer is built."""
    bound = requests.MAX_UNPAGED_FIND
    page = await svc.find_page(rel, start_after="", limit=bound, from_peer=from_peer)
    if page.next is not None:
        raise BadRequestError(
            f"find of {rel!r} holds more than {bound} entries, more than one answer carries: "
            f"ask for it in pages (?limit=1..{requests.MAX_FIND_LIMIT}, then "
            "&start_after=<the answer's next>; the tidepool client does)"
        )
    return page.files


def _route(request: web.BaseRequest) -> str:
    """aiohttp's canonical path of the matched route (``"unmatched"`` for none)."""
    match_info = getattr(request, "match_info", None)
    resource = match_info.route.resource if match_info is not None else None
    return resource.canonical if resource is not None else "unmatched"
