"""Which origin errors are worth another try, and how long to wait before it.

The funnel (:meth:`tidepool.origin.funnel.Origin._call`) asks :func:`is_retryable` about every
failed call: an explicit tuple of exception types (timeouts, resets, aiohttp and botocore
connection errors) plus the S3 error codes of an overloaded or briefly broken server
(``SlowDown``, ``InternalError``, 5xx). Answers that no retry changes (not found, refused, a
changed version) are never retried. :func:`backoff_delay` is capped exponential backoff with full
jitter. Pure: no I/O, no clock; botocore's types are added only when it is installed.
"""

from __future__ import annotations

import asyncio
import random

import aiohttp

from tidepool.core.errors import VersionChangedError
from tidepool.origin.diagnose import s3_code

# Error codes an S3-compatible origin answers when it is overloaded or briefly broken.
RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "500",
        "502",
        "503",
        "504",
    }
)


def _retryable_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [
        asyncio.TimeoutError,
        TimeoutError,
        ConnectionError,
        aiohttp.ClientConnectionError,
        aiohttp.ClientPayloadError,
    ]
    try:  # botocore is present whenever s3fs is
        from botocore import exceptions as bx

        types += [
            bx.EndpointConnectionError,
            bx.ConnectionClosedError,
            bx.ConnectTimeoutError,
            bx.ReadTimeoutError,
            bx.ResponseStreamingError,
        ]
    except ImportError:  # pragma: no cover - s3fs not installed
        pass
    return tuple(types)


RETRYABLE_ERRORS: tuple[type[BaseException], ...] = _retryable_types()
NOT_RETRYABLE: tuple[type[BaseException], ...] = (
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    VersionChangedError,
)


error_code = s3_code
"""The S3 error code carried by ``exc`` or its causes (s3fs wraps botocore's ClientError)."""


def is_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` (or its cause) is a timeout rather than a refusal or a reset."""
    timeouts: list[type[BaseException]] = [asyncio.TimeoutError, TimeoutError]
    try:
        from botocore import exceptions as bx

        timeouts += [bx.ConnectTimeoutError, bx.ReadTimeoutError]
    except ImportError:  # pragma: no cover
        pass
    cur: BaseException | None = exc
    seen: set[int] = set()
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, tuple(timeouts)):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed origin call may succeed if tried again."""
    if isinstance(exc, NOT_RETRYABLE):
        return False
    if isinstance(exc, RETRYABLE_ERRORS):
        return True
    chain: BaseException | None = exc.__cause__
    while chain is not None:
        if isinstance(chain, RETRYABLE_ERRORS):
            return True
        chain = chain.__cause__
    return error_code(exc) in RETRYABLE_CODES


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Capped exponential backoff with full jitter (attempt 0 is the first retry)."""
    return float(rng.uniform(0, min(cap, base * (2**attempt))))
