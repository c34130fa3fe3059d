"""A ``file://`` origin confined to its mount root: nothing outside the root is listed or served.

fsspec's ``LocalFileSystem`` follows symbolic links wherever they point, so a dataset mounted at
``/data/images`` with a link ``cat.jpg -> ../../etc/shadow`` (or a linked directory) would serve
what the link points at. :class:`ConfinedLocalFileSystem` is the local backend the origin funnel
uses for ``file://`` and ``local://`` mounts instead. Its rules:

* Links are followed **only while they stay inside the root**: a path is resolved completely
  (``realpath``) and is served only if the result lies under the root's own resolved path. A
  dataset can keep links between its own files (``latest -> v3``); a link that leads out of the
  root, or that dangles, is treated as absent (404, never 403, so it reveals nothing about the
  target) and left out of listings.
* Bytes are read through a descriptor opened one path component at a time from the root with
  ``O_NOFOLLOW``, along the resolved path: if a component is swapped for a link between the check
  and the read, the read fails instead of leaving the root.
* Only regular files and directories exist: FIFOs, sockets and devices are absent (a FIFO would
  block a reader forever). A file reached through a link inside the root is a file of its own
  name; ``find`` does not enter a link to a directory it is already inside (no cycles).
* Read-only: every write method refuses.

Limits: a hard link to a file outside the root is a file inside it (the kernel cannot tell them
apart; Linux's ``protected_hardlinks`` stops users from linking files they cannot write). The
root itself is resolved once, when the mount is opened: it is configuration. Metadata (``info``,
``ls``) is checked by path, so a link swapped during a listing may expose an outside file's name
and size for that one answer, never its bytes.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import stat
from collections.abc import Iterator
from typing import Any

from fsspec.implementations.local import LocalFileSystem

log = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class ConfinedLocalFileSystem(LocalFileSystem):  # type: ignore[misc]
    """A read-only local filesystem that serves only what resolves to a path under ``root``."""

    cachable = False

    def __init__(self, root: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        given = self._strip_protocol(root).rstrip("/")
        self.confined_root = os.path.realpath(given)
        # the prefixes a path may start with: the root as configured, and as resolved
        self._roots = tuple(dict.fromkeys(r for r in (given, self.confined_root) if r != "/"))

    # ---- the confinement -------------------------------------------------------------------

    def _absent(self, path: str, why: str) -> FileNotFoundError:
        log.debug("local origin: %s is outside %s or unusable: %s", path, self.confined_root, why)
        return FileNotFoundError(errno.ENOENT, "no such file or directory", path)

    def resolve(self, path: str) -> str:
        """The real path of ``path`` if it lies inside the root; else FileNotFoundError."""
        path = self._strip_protocol(path)
        real = os.path.realpath(path)
        root = self.confined_root
        if real != root and not real.startswith(root.rstrip("/") + "/"):
            raise self._absent(path, f"resolves to {real}")
        return real

    def _stat(self, path: str) -> tuple[str, os.stat_result]:
        real = self.resolve(path)
        st = os.stat(real, follow_symlinks=False)  # ``real`` has no links left in it
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            raise self._absent(path, "not a regular file or directory")
        return real, st

    def _open_plain(self, path: str) -> int | None:
        """``path`` opened along its own components when none is a link (the common case: no
        ``realpath``, whose ``lstat`` per component was 16 % of a load of small files); None
        when one is a link, or anything else is unusual, for :meth:`_open_resolved` to decide."""
        path = self._strip_protocol(path)
        for root in self._roots:
            if path.startswith(root + "/"):
                parts = path[len(root) + 1 :].split("/")
                break
        else:
            return None
        if any(part in ("", ".", "..") for part in parts):
            return None
        try:
            fd = os.open(self.confined_root, _DIR_FLAGS)
        except OSError:
            return None
        try:
            for part in parts[:-1]:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nxt
            return os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
        except OSError:
            return None  # a link (ELOOP, ENOTDIR), missing, a directory...: resolve it
        finally:
            os.close(fd)

    def _open_resolved(self, path: str) -> int:
        """``path`` resolved whole (links inside the root followed), then opened along the
        resolved path one component at a time without following links."""
        real = self.resolve(path)
        rel = os.path.relpath(real, self.confined_root)
        if rel == ".":
            raise IsADirectoryError(errno.EISDIR, "is a directory", path)
        parts = rel.split(os.sep)
        fd = os.open(self.confined_root, _DIR_FLAGS)
        try:
            for part in parts[:-1]:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nxt
            try:
                out = os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:  # swapped for a link since it was resolved
                    raise self._absent(path, "changed into a link while being opened") from None
                raise
        except NotADirectoryError:
            raise self._absent(path, "a directory changed into a link while being opened") from None
        finally:
            os.close(fd)
        return out

    def open_beneath(self, path: str) -> int:
        """A read descriptor of the regular file at ``path``, opened from the root one component
        at a time without following links (see the module docstring)."""
        out = self._open_plain(path)
        if out is None:
            out = self._open_resolved(path)
        st = os.fstat(out)
        if not stat.S_ISREG(st.st_mode):
            os.close(out)
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, "is a directory", path)
            raise self._absent(path, "not a regular file")
        os.set_blocking(out, True)
        return out

    # ---- fsspec methods the origin funnel uses ---------------------------------------------

    def info(self, path: Any, **kwargs: Any) -> dict[str, Any]:
        name = self._strip_protocol(path.path if isinstance(path, os.DirEntry) else path)
        _, st = self._stat(name)
        return _info(name, st)

    def ls(self, path: str, detail: bool = False, **kwargs: Any) -> list[Any]:
        """The entries of a directory. ``real`` (the directory, resolved) has no link left in
        it, so an entry that is not a link itself is ``real/name``, inside the root: one
        ``lstat`` (the entry is stat'ed where it is; a link is not followed). Only links are
        resolved whole (``realpath``, a ``lstat`` per component: 29 % of a first listing of
        100,000 files before)."""
        path = self._strip_protocol(path)
        real, st = self._stat(path)
        if not stat.S_ISDIR(st.st_mode):
            info = self.info(path)
            return [info] if detail else [info["name"]]
        out: list[Any] = []
        with os.scandir(real) as it:
            for entry in it:
                child = f"{path.rstrip('/')}/{entry.name}"
                try:
                    est = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(est.st_mode) or stat.S_ISDIR(est.st_mode):
                        info = _info(child, est)
                    elif stat.S_ISLNK(est.st_mode):
                        info = self.info(child)  # followed only while it stays inside
                    else:
                        continue  # a FIFO, socket or device is absent
                except (FileNotFoundError, NotADirectoryError, PermissionError):
                    continue  # outside the root, dangling, gone, or unreadable
                out.append(info if detail else info["name"])
        return out

    def find(
        self,
        path: str,
        maxdepth: int | None = None,
        withdirs: bool = False,
        detail: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Every file below ``path`` (and directories with ``withdirs``), links inside the root
        followed; a link to a directory that is being walked already (a cycle) is not entered,
        as ``find -L`` does."""
        found: dict[str, dict[str, Any]] = {}
        for batch in self.find_batches(path, maxdepth=maxdepth, withdirs=withdirs):
            found.update((info["name"], info) for info in batch)
        names = sorted(found)
        return {n: found[n] for n in names} if detail else names

    def find_batches(
        self, path: str, *, maxdepth: int | None = None, withdirs: bool = False
    ) -> Iterator[list[dict[str, Any]]]:
        """:meth:`find` one directory at a time (the infos found in it, sorted by name): a
        tree of a million files is never listed whole. A missing ``path`` raises at once."""
        path = self._strip_protocol(path)
        _, st = self._stat(path)
        if not stat.S_ISDIR(st.st_mode):
            yield [self.info(path)]
            return
        stack = [(path, 1, frozenset({(st.st_dev, st.st_ino)}))]
        while stack:
            current, depth, ancestors = stack.pop()
            batch: list[dict[str, Any]] = []
            below = []
            for info in sorted(self.ls(current, detail=True), key=lambda i: str(i["name"])):
                if info["type"] != "directory":
                    batch.append(info)
                    continue
                if withdirs:
                    batch.append(info)
                real_st = os.stat(self.resolve(info["name"]))
                ident = (real_st.st_dev, real_st.st_ino)
                if ident not in ancestors and (maxdepth is None or depth < maxdepth):
                    below.append((info["name"], depth + 1, ancestors | {ident}))
            stack.extend(reversed(below))  # the first subdirectory is walked next
            if batch:
                yield batch

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        fd = self.open_beneath(path)
        try:
            size = os.fstat(fd).st_size
            lo = 0 if start is None else (max(0, size + start) if start < 0 else start)
            hi = size if end is None else (max(0, size + end) if end < 0 else min(end, size))
            chunks: list[bytes] = []
            pos = lo
            while pos < hi:
                chunk = os.pread(fd, hi - pos, pos)
                if not chunk:
                    break
                chunks.append(chunk)
                pos += len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if mode != "rb":
            raise PermissionError(errno.EROFS, "a Tidepool origin is read-only", path)
        return io.FileIO(self.open_beneath(path), "rb", closefd=True)

    # ---- read-only -------------------------------------------------------------------------

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EROFS, "a Tidepool origin is read-only")

    mkdir = makedirs = rm = rm_file = rmdir = mv = cp_file = put_file = touch = _refuse
    pipe_file = link = symlink = _refuse


def _info(name: str, st: os.stat_result) -> dict[str, Any]:
    """fsspec's info of a regular file or directory ``name`` from its stat."""
    return {
        "name": name,
        "size": st.st_size if stat.S_ISREG(st.st_mode) else 0,
        "type": "directory" if stat.S_ISDIR(st.st_mode) else "file",
        "mtime": st.st_mtime,
        "created": st.st_ctime,
        "mode": st.st_mode,
        "ino": st.st_ino,
    }
