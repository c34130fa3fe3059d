"""Page identity, page arithmetic and the on-disk page header: pure functions, no I/O.

A cached file is split into fixed-size pages. A page is named by ``(dataset, file key, index)``
where the file key hashes ``(dataset, path, version)``: a changed origin object has a new version,
hence a new key, so its old pages can never be served as the new content. The same function names
a page on disk for the worker and for the client's same-host fast path, so both must stay here.

A page file is a 32-byte header followed by the page bytes::

    magic "TPPG" | format u8 | 3 pad | length u64 | xxh3_64 u64 | 8 pad

The checksum covers the page bytes; a reader verifies it on every read, so a torn or flipped page is
detected instead of served.

Extents (issue 18). Once every page of a large file is cached in one tier, the worker writes the
file's bytes again as one *extent file* beside its pages (``<key>.x``) and removes the page files:
the kernel copies a large read out of one file's page cache faster than out of hundreds of small
files (≈ 17 % on this machine's ext4, which gives a file written in large writes large folios).
An extent holds the file's bytes from offset 0 (so every page is aligned as in a plain file), zero
padding to a 4 KiB boundary, then a trailer::

    magic "TPEX" | format u8 | 3 pad | file size u64 | page size u64 | pages u32 | 4 pad
    then one xxh3_64 u64 per page (the same checksums as the page headers)

An extent is immutable once renamed into place; a page file once complete.

Packed pages (issue 16). A file of at most :data:`PACK_MAX` bytes that fits in one page is not a
page file: it is a row of its tier's pack database (:mod:`tidepool.store.packs`), located through
the page index rather than by its key, and checked against the checksum the index recorded.
"""

from __future__ import annotations

import hashlib
import struct
from typing import NamedTuple

import xxhash

DEFAULT_PAGE_SIZE = 1 << 20
MIN_PAGE_SIZE = 4 << 10
MAX_PAGE_SIZE = 64 << 20

HEADER = struct.Struct("<4sB3xQQ8x")
HEADER_SIZE = HEADER.size  # 32
MAGIC = b"TPPG"
FORMAT = 1
EXTENT = struct.Struct("<4sB3xQQI4x")
EXTENT_MAGIC = b"TPEX"
EXTENT_SUFFIX = "x"
EXTENT_ALIGN = 4096
EXTENT_MIN_BYTES = 16 << 20
"""Files at least this large are kept as one extent once whole in a tier (smaller ones: the
per-file cost is not worth a second write)."""
PAGES_DIR = "pages"
TMP_DIR = "tmp"
PACK_FILE = "packs.sqlite3"
"""A tier's database of packed pages (:mod:`tidepool.store.packs`), beside ``pages/``."""
PACK_MAX = 16 << 10
"""Largest file whose page is packed rather than given a page file of its own."""


def packed(index: int, length: int, page_size: int, limit: int = PACK_MAX) -> bool:
    """Whether page ``index`` of ``length`` bytes, of a file in pages of ``page_size``, is
    packed: the whole file (page 0, shorter than a page: no other page follows it) and at most
    ``limit`` bytes (a store's ``pack_max``; the same-host reader asks with the default, and
    reads a page file when the page is not packed)."""
    return index == 0 and length < page_size and length <= limit


class PageKey(NamedTuple):
    """One page of one version of one file of one dataset. A tuple: the page store keys dicts
    and its eviction order by it, a million times on a restart, and a tuple hashes and compares
    in C (a dataclass's ``__hash__`` and ``__eq__`` are Python calls)."""

    dataset: str
    file_key: str
    index: int  # type: ignore[assignment]  # shadows tuple.index, which no caller uses

    def relpath(self) -> str:
        """Where the page lives below a tier root (``pages/<ds>/<k2>/<key>.<index>``)."""
        return f"{PAGES_DIR}/{self.dataset}/{self.file_key[:2]}/{self.file_key}.{self.index}"


def extent_relpath(dataset: str, fkey: str) -> str:
    """Where a file's extent lives below a tier root (beside its pages: ``<key>.x``)."""
    return f"{PAGES_DIR}/{dataset}/{fkey[:2]}/{fkey}.{EXTENT_SUFFIX}"


def extent_trailer_at(size: int) -> int:
    """Offset of the trailer of an extent holding a file of ``size`` bytes."""
    return -(-size // EXTENT_ALIGN) * EXTENT_ALIGN


def extent_length(size: int, pages: int) -> int:
    """Length of the extent file of a file of ``size`` bytes in ``pages`` pages."""
    return extent_trailer_at(size) + EXTENT.size + 8 * pages


def encode_extent_trailer(size: int, page_size: int, checksums: list[int]) -> bytes:
    """The trailer of an extent (see the module docstring)."""
    return EXTENT.pack(EXTENT_MAGIC, FORMAT, size, page_size, len(checksums)) + struct.pack(
        f"<{len(checksums)}Q", *checksums
    )


def decode_extent_trailer(
    raw: bytes | bytearray | memoryview, size: int, page_size: int
) -> tuple[int, ...]:
    """The per-page checksums of an extent trailer for a file of ``size`` bytes in pages of
    ``page_size``; ``ValueError`` when it is not that file's extent trailer."""
    n = page_count(size, page_size)
    if len(raw) != EXTENT.size + 8 * n:
        raise ValueError(f"extent trailer is {len(raw)} bytes, expected {EXTENT.size + 8 * n}")
    magic, fmt, fsize, psize, count = EXTENT.unpack_from(raw)
    if (magic, fmt, fsize, psize, count) != (EXTENT_MAGIC, FORMAT, size, page_size, n):
        raise ValueError(
            f"not the extent of a {size}-byte file in {page_size}-byte pages (magic {magic!r}, "
            f"format {fmt}, size {fsize}, page size {psize}, pages {count})"
        )
    return struct.unpack_from(f"<{n}Q", raw, EXTENT.size)


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
