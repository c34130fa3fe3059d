"""One tier of the page store on disk: its directories, byte accounting, and page-file I/O.

A tier's root is the dataset's subdirectory of the tier directory (``<tier>/<dataset>``, claimed
by :mod:`tidepool.store.tierdir`). It holds ``pages/`` (the page files, laid out by
:meth:`tidepool.core.pages.PageKey.relpath` — a contract with the client's same-host fast path)
and ``tmp/`` (copies being made, named ``tp-<pid>-<n>.part``, renamed into ``pages/`` when
complete: demoted pages and extents). A new page is written in place instead (``O_EXCL``, no
rename: the load of many small files pays one file creation each, not two directory operations);
it is indexed only once complete, and a reader that meets it half-written finds its length or
checksum wrong and gives up that read. A large file held whole is one extent file beside where
its pages were (``<key>.x``, :mod:`tidepool.core.pages`), written in ``tmp/`` and installed. A
MEM tier is the same thing on a tmpfs such as ``/dev/shm``. Directories are created 0700 and page
files 0600.

The functions here do the file I/O and nothing else: no index, no locking. :func:`write_page_file`
is the single place page bytes hit a disk, which is what tests monkeypatch to simulate a full disk.
Startup removes only what Tidepool wrote: temp files with its naming pattern and (by the page
store's decision) page files the index does not know; any other file found in a tier is left
where it is and reported.

Reading a page tells two kinds of failure apart (:func:`proves_no_page`): an error that proves
there is no page file at the path (gone, or a link or directory planted there) and one that may
pass (out of descriptors or memory, an interrupted call, a flaky disk's EIO, a permission
problem). Only the first, or bytes that fail verification, may cost the cache a page.

Limits: page files are written without fsync (a cache survives a process kill, not necessarily a
power cut; a torn page is caught by the checksum on read). The tree scan at startup costs one
``stat`` per page file.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tidepool.core.pages import (
    EXTENT_SUFFIX,
    HEADER_SIZE,
    PAGES_DIR,
    TMP_DIR,
    PageKey,
    checksum,
    decode_header,
    extent_relpath,
)
from tidepool.spec.config import TierConfig
from tidepool.store.tierdir import FILE_MODE, make_dirs

log = logging.getLogger(__name__)

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_tmp_names = itertools.count()
TMP_NAME = re.compile(r"tp-\d+-\d+\.part")
"""Names of this module's temp files: the only files startup removes from ``tmp/``."""

NOT_A_PAGE = frozenset({errno.ENOENT, errno.ELOOP, errno.EISDIR, errno.ENOTDIR})
"""Errors of opening a page file that prove no page file is there: it is gone, or the path is a
symlink (``O_NOFOLLOW``) or a directory that someone planted."""


def proves_no_page(exc: OSError) -> bool:
    """Whether a read error proves the page file is absent or not a page file (else: transient)."""
    return exc.errno in NOT_A_PAGE


Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True)
class TierUsage:
    """A tier's occupancy, for status and metrics."""

    medium: str
    """MEM, SSD or HDD."""
    path: str
    """The tier's root directory."""
    used: int
    """Bytes of page files (header included) on disk or reserved for pages being written."""
    capacity: int
    """The tier's quota in bytes."""
    pages: int
    """Number of indexed pages in the tier."""


class Tier:
    """Runtime state of one tier: paths, quota, watermarks, accounting and its eviction order.

    ``used`` counts every page file present in the tier plus space reserved for writes in progress;
    it is raised *before* a file is written and lowered only *after* a file is unlinked, so the
    tier's real disk use never exceeds ``quota``. Callers serialise access with the store's lock.
    """

    def __init__(
        self,
        index: int,
        config: TierConfig,
        root: Path,
    ) -> None:
        if config.quota < 0:
            raise ValueError(f"tier {config.medium} {config.path!r}: quota {config.quota} < 0")
        if not 0.0 < config.low <= config.high <= 1.0:
            raise ValueError(
                f"tier {config.medium} {config.path!r}: watermarks low={config.low} "
                f"high={config.high}; need 0 < low <= high <= 1"
            )
        self.index = index
        self.config = config
        self.root = Path(os.path.abspath(root))
        """The dataset's directory in this tier (``<tier>/<dataset>``)."""
        self.root_str = str(self.root)
        self.used = 0
        self.pages = 0
        self.disk_limit: int | None = None
        """Bytes the disk under the tier was found to hold (set when it filled before the quota;
        kept until restart). Pages and the index may share that disk, so the page store keeps
        below it rather than meeting ENOSPC on every write."""

    @property
    def quota(self) -> int:
        """Effective quota: the configured one, or less when the disk proved smaller."""
        if self.disk_limit is None:
            return self.config.quota
        return min(self.config.quota, self.disk_limit)

    @property
    def high_bytes(self) -> int:
        return int(self.config.high * self.quota)

    @property
    def low_bytes(self) -> int:
        return int(self.config.low * self.quota)

    def page_path(self, key: PageKey) -> str:
        """Absolute path of ``key``'s page file in this tier."""
        return f"{self.root_str}/{key.relpath()}"

    def extent_path(self, key: PageKey) -> str:
        """Absolute path of the extent file of ``key``'s file in this tier."""
        return f"{self.root_str}/{extent_relpath(key.dataset, key.file_key)}"

    def tmp_path(self) -> str:
        """A fresh, unique temp file name in this tier's ``tmp/``."""
        return f"{self.root_str}/{TMP_DIR}/tp-{os.getpid()}-{next(_tmp_names)}.part"

    def usage(self) -> TierUsage:
        return TierUsage(
            self.config.medium, self.root_str, self.used, self.config.quota, self.pages
        )

    def prepare(self) -> None:
        """Create the tier's directories; remove temp files an interrupted write left behind.

        Only files named like this module's temp files are removed; anything else in ``tmp/``
        is someone else's and is left alone (and reported).
        """
        for sub in (PAGES_DIR, TMP_DIR):
            make_dirs(f"{self.root_str}/{sub}", self.root_str)
        tmp = self.root / TMP_DIR
        removed, foreign = 0, []
        with os.scandir(tmp) as it:
            for entry in it:
                if not (TMP_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False)):
                    foreign.append(entry.name)
                    continue
                try:
                    os.unlink(entry.path)
                    removed += 1
                except FileNotFoundError:
                    pass
        if removed:
            log.info("tier %s %s: removed %d leftover temp files", self.config.medium, tmp, removed)
        if foreign:
            log.warning(
                "tier %s %s: left %d files that Tidepool did not write alone (%s); move them "
                "out of the cache directory",
                self.config.medium,
                tmp,
                len(foreign),
                ", ".join(sorted(foreign)[:5]),
            )

    def __repr__(self) -> str:
        return (
            f"Tier({self.config.medium} {self.root_str!r} used={self.used}/{self.quota} "
            f"pages={self.pages})"
        )


def write_page_file(path: str, chunks: Sequence[Buffer]) -> None:
    """Create ``path`` (must not exist) holding the concatenated ``chunks``; no fsync.

    Raises ``OSError`` (``ENOSPC``/``EDQUOT`` on a full disk; ``FileNotFoundError`` when its
    directory does not exist yet); the partial file is left for the caller to remove.
    """
    views = [memoryview(c).cast("B") for c in chunks]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC | _O_NOFOLLOW, FILE_MODE)
    try:
        _write_all(fd, views)
    finally:
        os.close(fd)


EXTENT_WRITE = 4 << 20
"""Bytes gathered per ``writev`` while writing an extent (large writes: large folios)."""


def write_extent_file(path: str, parts: Iterable[Buffer]) -> None:
    """Create ``path`` (must not exist) holding the concatenated ``parts``, written in batches of
    about :data:`EXTENT_WRITE` bytes so that only one batch of a large file is in memory.
    Raises ``OSError`` like :func:`write_page_file`; no fsync, as for pages.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC | _O_NOFOLLOW, FILE_MODE)
    try:
        batch: list[memoryview] = []
        held = 0
        for part in parts:
            view = memoryview(part).cast("B")
            batch.append(view)
            held += len(view)
            if held >= EXTENT_WRITE:
                _write_all(fd, batch)
                batch, held = [], 0
        _write_all(fd, batch)
    finally:
        os.close(fd)


def _write_all(fd: int, views: list[memoryview]) -> None:
    """``writev`` all of ``views``; a short write resumes after what went out."""
    total = sum(len(v) for v in views)
    while total:
        written = os.writev(fd, views)
        if not written:
            raise OSError(errno.EIO, "writev wrote nothing")
        total -= written
        rest: list[memoryview] = []
        for v in views:
            if written >= len(v):
                written -= len(v)
                continue
            rest.append(v[written:])
            written = 0
        views = rest


def install_file(tmp: str, final: str, top: str) -> None:
    """Atomically move a completed temp file to ``final``, creating parent directories (0700)
    below the tier root ``top``."""
    try:
        os.replace(tmp, final)
    except FileNotFoundError:
        if not os.path.exists(tmp):
            raise
        make_dirs(os.path.dirname(final), top)
        os.replace(tmp, final)


def unlink_quiet(path: str) -> None:
    """Remove a file; a missing one is fine, other errors are logged, never raised."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)


def read_page(path: str, size: int, digest: int) -> memoryview | None:
    """The data of the page file at ``path`` if it is ``size`` bytes with checksum ``digest``.

    One ``pread`` of header and data into a single bytes object; the returned memoryview is a
    slice of it (no copy). None when the content does not match; ``OSError`` when the file can't
    be read (:func:`proves_no_page` tells whether that error is final).
    """
    buf = read_page_file(path, size, digest)
    return None if buf is None else memoryview(buf)[HEADER_SIZE:]


def read_page_file(path: str, size: int, digest: int) -> bytes | None:
    """The whole verified page file (header and data), as :func:`read_page` checks it.

    ``os.pread`` into a fresh ``bytes``: unlike ``bytearray(size)`` it is not zero-filled first,
    which was 40% of a warm large read's CPU in the worker (profiled with py-spy).
    """
    fd = open_page_file(path)
    try:
        return check_page_fd(fd, size, digest)
    finally:
        os.close(fd)


def open_page_file(path: str) -> int:
    """A read-only descriptor of the page file at ``path`` (a link there is not followed)."""
    return os.open(path, os.O_RDONLY | _O_CLOEXEC | _O_NOFOLLOW)


def check_page_fd(fd: int, size: int, digest: int) -> bytes | None:
    """:func:`read_page_file` on an open descriptor."""
    buf = os.pread(fd, size, 0)
    n = len(buf)
    if 0 < n < size:  # a short read (rare on local files): finish it
        rest = [buf]
        while n < size:
            more = os.pread(fd, size - n, n)
            if not more:
                break
            rest.append(more)
            n += len(more)
        buf = b"".join(rest)
    if n != size:
        return None
    try:
        length, stored = decode_header(buf)
    except ValueError:
        return None
    if length != size - HEADER_SIZE or stored != digest:
        return None
    if checksum(memoryview(buf)[HEADER_SIZE:]) != digest:
        return None
    return buf


def read_extent_page(path: str, offset: int, length: int, digest: int) -> memoryview | None:
    """The ``length`` bytes at ``offset`` of the extent at ``path`` if their checksum is
    ``digest`` (None otherwise); ``OSError`` as :func:`read_page`."""
    fd = open_page_file(path)
    try:
        data = check_extent_fd(fd, offset, length, digest)
    finally:
        os.close(fd)
    return None if data is None else memoryview(data)


def check_extent_fd(fd: int, offset: int, length: int, digest: int) -> bytes | None:
    """:func:`read_extent_page` on an open descriptor."""
    data = os.pread(fd, length, offset)
    if len(data) != length or checksum(data) != digest:
        return None
    return data


def parse_page_path(dataset: str, shard: str, name: str) -> PageKey | None:
    """The key of ``pages/<dataset>/<shard>/<name>``, or None when it is not a page file name."""
    file_key, dot, idx = name.rpartition(".")
    if not dot or not idx.isdigit() or not file_key or not dataset:
        return None
    key = PageKey(dataset, file_key, int(idx))
    if key.relpath() != f"{PAGES_DIR}/{dataset}/{shard}/{name}":
        return None
    return key


def parse_extent_path(dataset: str, shard: str, name: str) -> str | None:
    """The file key of the extent ``pages/<dataset>/<shard>/<name>``, or None."""
    file_key, dot, suffix = name.rpartition(".")
    if not dot or suffix != EXTENT_SUFFIX or not file_key or not dataset:
        return None
    if extent_relpath(dataset, file_key) != f"{PAGES_DIR}/{dataset}/{shard}/{name}":
        return None
    return file_key


PAGE, EXTENT, FOREIGN = "page", "extent", "foreign"


def walk_tier(
    root: Path, dataset: str, stop: Callable[[], bool] = lambda: False
) -> Iterator[tuple[str, str, PageKey | str | None]]:
    """Every entry under ``root/pages``, one directory at a time (a tier of a million pages is
    never listed whole): ``(kind, path, key)`` where ``kind`` is :data:`PAGE` (``key`` a
    :class:`PageKey`) or :data:`EXTENT` (``key`` a file key) for a regular file named like one
    of ``dataset``'s, else :data:`FOREIGN` (other names, links, other datasets' directories).
    Ends early once ``stop()`` is true (checked per directory)."""
    base = root / PAGES_DIR
    for top in _scandir(str(base)):
        if top.name != dataset or not top.is_dir(follow_symlinks=False):
            yield FOREIGN, top.path, None
            continue
        for shard in _scandir(top.path):
            if stop():
                return
            if not shard.is_dir(follow_symlinks=False):
                yield FOREIGN, shard.path, None
                continue
            for f in _scandir(shard.path):
                key = parse_page_path(dataset, shard.name, f.name)
                fkey = None if key else parse_extent_path(dataset, shard.name, f.name)
                if (key is None and fkey is None) or not f.is_file(follow_symlinks=False):
                    yield FOREIGN, f.path, None
                elif key is not None:
                    yield PAGE, f.path, key
                else:
                    yield EXTENT, f.path, fkey


def _scandir(path: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []
