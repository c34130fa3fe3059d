"""The one mapping between S3 object keys and dataset paths (POSIX names): pure, reversible.

S3 keys are distinct strings; a POSIX tree needs names that are non-empty, are not ``.`` or
``..``, and a name that is either a file or a directory. Every surface (worker API,
``tidepool://``, FUSE mount, S3 gateway) sees the same tree, so the rule lives here once:

* A key whose every ``/``-separated segment is a *plain* name maps to the same text
  (``a/b c/d.txt`` is the path ``a/b c/d.txt``). Nearly every key is such a key.
* A **folder marker** — a 0-byte key ending in ``/`` (``emptydir/``, what the S3 console's
  "Create folder" writes) — is the directory ``emptydir``, never a file. The directory is
  flagged ``marker`` (its ``version`` is the marker's ETag) so the gateway can answer
  ``HEAD emptydir/`` and list the key.
* Any other key no path can spell (an empty segment as in ``x/y//z`` or ``/lead``, a key ending
  in ``/`` that has content, a ``.`` or ``..`` segment, a backslash, or a segment starting with
  :data:`ESC`) is one file in the directory of its longest run of plain leading segments (not
  counting the last segment), named :data:`ESC` followed by the rest of the key with ``%``,
  ``/``, ``\\`` and control characters percent-encoded:
  ``x/y//z`` -> ``x/y/~%%2Fz``; ``x/trail/`` (19 bytes) -> ``x/trail/~%``; ``a/./b`` ->
  ``a/~%.%2Fb``.
* A key that is **both an object and a prefix** (``x/both`` and ``x/both/c``): the directory
  keeps the plain name and the object is shown as ``x/~%both`` (:func:`escaped`).

The way back (:func:`to_key`) needs no context: a last path segment starting with :data:`ESC`
is decoded, anything else is the key as written. The S3 gateway lists and serves the original
keys; the mount and ``tidepool://`` show the escaped names.

Limits: a POSIX name is at most 255 bytes, so a key segment longer than that is listed but a
mount cannot open it; a cold read of the plain name of a key that is both an object and a
prefix, before anything listed its parent, reads the object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ESC",
    "Placed",
    "escaped",
    "is_escaped",
    "is_plain",
    "marker_key",
    "place",
    "to_key",
]

ESC = "~%"
"""Prefix of a name that stands for a key no plain path can spell (rare at the start of a key
segment; it contains ``%`` so a plain key cannot end up with it after decoding)."""

_ENCODE = {"%", "/", "\\"}


def _enc(text: str) -> str:
    return "".join(
        f"%{ord(c):02X}" if (c in _ENCODE or ord(c) < 0x20 or ord(c) == 0x7F) else c for c in text
    )


def _dec(text: str) -> str:
    out = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "%" and _hex(text[i + 1 : i + 3]):
            out.append(chr(int(text[i + 1 : i + 3], 16)))
            i += 3
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _hex(two: str) -> bool:
    return len(two) == 2 and all(c in "0123456789abcdefABCDEF" for c in two)


def is_plain(segment: str) -> bool:
    """A key segment that is a POSIX name as it is."""
    return (
        segment not in ("", ".", "..")
        and "\\" not in segment
        and "\x00" not in segment
        and not segment.startswith(ESC)
    )


def is_escaped(name: str) -> bool:
    """A path's last segment that stands for an odd key."""
    return name.startswith(ESC)


@dataclass(frozen=True)
class Placed:
    path: str
    """Dataset-relative path of the key."""
    kind: Literal["file", "marker"]
    """``marker``: the key is a folder marker and ``path`` is its directory."""


def place(key: str, size: int) -> Placed:
    """Where the object ``key`` (relative to the dataset root) of ``size`` bytes shows."""
    segments = key.split("/")
    marker = len(segments) > 1 and segments[-1] == "" and size == 0
    if marker and all(is_plain(s) for s in segments[:-1]):
        return Placed("/".join(segments[:-1]), "marker")
    run = 0
    while run < len(segments) and is_plain(segments[run]):
        run += 1
    if run == len(segments):
        return Placed(key, "file")
    run = min(run, len(segments) - 1)
    head = "/".join(segments[:run])
    name = ESC + _enc("/".join(segments[run:]))
    return Placed(f"{head}/{name}" if head else name, "file")


def escaped(path: str) -> str:
    """The name a plain file path takes when the same path is also a directory."""
    head, _, name = path.rpartition("/")
    out = ESC + _enc(name)
    return f"{head}/{out}" if head else out


def to_key(path: str) -> str:
    """The key (relative to the dataset root) of a file path: the inverse of :func:`place`
    and :func:`escaped`."""
    head, _, name = path.rpartition("/")
    if not is_escaped(name):
        return path
    rest = _dec(name[len(ESC) :])
    return f"{head}/{rest}" if head else rest


def marker_key(path: str) -> str:
    """The folder-marker key of a directory path."""
    return path + "/"
