"""The pyfuse3 request handlers: a read-only POSIX tree over one dataset (or all of them).

Speed, in the order a warm read meets it:

* ``lookup``/``getattr`` answer from the :class:`~tidepool.fuse.inodes.InodeTable` while the
  dataset's metadata TTL runs, and tell the kernel the same TTL as entry/attribute timeout, so a
  warm ``stat`` usually never reaches this process at all; a directory listing fills the table
  for every child (and ``readdirplus`` hands the attributes to the kernel), so ``ls -R``,
  ``find`` and ``cp -r`` cost one listing per directory;
* ``open`` sets ``keep_cache`` while the file's version is the one the kernel cached before, so a
  re-read of an unchanged file is served from the kernel page cache without a single request;
* ``read`` answers from the open handle's buffer, else from the page files on this host right in
  the trio handler (sync, a few ``pread``), and only then over HTTP in a cached worker thread.
  Sequential reads are widened to whole pages so the kernel's 128 KiB to 1 MiB requests read each
  page once; a read after a seek takes only what it asks for from the page file (a page file is
  checked once per process, so a small random read costs one small ``pread``).

Worker down (crash-looping, upgrading, SIGKILLed): metadata calls that cannot reach it are
answered from what the mount last knew, however old (attributes, listings, negative lookups of a
listed directory), and reads of pages cached on this host go on from the page files; a read that
needs the worker fails with EIO at once. The mount logs the outage once, and once when the
worker answers again.

Errors: every handler turns exceptions into ``FUSEError`` (pyfuse3 must never see another
exception): ENOENT for a missing path, EIO (logged with the path) when the origin is unreachable
and the bytes are not cached, EROFS for anything that would write.

Limits: no symlinks, hard links, xattrs (ENOSYS, see ``getxattr``), or special files; ``statfs``
reports no capacity. Each open handle keeps its last read window in memory (a page on the fast
path, up to 4 MiB over HTTP). A lookup in a directory that has no valid listing lists it (once per
TTL, shared by concurrent lookups): cheap for the usual dataset layouts, one large request for a
directory of millions.

Why this module is longer than ~400 lines: it is the list of pyfuse3 handlers, one per FUSE
operation, each small; metadata and inodes live in :mod:`tidepool.fuse.inodes` and data access in
:mod:`tidepool.fuse.source`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import pyfuse3
import trio

from tidepool.client.local import LocalFile
from tidepool.core.errors import OriginError
from tidepool.fuse.inodes import Entry, InodeTable, child_path
from tidepool.fuse.source import Source, describe, errno_for

log = logging.getLogger(__name__)
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

BLKSIZE = 1 << 20
"""``st_blksize``: ``cp``, stdio and Python size their read buffers from it."""
HTTP_WINDOW = 4 << 20
"""A sequential reader over HTTP fetches at least this much per request."""
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _rofs() -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(errno.EROFS)


def guarded(fn: F) -> F:
    """pyfuse3 must only ever see ``FUSEError``: anything else is logged and becomes EIO."""

    @functools.wraps(fn)
    async def wrapper(*args: Any) -> Any:
        try:
            return await fn(*args)
        except pyfuse3.FUSEError:
            raise
        except Exception:
            log.exception("unexpected error in %s%r", fn.__name__, args[1:3])
            raise pyfuse3.FUSEError(errno.EIO) from None

    return cast(F, wrapper)


@dataclass
class Handle:
    """One open file: its pinned version and the last pages read."""

    entry: Entry
    info: dict[str, Any]
    page: int
    buf: bytes = b""
    buf_start: int = 0
    next_off: int = 0
    local: LocalFile | None = None
    """Same-host reads of this file (its extent kept open until the file is released)."""


class WorkerDown(Exception):
    """The worker could not be reached for a metadata call (the mount answers from memory)."""


class TidepoolOperations(pyfuse3.Operations):
    """Read-only handlers over a :class:`Source` and an :class:`InodeTable`."""

    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, source: Source, table: InodeTable) -> None:
        super().__init__()
        self.source = source
        self.table = table
        self.uid, self.gid = os.getuid(), os.getgid()
        self.started_ns = time.time_ns()
        self._fhs = itertools.count(1)
        self._files: dict[int, Handle] = {}
        self._dirs: dict[int, list[Entry]] = {}
        self._listing: dict[str, trio.Event] = {}
        self.worker_down = False
        """The last metadata call found the worker unreachable (logged once per outage)."""

    # ---- helpers -----------------------------------------------------------------------------

    async def _blocking(self, path: str, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking client call in trio's thread cache; map its errors to errno."""
        try:
            return await trio.to_thread.run_sync(fn, *args)
        except Exception as exc:
            code = errno_for(exc)
            if code == errno.ENOENT and not isinstance(exc, OriginError):
                log.debug("not found: %s", path)
            else:
                log.warning("%s on %r: %s", errno.errorcode.get(code, code), path, describe(exc))
            raise pyfuse3.FUSEError(code) from None

    def _entry(self, ino: int) -> Entry:
        try:
            return self.table.get(ino)
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    def _attrs(self, entry: Entry) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = entry.ino
        a.generation = 0
        ttl = self.source.ttl(entry.path)
        a.entry_timeout = ttl
        a.attr_timeout = ttl
        if entry.is_dir:
            a.st_mode = stat.S_IFDIR | 0o555
            a.st_nlink = 2
        else:
            a.st_mode = stat.S_IFREG | 0o444
            a.st_nlink = 1
        a.st_uid, a.st_gid = self.uid, self.gid
        a.st_size = entry.size
        a.st_blksize = BLKSIZE
        a.st_blocks = (entry.size + 511) // 512
        ns = int(entry.mtime * 1e9) if entry.mtime is not None else self.started_ns
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = ns
        return a

    async def _metadata(self, path: str, fn: Callable[..., T], *args: Any) -> T:
        """A metadata call to the worker (``info``, ``ls``): :class:`WorkerDown` when the worker
        cannot be reached, so the caller can answer from what the mount last knew."""
        try:
            out = await trio.to_thread.run_sync(fn, *args)
        except (ConnectionError, TimeoutError) as exc:
            if not self.worker_down:
                self.worker_down = True
                log.warning(
                    "the Tidepool worker cannot be reached (%s): serving the last known metadata "
                    "and the cached pages on this host; other reads fail with EIO",
                    describe(exc),
                )
            raise WorkerDown(path) from None
        except Exception as exc:
            code = errno_for(exc)
            if code == errno.ENOENT and not isinstance(exc, OriginError):
                log.debug("not found: %s", path)
            else:
                log.warning("%s on %r: %s", errno.errorcode.get(code, code), path, describe(exc))
            raise pyfuse3.FUSEError(code) from None
        if self.worker_down:
            self.worker_down = False
            log.warning("the Tidepool worker answers again")
        return out

    async def _refresh(self, entry: Entry) -> Entry:
        """Revalidate an entry whose TTL ran out (the root never expires); the entry as it was
        when the worker cannot be reached."""
        if self.table.fresh(entry):
            return entry
        try:
            info = await self._metadata(entry.path, self.source.info, entry.path, True)
        except WorkerDown:
            return entry
        except pyfuse3.FUSEError as exc:
            if exc.errno == errno.ENOENT:
                self.table.forget_path(entry.path)
            raise
        return self.table.upsert(entry.path, info, self.source.ttl(entry.path))

    async def _list(self, entry: Entry) -> list[Entry]:
        """List a directory once however many requests want it at the same moment."""
        waiting = self._listing.get(entry.path)
        if waiting is not None:
            await waiting.wait()
            children = self.table.listing(entry.path)
            if children is not None:
                return children
        done = self._listing[entry.path] = trio.Event()
        try:
            try:
                raw = await self._metadata(entry.path, self.source.ls, entry.path)
            except WorkerDown:
                last = self.table.listing(entry.path, stale=True)
                if last is None:
                    raise pyfuse3.FUSEError(errno.EIO) from None
                return last
            return self.table.set_listing(entry.path, raw, self.source.ttl(entry.path))
        finally:
            del self._listing[entry.path]
            done.set()

    # ---- metadata ----------------------------------------------------------------------------

    @guarded
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self._entry(parent_inode)
        if not parent.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        sname = os.fsdecode(name)
        if sname in (".", ".."):
            return self._attrs(parent)  # only asked for with NFS export, which is off
        path = child_path(parent.path, sname)
        for attempt in range(2):
            entry = self.table.by_path(path)
            if entry is not None and self.table.fresh(entry):
                return self._attrs(entry)
            if self.table.known_absent(parent.path, sname):
                neg = pyfuse3.EntryAttributes()
                neg.st_ino = 0  # negative entry: the kernel caches the absence for entry_timeout
                neg.entry_timeout = self.source.ttl(path)
                return neg
            if attempt == 0 and self.table.listing(parent.path) is None:
                # one listing answers this and every sibling lookup to come (a reader that
                # opens files by name never lists them): one request per directory per TTL.
                # If the listing fails, ask for the path itself: offline, the worker may know
                # a cached file without a cached listing of its directory.
                with contextlib.suppress(pyfuse3.FUSEError):
                    await self._list(parent)
        try:
            info = await self._metadata(path, self.source.info, path)
        except WorkerDown:
            entry = self.table.by_path(path)
            if entry is not None:  # the last known attributes, however old
                return self._attrs(entry)
            if self.table.known_absent(parent.path, sname, stale=True):
                raise pyfuse3.FUSEError(errno.ENOENT) from None
            raise pyfuse3.FUSEError(errno.EIO) from None
        return self._attrs(self.table.upsert(path, info, self.source.ttl(path)))

    @guarded
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attrs(await self._refresh(self._entry(inode)))

    async def forget(self, inode_list: Any) -> None:
        return None  # inode numbers stay valid for the life of the mount (see inodes.py)

    @guarded
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        entry = self._entry(inode)
        if not entry.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        children = self.table.listing(entry.path)
        if children is None:
            children = await self._list(entry)
        fh: int = next(self._fhs)
        self._dirs[fh] = children  # a snapshot: offsets stay stable while the handle lives
        return fh

    @guarded
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        children = self._dirs.get(fh)
        if children is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        for i in range(start_id, len(children)):
            e = children[i]
            name = os.fsencode(e.path.rsplit("/", 1)[-1])
            if not pyfuse3.readdir_reply(token, name, self._attrs(e), i + 1):
                break

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    @guarded
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = BLKSIZE
        s.f_blocks = s.f_bfree = s.f_bavail = 0
        s.f_files = len(self.table)
        s.f_ffree = s.f_favail = 0
        s.f_namemax = 255
        return s

    # ENOSYS once makes the kernel stop asking for the rest of the mount (callers then get
    # EOPNOTSUPP at once): ``ls -l`` asked getxattr twice per entry, each a round trip to this
    # process answered ENODATA (issue 14 item 7). The tree has no extended attributes.
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        raise pyfuse3.FUSEError(errno.ENOSYS)

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        raise pyfuse3.FUSEError(errno.ENOSYS)

    # ---- data --------------------------------------------------------------------------------

    @guarded
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & _WRITE_FLAGS:
            raise _rofs()
        entry = self._entry(inode)
        if entry.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        entry = await self._refresh(entry)
        if entry.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        keep = self.table.note_open(entry)
        fh: int = next(self._fhs)
        info = {"type": "file", "size": entry.size, "version": entry.version}
        local = self.source.local_file(entry.path, info)
        self._files[fh] = Handle(entry, info, self.source.page_size(entry.path), local=local)
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep, direct_io=False)

    @guarded
    async def read(self, fh: int, off: int, size: int) -> bytes:
        h = self._files.get(fh)
        if h is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        fsize: int = h.info["size"]
        end = min(off + size, fsize)
        if end <= off:
            return b""
        lo = off - h.buf_start
        if lo >= 0 and end - h.buf_start <= len(h.buf):
            return h.buf[lo : end - h.buf_start]
        ps = h.page
        path = h.entry.path
        if off == h.next_off or off == 0:  # sequential: whole pages, each read from disk once
            start = off - off % ps
            stop = min(fsize, -(-end // ps) * ps)
        else:  # a seek (SQLite, Parquet footers, memmaps): read what is asked, no more
            start, stop = off, end
        data = self.source.read_local(path, h.info, start, stop, h.local)
        if data is None:
            if off == h.next_off:  # sequential over HTTP: fetch ahead of the kernel
                stop = min(fsize, max(stop, start + HTTP_WINDOW))
            data = await self._blocking(path, self.source.fetch, path, h.info, start, stop)
        h.buf, h.buf_start, h.next_off = data, start, end
        return data[off - start : end - start]

    async def release(self, fh: int) -> None:
        h = self._files.pop(fh, None)
        if h is not None and h.local is not None:
            h.local.close()

    async def flush(self, fh: int) -> None:
        # ENOSYS once makes the kernel stop sending FLUSH on every close(): one round trip
        # fewer per file (nothing is ever written, so there is nothing to flush)
        raise pyfuse3.FUSEError(errno.ENOSYS)

    # ---- everything that would write: EROFS --------------------------------------------------

    async def setattr(self, *args: Any) -> pyfuse3.EntryAttributes:
        raise _rofs()

    async def mknod(self, *args: Any) -> pyfuse3.EntryAttributes:
        raise _rofs()

    async def mkdir(self, *args: Any) -> pyfuse3.EntryAttributes:
        raise _rofs()

    async def unlink(self, *args: Any) -> None:
        raise _rofs()

    async def rmdir(self, *args: Any) -> None:
        raise _rofs()

    async def symlink(self, *args: Any) -> pyfuse3.EntryAttributes:
        raise _rofs()

    async def rename(self, *args: Any) -> None:
        raise _rofs()

    async def link(self, *args: Any) -> pyfuse3.EntryAttributes:
        raise _rofs()

    async def write(self, *args: Any) -> int:
        raise _rofs()

    async def create(self, *args: Any) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        raise _rofs()

    async def setxattr(self, *args: Any) -> None:
        raise _rofs()

    async def removexattr(self, *args: Any) -> None:
        raise _rofs()
