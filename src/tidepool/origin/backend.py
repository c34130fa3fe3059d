"""The fsspec filesystem behind one mount, and the shape of its answers.

:func:`open_backend` creates the mount's filesystem on the running loop (s3fs, HTTP, local, any
async or sync fsspec backend; a sync one is wrapped), with the backend's own retries switched off
so the funnel's policy (:mod:`.retry`) is the only one; :func:`close_backend` releases its
sessions. Local (``file://``) mounts use :class:`.localfs.ConfinedLocalFileSystem`, which never
follows a symbolic link out of the mount root.

The rest turns what backends answer into Tidepool's terms: dataset-relative paths
(:func:`origin_path`, :func:`relative`), :class:`FileInfo` from an fsspec listing entry
(:func:`entry_info`), and the body of an S3 ``get_object`` answer checked against the version a
read is pinned to (:func:`read_body`). No retries, no breaker: the funnel calls these.
"""

from __future__ import annotations

import contextlib
import errno
from datetime import datetime
from typing import Any

import fsspec
from fsspec.asyn import AsyncFileSystem

from tidepool.core.errors import OriginError, VersionChangedError
from tidepool.core.fileinfo import FileInfo, dir_info, file_info
from tidepool.core.pages import normalize_etag
from tidepool.core.paths import join
from tidepool.origin.settings import OriginSettings
from tidepool.spec.config import MountConfig

# Backends by protocol name, imported lazily, with an install hint (fsspec known_implementations
# covers the rest; this table only adds the hints for the ones users hit most).
INSTALL_HINTS: dict[str, str] = {
    "s3": "pip install s3fs",
    "gs": "pip install gcsfs",
    "abfs": "pip install adlfs",
    "http": "pip install aiohttp",
    "https": "pip install aiohttp",
}


async def open_backend(
    dataset: str, mount: MountConfig, settings: OriginSettings
) -> AsyncFileSystem:
    """The mount's filesystem, asynchronous, created on the running loop."""
    protocol = mount.protocol
    opts = dict(mount.storage_options)
    try:
        cls = fsspec.get_filesystem_class(protocol)
    except (ImportError, ValueError) as exc:
        hint = INSTALL_HINTS.get(protocol, f"install the fsspec backend for {protocol!r}")
        raise OriginError(
            errno.ENOPROTOOPT,
            f"dataset {dataset!r} mount {mount.name!r}: no filesystem for "
            f"protocol {protocol!r} ({hint})",
        ) from exc
    if protocol in ("s3", "s3a"):
        cfg = dict(opts.pop("config_kwargs", {}) or {})
        cfg.setdefault("connect_timeout", settings.connect_timeout)
        cfg.setdefault("read_timeout", settings.read_timeout)
        # retries are the funnel's job: botocore and s3fs must not multiply them. botocore's
        # ``max_attempts`` counts *retries* (it becomes total_max_attempts = 1 + max_attempts),
        # so the one attempt is spelled ``total_max_attempts``.
        cfg["retries"] = {"total_max_attempts": 1, "mode": "standard"}
        cfg.setdefault("max_pool_connections", max(10, settings.max_concurrency))
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
            ConfinedLocalFileSystem(mount.root, **opts), asynchronous=True
        )
    if getattr(cls, "async_impl", False):
        opts.setdefault("skip_instance_cache", True)
        fs = cls(asynchronous=True, **opts)
        if hasattr(fs, "set_session"):
            await fs.set_session()
        return fs
    from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper

    return AsyncFileSystemWrapper(cls(**opts), asynchronous=True)


async def close_backend(fs: AsyncFileSystem) -> None:
    """Close the sessions a backend holds (s3fs's client, an HTTP session)."""
    s3 = getattr(fs, "_s3", None)
    if s3 is not None:
        with contextlib.suppress(Exception):
            await s3.close()
    session = getattr(fs, "_session", None)
    if session is not None and hasattr(session, "close"):
        with contextlib.suppress(Exception):
            await session.close()


def origin_path(mount: MountConfig, rel: str) -> str:
    """The backend's path of a dataset-relative path."""
    return join(mount.root, rel)


def relative(mount: MountConfig, path: str) -> str:
    """The dataset-relative path of a backend's path."""
    root = mount.root.rstrip("/")
    name = path.rstrip("/")
    if mount.protocol == "file":
        name = name if name.startswith("/") else "/" + name
        root = root if root.startswith("/") else "/" + root
    if name == root:
        return ""
    if root and name.startswith(root + "/"):
        return name[len(root) + 1 :]
    return name.lstrip("/")


def mtime_of(entry: dict[str, Any]) -> float | None:
    """Modification time of a listing entry or an S3 answer, whatever the backend calls it."""
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


def etag_of(entry: dict[str, Any]) -> str | None:
    for key in ("ETag", "etag", "e_tag"):
        if entry.get(key):
            return normalize_etag(str(entry[key]))
    return None


def entry_info(mount: MountConfig, entry: dict[str, Any]) -> FileInfo:
    """:class:`FileInfo` of an fsspec listing entry, named relative to the mount."""
    rel = relative(mount, str(entry["name"]))
    if entry.get("type") == "directory":
        return dir_info(rel)
    return file_info(rel, int(entry.get("size") or 0), etag_of(entry), mtime_of(entry))


def total_size(resp: dict[str, Any]) -> int:
    """An object's size from a ranged GET (``Content-Range: bytes 0-9/1234``)."""
    content_range = resp.get("ContentRange")
    if content_range:
        total = str(content_range).rpartition("/")[2]
        if total.isdigit():
            return int(total)
    return int(resp.get("ContentLength") or 0)


async def read_body(
    resp: dict[str, Any], where: str, start: int, end: int, version: str | None
) -> bytes:
    """Bytes ``[start, end)`` of an S3 ``get_object`` answer for ``where`` (dataset/path);
    raises :class:`VersionChangedError` when its ETag is not ``version``."""
    body = resp["Body"]
    try:
        tag = normalize_etag(resp.get("ETag"))
        if version is not None and tag is not None and tag != version:
            raise VersionChangedError(
                errno.ESTALE,
                f"{where} changed at the origin (version {tag!r}, expected {version!r})",
            )
        data: bytes = await body.read()
    finally:
        body.close()
    # Some S3 servers ignore Range and answer 200 with the whole object.
    if len(data) > end - start and "ContentRange" not in resp:
        data = data[start:end]
    return data
