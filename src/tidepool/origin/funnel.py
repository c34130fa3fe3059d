"""The one funnel to the origin ("under storage"): every call to the cloud goes through here.

An :class:`Origin` wraps one mount's fsspec filesystem (s3fs, HTTP, local, any async or sync
backend) and exposes four operations in dataset-relative terms — ``info``, ``ls``, ``find`` and
``read`` — all of them passing through :meth:`Origin._call`, which owns the timeouts, the explicit
tuple of retryable errors, capped exponential backoff with jitter and the concurrency limit (the
shape of s3fs's ``_call_s3``/``_error_wrapper``). Backend libraries are configured to not retry on
their own so the policy lives in one place.

S3 reads go straight to ``get_object`` so the response's ETag can be checked against the version
the caller expects: a read never mixes bytes of two versions of an object. Other backends are
read with ``_cat_file`` and checked through their metadata only (they have no conditional reads).

Local (``file://``) mounts use :class:`tidepool.origin.localfs.ConfinedLocalFileSystem`, which
never follows a symbolic link out of the mount root.

Limits: no write path (Tidepool is a read cache); HTTP origins cannot list directories.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
import fsspec
from fsspec.asyn import AsyncFileSystem

from tidepool.core.breaker import CircuitBreaker
from tidepool.core.errors import (
    OriginError,
    OriginRefusedError,
    OriginUnavailableError,
    VersionChangedError,
    redact,
)
from tidepool.core.fileinfo import FileInfo, dir_info, file_info
from tidepool.core.pages import normalize_etag
from tidepool.core.paths import join
from tidepool.origin.diagnose import classify, describe_mount, s3_code
from tidepool.origin.s3tree import S3Tree, object_headers
from tidepool.spec.config import MountConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

# Backends by protocol name, imported lazily, with an install hint (fsspec known_implementations
# covers the rest; this table only adds the hints for the ones users hit most).
INSTALL_HINTS: dict[str, str] = {
    "s3": "pip install s3fs",
    "gs": "pip install gcsfs",
    "abfs": "pip install adlfs",
    "http": "pip install aiohttp",
    "https": "pip install aiohttp",
}

# Error codes an S3-compatible origin answers when it is overloaded or briefly broken.
RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "500",
        "502",
        "503",
        "504",
    }
)


def _retryable_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [
        asyncio.TimeoutError,
        TimeoutError,
        ConnectionError,
        aiohttp.ClientConnectionError,
        aiohttp.ClientPayloadError,
    ]
    try:  # botocore is present whenever s3fs is
        from botocore import exceptions as bx

        types += [
            bx.EndpointConnectionError,
            bx.ConnectionClosedError,
            bx.ConnectTimeoutError,
            bx.ReadTimeoutError,
            bx.ResponseStreamingError,
        ]
    except ImportError:  # pragma: no cover - s3fs not installed
        pass
    return tuple(types)


RETRYABLE_ERRORS: tuple[type[BaseException], ...] = _retryable_types()
NOT_RETRYABLE: tuple[type[BaseException], ...] = (
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    VersionChangedError,
)


error_code = s3_code
"""The S3 error code carried by ``exc`` or its causes (s3fs wraps botocore's ClientError)."""


def is_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` (or its cause) is a timeout rather than a refusal or a reset."""
    timeouts: list[type[BaseException]] = [asyncio.TimeoutError, TimeoutError]
    try:
        from botocore import exceptions as bx

        timeouts += [bx.ConnectTimeoutError, bx.ReadTimeoutError]
    except ImportError:  # pragma: no cover
        pass
    cur: BaseException | None = exc
    seen: set[int] = set()
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, tuple(timeouts)):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed origin call may succeed if tried again."""
    if isinstance(exc, NOT_RETRYABLE):
        return False
    if isinstance(exc, RETRYABLE_ERRORS):
        return True
    chain: BaseException | None = exc.__cause__
    while chain is not None:
        if isinstance(chain, RETRYABLE_ERRORS):
            return True
        chain = chain.__cause__
    return error_code(exc) in RETRYABLE_CODES


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Capped exponential backoff with full jitter (attempt 0 is the first retry)."""
    return float(rng.uniform(0, min(cap, base * (2**attempt))))


@dataclass(frozen=True)
class OriginSettings:
    """How hard the funnel tries before it gives up on the origin."""

    timeout: float = 15.0
    """Seconds one attempt of one call may take (a 1 MiB page over a slow link included)."""
    connect_timeout: float = 1.5
    """Seconds to open a connection to the origin (a cut link must be noticed quickly)."""
    congestion_grace: float = 1.0
    """A timeout while another call succeeded within this many seconds is taken for congestion
    (a full link still delivers; a pulled cable delivers nothing): the call keeps retrying, up to
    ``timeout``, as long as that stays true, and the breaker stays closed. A refused or reset
    connection is never congestion, so a cut link is still reported at once."""
    read_timeout: float = 1.5
    """Seconds the origin may stay silent (no byte of an answer arrives) before an attempt is
    abandoned. A pulled cable keeps pooled connections open and answers nothing; this bounds the
    first uncached read after it to about two seconds. (A slow listing is retried, and while
    other calls still succeed the funnel treats silence as congestion, not an outage.)"""
    retries: int = 4
    """Extra attempts after the first for retryable errors."""
    retry_budget: float = 1.0
    """Seconds after which a failing call stops retrying, so an unreachable origin is reported
    within about two seconds instead of hanging the reader."""
    backoff_base: float = 0.1
    """First backoff step in seconds; doubles each retry."""
    backoff_cap: float = 1.0
    """Longest single backoff in seconds."""
    breaker_threshold: int = 2
    """Consecutive unreachable calls that open the circuit breaker."""
    probe_interval: float = 1.0
    """Seconds between background probes while the breaker is open."""
    max_concurrency: int = 32
    """Origin calls in flight at once for one mount."""
    seed: int | None = None
    """Seed of the jitter generator (tests)."""


@dataclass
class OriginStats:
    calls: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    failures: int = 0
    fast_failures: int = 0
    """Calls refused at once because the breaker was open."""
    bytes_read: int = 0


def _mtime(entry: dict[str, Any]) -> float | None:
    for key in ("LastModified", "mtime", "last_modified", "updated", "created"):
        value = entry.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


def _etag(entry: dict[str, Any]) -> str | None:
    for key in ("ETag", "etag", "e_tag"):
        if entry.get(key):
            return normalize_etag(str(entry[key]))
    return None


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
        self.breaker = CircuitBreaker(threshold=self.settings.breaker_threshold)
        self._last_success = float("-inf")
        self._probe: asyncio.Task[None] | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the backend filesystem on the running loop."""
        if self._fs is not None:
            return
        self._fs = await self._make_fs()

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None
        fs, self._fs = self._fs, None
        if fs is None:
            return
        s3 = getattr(fs, "_s3", None)
        if s3 is not None:
            with contextlib.suppress(Exception):
                await s3.close()
        session = getattr(fs, "_session", None)
        if session is not None and hasattr(session, "close"):
            with contextlib.suppress(Exception):
                await session.close()

    async def _make_fs(self) -> AsyncFileSystem:
        protocol = self.mount.protocol
        opts = dict(self.mount.storage_options)
        try:
            cls = fsspec.get_filesystem_class(protocol)
        except (ImportError, ValueError) as exc:
            hint = INSTALL_HINTS.get(protocol, f"install the fsspec backend for {protocol!r}")
            raise OriginError(
                errno.ENOPROTOOPT,
                f"dataset {self.dataset!r} mount {self.mount.name!r}: no filesystem for "
                f"protocol {protocol!r} ({hint})",
            ) from exc
        if protocol in ("s3", "s3a"):
            cfg = dict(opts.pop("config_kwargs", {}) or {})
            cfg.setdefault("connect_timeout", self.settings.connect_timeout)
            cfg.setdefault("read_timeout", self.settings.read_timeout)
            # retries are the funnel's job: botocore and s3fs must not multiply them. botocore's
            # ``max_attempts`` counts *retries* (it becomes total_max_attempts = 1 + max_attempts),
            # so the one attempt is spelled ``total_max_attempts``.
            cfg["retries"] = {"total_max_attempts": 1, "mode": "standard"}
            cfg.setdefault("max_pool_connections", max(10, self.settings.max_concurrency))
            opts["config_kwargs"] = cfg
            opts.setdefault("use_listings_cache", False)
            fs = cls(asynchronous=True, skip_instance_cache=True, **opts)
            fs.retries = 1  # a class attribute in s3fs, not a constructor argument
            await fs.set_session()
            return fs
        if protocol in ("file", "local"):  # confined to the mount root: see origin.localfs
            from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper

            from tidepool.origin.localfs import ConfinedLocalFileSystem

            return AsyncFileSystemWrapper(
                ConfinedLocalFileSystem(self.mount.root, **opts), asynchronous=True
            )
        if getattr(cls, "async_impl", False):
            opts.setdefault("skip_instance_cache", True)
            fs = cls(asynchronous=True, **opts)
            if hasattr(fs, "set_session"):
                await fs.set_session()
            return fs
        from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper

        return AsyncFileSystemWrapper(cls(**opts), asynchronous=True)

    @property
    def fs(self) -> AsyncFileSystem:
        if self._fs is None:
            raise RuntimeError("Origin.start() was not awaited")
        return self._fs

    # ---- the funnel ------------------------------------------------------------------------

    async def _call(self, op: str, rel: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run one origin operation with timeout, retries, backoff, breaker and concurrency."""
        s = self.settings
        self.stats.calls[op] = self.stats.calls.get(op, 0) + 1
        if not self.breaker.allow():
            self.stats.fast_failures += 1
            raise OriginUnavailableError(self.dataset, rel, self._down_reason())
        loop = asyncio.get_running_loop()
        started = loop.time()
        last: BaseException | None = None
        for attempt in range(s.retries * 3 + 1):
            try:
                async with self._sem:
                    result = await asyncio.wait_for(fn(), s.timeout)
                self.breaker.success()
                self._last_success = loop.time()
                return result
            except NOT_RETRYABLE as exc:
                self.breaker.success()  # the origin answered
                named = classify(exc, self.dataset, self.mount, rel)
                if type(named) is OriginRefusedError:
                    named = await self._refine_refusal(named, rel)
                if named is not None:
                    raise named from exc
                if isinstance(exc, FileNotFoundError):
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
                if not self.breaker.allow():
                    break  # another call found the origin down meanwhile: stop here
                delay = backoff_delay(attempt, s.backoff_base, s.backoff_cap, self._rng)
                congested = self._congested(exc, loop.time())
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
        if last is not None and self._congested(last, loop.time()):
            # the origin answered moments ago: a saturated link, not an outage
            raise OriginUnavailableError(self.dataset, rel, f"origin too slow: {reason}") from last
        if self.breaker.failure(time.time(), reason):
            log.warning(
                "origin of dataset %r unreachable (%s): serving from cache only, probing every "
                "%.1fs",
                self.dataset,
                reason,
                s.probe_interval,
            )
            self._start_probe()
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

    def _congested(self, exc: BaseException, now: float) -> bool:
        """A timeout while other calls to the origin succeeded within ``congestion_grace``
        seconds: the link is full (a SYN queued behind megabytes of pages), not cut."""
        recent = now - self._last_success < self.settings.congestion_grace
        return recent and is_timeout(exc)

    def _down_reason(self) -> str:
        since = self.breaker.down_since
        when = (
            datetime.fromtimestamp(since, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if since else "?"
        )
        return f"unreachable since {when} ({self.breaker.last_error})"

    def _start_probe(self) -> None:
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._probe_loop())

    async def _probe_loop(self) -> None:
        """While the breaker is open, ask the origin for its root until it answers."""
        s = self.settings
        while not self.breaker.allow():
            await asyncio.sleep(s.probe_interval)
            try:
                await asyncio.wait_for(self.fs._info(self._path("")), s.connect_timeout + 1.0)
            except (FileNotFoundError, PermissionError, NotADirectoryError):
                pass  # an answer all the same
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_retryable(exc) or isinstance(exc, OSError):
                    self.breaker.last_error = self._describe(exc)
                    continue
            down = time.time() - (self.breaker.down_since or time.time())
            self.breaker.success()
            log.warning("origin of dataset %r reachable again after %.1fs", self.dataset, down)

    @property
    def reachable(self) -> bool:
        return self.breaker.allow()

    def _describe(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return redact(text, self._secrets)

    # ---- operations ------------------------------------------------------------------------

    def _path(self, rel: str) -> str:
        return join(self.mount.root, rel)

    def _rel(self, origin_path: str) -> str:
        root = self.mount.root.rstrip("/")
        name = origin_path.rstrip("/")
        if self.mount.protocol == "file":
            name = name if name.startswith("/") else "/" + name
            root = root if root.startswith("/") else "/" + root
        if name == root:
            return ""
        if root and name.startswith(root + "/"):
            return name[len(root) + 1 :]
        return name.lstrip("/")

    def _entry(self, entry: dict[str, Any]) -> FileInfo:
        rel = self._rel(str(entry["name"]))
        if entry.get("type") == "directory":
            return dir_info(rel)
        return file_info(rel, int(entry.get("size") or 0), _etag(entry), _mtime(entry))

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
            entry = await self.fs._info(path)
            out = self._entry(entry)
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
            out = [self._entry(e) for e in entries]
            return [e for e in out if e["name"] != rel]

        return await self._call("ls", rel, go)

    async def find(self, rel: str) -> list[FileInfo]:
        """Every file below a directory (one paginated listing on object stores); on S3 the
        folder markers below it too (directories with a version)."""
        path = self._path(rel)
        tree = self._tree()
        if tree is not None:
            return await self._call("find", rel, lambda: tree.find(rel))

        async def go() -> list[FileInfo]:
            found = await self.fs._find(path, detail=True, withdirs=False)
            return [self._entry(e) for e in found.values() if e.get("type") != "directory"]

        return await self._call("find", rel, go)

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
                return await self._body(resp, rel, start, end, version)

            data = await self._call("read", rel, go_s3)
        else:

            async def go() -> bytes:
                return bytes(await self.fs._cat_file(path, start=start, end=end))

            data = await self._call("read", rel, go)
        self.stats.bytes_read += len(data)
        return data

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
            size = _total_size(resp)
            info = file_info(rel, size, normalize_etag(resp.get("ETag")), _mtime(resp))
            info["headers"] = object_headers(resp)
            data = await self._body(resp, rel, 0, min(length, size), None)
            return info, data

        info, data = await self._call("read", rel, go)
        self.stats.bytes_read += len(data)
        return info, data

    async def _head(self, rel: str) -> FileInfo:
        tree = self._tree()
        if tree is not None:
            return await tree.head(rel)
        entry = await self.fs._info(self._path(rel))
        out = self._entry(entry)
        out["name"] = rel
        return out

    async def _body(
        self, resp: dict[str, Any], rel: str, start: int, end: int, version: str | None
    ) -> bytes:
        body = resp["Body"]
        try:
            tag = normalize_etag(resp.get("ETag"))
            if version is not None and tag is not None and tag != version:
                raise VersionChangedError(
                    errno.ESTALE,
                    f"{self.dataset}/{rel} changed at the origin (version {tag!r}, "
                    f"expected {version!r})",
                )
            data: bytes = await body.read()
        finally:
            body.close()
        # Some S3 servers ignore Range and answer 200 with the whole object.
        if len(data) > end - start and "ContentRange" not in resp:
            data = data[start:end]
        return data


def _total_size(resp: dict[str, Any]) -> int:
    """An object's size from a ranged GET (``Content-Range: bytes 0-9/1234``)."""
    content_range = resp.get("ContentRange")
    if content_range:
        total = str(content_range).rpartition("/")[2]
        if total.isdigit():
            return int(total)
    return int(resp.get("ContentLength") or 0)
