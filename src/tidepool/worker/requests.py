"""Every value a client sends to the worker's API, parsed and bounded before a handler sees it.

One layer between aiohttp and the handlers of :mod:`tidepool.worker.app`: path parameters
(dataset, path, load id), query parameters, the headers a handler uses and JSON bodies become
typed values here, or a :class:`~tidepool.core.errors.BadRequestError` (400) that names the field,
echoes the bad value cut short and says what is valid. Handlers never read ``request.query``,
``request.headers``, ``request.match_info`` or the body themselves.

* Query parameters are declared per route (:data:`ROUTE_QUERIES`); a parameter a route does not
  declare is refused, so a typo or a probe never passes silently. A new route that takes
  parameters adds its model there.
* Bodies are JSON objects validated by strict pydantic models (no coercion: ``"8"`` is not a
  number, ``true`` is not 1), read with a size cap (the application's ``client_max_size``) and a
  time cap (:data:`BODY_TIMEOUT`: a client that sends half a body is cut off), and only with
  ``Content-Type: application/json`` (415 otherwise) — which also keeps a web page in a browser on
  this host from posting to the loopback worker without a CORS preflight the worker never grants.
* Every number has a hard upper bound (:data:`MAX_LOAD_CONCURRENCY`, :data:`MAX_LOAD_PATHS`,
  :data:`MAX_LOCAL_HIT_PAGES`, :data:`MAX_HELD_LIMIT`, :data:`MAX_FIND_LIMIT`, and
  ``bytes <= pages * page_size`` for hit reports).

Limits: the bounds are plausibility limits, not a rate limit: a client with the token can still
send many plausible reports.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from tidepool.core.errors import BadRequestError, UnsupportedMediaError
from tidepool.core.inputs import bad_value, echo, parse_bool, parse_int
from tidepool.core.paths import normalize
from tidepool.core.ranges import MAX_HEADER as MAX_RANGE_HEADER

__all__ = [
    "BODY_TIMEOUT",
    "MAX_FIND_LIMIT",
    "MAX_HELD_LIMIT",
    "MAX_LOAD_CONCURRENCY",
    "MAX_LOAD_PATHS",
    "MAX_LOCAL_HIT_PAGES",
    "MAX_UNPAGED_FIND",
    "ROUTE_QUERIES",
    "FindQuery",
    "HeldQuery",
    "InfoQuery",
    "LoadRequest",
    "LocalHits",
    "NoQuery",
    "StatusQuery",
    "check_query",
    "dataset_name",
    "load_id",
    "load_request",
    "local_hits",
    "parse_body",
    "parse_load",
    "parse_local_hits",
    "query",
    "range_header",
    "rel_path",
]

MAX_LOAD_CONCURRENCY = 256
"""Most files one load job fetches at once (each is a task and a read-ahead window)."""
MAX_LOAD_PATHS = 1000
"""Most target paths in one load request (a directory covers everything below it)."""
MAX_PREFETCH_PATHS = 100_000
"""Most paths one prefetch hint may carry (an epoch of a larger dataset: send it in parts)."""
MAX_LOCAL_HIT_PAGES = 1_000_000
"""Most page reads one local-hits report may claim. Clients report every 2 s; a million pages
in 2 s is 500,000 page reads a second from one process, well past what a disk delivers."""
MAX_FIND_LIMIT = 10_000
"""Most entries of a find one page may ask for."""
MAX_UNPAGED_FIND = 100_000
"""Most entries of a find answered without ``limit`` (older clients); larger ones are refused
with a message that says to page, so no answer holds a million entries in the worker."""
BODY_TIMEOUT = 30.0
"""Seconds a client has to send a request body once its headers arrived."""
_LOAD_ID = re.compile(r"load-[0-9]{1,12}", re.ASCII)
# typed request storage where aiohttp has it (3.13+), a plain key before
_QUERY_KEY: Any = (
    web.RequestKey("tidepool.query", BaseModel) if hasattr(web, "RequestKey") else "tidepool.query"
)


# ---- query parameters ------------------------------------------------------------------------


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoQuery(_Query):
    """A route that takes no query parameters."""


class StatusQuery(_Query):
    refresh: bool = True
    """Re-list the origin when the dataset's total is older than its TTL (``refresh=0``: no)."""


class InfoQuery(_Query):
    headers: bool = False
    """Also the object's own HTTP metadata (``headers=1``; the S3 gateway asks for it)."""


class PageQuery(_Query):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    every: float = Field(2.0, ge=0.5, le=60.0)
    """Seconds between two refreshes of the dashboard (read by the page itself)."""


class HistoryQuery(_Query):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    since: float | None = Field(None, ge=0.0)
    """Only the dashboard history's samples after this Unix time."""


MAX_HELD_LIMIT = MAX_FIND_LIMIT
"""Most entries one ``held`` answer (a rebalancing peer's listing) carries (``limit`` is parsed
once for every route that takes it)."""


class HeldQuery(_Query):
    """``GET /v1/datasets/{ds}/held``: one page of what this worker holds for a peer."""

    member: str = Field("", max_length=256)
    """The asking member of the pool: the files it owns under the current ring are listed."""
    limit: int = 1000
    """Most entries (1 to :data:`MAX_HELD_LIMIT`; checked by its parser)."""
    start_after: str = Field("", max_length=4096)
    """The cursor: only paths after this one (the last path of the previous page)."""


class CachedQuery(_Query):
    """``GET /v1/datasets/{ds}/cached``: a window of the files this worker holds whole."""

    start_at: str = Field("", max_length=4096)
    """The first path the window may list (a dataset path; "": from the first)."""
    limit: int = 1000
    """Most entries (1 to :data:`MAX_FIND_LIMIT`; checked by its parser)."""


class FindQuery(_Query):
    limit: int | None = None
    """Entries per page (1 to :data:`MAX_FIND_LIMIT`); absent with ``start_after`` absent: the
    whole listing in one answer (at most :data:`MAX_UNPAGED_FIND` entries)."""
    start_after: str | None = None
    """The dataset path the page starts after (a previous page's ``next``)."""


_Q = TypeVar("_Q", bound=_Query)

ROUTE_QUERIES: dict[str, type[_Query]] = {
    "/v1/datasets/{ds}/status": StatusQuery,
    "/v1/datasets/{ds}/info/{path}": InfoQuery,
    "/v1/datasets/{ds}/find/{path}": FindQuery,
    "/": PageQuery,
    "/v1/history": HistoryQuery,
    "/v1/datasets/{ds}/held": HeldQuery,
    "/v1/datasets/{ds}/cached": CachedQuery,
}
"""Route (aiohttp's canonical path) -> its query model; routes not listed take none."""


def _parse_limit(text: str, name: str) -> int:
    """``limit`` of a paged answer (``find``, ``held``): 1 to :data:`MAX_FIND_LIMIT`."""
    return parse_int(text, f"query parameter {name}", lo=1, hi=MAX_FIND_LIMIT)


def _parse_start_after(text: str, name: str) -> str:
    """A page's cursor: a dataset path, checked as paths are."""
    try:
        return normalize(text)
    except BadRequestError as exc:
        raise BadRequestError(f"query parameter {name}: {exc}") from None


_QUERY_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "refresh": parse_bool,
    "headers": parse_bool,
    "limit": _parse_limit,
    "start_after": _parse_start_after,
    "start_at": _parse_start_after,
}


def check_query(request: web.Request, route: str) -> None:
    """Parse the query string for ``route`` and keep the result on the request (middleware).
    An empty query string is every model's defaults (see :func:`query`) and costs nothing."""
    if not request.query_string:
        return
    model = ROUTE_QUERIES.get(route, NoQuery)
    values: dict[str, Any] = {}
    for name in request.query:
        if name not in model.model_fields:
            allowed = ", ".join(model.model_fields) or "none"
            raise bad_value("query parameter", name, f"one this route takes ({allowed})")
        all_values = request.query.getall(name)
        if len(all_values) > 1:
            raise bad_value(f"query parameter {name}", all_values, "one value")
        parser = _QUERY_PARSERS.get(name)
        values[name] = parser(all_values[0], name) if parser else all_values[0]
    try:
        request[_QUERY_KEY] = model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first.get("loc", ())) or "query"
        raise bad_value(f"query parameter {name}", values.get(name), first.get("msg", "")) from None


def query(request: web.Request, model: type[_Q]) -> _Q:
    """The parsed query of this request, as ``model`` (see :func:`check_query`)."""
    parsed = request.get(_QUERY_KEY)
    if parsed is None and not request.query_string:
        return model()
    if not isinstance(parsed, model):
        raise RuntimeError(f"route {request.path!r} does not declare {model.__name__}")
    return parsed


# ---- path parameters and headers --------------------------------------------------------------


def dataset_name(request: web.Request) -> str:
    """The ``{ds}`` path parameter; unknown names become 404 where the dataset is looked up."""
    return request.match_info["ds"]


def rel_path(request: web.Request) -> str:
    """The ``{path}`` parameter, normalised (no ``..``, NUL or backslash; bounded length)."""
    return normalize(request.match_info.get("path", ""))


def load_id(request: web.Request) -> str | None:
    """The ``{id}`` of a load job, or None when it cannot name one (an unknown job: 404)."""
    text = request.match_info["id"]
    return text if _LOAD_ID.fullmatch(text) else None


def range_header(request: web.Request) -> str | None:
    """The ``Range`` header, one at most (:func:`tidepool.core.ranges.parse_range` parses it)."""
    values = request.headers.getall("Range", [])
    if len(values) > 1:
        raise BadRequestError(f"{len(values)} Range headers; send one")
    if values and len(values[0]) > MAX_RANGE_HEADER:
        raise bad_value("Range header", values[0], f"at most {MAX_RANGE_HEADER} characters")
    return values[0] if values else None


# ---- bodies ------------------------------------------------------------------------------------


def _path(value: str) -> str:
    return normalize(value)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LoadRequest(_Body):
    """``POST /v1/datasets/{ds}/load``."""

    paths: list[Annotated[str, AfterValidator(_path)]] = Field(
        default_factory=list, max_length=MAX_LOAD_PATHS
    )
    """Paths to warm, files or directories (empty: the whole dataset)."""
    concurrency: int | None = Field(default=None, ge=1, le=MAX_LOAD_CONCURRENCY)
    """Files fetched at once (default: the worker's ``load_concurrency``)."""


class PrefetchRequest(_Body):
    """``POST /v1/datasets/{ds}/prefetch``: the files a program will read, in its order."""

    paths: list[Annotated[str, AfterValidator(_path)]] = Field(max_length=MAX_PREFETCH_PATHS)
    """Files to fetch ahead, in the order they will be read (duplicates and paths this worker
    does not own are ignored; unknown files are skipped when their turn comes)."""


class LocalHits(_Body):
    """``POST /v1/datasets/{ds}/local-hits``: pages a same-host client read itself."""

    pages: int = Field(ge=0, le=MAX_LOCAL_HIT_PAGES)
    bytes: int = Field(default=0, ge=0)


_VALID = {
    "paths": f'a list of at most {MAX_LOAD_PATHS} dataset paths, e.g. ["train/"]',
    "concurrency": f"a whole number from 1 to {MAX_LOAD_CONCURRENCY}",
    "pages": f"a whole number from 0 to {MAX_LOCAL_HIT_PAGES}",
    "paths[]": "dataset file paths",
    "bytes": "a whole number from 0 to pages x the dataset's page size",
}
_EXAMPLES = {
    LoadRequest: '{"paths": ["train/"], "concurrency": 32}',
    LocalHits: '{"pages": 3, "bytes": 300}',
    PrefetchRequest: '{"paths": ["train/0001.jpg", "train/0002.jpg"]}',
}

_B = TypeVar("_B", bound=_Body)


def _explain(model: type[_Body], exc: ValidationError) -> BadRequestError:
    """The first problem of ``exc`` as a message naming the field, the value and what is valid."""
    err = exc.errors(include_url=False)[0]
    loc = [str(part) for part in err["loc"]]
    example = _EXAMPLES.get(model, "{}")
    if err["type"] == "json_invalid":
        return BadRequestError(f"body is not valid JSON ({err['msg']}); send e.g. {example}")
    if not loc:
        got = echo(err["input"])
        return BadRequestError(f"body must be a JSON object like {example}; got {got}")
    field = loc[0]
    if err["type"] == "extra_forbidden":
        return bad_value(
            "body field", field, f"one of {', '.join(model.model_fields)} (e.g. {example})"
        )
    if err["type"] == "missing":
        return BadRequestError(f"body field {field!r} is missing; send e.g. {example}")
    where = ".".join(loc)
    reason = err["msg"]
    if err["type"] == "value_error" and isinstance(err.get("ctx", {}).get("error"), ValueError):
        reason = str(err["ctx"]["error"])
    valid = _VALID.get(field, "a valid value")
    return BadRequestError(
        f"body field {where}: got {echo(err['input'])} ({reason}); expected {valid}"
    )


def parse_body(raw: bytes, model: type[_B]) -> _B:
    """``raw`` JSON validated by ``model``; pure (the hypothesis tests feed it any bytes)."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise _explain(model, exc) from None


def parse_load(raw: bytes) -> LoadRequest:
    """A load request body (empty: ``{}``, the whole dataset)."""
    return parse_body(raw if raw.strip() else b"{}", LoadRequest)


def parse_local_hits(raw: bytes, page_size: int) -> LocalHits:
    """A local-hits report, with ``bytes`` bounded by ``pages * page_size``."""
    hits = parse_body(raw, LocalHits)
    if hits.bytes > hits.pages * page_size:
        raise bad_value(
            "body field bytes",
            hits.bytes,
            f"at most pages x page size = {hits.pages} x {page_size} = {hits.pages * page_size}",
        )
    return hits


async def _read_json(request: web.Request) -> bytes:
    """The body of a JSON request: content type checked, size and time bounded."""
    if request.content_type != "application/json":
        raise UnsupportedMediaError(
            f"Content-Type {echo(request.headers.get('Content-Type', ''))} is not accepted; "
            "send the body as application/json"
        )
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            return await request.read()
    except TimeoutError:
        raise BadRequestError(f"the body did not arrive within {BODY_TIMEOUT:g} s") from None


async def load_request(request: web.Request) -> LoadRequest:
    return parse_load(await _read_json(request))


async def prefetch_request(request: web.Request) -> PrefetchRequest:
    return parse_body(await _read_json(request), PrefetchRequest)


async def local_hits(request: web.Request, page_size: int) -> LocalHits:
    return parse_local_hits(await _read_json(request), page_size)
