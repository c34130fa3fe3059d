"""The mount's inode table and errno table, with plain values and a hand-driven clock."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from tidepool.core.errors import BadRequestError, OriginUnavailableError
from tidepool.fuse.inodes import ROOT_INODE, InodeTable, child_path
from tidepool.fuse.source import errno_for


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def f(name: str, size: int = 1, version: str = "v1", mtime: float | None = 5.0) -> dict[str, Any]:
    return {"name": name, "type": "file", "size": size, "version": version, "mtime": mtime}


def d(name: str) -> dict[str, Any]:
    return {"name": name, "type": "directory", "size": 0, "version": "", "mtime": None}


def test_paths_get_stable_inodes_and_the_root_is_one() -> None:
    t = InodeTable("ds", now=Clock())
    assert t.get(ROOT_INODE).path == "ds" and t.root.is_dir
    a = t.upsert("ds/a", f("ds/a"), 5)
    b = t.upsert("ds/b", f("ds/b"), 5)
    assert a.ino != b.ino and ROOT_INODE not in (a.ino, b.ino)
    again = t.upsert("ds/a", f("ds/a", size=9, version="v2"), 5)
    assert again is a and a.ino == t.by_path("ds/a").ino and a.size == 9  # type: ignore[union-attr]
    assert len(t) == 3
    with pytest.raises(KeyError):
        t.get(999)


def test_attributes_expire_after_the_ttl_and_the_root_never_does() -> None:
    clock = Clock()
    t = InodeTable("", now=clock)
    e = t.upsert("ds/x", f("ds/x"), 2.0)
    assert t.fresh(e)
    clock.t += 2.5
    assert not t.fresh(e)
    assert t.fresh(t.root)
    t.upsert("", d(""), 1.0)
    clock.t += 100
    assert t.fresh(t.root)


def test_listing_snapshot_negative_lookups_and_expiry() -> None:
    clock = Clock()
    t = InodeTable("ds", now=clock)
    kids = t.set_listing("ds", [f("ds/a"), d("ds/sub")], 3.0)
    assert [k.path for k in kids] == ["ds/a", "ds/sub"]
    assert kids[1].is_dir and kids[1].size == 0
    listed = t.listing("ds")
    assert listed is not None and [e.path for e in listed] == ["ds/a", "ds/sub"]
    assert t.known_absent("ds", "zzz") and not t.known_absent("ds", "a")
    assert not t.known_absent("ds/sub", "x")  # never listed: unknown, not absent
    clock.t += 3.5
    assert t.listing("ds") is None and not t.known_absent("ds", "zzz")


def test_forget_path_drops_it_from_the_parent_listing() -> None:
    t = InodeTable("ds", now=Clock())
    t.set_listing("ds", [f("ds/a"), f("ds/b")], 10)
    t.forget_path("ds/a")
    assert t.known_absent("ds", "a")
    e = t.by_path("ds/a")
    assert e is not None and not t.fresh(e)
    t.forget_path("ds")  # the root stays
    assert t.fresh(t.root)


def test_keep_cache_only_while_the_version_is_unchanged() -> None:
    t = InodeTable("ds", now=Clock())
    e = t.upsert("ds/a", f("ds/a", version="v1"), 5)
    assert t.note_open(e) is False  # first open: nothing cached yet
    assert t.note_open(e) is True
    t.upsert("ds/a", f("ds/a", version="v2"), 5)
    assert t.note_open(e) is False  # changed at the origin: drop the old pages
    assert t.note_open(e) is True


def test_type_change_and_missing_mtime() -> None:
    t = InodeTable("", now=Clock())
    e = t.upsert("ds/p", f("ds/p", mtime=None), 5)
    assert e.mtime is None and not e.is_dir
    t.upsert("ds/p", d("ds/p"), 5)
    assert e.is_dir and e.size == 0


def test_child_path() -> None:
    assert child_path("", "ds") == "ds"
    assert child_path("ds", "a b") == "ds/a b"
    assert child_path("ds/x", "y") == "ds/x/y"


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (FileNotFoundError(errno.ENOENT, "x"), errno.ENOENT),
        (NotADirectoryError(errno.ENOTDIR, "x"), errno.ENOTDIR),
        (IsADirectoryError(errno.EISDIR, "x"), errno.EISDIR),
        (PermissionError(errno.EACCES, "x"), errno.EACCES),
        (BadRequestError("bad"), errno.EINVAL),
        (OriginUnavailableError("ds", "a", "down"), errno.EIO),
        (ConnectionError(errno.ECONNREFUSED, "worker down"), errno.EIO),
        (TimeoutError(), errno.EIO),
        (RuntimeError("surprise"), errno.EIO),
    ],
)
def test_errno_table(exc: BaseException, code: int) -> None:
    assert errno_for(exc) == code
