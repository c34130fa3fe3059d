"""Normalise dataset-relative paths, refusing anything that could escape the dataset root.

Every surface (HTTP, fsspec, later FUSE and S3) funnels user paths through :func:`normalize` so the
rules live in one pure function: no NUL, no ``..`` component, no backslash tricks; leading and
repeated slashes are dropped. The result is ``""`` for the dataset root or ``a/b/c``.
"""

from __future__ import annotations

from tidepool.core.errors import BadRequestError

MAX_PATH = 4096


def normalize(path: str) -> str:
    """Return the canonical relative form of ``path`` or raise :class:`BadRequestError`."""
    if not isinstance(path, str):
        raise BadRequestError(f"path must be a string, got {type(path).__name__}")
    if "\x00" in path:
        raise BadRequestError(f"path {path!r} contains a NUL byte; paths are plain UTF-8 text")
    if len(path) > MAX_PATH:
        raise BadRequestError(f"path is {len(path)} characters long; at most {MAX_PATH} allowed")
    if "\\" in path:
        raise BadRequestError(f"path {path!r} contains a backslash; use '/' as the separator")
    parts = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise BadRequestError(
                f"path {path!r} contains '..'; paths must stay inside the dataset root"
            )
        parts.append(part)
    return "/".join(parts)


def join(root: str, rel: str) -> str:
    """Join an origin root (``bucket/prefix`` or ``/dir``) and a normalised relative path."""
    if not rel:
        return root.rstrip("/") or root
    if not root:
        return rel
    return root.rstrip("/") + "/" + rel


def parent(rel: str) -> str:
    """The parent directory of a normalised relative path (``""`` for top-level entries)."""
    return rel.rsplit("/", 1)[0] if "/" in rel else ""
