"""S3 error codes: the gateway's extension of the one error table in :mod:`tidepool.core.errors`.

The gateway answers every failure with an S3 ``<Error>`` document whose ``Code`` clients branch on
(boto3 raises ``NoSuchKey``, s3fs maps ``NoSuchBucket`` to ``FileNotFoundError`` …). Two kinds of
failure reach the handlers: :class:`S3Error`, raised by the gateway's own pure layers (parsing,
signatures, conditions) with its code already chosen, and the package's exceptions coming up from
the fsspec client, mapped here by type with :data:`S3_STATUS` — the same types the worker's table
uses, so one cause gets one meaning on every surface.

Messages of answers about the gateway's own machinery (503, 500, 403 from the worker) are fixed
texts, as S3's are: the worker's address, the origin's error text and the worker's own messages
stay in the gateway's log (with the request id), never in an answer. Only messages about the
client's own input (a bad argument or range) carry detail, and that detail is the client's.

Origin mistakes keep their meaning: the origin's missing bucket is ``NoSuchBucket`` and refused
credentials are ``AccessDenied`` (403), with the origin's own code (``SignatureDoesNotMatch``,
``InvalidAccessKeyId``) named in a fixed message: sent as themselves they would tell an S3 client
that *its own* request to the gateway was signed wrongly. A TLS mismatch with the origin is a 502
``OriginTLS``, any other origin error a 502 ``OriginError``. These messages never carry the
origin's endpoint, key id or text: the worker's log has them, under the request id.

Limits: only the codes this read-only gateway can produce are listed; anything unmapped is an
``InternalError`` (500) — a bug, or the worker refusing the gateway's own token.
"""

from __future__ import annotations

from tidepool.core.errors import (
    BadRequestError,
    OriginBucketMissingError,
    OriginError,
    OriginRefusedError,
    OriginTLSError,
    OriginUnavailableError,
    RangeNotSatisfiableError,
    TooManyRequestsError,
    UnknownDatasetError,
    VersionGoneError,
    redact,
)

__all__ = ["S3_STATUS", "S3Error", "s3_error"]


class S3Error(Exception):
    """A failure with its S3 error code and HTTP status already decided."""

    def __init__(
        self, code: str, message: str, status: int = 400, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.headers = dict(headers or {})


# exception type -> (HTTP status, S3 error code). Checked in order: subclasses first.
S3_STATUS: list[tuple[type[BaseException], int, str]] = [
    (TooManyRequestsError, 503, "SlowDown"),  # S3's answer to "come back later"
    (RangeNotSatisfiableError, 416, "InvalidRange"),
    (BadRequestError, 400, "InvalidArgument"),
    (VersionGoneError, 412, "PreconditionFailed"),  # the object changed mid-read
    (UnknownDatasetError, 404, "NoSuchBucket"),
    (OriginBucketMissingError, 404, "NoSuchBucket"),
    (OriginRefusedError, 403, "AccessDenied"),
    (OriginTLSError, 502, "OriginTLS"),
    (FileNotFoundError, 404, "NoSuchKey"),
    (IsADirectoryError, 404, "NoSuchKey"),
    (NotADirectoryError, 404, "NoSuchKey"),
    (OriginUnavailableError, 503, "ServiceUnavailable"),
    (ConnectionError, 503, "ServiceUnavailable"),  # the worker itself is unreachable
    (PermissionError, 403, "AccessDenied"),
    (OriginError, 502, "OriginError"),
]

_MESSAGES = {
    "NoSuchKey": "The specified key does not exist.",
    "NoSuchBucket": "The specified bucket does not exist.",
    "ServiceUnavailable": "Please reduce your request rate.",
    "PreconditionFailed": "The object changed while it was being read; read it again.",
    "AccessDenied": "Access Denied",
}
_ORIGIN_DOWN = "The origin is unreachable and the object is not cached; try again later."
_CACHE_DOWN = "The cache is unavailable; try again later."
_INTERNAL = "We encountered an internal error. Please try again."


def _origin_message(exc: OriginError) -> str:
    """A fixed text per origin cause (the details stay in the worker's log)."""
    if isinstance(exc, OriginBucketMissingError):
        return "The dataset's bucket does not exist at its origin."
    if isinstance(exc, OriginRefusedError):
        return f"The dataset's origin refused its credentials ({exc.label})."
    if isinstance(exc, OriginTLSError):
        return "The dataset's origin endpoint does not speak the TLS its URL says."
    return "The dataset's origin answered with an error."


def s3_error(exc: BaseException) -> S3Error:
    """The :class:`S3Error` for any exception (``InternalError`` when the type is unmapped)."""
    if isinstance(exc, S3Error):
        return exc
    for cls, status, code in S3_STATUS:
        if isinstance(exc, cls):
            if isinstance(exc, OriginUnavailableError):
                message = _ORIGIN_DOWN
            elif isinstance(exc, OriginError):
                message = _origin_message(exc)
            elif code == "ServiceUnavailable":
                message = _CACHE_DOWN
            else:
                message = _MESSAGES.get(code) or redact(str(exc))[:300]
            return S3Error(code, message, status)
    return S3Error("InternalError", _INTERNAL, 500)
