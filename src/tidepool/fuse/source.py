"""The mount's one bridge to the Tidepool client, and the exception -> errno table for FUSE.

The FUSE handlers run on trio; the client (:class:`tidepool.client.TidepoolFileSystem`) does its
network I/O on fsspec's asyncio loop thread and offers blocking methods. Two kinds of calls:

* **fast, sync, in the trio handler**: :meth:`Source.read_local` reads cached pages straight from
  the worker's tier directories when the mount runs on the worker's host (a few ``pread`` calls
  and a checksum per page; no HTTP, no thread hop);
* **blocking, in a worker thread**: everything else (``info``, ``ls``, reads over HTTP). The
  handlers run these through ``trio.to_thread.run_sync`` (trio's thread cache), never on the
  trio thread, so one slow origin read never stalls the other requests.

One client instance serves the whole mount. Reads go through the client's version-pinned
primitives (``read_local`` and ``read_range`` with the ``info`` the mount already holds), so the
bytes a handle returns always belong to the version whose size the kernel was told; when that
version is gone from origin and cache the read fails with ``ESTALE`` instead of mixing versions.

Limits: the metadata TTL and page size are learned from the worker's ``/v1/node`` at start;
datasets added to the worker later use the defaults below.
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from tidepool.client import TidepoolFileSystem
from tidepool.client.local import LocalFile
from tidepool.core.errors import (
    AuthError,
    BadRequestError,
    OriginBucketMissingError,
    OriginRefusedError,
    OriginTLSError,
    OriginUnavailableError,
    VersionGoneError,
    redact,
)

log = logging.getLogger(__name__)

DEFAULT_TTL = 5.0
"""Attribute/entry timeout when the worker does not say (and for the ``--all`` root)."""
DEFAULT_PAGE = 1 << 20
"""Read alignment when the page size is unknown (the worker's default page size)."""


def errno_for(exc: BaseException) -> int:
    """The errno a FUSE reply carries for an exception from the client (EIO when unsure).

    The origin's named errors keep their meaning: a missing bucket (``NoSuchBucket``) is ENOENT,
    refused credentials (``AccessDenied``, ``SignatureDoesNotMatch``, ``InvalidAccessKeyId``)
    are EACCES, a TLS mismatch with the origin is EPROTO, a version gone mid-read ESTALE."""
    if isinstance(exc, VersionGoneError):
        return errno.ESTALE  # the version this handle was opened at is gone: reopen
    if isinstance(exc, OriginBucketMissingError):
        return errno.ENOENT
    if isinstance(exc, OriginRefusedError):
        return errno.EACCES
    if isinstance(exc, OriginTLSError):
        return errno.EPROTO
    if isinstance(exc, FileNotFoundError):
        return errno.ENOENT
    if isinstance(exc, NotADirectoryError):
        return errno.ENOTDIR
    if isinstance(exc, IsADirectoryError):
        return errno.EISDIR
    if isinstance(exc, AuthError | PermissionError):
        return errno.EACCES
    if isinstance(exc, BadRequestError):
        return errno.EINVAL
    if isinstance(exc, OriginUnavailableError | ConnectionError | TimeoutError):
        return errno.EIO
    return errno.EIO


def describe(exc: BaseException) -> str:
    """A one-line, secret-free description for logs."""
    return redact(f"{type(exc).__name__}: {exc}")[:500]


class Source:
    """Blocking and fast-path access to one worker, in the mount's terms."""

    def __init__(self, fs: TidepoolFileSystem) -> None:
        self.fs = fs

    # ---- metadata (blocking: call from a thread) ---------------------------------------------

    def info(self, path: str, fresh: bool = False) -> dict[str, Any]:
        """``info()`` of a client path; ``fresh`` skips the client's own metadata cache."""
        if fresh:
            self.fs.invalidate_cache(path)
        out: dict[str, Any] = self.fs.info(path)
        return out

    def ls(self, path: str) -> list[dict[str, Any]]:
        """Children of a directory (``""`` lists the datasets), full client names."""
        entries: list[dict[str, Any]] = self.fs.ls(path, detail=True)
        if len(entries) == 1 and entries[0].get("type") == "file" and entries[0]["name"] == path:
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
        return entries

    # ---- settings learned from the worker ----------------------------------------------------

    def ttl(self, path: str) -> float:
        """Metadata TTL of the dataset ``path`` belongs to (the kernel's entry/attr timeout)."""
        ds = path.partition("/")[0]
        ttls: dict[str, float] = getattr(self.fs, "_ttls", {})
        return float(ttls.get(ds, DEFAULT_TTL)) if ds else DEFAULT_TTL

    def page_size(self, path: str) -> int:
        local = getattr(self.fs, "_local", None)
        if local is not None:
            layout = local.layouts.get(path.partition("/")[0])
            if layout is not None:
                return int(layout.page_size)
        return DEFAULT_PAGE

    @property
    def has_local(self) -> bool:
        """True when cached pages are readable from this host (the same-host fast path)."""
        return getattr(self.fs, "_local", None) is not None

    # ---- data --------------------------------------------------------------------------------

    def read_local(
        self,
        path: str,
        info: dict[str, Any],
        start: int,
        end: int,
        opened: LocalFile | None = None,
    ) -> bytes | None:
        """Sync fast path: bytes from the page files on this host, or None if any is missing
        (always, without the fast path). ``opened``: the open file's :meth:`local_file`."""
        return self.fs.read_local(path, info, start, end, opened)

    def local_file(self, path: str, info: dict[str, Any]) -> LocalFile | None:
        """Same-host reads of one open file (its extent kept open until closed), or None."""
        return self.fs.local_file(path, info)

    def fetch(self, path: str, info: dict[str, Any], start: int, end: int) -> bytes:
        """Blocking read of ``[start, end)`` of version ``info['version']`` over HTTP."""
        return self.fs.read_range(path, info, start, end)

    def read(self, path: str, info: dict[str, Any], start: int, end: int) -> bytes:
        """Blocking read: the fast path when it has every page, else the worker."""
        data = self.read_local(path, info, start, end)
        return data if data is not None else self.fetch(path, info, start, end)
