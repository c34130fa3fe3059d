"""The dashboard's routes: the page and its assets, the login, and the read-only views it polls.

Routes (added to the worker's API on the same port)::

    GET  /                         the page (index.html); public, it holds no data
    GET  /dashboard/{asset}        app.js, style.css; public
    GET  /v1/dashboard/session     {"required", "authenticated"}: whether to show the login form
    POST /v1/dashboard/login       {"token": ...} (JSON or a form): sets the dashboard cookie
    POST /v1/dashboard/logout      clears it
    GET  /v1/history               the last minutes of throughput, hit ratio and WAN bytes
    GET  /v1/loads                 warm-up jobs, newest first
    GET  /v1/pool                  pool members as this worker sees them (probed in background)

The page's other data comes from the API's own routes (``/v1/node``, ``/v1/datasets``,
``/v1/datasets/{ds}/status``). Every asset ships in the package and the page is served with a
Content-Security-Policy that allows this origin only, so it works with no internet and the browser
refuses any request elsewhere. Access: see :mod:`.session`.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any

from aiohttp import web

from tidepool.core.errors import AuthError, BadRequestError
from tidepool.worker.dashboard import session
from tidepool.worker.history import History
from tidepool.worker.loads import LoadJob

log = logging.getLogger(__name__)

ASSETS = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
}
PUBLIC_ROUTES = frozenset(
    {
        "/",
        "/dashboard/{asset}",
        "/v1/dashboard/session",
        "/v1/dashboard/login",
        "/v1/dashboard/logout",
    }
)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
MAX_LOADS = 50
"""Load jobs listed by ``GET /v1/loads`` (the newest)."""


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(data, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else ""


class DashboardRoutes:
    """The dashboard's part of the worker API; the worker passes in what it shows."""

    def __init__(
        self,
        *,
        token: str | None,
        history: History,
        pool: Callable[[], dict[str, Any]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token = token
        self.history = history
        self.pool = pool
        self._clock = clock
        self._loads: Callable[[], Iterable[LoadJob]] = list
        self._assets: dict[str, bytes] = {}

    def register(self, router: web.UrlDispatcher, loads: Callable[[], Iterable[LoadJob]]) -> None:
        self._loads = loads
        router.add_get("/", self.page)
        router.add_get("/dashboard/{asset}", self.asset)
        router.add_get("/v1/dashboard/session", self.session)
        router.add_post("/v1/dashboard/login", self.login)
        router.add_post("/v1/dashboard/logout", self.logout)
        router.add_get("/v1/history", self.history_view)
        router.add_get("/v1/loads", self.loads)
        router.add_get("/v1/pool", self.pool_view)

    # ---- access ----------------------------------------------------------------------------

    def allows(self, request: web.Request) -> bool:
        """Whether a request without the bearer header may pass: the public routes, and the
        read-only views for a browser holding a valid dashboard cookie."""
        route = route_of(request)
        if route in PUBLIC_ROUTES:
            return True
        if self.token is None or request.method not in ("GET", "HEAD"):
            return False
        if route not in session.READ_ONLY_ROUTES:
            return False
        return session.valid(request.cookies.get(session.COOKIE), self.token, self._clock())

    def _bearer_ok(self, request: web.Request) -> bool:
        if self.token is None:
            return True
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and session.token_matches(given.strip(), self.token)

    # ---- page ------------------------------------------------------------------------------

    def _asset(self, name: str) -> bytes:
        data = self._assets.get(name)
        if data is None:
            data = resources.files("tidepool.worker.dashboard").joinpath(name).read_bytes()
            self._assets[name] = data
        return data

    def _static(self, name: str) -> web.Response:
        return web.Response(
            body=self._asset(name),
            content_type=ASSETS[name],
            charset="utf-8",
            headers={
                "Cache-Control": "no-cache",
                "Content-Security-Policy": CSP,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "X-Frame-Options": "DENY",
            },
        )

    async def page(self, request: web.Request) -> web.Response:
        return self._static("index.html")

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["asset"]
        if name not in ASSETS or name == "index.html":
            raise FileNotFoundError(
                errno.ENOENT, "no such dashboard asset (there are app.js and style.css)", name
            )
        return self._static(name)

    # ---- login -----------------------------------------------------------------------------

    async def session(self, request: web.Request) -> web.Response:
        cookie = request.cookies.get(session.COOKIE)
        authenticated = self.token is None or (
            self._bearer_ok(request) or session.valid(cookie, self.token, self._clock())
        )
        return _json({"required": self.token is not None, "authenticated": authenticated})

    def _same_origin(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        return origin is None or origin == f"{request.scheme}://{request.host}"

    async def login(self, request: web.Request) -> web.StreamResponse:
        if not self._same_origin(request):
            return _json({"error": "Forbidden", "message": "login from another origin"}, 403)
        is_form = request.content_type == "application/x-www-form-urlencoded"
        given = await self._submitted_token(request, is_form)
        if self.token is None:
            return _json({"required": False, "authenticated": True})
        if not session.token_matches(given, self.token):
            log.info("dashboard login refused (wrong token) from %s", request.remote)
            raise AuthError("wrong token: paste the worker's token (TIDEPOOL_TOKEN)")
        value = session.issue(self.token, self._clock())
        resp: web.StreamResponse
        if is_form:  # the page's form without JavaScript: back to the page
            resp = web.Response(status=303, headers={"Location": "/"})
        else:
            resp = _json({"required": True, "authenticated": True})
        resp.set_cookie(
            session.COOKIE,
            value,
            max_age=session.LIFETIME,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )
        log.info("dashboard login from %s", request.remote)
        return resp

    @staticmethod
    async def _submitted_token(request: web.Request, is_form: bool) -> str:
        if is_form:
            form = await request.post()
            given: Any = form.get("token", "")
        else:
            try:
                body = await request.json()
            except json.JSONDecodeError:
                raise BadRequestError('login body must be JSON {"token": "..."}') from None
            given = body.get("token", "") if isinstance(body, dict) else None
        if not isinstance(given, str) or len(given) > session.MAX_TOKEN:
            raise BadRequestError(
                f'"token" must be a string of at most {session.MAX_TOKEN} characters'
            )
        return given

    async def logout(self, request: web.Request) -> web.Response:
        resp = _json({"required": self.token is not None, "authenticated": False})
        resp.del_cookie(session.COOKIE, path="/")
        return resp

    # ---- views -----------------------------------------------------------------------------

    async def history_view(self, request: web.Request) -> web.Response:
        raw = request.query.get("since")
        since: float | None = None
        if raw is not None:
            try:
                since = float(raw)
            except ValueError:
                since = math.nan
            if not math.isfinite(since):
                raise BadRequestError(f"since={raw!r}: give a Unix time in seconds, e.g. 1.7e9")
        return _json(self.history.as_dict(since))

    async def loads(self, request: web.Request) -> web.Response:
        jobs = list(self._loads())[-MAX_LOADS:]
        return _json({"loads": [j.progress.as_dict() for j in reversed(jobs)]})

    async def pool_view(self, request: web.Request) -> web.Response:
        return _json(self.pool())
