"""What a GetObject/HeadObject answers, decided from the object's metadata and the request's
headers: pure, no I/O.

:func:`plan_get` applies S3's rules in S3's order: ``If-Match`` (else ``If-Unmodified-Since``)
failing is ``412 PreconditionFailed``; ``If-None-Match`` matching (else ``If-Modified-Since`` not
passed) is ``304 Not Modified``; then ``Range``: one satisfiable range is ``206`` with
``Content-Range``, a range starting past the end is ``416 InvalidRange``, and a malformed or
multi-range header is ignored (the whole object, ``200``), as S3 does. ``response-*`` query
parameters override the answer's headers on GET; a value with a control character (CR and LF
would split the answer's headers) or longer than :data:`MAX_OVERRIDE` characters is
``InvalidArgument`` (400).

The ETag is the object's version from the worker (the origin's ETag — an MD5 for plain uploads —
or ``size-mtime`` when the origin has none), always quoted.
``If-Match`` compares ETags strongly (``W/"…"`` never matches, 412), ``If-None-Match`` weakly.
``?partNumber=N``: part 1 of a plain object is the whole object (206, as S3 answers), a part past
the object's parts is ``416 InvalidPartNumber``, ``partNumber`` with ``Range`` is
``InvalidRequest``.

Limits: dates have one-second resolution (HTTP dates); the parts of a multipart object (ETag
``…-N``) are not served (501): their sizes are not kept.
"""

from __future__ import annotations

import mimetypes
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from typing import Any

from tidepool.core.errors import BadRequestError, RangeNotSatisfiableError
from tidepool.core.inputs import echo
from tidepool.core.ranges import content_range, parse_range
from tidepool.gateway.errors import S3Error

__all__ = ["MAX_OVERRIDE", "GetPlan", "http_date", "override_value", "part_number", "plan_get"]

MAX_OVERRIDE = 1024
"""Characters of one ``response-*`` header override."""

_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}


def override_value(name: str, value: str) -> str:
    """``value`` for the header a ``response-*`` parameter sets, or ``InvalidArgument``."""
    if len(value) > MAX_OVERRIDE:
        raise S3Error(
            "InvalidArgument", f"{name} is {len(value)} characters long; at most {MAX_OVERRIDE}"
        )
    if any(unicodedata.category(c) in ("Cc", "Cs") and c != "\t" for c in value):
        raise S3Error(
            "InvalidArgument",
            f"{name} {echo(value)} holds a control character (CR, LF, NUL …); "
            "header values are one line of text",
        )
    return value


@dataclass(frozen=True)
class GetPlan:
    status: int
    """200, 206 or 304."""
    start: int
    end: int
    """Byte span to send, ``end`` exclusive (empty for 304)."""
    headers: dict[str, str]
    """Answer headers, ``Content-Length`` included."""


def http_date(mtime: float) -> str:
    return formatdate(int(mtime), usegmt=True)


def _parse_date(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _etag_matches(header: str, etag: str, *, weak: bool) -> bool:
    """RFC 9110 8.8.3.2: ``If-Match`` compares strongly (a ``W/`` tag never matches),
    ``If-None-Match`` weakly."""
    for candidate in header.split(","):
        tag = candidate.strip()
        if tag == "*":
            return True
        if tag.startswith("W/"):
            if not weak:
                continue
            tag = tag[2:]
        if tag.strip('"') == etag:
            return True
    return False


def part_number(query: Mapping[str, str] | None) -> int | None:
    """The ``partNumber`` a GET/HEAD asks for, or ``InvalidArgument`` (S3's bounds: 1-10000)."""
    if not query or "partNumber" not in query:
        return None
    text = query["partNumber"]
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 10000:
        raise S3Error(
            "InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive"
        )
    return int(text)


def _part_span(etag: str, part: int, size: int) -> tuple[int, int]:
    """The byte span of part ``part``: a plain object is its own part 1 (as S3 answers); the
    part sizes of a multipart object are not kept, so its parts are not served."""
    count = int(etag.rpartition("-")[2]) if "-" in etag and etag.rpartition("-")[2].isdigit() else 1
    if part > count:
        raise S3Error("InvalidPartNumber", "The requested partnumber is not satisfiable", 416)
    if count > 1:
        raise S3Error(
            "NotImplemented", "partNumber of a multipart object is not served by this gateway", 501
        )
    return 0, size


def _conditions(headers: Mapping[str, str], etag: str, mtime: float | None) -> int | None:
    """412 or 304 when a conditional header says so, else ``None``."""
    modified = None if mtime is None else float(int(mtime))
    if_match = headers.get("if-match")
    if if_match is not None:
        if not _etag_matches(if_match, etag, weak=False):
            return 412
    else:
        since = _parse_date(headers.get("if-unmodified-since"))
        if since is not None and modified is not None and modified > since:
            return 412
    if_none = headers.get("if-none-match")
    if if_none is not None:
        return 304 if _etag_matches(if_none, etag, weak=True) else None
    since = _parse_date(headers.get("if-modified-since"))
    if since is not None and modified is not None and modified <= since:
        return 304
    return None


def _one_line(value: str) -> bool:
    return not any(unicodedata.category(c) in ("Cc", "Cs") and c != "\t" for c in value)


def base_headers(info: Mapping[str, Any], key: str) -> dict[str, str]:
    """Headers every answer about this object carries: ETag, Last-Modified, and the object's own
    metadata as the origin keeps it (Content-Type, Content-Encoding, Content-Disposition,
    Cache-Control, Expires, ``x-amz-meta-*``). Only an origin that keeps no such metadata
    (``info`` without ``headers``: a file system) has its type guessed from the key."""
    # an origin may keep no ETag for a folder marker (juicefs): answered empty, as it does
    h = {"ETag": f'"{info["version"]}"' if info["version"] else "", "Accept-Ranges": "bytes"}
    own = info.get("headers")
    if isinstance(own, Mapping):
        h["Content-Type"] = "binary/octet-stream"  # S3's type for an object uploaded without one
        h.update({str(k): str(v) for k, v in own.items() if _one_line(str(k) + str(v))})
    else:
        h["Content-Type"] = mimetypes.guess_type(key)[0] or "binary/octet-stream"
    if info.get("mtime") is not None:
        h["Last-Modified"] = http_date(float(info["mtime"]))
    return h


def plan_get(
    info: Mapping[str, Any],
    key: str,
    headers: Mapping[str, str],
    query: Mapping[str, str] | None = None,
    part: int | None = None,
) -> GetPlan:
    """The status, span and headers for a GET/HEAD of one object.

    ``headers`` has lower-case names; ``info`` is the worker's file info (size, version, mtime).
    Raises :class:`S3Error` ``PreconditionFailed`` (412) or ``InvalidRange`` (416).
    """
    size = int(info["size"])
    etag = str(info["version"])
    out = base_headers(info, key)
    status = _conditions(headers, etag, info.get("mtime"))
    if status == 412:
        raise S3Error(
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
            412,
        )
    if status == 304:
        out.pop("Content-Type")
        return GetPlan(304, 0, 0, out)
    if part is not None:
        if headers.get("range") is not None:
            raise S3Error(
                "InvalidRequest", "Cannot specify both Range header and partNumber query parameter"
            )
        start, end = _part_span(etag, part, size)
        out["Content-Range"] = content_range(start, end, size) if size else f"bytes */{size}"
        _override(out, query)
        out["Content-Length"] = str(end - start)
        return GetPlan(206, start, end, out)
    try:
        span = parse_range(headers.get("range"), size)
    except RangeNotSatisfiableError:
        raise S3Error(
            "InvalidRange",
            "The requested range is not satisfiable",
            416,
            headers={"Content-Range": f"bytes */{size}"},
        ) from None
    except BadRequestError:
        span = None  # S3 ignores a Range header it cannot use
    start, end = span if span is not None else (0, size)
    if span is not None:
        out["Content-Range"] = content_range(start, end, size)
    _override(out, query)
    out["Content-Length"] = str(end - start)
    return GetPlan(206 if span is not None else 200, start, end, out)


def _override(out: dict[str, str], query: Mapping[str, str] | None) -> None:
    for name, header in _OVERRIDES.items():
        if query and name in query:
            out[header] = override_value(name, query[name])
