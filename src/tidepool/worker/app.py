"""The worker's HTTP API (aiohttp): a thin layer that parses requests and moves bytes.

Routes (all JSON unless noted; a bearer token guards everything but ``/healthz`` when set)::

    GET  /healthz                              liveness
    GET  /metrics                              Prometheus text
    GET  /v1/node                              host identity + tier paths (client fast path)
    GET  /v1/datasets                          datasets served here
    GET  /v1/datasets/{ds}/status              Fluid-style cacheStates
    GET  /v1/datasets/{ds}/info/{path}         stat (file or directory)
    GET  /v1/datasets/{ds}/list/{path}         direct children
    GET  /v1/datasets/{ds}/find/{path}         every file below path
    GET  /v1/datasets/{ds}/files/{path}        bytes (Range -> 206/416); HEAD: headers only
    POST /v1/datasets/{ds}/load                start a warm-up job {"paths": [...]}
    POST /v1/datasets/{ds}/local-hits          pages a same-host client read from our pages
                                               itself {"pages": n, "bytes": n} (hit counters)
    GET  /v1/loads/{id}                        progress of a warm-up job
    GET  /, /v1/history, /v1/loads, /v1/pool   the dashboard and its views (worker.dashboard)

Errors are ``{"error": code, "message": text, "dataset", "path"}`` with the status from the one
table in :mod:`tidepool.core.errors`.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeGuard

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tidepool.core.errors import (
    AuthError,
    BadRequestError,
    UnknownDatasetError,
    http_status,
    redact,
)
from tidepool.core.fileinfo import FileInfo
from tidepool.core.paths import normalize
from tidepool.core.ranges import content_range, parse_range
from tidepool.worker.dashboard import DashboardRoutes
from tidepool.worker.dataset import DatasetService
from tidepool.worker.loads import LoadJob
from tidepool.worker.metrics import WorkerMetrics
from tidepool.worker.placement import PEER_HEADER
from tidepool.worker.status import dataset_status

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _count_value(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(data, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
    )


def error_response(exc: BaseException, dataset: str = "", path: str = "") -> web.Response:
    status, code = http_status(exc)
    if status == 500:
        message = f"internal error: {type(exc).__name__}: {exc}"
    elif isinstance(exc, OSError) and exc.strerror:
        message = exc.strerror  # the client adds errno and path back; don't repeat them
    else:
        message = str(exc)
    body = {"error": code, "message": redact(message), "dataset": dataset, "path": path}
    resp = _json(body, status)
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="tidepool"'
    return resp


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
        dashboard: DashboardRoutes | None = None,
    ) -> None:
        self.services = services
        self.metrics = metrics
        self.token = token
        self.node_info = node_info
        self.load_concurrency = load_concurrency
        self.ready = ready
        """False while the worker is still joining its pool: /healthz answers 503, so no
        readiness probe (nor Service endpoint) sends reads to it before it knows the owners."""
        self.loads: dict[str, LoadJob] = {}
        self.dashboard = dashboard
        """The page at ``/`` and its read-only views; it may let a browser's login cookie
        through to those views (see :mod:`tidepool.worker.dashboard.session`)."""
        self._request_counters: dict[tuple[str, int], Any] = {}

    def build(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._auth], client_max_size=1 << 20)
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
        r.add_post("/v1/datasets/{ds}/local-hits", self.local_hits)
        r.add_get("/v1/loads/{id}", self.load_status)
        if self.dashboard is not None:
            self.dashboard.register(r, lambda: self.loads.values())
        return app

    # ---- middleware ------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
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
        ds = request.match_info.get("ds", "")
        path = request.match_info.get("path", "")
        status, _ = http_status(exc)
        if status >= 500 and status != 503:
            log.exception("%s %s failed", request.method, redact(request.path))
        else:
            log.debug("%s %s -> %s: %s", request.method, request.path, status, exc)
        return error_response(exc, ds, path)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.token is not None and request.path != "/healthz":
            header = request.headers.get("Authorization", "")
            scheme, _, given = header.partition(" ")
            if (
                scheme.lower() != "bearer"
                or not hmac.compare_digest(given.strip().encode(), self.token.encode())
            ) and not (self.dashboard is not None and self.dashboard.allows(request)):
                raise AuthError(
                    "missing or wrong bearer token (send 'Authorization: Bearer <token>'; "
                    "the CLI and the fsspec client read it from TIDEPOOL_TOKEN)"
                )
        return await handler(request)

    def _svc(self, request: web.Request) -> DatasetService:
        name = request.match_info["ds"]
        svc = self.services.get(name)
        if svc is None:
            raise UnknownDatasetError(name, list(self.services))
        return svc

    # ---- simple routes ---------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        if not self.ready():
            return _json({"status": "starting", "datasets": sorted(self.services)}, status=503)
        return _json({"status": "ok", "datasets": sorted(self.services)})

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
        refresh = request.query.get("refresh", "1") != "0"
        return _json(await dataset_status(svc, refresh=refresh))

    async def info(self, request: web.Request) -> web.Response:
        svc = self._svc(request)
        return _json(await svc.stat(request.match_info["path"]))

    async def list(self, request: web.Request) -> web.Response:
        svc = self._svc(request)
        entries = await svc.ls(request.match_info["path"])
        return _json({"entries": entries})

    async def find(self, request: web.Request) -> web.Response:
        svc = self._svc(request)
        files = await svc.find(request.match_info["path"])
        return _json({"files": files})

    # ---- data ------------------------------------------------------------------------------

    async def file(self, request: web.Request) -> web.StreamResponse:
        svc = self._svc(request)
        t0 = time.perf_counter()
        rel = normalize(request.match_info["path"])
        info = await svc.stat(rel)
        if info["type"] != "file":
            raise IsADirectoryError(21, f"{rel!r} is a directory; list it instead", rel)
        size = info["size"]
        span = parse_range(request.headers.get("Range"), size)
        start, end = span if span is not None else (0, size)
        headers = self._headers(info, start, end, partial=span is not None)
        status = 206 if span is not None else 200
        if request.method == "HEAD":
            return web.Response(status=status, headers=headers)
        from_peer = PEER_HEADER in request.headers
        if end - start <= svc.page_size:
            body: bytes | memoryview | None = svc.cached_slice(
                info, start, end, from_peer=from_peer
            )
            if body is None:
                body = await svc.read_all(info, start, end, from_peer=from_peer)
            resp = web.Response(status=status, body=body, headers=headers)
        else:
            chunks = svc.read(info, start, end, from_peer=from_peer)
            first = await anext(chunks, None)  # errors before the first byte get a clean status
            sresp = web.StreamResponse(status=status, headers=headers)
            await sresp.prepare(request)
            try:
                if first is not None:
                    await sresp.write(first)
                async for chunk in chunks:
                    await sresp.write(chunk)
            except Exception as exc:
                # The status line is gone: the only honest signal left is a cut connection, so
                # the reader sees a short body (and retries) instead of waiting for bytes that
                # will never come or reading an error document as file data.
                log.warning(
                    "read of %s/%s failed after %s: %s; closing the connection",
                    svc.name,
                    rel,
                    "headers were sent",
                    redact(str(exc)),
                )
                if request.transport is not None:
                    request.transport.abort()
                return sresp
            finally:
                await chunks.aclose()
            await sresp.write_eof()
            resp = sresp  # type: ignore[assignment]
        self.metrics.read_seconds.labels(svc.name).observe(time.perf_counter() - t0)
        return resp

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
        try:
            body = await request.json() if request.can_read_body else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"load request body is not JSON: {exc}") from None
        paths = body.get("paths") or [""]
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise BadRequestError('"paths" must be a list of strings, e.g. {"paths": ["train/"]}')
        for p in paths:
            normalize(p)
        concurrency = int(body.get("concurrency") or self.load_concurrency)
        job = LoadJob(svc, paths, concurrency=concurrency)
        self.loads[job.progress.id] = job
        job.start()
        return _json(job.progress.as_dict(), 202)

    async def local_hits(self, request: web.Request) -> web.Response:
        svc = self._svc(request)
        try:
            body = await request.json()
        except json.JSONDecodeError as exc:
            raise BadRequestError(f"local-hits body is not JSON: {exc}") from None
        fields = body if isinstance(body, dict) else {}
        pages, nbytes = fields.get("pages"), fields.get("bytes", 0)
        if not (_count_value(pages) and _count_value(nbytes)):
            raise BadRequestError(
                f'"pages" and "bytes" must be counts >= 0, e.g. {{"pages": 3, "bytes": 300}}; '
                f"got pages={pages!r}, bytes={nbytes!r}"
            )
        svc.count_local_hits(pages, nbytes)
        return _json({"pages": pages, "bytes": nbytes})

    async def load_status(self, request: web.Request) -> web.Response:
        job = self.loads.get(request.match_info["id"])
        if job is None:
            return _json({"error": "NoSuchLoad", "message": "unknown load id"}, 404)
        return _json(job.progress.as_dict())
