"""The one shape of file metadata that crosses every layer: origin -> store -> worker -> client.

``FileInfo`` is a ``TypedDict`` so it is a plain JSON object on the wire, in the metadata store
and in fsspec's ``info()`` results (fsspec expects ``name``, ``size`` and ``type``). ``name`` is
the path relative to the dataset root (the client prefixes the dataset in fsspec answers).
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

from tidepool.core.pages import version_of


class FileInfo(TypedDict):
    name: str
    """Path relative to the dataset root, normalised (``""`` is the root)."""
    type: Literal["file", "directory"]
    size: int
    version: str
    """ETag (unquoted) when the origin has one, else ``size-mtime``. For a directory: the ETag
    of its folder marker (see ``marker``) when the origin gives one, else ``""``."""
    mtime: float | None
    """Modification time, seconds since the epoch, when the origin reports one."""
    marker: NotRequired[bool]
    """A directory the origin holds a folder marker for (the 0-byte key ``dir/``,
    :mod:`tidepool.core.keys`): the S3 gateway lists and serves that key."""
    headers: NotRequired[dict[str, str]]
    """The object's own HTTP metadata (Content-Type, Cache-Control, ``x-amz-meta-*`` …) when
    the origin answered a HEAD or GET for it (absent when only a listing was seen)."""


def file_info(name: str, size: int, etag: str | None, mtime: float | None) -> FileInfo:
    """A file entry with its version computed the one way every layer agrees on."""
    return {
        "name": name,
        "type": "file",
        "size": int(size),
        "version": version_of(etag, int(size), mtime),
        "mtime": mtime,
    }


def dir_info(name: str) -> FileInfo:
    """A directory entry."""
    return {"name": name, "type": "directory", "size": 0, "version": "", "mtime": None}
