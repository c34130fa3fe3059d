"""Parse HTTP ``Range`` headers into one concrete byte span: pure, no I/O.

Only a single range is supported (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``), which is what fsspec,
boto3 and browsers send; a multi-range request is answered with the whole span it covers would be
wrong, so it is refused with a clear error instead.

The grammar is RFC 9110's, held strictly: the positions are ASCII digits (``²`` and ``٣`` are
Unicode digits, not positions), at most :data:`MAX_DIGITS` of them (no file has more than 2**63
bytes, and Python refuses to convert more than 4,300 digits), inside a header of at most
:data:`MAX_HEADER` characters; spaces and tabs around the parts are tolerated. Anything else is a
:class:`~tidepool.core.errors.BadRequestError` naming the header, never another exception.
"""

from __future__ import annotations

import re

from tidepool.core.errors import BadRequestError, RangeNotSatisfiableError
from tidepool.core.inputs import echo

__all__ = ["MAX_DIGITS", "MAX_HEADER", "content_range", "parse_range"]

MAX_DIGITS = 19
"""Digits of one position: 2**63 - 1 has 19."""
MAX_HEADER = 128
"""Characters of a whole ``Range`` value; a valid single range needs at most 46."""

_POS = f"([0-9]{{0,{MAX_DIGITS}}})"
_SPEC = re.compile(
    rf"[ \t]*bytes[ \t]*=[ \t]*{_POS}[ \t]*-[ \t]*{_POS}[ \t]*", re.ASCII | re.IGNORECASE
)
_VALID = "'bytes=START-END', 'bytes=START-' or 'bytes=-SUFFIX' (ASCII digits, at most 19 each)"


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Return ``(start, end_exclusive)`` for ``header`` against a file of ``size`` bytes.

    ``None`` means "no range": serve the whole file with 200. Raises
    :class:`RangeNotSatisfiableError` (416) when the range starts at or past EOF and
    :class:`BadRequestError` (400) when the header is malformed.
    """
    if header is None or header.strip(" \t") == "":
        return None
    if len(header) > MAX_HEADER:
        raise BadRequestError(
            f"Range header is {len(header)} characters long; at most {MAX_HEADER}, as {_VALID}"
        )
    match = _SPEC.fullmatch(header)
    if match is None:
        if "," in header:
            raise BadRequestError(f"Range header {echo(header)} asks for several ranges; send one")
        raise BadRequestError(f"Range header {echo(header)} must look like {_VALID}")
    first, last = match.groups()
    if not first and not last:
        raise BadRequestError(f"Range header {echo(header)} must look like {_VALID}")
    if not first:  # suffix form: the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiableError(header, size)
        return max(0, size - n), size
    start = int(first)
    end = int(last) + 1 if last else size
    if start >= size:
        raise RangeNotSatisfiableError(header, size)
    if end <= start:
        raise BadRequestError(f"Range header {echo(header)} ends before it starts")
    return start, min(end, size)


def content_range(start: int, end: int, size: int) -> str:
    """The ``Content-Range`` value for a 206 answer (``end`` exclusive)."""
    return f"bytes {start}-{end - 1}/{size}"
