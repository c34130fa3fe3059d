"""Parse an S3 request line into the one operation it asks for: pure, no I/O.

The gateway's handlers never look at raw paths or query strings: :func:`parse_request` turns
``(method, raw_path, raw_query)`` into an :class:`Operation` — ListBuckets, GetBucketLocation,
HeadBucket, ListObjectsV2, ListObjects (v1, ``marker`` paging, still used by some clients),
HeadObject or GetObject — or raises :class:`~tidepool.gateway.errors.S3Error` with the code S3
would answer. A key with NUL or longer than a dataset path is ``NoSuchKey``; any other key is
turned into a dataset path only through :mod:`tidepool.core.keys` (a ``..`` or empty segment
becomes part of an escaped file name), so nothing downstream can name a path outside the
dataset.

Query values are bounded: ``max-keys`` is ASCII digits (more than 1,000 asks for 1,000, as S3
does), a continuation token at most :data:`MAX_TOKEN` characters, and every other value at most
:data:`MAX_QUERY_VALUE` characters; a bad one is ``InvalidArgument`` naming the parameter.

Limits: path-style addressing only (``/bucket/key``; no virtual-host buckets); writes and
sub-resources (``?acl``, ``?tagging``, ``?uploads`` …) are refused — the gateway is read-only.
Continuation tokens are opaque to clients but not secret: base64url of the last key returned.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote

from tidepool.core.errors import BadRequestError
from tidepool.core.inputs import echo, parse_int
from tidepool.core.paths import MAX_PATH
from tidepool.gateway.errors import S3Error

__all__ = [
    "MAX_KEYS",
    "ListParams",
    "OpName",
    "Operation",
    "decode_token",
    "encode_token",
    "parse_request",
]

MAX_KEYS = 1000
"""Most keys and common prefixes one listing page returns (S3's cap)."""
MAX_QUERY_VALUE = MAX_PATH
"""Characters of one query value (a prefix or marker is at most a dataset path)."""
MAX_TOKEN = 8 * MAX_PATH
"""Characters of a continuation token (base64 of a key of up to 4 UTF-8 bytes a character)."""
MAX_BUCKET = 255

OpName = Literal[
    "ListBuckets",
    "GetBucketLocation",
    "HeadBucket",
    "ListObjectsV2",
    "ListObjects",
    "HeadObject",
    "GetObject",
]

_WRITES = frozenset({"PUT", "POST", "DELETE", "PATCH"})
_TOKEN_PREFIX = b"tp1:"
# sub-resources that name something other than the object's bytes or the listing
_SUBRESOURCES = frozenset(
    {
        "accelerate", "acl", "analytics", "attributes", "cors", "encryption",
        "intelligent-tiering", "inventory", "legal-hold", "lifecycle", "logging", "metrics",
        "notification", "object-lock", "ownershipControls", "policy", "policyStatus",
        "publicAccessBlock", "replication", "requestPayment", "restore", "retention", "select",
        "tagging", "torrent", "uploadId", "uploads", "versioning", "versions", "website",
    }
)  # fmt: skip


@dataclass(frozen=True)
class ListParams:
    """A listing request, v1 or v2, after validation."""

    prefix: str = ""
    delimiter: str = ""
    max_keys: int = MAX_KEYS
    after: str = ""
    """List keys strictly after this one (StartAfter, Marker, or the continuation token's key)."""
    start_after: str = ""
    marker: str = ""
    token: str | None = None
    """The continuation token as the client sent it (echoed back in the answer)."""
    url_encoding: bool = False
    fetch_owner: bool = False


@dataclass(frozen=True)
class Operation:
    name: OpName
    bucket: str = ""
    key: str = ""
    listing: ListParams | None = None
    query: dict[str, str] = field(default_factory=dict)


def encode_token(key: str) -> str:
    """The continuation token that resumes a listing after ``key``."""
    return base64.urlsafe_b64encode(_TOKEN_PREFIX + key.encode("utf-8")).decode("ascii")


def decode_token(token: str) -> str:
    """The key a continuation token resumes after; ``InvalidArgument`` if it is not ours."""
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii") + b"=" * (-len(token) % 4))
        if raw.startswith(_TOKEN_PREFIX):
            return raw[len(_TOKEN_PREFIX) :].decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        pass
    raise S3Error("InvalidArgument", "The continuation token provided is incorrect")


def _decode(text: str, what: str) -> str:
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise S3Error("InvalidURI", f"could not decode the {what} as UTF-8") from None


def _query(raw_query: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in raw_query.split("&"):
        if part:
            name, _, value = part.partition("=")
            name, value = _decode(name, "query string"), _decode(value, "query string")
            limit = MAX_TOKEN if name == "continuation-token" else MAX_QUERY_VALUE
            if len(value) > limit:
                raise S3Error(
                    "InvalidArgument",
                    f"the {echo(name)} parameter is {len(value)} characters long; "
                    f"at most {limit} are accepted",
                )
            out.setdefault(name, value)
    return out


def _max_keys(text: str | None) -> int:
    if text is None:
        return MAX_KEYS
    try:
        return min(parse_int(text, "max-keys", lo=0, hi=2**31 - 1), MAX_KEYS)
    except BadRequestError as exc:
        raise S3Error("InvalidArgument", str(exc)) from None


def _listing(query: dict[str, str], v2: bool) -> ListParams:
    encoding = query.get("encoding-type")
    if encoding is not None and encoding != "url":
        raise S3Error(
            "InvalidArgument", f"Invalid Encoding Method specified in Request: {encoding!r}"
        )
    prefix = query.get("prefix", "")
    max_keys = _max_keys(query.get("max-keys"))
    if not v2:
        marker = query.get("marker", "")
        return ListParams(
            prefix, query.get("delimiter", ""), max_keys, marker, marker=marker,
            url_encoding=encoding == "url", fetch_owner=True,
        )  # fmt: skip
    start_after = query.get("start-after", "")
    token = query.get("continuation-token")
    after = start_after
    if token is not None:
        after = max(decode_token(token), start_after)
    return ListParams(
        prefix, query.get("delimiter", ""), max_keys, after, start_after=start_after,
        token=token, url_encoding=encoding == "url",
        fetch_owner=query.get("fetch-owner", "false").lower() == "true",
    )  # fmt: skip


def _check_key(bucket: str, key: str) -> None:
    if "\x00" in key or len(key) > MAX_PATH:
        raise S3Error("NoSuchKey", "The specified key does not exist.", 404)


def parse_request(method: str, raw_path: str, raw_query: str = "") -> Operation:
    """The operation a request asks for, from its raw (still percent-encoded) path and query."""
    method = method.upper()
    if method in _WRITES:
        raise S3Error(
            "AccessDenied", "this gateway is read-only: Tidepool serves cached datasets", 403
        )
    if method not in ("GET", "HEAD"):
        raise S3Error(
            "MethodNotAllowed",
            f"the method {method[:20]} is not allowed against this resource",
            405,
        )
    if not raw_path.startswith("/"):
        raise S3Error("InvalidURI", "the request path must start with '/'")
    query = _query(raw_query)
    bucket_raw, _, key_raw = raw_path[1:].partition("/")
    bucket, key = _decode(bucket_raw, "bucket name"), _decode(key_raw, "object key")
    if "/" in bucket or "\x00" in bucket or len(bucket) > MAX_BUCKET or (not bucket and key):
        raise S3Error("InvalidBucketName", "The specified bucket is not valid.")
    sub = sorted(_SUBRESOURCES & query.keys())
    if sub:
        raise S3Error("NotImplemented", f"the ?{sub[0]} sub-resource is not implemented", 501)
    if not bucket:
        return Operation("ListBuckets", query=query)
    if not key:
        if method == "HEAD":
            return Operation("HeadBucket", bucket, query=query)
        if "location" in query:
            return Operation("GetBucketLocation", bucket, query=query)
        if query.get("list-type") == "2":
            return Operation("ListObjectsV2", bucket, listing=_listing(query, True), query=query)
        return Operation("ListObjects", bucket, listing=_listing(query, False), query=query)
    _check_key(bucket, key)
    return Operation("HeadObject" if method == "HEAD" else "GetObject", bucket, key, query=query)
