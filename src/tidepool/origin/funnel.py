"""The one funnel to the origin ("under storage"): every call to the cloud goes through here.

An :class:`Origin` wraps one mount's fsspec filesystem (:mod:`.backend`) and exposes its
operations in dataset-relative terms — ``info``, ``ls``, ``find``, ``sample``, ``read`` and
``read_first`` — all of them passing through :meth:`Origin._call`, which owns the timeouts, the
explicit tuple of retryable errors and capped exponential backoff with jitter (:mod:`.retry`),
the circuit breaker and congestion (:mod:`.health`) and the concurrency limit (the shape of
s3fs's ``_call_s3``/``_error_wrapper``). How hard it tries is :class:`.settings.OriginSettings`.
Backend libraries are configured to not retry on their own so the policy lives in one place.

S3 reads go straight to ``get_object`` so the response's ETag can be checked against the version
the caller expects: a read never mixes bytes of two versions of an object. Other backends are
read with ``_cat_file`` and checked through their metadata only (they have no conditional reads).

Limits: no write path (Tidepool is a read cache); HTTP origins cannot list directories.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import random
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fsspec.asyn import AsyncFileSystem

from tidepool.core.breaker import CircuitBreaker
from tidepool.core.errors import (
    OriginError,
    OriginRefusedError,
    OriginUnavailableError,
    redact,
)
from tidepool.core.fileinfo import FileInfo, file_info
from tidepool.core.pages import normalize_etag, version_of
from tidepool.origin.backend import (
    close_backend,
    entry_info,
    mtime_of,
    open_backend,
    origin_path,
    read_body,
    total_size,
)
from tidepool.origin.diagnose import classify, describe_mount
from tidepool.origin.health import OriginHealth
from tidepool.origin.localfs import ConfinedLocalFileSystem
from tidepool.origin.retry import NOT_RETRYABLE, backoff_delay, error_code, is_retryable
from tidepool.origin.s3tree import S3Tree, object_headers
from tidepool.origin.settings import OriginSettings
from tidepool.spec.config import MountConfig

__all__ = ["Origin", "OriginSettings", "OriginStats"]

log = logging.getLogger(__name__)
T = TypeVar("T")
FIND_PAGE = 1000
"""Keys per page of a paged find (S3's largest ``MaxKeys``)."""


@dataclass
class OriginStats:
    calls: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    failures: int = 0
    fast_failures: int = 0
    """Calls refused at once because the breaker was open."""
    bytes_read: int = 0


class Origin:
    """One mount's origin, reached only through :meth:`_call`."""

    def __init__(self, dataset: str, mount: MountConfig, settings: OriginSettings | None = None):
        self.dataset = dataset
        self.mount = mount
        self.settings = settings or OriginSettings()
        self.stats = OriginStats()
        self._fs: AsyncFileSystem | None = None
        self._sem = asyncio.Semaphore(self.settings.max_concurrency)
        self._rng = random.Random(self.settings.seed)
        self._secrets = mount.secret_values
        self.health = OriginHealth(
            dataset, self.settings, lambda: self.fs._info(self._path("")), self._describe
        )

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the backend filesystem on the running loop."""
        if self._fs is not None:
            return
        self._fs = await open_backend(self.dataset, self.mount, self.settings)

    async def close(self) -> None:
        await self.health.close()
        fs, self._fs = self._fs, None
        if fs is not None:
            await close_backend(fs)

    @property
    def fs(self) -> AsyncFileSystem:
        if self._fs is None:
            raise RuntimeError("Origin.start() was not awaited")
        return self._fs

    @property
    def breaker(self) -> CircuitBreaker:
        return self.health.breaker

    @property
    def reachable(self) -> bool:
        return self.health.allow()

    @property
    def has_etags(self) -> bool:
        """Whether versions are the store's ETags (S3-style), not size and mtime (``file://``)."""
        return self.mount.protocol not in ("file", "local")

    # ---- the funnel ------------------------------------------------------------------------

    async def _call(self, op: str, rel: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run one origin operation with timeout, retries, backoff, breaker and concurrency."""
        s = self.settings
        health = self.health
        self.stats.calls[op] = self.stats.calls.get(op, 0) + 1
        if not health.allow():
            self.stats.fast_failures += 1
            raise OriginUnavailableError(self.dataset, rel, health.down_reason())
        loop = asyncio.get_running_loop()
        started = loop.time()
        last: BaseException | None = None
        for attempt in range(s.retries * 3 + 1):
            try:
                async with self._sem:
                    result = await asyncio.wait_for(fn(), s.timeout)
                health.succeeded()
                return result
            except NOT_RETRYABLE as exc:
                health.answered()
                named = classify(exc, self.dataset, self.mount, rel)
                if type(named) is OriginRefusedError:
                    named = await self._refine_refusal(named, rel)
                if named is not None:
                    raise named from exc
                if isinstance(exc, FileNotFoundError):
                    gone = self._root_gone()
                    if gone is not None:
                        raise OriginUnavailableError(self.dataset, rel, gone) from None
                    raise self._not_found(rel) from None
                raise
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                last = exc
                named = classify(exc, self.dataset, self.mount, rel)
                if named is not None:  # a TLS mismatch: no retry will change the answer
                    self.stats.failures += 1
                    raise named from exc
                if not is_retryable(exc):
                    self.stats.failures += 1
                    raise OriginError(
                        errno.EIO,
                        f"origin error for dataset {self.dataset!r} path {rel!r} during {op}: "
                        f"{self._describe(exc)}",
                    ) from exc
                if not health.allow():
                    break  # another call found the origin down meanwhile: stop here
                delay = backoff_delay(attempt, s.backoff_base, s.backoff_cap, self._rng)
                congested = health.congested(exc)
                budget = s.timeout if congested else s.retry_budget
                retries = s.retries * 3 if congested else s.retries
                if attempt >= retries or loop.time() - started + delay > budget:
                    break
                self.stats.retries += 1
                log.debug(
                    "origin %s %s/%s failed (%s); retry in %.2fs",
                    op,
                    self.dataset,
                    rel,
                    self._describe(exc),
                    delay,
                )
                await asyncio.sleep(delay)
        self.stats.failures += 1
        reason = self._describe(last) if last else "unknown"
        if last is not None and health.congested(last):
            # the origin answered moments ago: a saturated link, not an outage
            raise OriginUnavailableError(self.dataset, rel, f"origin too slow: {reason}") from last
        health.unreachable(reason)
        raise OriginUnavailableError(self.dataset, rel, reason) from last

    async def _refine_refusal(self, refused: OriginRefusedError, rel: str) -> OSError:
        """A bare 403 (S3 answers HEAD without a body) asked again as a one-key listing, whose
        answer names the cause (SignatureDoesNotMatch, InvalidAccessKeyId, AccessDenied)."""
        fs: Any = self.fs
        if not hasattr(fs, "_call_s3"):
            return refused
        target = describe_mount(self.mount)
        s = self.settings
        try:
            await asyncio.wait_for(
                fs._call_s3(
                    "list_objects_v2", Bucket=target.bucket, Prefix=target.prefix, MaxKeys=1
                ),
                s.connect_timeout + s.read_timeout,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            better = classify(exc, self.dataset, self.mount, rel)
            if better is not None and type(better) is not OriginRefusedError:
                return better
        return refused

    def _local(self) -> ConfinedLocalFileSystem | None:
        """The backend of a ``file://`` origin (None for any other)."""
        local = getattr(self.fs, "sync_fs", None)
        return local if isinstance(local, ConfinedLocalFileSystem) else None

    def _root_gone(self) -> str | None:
        """Why a ``file://`` origin is unavailable when its root directory itself is missing
        (an unmounted disk or share, a renamed directory): then every file of it is unknown, not
        deleted, and what is cached is served (edge autonomy). None when it is there, or the
        origin is not local (a file missing under a present root is missing)."""
        local = self._local()
        if local is None:
            return None
        root = local.confined_root
        if os.path.isdir(root):
            return None
        return f"the origin's root directory {root} is missing (an unmounted disk or share?)"

    def _not_found(self, rel: str) -> FileNotFoundError:
        if rel:
            return FileNotFoundError(errno.ENOENT, f"no such file in dataset {self.dataset!r}", rel)
        # the mount's root: on an object store a prefix with no objects does not exist
        target = describe_mount(self.mount)
        where = f" at {target.endpoint}" if self.mount.protocol in ("s3", "s3a") else ""
        return FileNotFoundError(
            errno.ENOENT,
            f"nothing at {self.mount.url}{where} (dataset {self.dataset!r}): the prefix is "
            "missing or empty; check the path in the mountPoint",
            self.mount.url,
        )

    def _describe(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return redact(text, self._secrets)

    # ---- operations ------------------------------------------------------------------------

    def _path(self, rel: str) -> str:
        return origin_path(self.mount, rel)

    def _tree(self) -> S3Tree | None:
        """The S3 key mapping (origin.s3tree) when this origin is S3."""
        s3 = self._s3()
        return S3Tree(s3, self.mount.root) if s3 is not None else None

    async def info(self, rel: str) -> FileInfo:
        """Stat one path (file or directory)."""
        path = self._path(rel)
        tree = self._tree()
        if tree is not None:
            return await self._call("info", rel, lambda: tree.info(rel))

        async def go() -> FileInfo:
            out = entry_info(self.mount, await self.fs._info(path))
            out["name"] = rel
            return out

        return await self._call("info", rel, go)

    async def ls(self, rel: str) -> list[FileInfo]:
        """Direct children of a directory."""
        path = self._path(rel)
        tree = self._tree()
        if tree is not None:
            return await self._call("ls", rel, lambda: tree.ls(rel))

        async def go() -> list[FileInfo]:
            entries = await self.fs._ls(path, detail=True)
            out = [entry_info(self.mount, e) for e in entries]
            return [e for e in out if e["name"] != rel]

        return await self._call("ls", rel, go)

    async def find(self, rel: str) -> list[FileInfo]:
        """Every file below a directory (one paginated listing on object stores); on S3 the
        folder markers below it too (directories with ``marker`` set)."""
        path = self._path(rel)
        tree = self._tree()
        if tree is not None:
            return await self._call("find", rel, lambda: tree.find(rel))

        async def go() -> list[FileInfo]:
            found = await self.fs._find(path, detail=True, withdirs=False)
            return [
                entry_info(self.mount, e) for e in found.values() if e.get("type") != "directory"
            ]

        return await self._call("find", rel, go)

    async def find_pages(self, rel: str) -> AsyncIterator[list[FileInfo]]:
        """:meth:`find` a page at a time (one ``ListObjectsV2`` page of at most 1,000 keys on S3,
        each through the funnel with its own retries), so a listing of a million keys is never
        in memory whole. A listing whose keys go backwards (an origin that hands out a cycle of
        continuation tokens) is an :class:`OriginError`, not an endless loop. A ``file://``
        origin is walked a directory at a time; others are listed whole (``fsspec`` has no
        paged find) and handed out in pages."""
        tree = self._tree()
        local = self._local()
        if tree is None and local is not None:
            async for batch in self._local_find_pages(local, rel):
                yield batch
            return
        if tree is None:
            found = await self.find(rel)
            for start in range(0, len(found), FIND_PAGE):
                yield found[start : start + FIND_PAGE]
            return
        token: str | None = None
        last_key = ""
        pages = 0
        while True:
            page = await self._call("find", rel, functools.partial(tree.find_page, rel, token))
            pages += 1
            if page.first_key:
                if page.first_key <= last_key:
                    raise OriginError(
                        errno.EIO,
                        f"origin listing of dataset {self.dataset!r} path {rel!r} went back "
                        f"to key {page.first_key[:200]!r} after {last_key[:200]!r} on page "
                        f"{pages} (a cycle of continuation tokens?); the origin's listing is "
                        "broken",
                    )
                last_key = page.last_key
            yield page.entries
            if page.token is None:
                return
            token = page.token

    async def _local_find_pages(
        self, local: ConfinedLocalFileSystem, rel: str
    ) -> AsyncIterator[list[FileInfo]]:
        """The files of a local tree, one directory per page, each read in a thread through the
        funnel. A try that timed out leaves its thread reading: the retry waits for that same
        read (a generator cannot be resumed twice at once), and a walk that failed fails every
        retry the same way, so a listing is never cut short silently."""
        batches = local.find_batches(self._path(rel))
        pending: asyncio.Future[list[dict[str, Any]] | None] | None = None

        async def one() -> list[FileInfo] | None:
            nonlocal pending
            if pending is None:
                pending = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
            batch = await asyncio.shield(pending)
            pending = None
            return None if batch is None else [entry_info(self.mount, e) for e in batch]

        while (page := await self._call("find", rel, one)) is not None:
            yield page

    async def sample(self) -> int:
        """Objects found under the mount's root, at most one: a cheap check that the bucket
        exists, the prefix holds something and the credentials are accepted (one ``ListObjectsV2``
        with ``MaxKeys=1`` on S3, a listing of the root elsewhere). Raises the funnel's errors."""
        if self.mount.protocol in ("s3", "s3a") and hasattr(self.fs, "_call_s3"):
            fs: Any = self.fs
            target = describe_mount(self.mount)
            prefix = f"{target.prefix}/" if target.prefix else ""

            async def go_s3() -> int:
                resp = await fs._call_s3(
                    "list_objects_v2", Bucket=target.bucket, Prefix=prefix, MaxKeys=1
                )
                return int(resp.get("KeyCount") or len(resp.get("Contents") or []))

            return await self._call("sample", "", go_s3)

        async def go() -> int:
            return min(1, len(await self.fs._ls(self._path(""), detail=False)))

        return await self._call("sample", "", go)

    def _s3(self) -> Any | None:
        """The s3fs filesystem when this origin is S3 (reads then go to ``get_object``)."""
        if self.mount.protocol in ("s3", "s3a") and hasattr(self.fs, "_call_s3"):
            return self.fs
        return None

    async def read(self, rel: str, start: int, end: int, version: str | None = None) -> bytes:
        """Bytes ``[start, end)`` of a file; raises VersionChangedError if it is not ``version``."""
        if end <= start:
            return b""
        path = self._path(rel)
        s3 = self._s3()
        if s3 is not None:
            bucket, key = s3.split_path(path)[0], S3Tree(s3, self.mount.root).key(rel)

            async def go_s3() -> bytes:
                resp = await s3._call_s3(
                    "get_object", Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}"
                )
                return await read_body(resp, f"{self.dataset}/{rel}", start, end, version)

            data = await self._call("read", rel, go_s3)
        else:

            async def go() -> bytes:
                return bytes(await self.fs._cat_file(path, start=start, end=end))

            data = await self._call("read", rel, go)
        self.stats.bytes_read += len(data)
        return data

    async def read_whole(self, files: Sequence[tuple[str, str, int]]) -> list[bytes | None] | None:
        """Whole small files of a ``file://`` origin, many in one thread hop (a load of many
        small files): for each ``(rel, version, size)`` its bytes when the file still has that
        version (size and mtime), else None — changed since it was listed, gone, unreadable;
        read it with :meth:`read`, which says why. None when the origin is not on this machine.
        One call of the funnel (timeout, breaker) for the lot."""
        local = self._local()
        if local is None or not files:
            return None
        wanted = [(self._path(rel), version, size) for rel, version, size in files]

        async def go() -> list[bytes | None]:
            return await asyncio.to_thread(_read_whole_local, local, wanted)

        out = await self._call("read", files[0][0], go)
        self.stats.calls["read"] += len(files) - 1  # one per file, as reads one by one count
        self.stats.bytes_read += sum(len(data) for data in out if data is not None)
        return out

    async def read_first(self, rel: str, length: int) -> tuple[FileInfo, bytes]:
        """The metadata of a file and its first ``length`` bytes, in one origin round trip on S3
        (the answer's ``Content-Range`` and ``ETag`` carry size and version): a cold read
        never pays a stat and then a read. Other backends stat, then read.

        ``FileNotFoundError`` when there is no object at ``rel`` (it may still be a directory:
        ask :meth:`info`)."""
        path = self._path(rel)
        s3 = self._s3()
        if s3 is None:
            info = await self.info(rel)
            if info["type"] != "file":
                return info, b""
            return info, await self.read(rel, 0, min(length, info["size"]), info["version"])
        bucket, key = s3.split_path(path)[0], S3Tree(s3, self.mount.root).key(rel)
        if not rel:
            return await self.info(rel), b""

        async def go() -> tuple[FileInfo, bytes]:
            try:
                resp = await s3._call_s3(
                    "get_object", Bucket=bucket, Key=key, Range=f"bytes=0-{length - 1}"
                )
            except Exception as exc:
                if error_code(exc) in ("InvalidRange", "416"):  # an empty object has no byte 0
                    return await self._head(rel), b""
                raise
            size = total_size(resp)
            info = file_info(rel, size, normalize_etag(resp.get("ETag")), mtime_of(resp))
            info["headers"] = object_headers(resp)
            data = await read_body(resp, f"{self.dataset}/{rel}", 0, min(length, size), None)
            return info, data

        info, data = await self._call("read", rel, go)
        self.stats.bytes_read += len(data)
        return info, data

    async def _head(self, rel: str) -> FileInfo:
        tree = self._tree()
        if tree is not None:
            return await tree.head(rel)
        out = entry_info(self.mount, await self.fs._info(self._path(rel)))
        out["name"] = rel
        return out


def _read_whole_local(
    fs: ConfinedLocalFileSystem, files: Sequence[tuple[str, str, int]]
) -> list[bytes | None]:
    """:meth:`Origin.read_whole` on the calling thread: each file opened beneath the mount root
    (:meth:`ConfinedLocalFileSystem.open_beneath`), its version checked on the open descriptor
    (so the bytes read are the version's), then read whole."""
    out: list[bytes | None] = []
    for path, version, size in files:
        try:
            fd = fs.open_beneath(path)
        except OSError:
            out.append(None)
            continue
        try:
            st = os.fstat(fd)
            same = (
                stat.S_ISREG(st.st_mode)
                and st.st_size == size
                and version_of(None, size, st.st_mtime) == version
            )
            data = os.pread(fd, size, 0) if same else b""
            out.append(data if same and len(data) == size else None)
        except OSError:
            out.append(None)
        finally:
            os.close(fd)
    return out
