"""An S3 bucket prefix seen as the dataset's tree: listings from raw keys, through one mapping.

s3fs folds the keys a POSIX tree cannot hold: it strips the trailing ``/`` of a folder marker and
lists it as a file, lists ``x/y//z`` under a directory it cannot then read, and answers a key that
is both an object and a prefix as a file. This module lists the raw keys with
``ListObjectsV2`` and places each with :mod:`tidepool.core.keys`, so folder markers are
directories, odd keys get their escaped names, and every listed path maps back to the key it
came from (:meth:`S3Tree.key`).

It also keeps the object's own HTTP metadata (Content-Type, Content-Encoding, Content-Disposition,
Content-Language, Cache-Control, Expires, ``x-amz-meta-*``) from a HEAD or GET answer as the
entry's ``headers``, which the S3 gateway serves as the origin gave them.

The methods here do I/O but no retries: :class:`tidepool.origin.funnel.Origin` calls them inside
its funnel. Limits: a directory listing whose children include an odd common prefix
(``x/y//``) lists that prefix recursively to place its keys; a ``stat`` of a plain name asks for
the object and the prefix at once (two requests in parallel).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from datetime import datetime
from typing import Any, NamedTuple

from tidepool.core import keys
from tidepool.core.fileinfo import FileInfo, dir_info, file_info
from tidepool.core.pages import normalize_etag
from tidepool.core.paths import parent

__all__ = ["KeyPage", "S3Tree", "object_headers"]

_HEADERS = {
    "ContentType": "Content-Type",
    "ContentEncoding": "Content-Encoding",
    "ContentDisposition": "Content-Disposition",
    "ContentLanguage": "Content-Language",
    "CacheControl": "Cache-Control",
}


def object_headers(resp: dict[str, Any]) -> dict[str, str]:
    """The headers of an object a client set at upload, from a HEAD/GET answer (boto3 shape)."""
    out = {header: str(resp[field]) for field, header in _HEADERS.items() if resp.get(field)}
    raw = (resp.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
    expires = resp.get("ExpiresString") or raw.get("expires")
    if not expires and isinstance(resp.get("Expires"), datetime):
        from email.utils import format_datetime

        expires = format_datetime(resp["Expires"], usegmt=True)
    if expires:
        out["Expires"] = str(expires)
    for name, value in (resp.get("Metadata") or {}).items():
        out[f"x-amz-meta-{name.lower()}"] = str(value)
    return out


class KeyPage(NamedTuple):
    """One page of a recursive listing."""

    entries: list[FileInfo]
    token: str | None
    """The continuation token of the next page (None: this was the last)."""
    first_key: str
    last_key: str
    """The raw keys the page began and ended with ("" when it held none)."""


def _mtime(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None


class S3Tree:
    """The keys under ``bucket/prefix`` as dataset paths (``root`` is ``bucket[/prefix]``)."""

    def __init__(self, fs: Any, root: str) -> None:
        self.fs = fs
        bucket, _, prefix = root.strip("/").partition("/")
        self.bucket = bucket
        self.base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""

    def key(self, rel: str) -> str:
        """The object key of a file path."""
        return self.base + keys.to_key(rel)

    def _dir_prefix(self, rel: str) -> str:
        return self.base + (rel + "/" if rel else "")

    async def _list(
        self, prefix: str, delimiter: str = "", max_keys: int = 1000
    ) -> tuple[list[dict[str, Any]], list[str]]:
        objects: list[dict[str, Any]] = []
        prefixes: list[str] = []
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": max_keys}
            if delimiter:
                kw["Delimiter"] = delimiter
            if token:
                kw["ContinuationToken"] = token
            resp = await self.fs._call_s3("list_objects_v2", **kw)
            objects += resp.get("Contents") or []
            prefixes += [p["Prefix"] for p in resp.get("CommonPrefixes") or []]
            token = resp.get("NextContinuationToken")
            if not resp.get("IsTruncated") or not token or max_keys < 1000:
                return objects, prefixes

    def _placed(self, obj: dict[str, Any]) -> tuple[keys.Placed, FileInfo]:
        k = str(obj["Key"])[len(self.base) :]
        size = int(obj.get("Size") or 0)
        placed = keys.place(k, size)
        etag = normalize_etag(obj.get("ETag"))
        mtime = _mtime(obj.get("LastModified"))
        if placed.kind == "marker":
            info = dir_info(placed.path)
            info["version"] = etag or ""
            info["mtime"] = mtime
            info["marker"] = True
        else:
            info = file_info(placed.path, size, etag, mtime)
        return placed, info

    @staticmethod
    def _settle(rel: str, entries: list[FileInfo], dirs: set[str]) -> list[FileInfo]:
        """Entries with every file whose path is also a directory moved to its escaped name."""
        out = []
        for e in entries:
            if e["type"] == "file" and e["name"] in dirs:
                e = dict(e)  # type: ignore[assignment]
                e["name"] = keys.escaped(e["name"])
            out.append(e)
        return out

    async def find(self, rel: str) -> list[FileInfo]:
        """Every file below the directory ``rel``, and the folder markers (directories whose
        ``marker`` is set) below it."""
        objects, _ = await self._list(self._dir_prefix(rel))
        entries: list[FileInfo] = []
        dirs: set[str] = set()
        for obj in objects:
            placed, info = self._placed(obj)
            if placed.path == rel:  # the directory's own folder marker
                continue
            entries.append(info)
            if placed.kind == "marker":
                dirs.add(placed.path)
            d = parent(placed.path)
            while d and d != rel and d not in dirs:
                dirs.add(d)
                d = parent(d)
        return self._settle(rel, entries, dirs)

    async def find_page(self, rel: str, token: str | None = None, max_keys: int = 1000) -> KeyPage:
        """One ``ListObjectsV2`` page of :meth:`find` and the token of the next (None: last).
        Files that are also directories are not moved to their escaped names here: that needs
        the keys of later pages (:class:`tidepool.worker.findwriter.FindWriter` does it)."""
        kw: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self._dir_prefix(rel),
            "MaxKeys": max_keys,
        }
        if token:
            kw["ContinuationToken"] = token
        resp = await self.fs._call_s3("list_objects_v2", **kw)
        objects = resp.get("Contents") or []
        entries: list[FileInfo] = []
        for obj in objects:
            placed, info = self._placed(obj)
            if placed.path != rel:  # not the directory's own folder marker
                entries.append(info)
        following = resp.get("NextContinuationToken")
        return KeyPage(
            entries,
            str(following) if resp.get("IsTruncated") and following else None,
            str(objects[0]["Key"]) if objects else "",
            str(objects[-1]["Key"]) if objects else "",
        )

    async def ls(self, rel: str) -> list[FileInfo]:
        """The direct children of the directory ``rel``."""
        objects, prefixes = await self._list(self._dir_prefix(rel), "/")
        cut = len(self._dir_prefix(rel))
        entries: list[FileInfo] = []
        dirs: set[str] = set()
        odd: list[str] = []
        for p in prefixes:
            segment = p[cut:-1]
            if keys.is_plain(segment):
                dirs.add(f"{rel}/{segment}" if rel else segment)
            else:
                odd.append(p)
        for obj in objects:
            placed, info = self._placed(obj)
            if placed.path != rel:
                entries.append(info)
        for p in odd:  # every key under an odd prefix is one escaped file in ``rel``
            more, _ = await self._list(p)
            entries += [self._placed(o)[1] for o in more]
        entries += [dir_info(d) for d in dirs]
        return sorted(self._settle(rel, entries, dirs), key=lambda e: e["name"])

    async def info(self, rel: str) -> FileInfo:
        """Stat a path: an escaped name is that object; a plain name is a directory when any
        key starts with ``rel/`` (its marker's ETag as version), else the object."""
        if not rel:
            return dir_info("")
        if keys.is_escaped(rel.rpartition("/")[2]):
            return await self.head(rel)
        below = asyncio.ensure_future(self._list(self._dir_prefix(rel), max_keys=1))
        try:
            found = await self.head(rel)
        except FileNotFoundError:
            found = None
        except BaseException:
            below.cancel()
            with contextlib.suppress(BaseException):
                await below
            raise
        objects, _ = await below
        if objects:
            info = dir_info(rel)
            first = objects[0]
            if str(first["Key"]) == self._dir_prefix(rel) and not int(first.get("Size") or 0):
                info["version"] = normalize_etag(first.get("ETag")) or ""
                info["mtime"] = _mtime(first.get("LastModified"))
                info["marker"] = True
            return info
        if found is None:
            raise FileNotFoundError(rel)
        return found

    async def head(self, rel: str) -> FileInfo:
        """The object of a file path, with its own headers. A key the origin refuses as
        malformed (juicefs answers ``a/../b`` with 400) is a key it cannot hold: not found."""
        try:
            resp = await self.fs._call_s3("head_object", Bucket=self.bucket, Key=self.key(rel))
        except OSError as exc:
            if exc.errno == errno.EINVAL and keys.is_escaped(rel.rpartition("/")[2]):
                raise FileNotFoundError(errno.ENOENT, "no such key", rel) from exc
            raise
        info = file_info(
            rel,
            int(resp.get("ContentLength") or 0),
            normalize_etag(resp.get("ETag")),
            _mtime(resp.get("LastModified")),
        )
        info["headers"] = object_headers(resp)
        return info
