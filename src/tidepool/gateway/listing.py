"""One page of an S3 object listing, computed from a dataset's sorted files: pure, no I/O.

The gateway asks the worker for every file below the listed prefix once per request (the worker
answers from its metadata cache) and this module does the rest the way S3 does it: keys after
``after`` and under ``prefix``; with a ``delimiter``, keys that contain it past the prefix are
rolled up into one common prefix each; keys and common prefixes together count against
``max_keys``; ``next_after`` is the last key or common prefix returned, so a continuation token
or a v1 marker built from it resumes exactly where the page stopped, never repeating a common
prefix.

Ordering is by code point, which is the UTF-8 byte order S3 uses.

A prefix is only ever turned into a worker path through :func:`listable_root`: the plain leading
segments of its directory part (never ``..``, ``.``, an empty segment, NUL or a backslash), so the
prefix can never steer the gateway's request to another route of the worker
(``../../v1/node``); keys with odd segments (``x/y//z``) live as escaped files in that directory
(:mod:`tidepool.core.keys`) and are matched against the full prefix here.
Limits: the whole file list of the prefix's directory is held in memory for one request.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

from tidepool.core import keys
from tidepool.core.errors import BadRequestError
from tidepool.core.paths import normalize

__all__ = ["Entry", "Page", "list_page", "listable_root", "search_root"]


@dataclass(frozen=True)
class Entry:
    key: str
    size: int
    etag: str
    mtime: float | None


@dataclass
class Page:
    contents: list[Entry] = field(default_factory=list)
    common_prefixes: list[str] = field(default_factory=list)
    truncated: bool = False
    next_after: str | None = None
    """The last key or common prefix returned when the page is truncated."""

    @property
    def count(self) -> int:
        return len(self.contents) + len(self.common_prefixes)


def search_root(prefix: str) -> str:
    """The directory whose files hold every key starting with ``prefix`` (``""`` = the root):
    the longest run of plain leading segments of the prefix's directory part. Keys below a
    segment no path can spell (``x/y//``, ``a/../``) are escaped files of that directory
    (:mod:`tidepool.core.keys`)."""
    segments = prefix.split("/")[:-1]
    run = 0
    while run < len(segments) and keys.is_plain(segments[run]):
        run += 1
    return "/".join(segments[:run])


def listable_root(prefix: str) -> str | None:
    """:func:`search_root` of ``prefix`` when it is a canonical dataset path, else None."""
    root = search_root(prefix)
    try:
        return root if normalize(root) == root else None
    except BadRequestError:
        return None


def list_page(
    entries: Sequence[Entry], prefix: str, delimiter: str, after: str, max_keys: int
) -> Page:
    """The page of ``entries`` (sorted by key) S3 would return for these parameters."""
    page = Page()
    if max_keys <= 0:
        return page
    keys = [e.key for e in entries]
    i = max(bisect.bisect_right(keys, after), bisect.bisect_left(keys, prefix))
    n = len(keys)
    while i < n:
        key = keys[i]
        if not key.startswith(prefix):
            break
        if page.count >= max_keys:
            page.truncated = True
            break
        cut = key.find(delimiter, len(prefix)) if delimiter else -1
        if cut < 0:
            page.contents.append(entries[i])
            page.next_after = key
            i += 1
            continue
        common = key[: cut + len(delimiter)]
        if common != after:  # ``after`` equal to a common prefix: that roll-up was returned
            page.common_prefixes.append(common)
            page.next_after = common
        while i < n and keys[i].startswith(common):
            i += 1
    if not page.truncated:
        page.next_after = None
    return page
