"""Parse HTTP ``Range`` headers into one concrete byte span: pure, no I/O.

Only a single range is supported (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``), which is what fsspec,
boto3 and browsers send; a multi-range request is answered with the whole span it covers would be
wrong, so it is refused with a clear error instead.
"""

from __future__ import annotations

from tidepool.core.errors import BadRequestError, RangeNotSatisfiableError


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Return ``(start, end_exclusive)`` for ``header`` against a file of ``size`` bytes.

    ``None`` means "no range": serve the whole file with 200. Raises
    :class:`RangeNotSatisfiableError` (416) when the range starts at or past EOF and
    :class:`BadRequestError` (400) when the header is malformed.
    """
    if header is None or header.strip() == "":
        return None
    text = header.strip()
    unit, sep, spec = text.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        raise BadRequestError(f"Range header {header!r} must look like 'bytes=START-END'")
    spec = spec.strip()
    if "," in spec:
        raise BadRequestError(f"Range header {header!r} asks for several ranges; send one")
    first, dash, last = spec.partition("-")
    first, last = first.strip(), last.strip()
    if not dash or (not first and not last):
        raise BadRequestError(f"Range header {header!r} must look like 'bytes=START-END'")
    if not first:  # suffix form: the last n bytes
        if not last.isdigit():
            raise BadRequestError(
                f"Range header {header!r} must hold non-negative integers, like 'bytes=-500'"
            )
        n = int(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiableError(header, size)
        return max(0, size - n), size
    if not first.isdigit() or (last and not last.isdigit()):
        raise BadRequestError(
            f"Range header {header!r} must hold non-negative integers, like 'bytes=0-1023'"
        )
    start = int(first)
    end = int(last) + 1 if last else size
    if start >= size:
        raise RangeNotSatisfiableError(header, size)
    if end <= start:
        raise BadRequestError(f"Range header {header!r} ends before it starts")
    return start, min(end, size)


def content_range(start: int, end: int, size: int) -> str:
    """The ``Content-Range`` value for a 206 answer (``end`` exclusive)."""
    return f"bytes {start}-{end - 1}/{size}"
