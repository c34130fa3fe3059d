"""Page identity, page arithmetic and the on-disk page header: pure functions, no I/O.

A cached file is split into fixed-size pages. A page is named by ``(dataset, file key, index)``
where the file key hashes ``(dataset, path, version)``: a changed origin object has a new version,
hence a new key, so its old pages can never be served as the new content. The same function names
a page on disk for the worker and for the client's same-host fast path, so both must stay here.

A page file is a 32-byte header followed by the page bytes::

    magic "TPPG" | format u8 | 3 pad | length u64 | xxh3_64 u64 | 8 pad

The checksum covers the page bytes; a reader verifies it on every read, so a torn or flipped page is
detected instead of served.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import xxhash

DEFAULT_PAGE_SIZE = 1 << 20
MIN_PAGE_SIZE = 4 << 10
MAX_PAGE_SIZE = 64 << 20

HEADER = struct.Struct("<4sB3xQQ8x")
HEADER_SIZE = HEADER.size  # 32
MAGIC = b"TPPG"
FORMAT = 1
PAGES_DIR = "pages"
TMP_DIR = "tmp"


@dataclass(frozen=True, slots=True)
class PageKey:
    """One page of one version of one file of one dataset."""

    dataset: str
    file_key: str
    index: int

    def relpath(self) -> str:
        """Where the page lives below a tier root (``pages/<ds>/<k2>/<key>.<index>``)."""
        return f"{PAGES_DIR}/{self.dataset}/{self.file_key[:2]}/{self.file_key}.{self.index}"


def file_key(dataset: str, path: str, version: str) -> str:
    """Stable 32-hex-digit key of ``(dataset, path, version)`` (never Python's salted hash)."""
    raw = f"{dataset}\x00{path}\x00{version}".encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def page_count(size: int, page_size: int) -> int:
    """Number of pages of a file of ``size`` bytes (0 for an empty file)."""
    return (size + page_size - 1) // page_size


def page_span(index: int, page_size: int, size: int) -> tuple[int, int]:
    """Byte span ``[start, end)`` of page ``index`` in a file of ``size`` bytes."""
    start = index * page_size
    return start, min(start + page_size, size)


def pages_for(start: int, end: int, page_size: int) -> range:
    """Indexes of the pages that hold bytes ``[start, end)``."""
    if end <= start:
        return range(0)
    return range(start // page_size, (end - 1) // page_size + 1)


def checksum(data: bytes | bytearray | memoryview) -> int:
    """The page checksum (xxh3, 64 bit)."""
    return xxhash.xxh3_64_intdigest(data)


def encode_header(data: bytes | bytearray | memoryview) -> bytes:
    """Header for a page holding ``data``."""
    return HEADER.pack(MAGIC, FORMAT, len(data), checksum(data))


def decode_header(raw: bytes | bytearray | memoryview) -> tuple[int, int]:
    """``(length, checksum)`` from a page header; ``ValueError`` if it is not one."""
    if len(raw) < HEADER_SIZE:
        raise ValueError(f"page header is {len(raw)} bytes, expected {HEADER_SIZE}")
    magic, fmt, length, digest = HEADER.unpack_from(raw)
    if magic != MAGIC or fmt != FORMAT:
        raise ValueError(f"not a Tidepool page (magic {magic!r}, format {fmt})")
    return length, digest


def normalize_etag(etag: str | None) -> str | None:
    """ETag without quotes or a weak prefix, or None when empty."""
    if not etag:
        return None
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"') or None


def version_of(etag: str | None, size: int, mtime: float | None) -> str:
    """A file's version: its ETag when the origin has one, else ``size-mtime``."""
    tag = normalize_etag(etag)
    if tag:
        return tag
    return f"{size}-{mtime if mtime is not None else 0:.6f}"
