"""One error family for the whole package, and the one table that maps it across surfaces.

Python callers get built-in ``OSError`` subclasses carrying the path (``FileNotFoundError``,
``PermissionError`` …) so fsspec, pandas and PyTorch handle them as usual; package-specific causes
share the base :class:`TidepoolError`. :data:`HTTP_STATUS` is the single mapping from an exception
type to the worker's HTTP status and the JSON ``error`` code, and :func:`from_http` is its inverse
used by the client. Later surfaces (FUSE errno, S3 error codes) extend the same table.

Origin mistakes keep their meaning end to end: a missing bucket, refused credentials and a TLS
mismatch are named errors (:class:`OriginBucketMissingError`, :class:`OriginRefusedError` and
its subclasses, :class:`OriginTLSError`) that carry the bucket, the endpoint and the access key id
(never the secret) through the worker's JSON answer (:func:`error_details`) back to the client.

Messages never carry secrets: :func:`redact` scrubs anything that looks like a credential before
a message reaches a log or an HTTP body. Known secret values are replaced where they stand as a
whole token, never inside a longer word or a path (a directory named like an access key stays).
"""

from __future__ import annotations

import errno
import re
from typing import Any


class TidepoolError(Exception):
    """Base of every error Tidepool raises on purpose."""


class SpecError(TidepoolError):
    """A spec file is invalid. ``problems`` lists each one as ``file: field.path: message``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ConfigError(TidepoolError, ValueError):
    """A setting passed on the command line or in the environment is invalid."""


class PeerAuthError(TidepoolError, PermissionError):
    """A request claims to come from a pool peer (``X-Tidepool-Peer``) without the peer
    credential (HTTP 403)."""


class OriginError(TidepoolError, OSError):
    """The origin (under storage) answered with an error that is not a missing file."""


class OriginUnavailableError(OriginError):
    """The origin cannot be reached (network down, timeouts, circuit open)."""

    def __init__(self, dataset: str, path: str, reason: str) -> None:
        self.dataset, self.path, self.reason = dataset, path, reason
        super().__init__(
            errno.EIO, f"origin unreachable for dataset {dataset!r} path {path!r}: {reason}"
        )


class VersionChangedError(OriginError):
    """The origin object is not the version a read was planned for (its ETag changed)."""


class VersionGoneError(TidepoolError, OSError):
    """The version a read is pinned to is gone, from the origin and from the cache.

    A read spread over several requests (blocks, ranges, read-ahead) carries the version it
    started with (``If-Match``); when that version can no longer be served the read fails with
    ``ESTALE`` instead of stitching bytes of two versions together (s3fs raises ``FileExpired``
    for the same reason). Open the file again to read the new version.
    """

    def __init__(self, path: str, version: str, detail: str = "") -> None:
        self.version = version
        message = (
            f"{path!r} changed while it was being read: version {version!r} is gone from the "
            "origin and the cache" + (f" ({detail})" if detail else "") + "; open it again"
        )
        super().__init__(errno.ESTALE, message, path)


class NotCachedError(TidepoolError, LookupError):
    """A peer asked for bytes only if this worker holds them (``Cache-Control: only-if-cached``)
    and it does not: HTTP 504, as RFC 9111 says a cache answers then. Nothing was fetched."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path!r} is not in this worker's cache (asked only if cached)")


class BadRequestError(TidepoolError, ValueError):
    """A request names something invalid (bad path, bad range, bad parameter)."""


class RangeNotSatisfiableError(BadRequestError):
    """A byte range starts past the end of the file (HTTP 416)."""

    def __init__(self, header: str, size: int) -> None:
        self.size = size
        super().__init__(f"range {header!r} is not satisfiable for a file of {size} bytes")


class UnsupportedMediaError(BadRequestError):
    """A request body in a format the route does not take (HTTP 415)."""


class UnknownDatasetError(TidepoolError, LookupError):
    """The dataset is not served by this worker."""

    def __init__(self, dataset: str, known: list[str]) -> None:
        self.dataset = dataset
        valid = ", ".join(sorted(known)) or "none"
        shown = repr(dataset) if len(dataset) <= 64 else f"{dataset[:64]!r}…"
        super().__init__(f"unknown dataset {shown}; this worker serves: {valid}")


class AuthError(TidepoolError, PermissionError):
    """Missing or wrong bearer token."""


class ForbiddenError(TidepoolError, PermissionError):
    """The caller is known but may not do this (HTTP 403), e.g. another local user asking a
    tokenless loopback worker to start a load."""


class TooManyRequestsError(TidepoolError):
    """A bounded resource is full (HTTP 429): the request may be sent again later."""


class OriginBucketMissingError(OriginError, FileNotFoundError):
    """The origin says the mount's bucket does not exist (S3 ``NoSuchBucket``)."""

    code = "NoSuchBucket"

    def __init__(self, dataset: str, bucket: str, endpoint: str, path: str = "") -> None:
        self.dataset, self.bucket, self.endpoint = dataset, bucket, endpoint
        super().__init__(
            errno.ENOENT,
            f"bucket {bucket!r} does not exist at {endpoint} (dataset {dataset!r}); check the "
            "bucket name in the mountPoint and the endpoint",
            path or None,
        )


class OriginRefusedError(OriginError, PermissionError):
    """The origin refused the dataset's credentials.

    The base class stands for a bare HTTP 403 (an S3 answer to HEAD has no body, so no cause);
    the subclasses are the S3 codes that say why. The message names the access key id and the
    endpoint, never the secret key.
    """

    code = "AccessDenied"
    """The S3 error code on the wire (a bare 403 travels as AccessDenied)."""
    label = "HTTP 403 Forbidden"
    """What the origin said, as the message shows it."""
    why = (
        "refused without a cause (an answer to a HEAD request): a wrong secret key, an unknown "
        "access key id or missing permissions; `tidepool validate --check` tells which"
    )

    def __init__(
        self, dataset: str, bucket: str, endpoint: str, key_id: str | None, path: str = ""
    ) -> None:
        self.dataset, self.bucket, self.endpoint, self.key_id = dataset, bucket, endpoint, key_id
        key = f"access key id {key_id!r}" if key_id else "no access key id (anonymous request)"
        super().__init__(
            errno.EACCES,
            f"origin {endpoint} refused {key} for bucket {bucket!r} (dataset {dataset!r}): "
            f"{self.why} ({self.label})",
            path or None,
        )


class OriginAccessDeniedError(OriginRefusedError):
    """S3 ``AccessDenied``: the key is valid but may not read this bucket or prefix."""

    code = label = "AccessDenied"
    why = "the key may not read this bucket or prefix (check its policy and the bucket's)"


class OriginSignatureError(OriginRefusedError):
    """S3 ``SignatureDoesNotMatch``: the secret key is not the one of the access key id."""

    code = label = "SignatureDoesNotMatch"
    why = "the secret key is wrong for this access key id (a typo, or an old secret)"


class OriginUnknownKeyError(OriginRefusedError):
    """S3 ``InvalidAccessKeyId``: the origin does not know the access key id."""

    code = label = "InvalidAccessKeyId"
    why = "the origin does not know this access key id (a typo, a deleted key, another endpoint)"


class OriginTLSError(OriginError):
    """The endpoint's scheme does not match what it speaks, or its certificate is not trusted."""

    code = "OriginTLS"

    def __init__(self, dataset: str, endpoint: str, reason: str) -> None:
        self.dataset, self.endpoint, self.reason = dataset, endpoint, reason
        super().__init__(errno.EPROTO, f"origin {endpoint} (dataset {dataset!r}): {reason}")


REFUSED_BY_CODE: dict[str, type[OriginRefusedError]] = {
    cls.code: cls for cls in (OriginAccessDeniedError, OriginSignatureError, OriginUnknownKeyError)
}
"""S3 error code -> the named error (a bare ``403`` is the base :class:`OriginRefusedError`)."""


# exception type -> (HTTP status, error code). Checked in order: put subclasses first.
HTTP_STATUS: list[tuple[type[BaseException], int, str]] = [
    (RangeNotSatisfiableError, 416, "InvalidRange"),
    (UnsupportedMediaError, 415, "UnsupportedMediaType"),
    (BadRequestError, 400, "BadRequest"),
    (UnknownDatasetError, 404, "NoSuchDataset"),
    (NotCachedError, 504, "NotCached"),
    (PeerAuthError, 403, "Forbidden"),
    (OriginBucketMissingError, 404, "NoSuchBucket"),
    (OriginSignatureError, 403, "SignatureDoesNotMatch"),
    (OriginUnknownKeyError, 403, "InvalidAccessKeyId"),
    (OriginRefusedError, 403, "AccessDenied"),
    (OriginTLSError, 502, "OriginTLS"),
    (FileNotFoundError, 404, "NoSuchKey"),
    (IsADirectoryError, 400, "IsADirectory"),
    (NotADirectoryError, 400, "NotADirectory"),
    (ForbiddenError, 403, "Forbidden"),
    (AuthError, 401, "Unauthorized"),
    (TooManyRequestsError, 429, "TooManyRequests"),
    (OriginUnavailableError, 503, "OriginUnavailable"),
    (VersionGoneError, 412, "PreconditionFailed"),
    (VersionChangedError, 412, "PreconditionFailed"),
    (OriginError, 502, "OriginError"),
]


def http_status(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and error code for an exception (500 InternalError when unmapped)."""
    for cls, status, code in HTTP_STATUS:
        if isinstance(exc, cls):
            return status, code
    return 500, "InternalError"


def from_http(status: int, body: dict[str, Any], path: str) -> Exception:
    """Rebuild a Python exception from a worker's JSON error answer (inverse of the table)."""
    code = str(body.get("error", ""))
    message = redact(str(body.get("message", f"HTTP {status}")))
    named = _origin_error(code, body, message, path)
    if named is not None:
        return named
    if code == "NoSuchKey":
        return FileNotFoundError(errno.ENOENT, message, path)
    if code == "NoSuchDataset":
        return FileNotFoundError(errno.ENOENT, message, path)
    if code == "IsADirectory":
        return IsADirectoryError(errno.EISDIR, message, path)
    if code == "NotADirectory":
        return NotADirectoryError(errno.ENOTDIR, message, path)
    if code == "InvalidRange":
        return BadRequestError(message)
    if code in ("BadRequest", "UnsupportedMediaType"):
        return BadRequestError(message)
    if code == "Unauthorized":
        return AuthError(message)
    if code == "PreconditionFailed":
        gone = VersionGoneError(path, str(body.get("version", "")))
        gone.strerror = message  # the worker's message already says which version and why
        return gone
    if code == "Forbidden":
        return ForbiddenError(message)
    if code == "TooManyRequests":
        return TooManyRequestsError(message)
    if code == "NotCached":
        not_cached = NotCachedError(path)
        not_cached.args = (message,)
        return not_cached
    if code == "OriginUnavailable":
        err = OriginUnavailableError(
            str(body.get("dataset", "?")), str(body.get("path", path)), message
        )
        err.args = (errno.EIO, message)
        err.strerror = message
        return err
    return OriginError(errno.EIO, f"{message} (HTTP {status})", path)


def error_details(exc: BaseException) -> dict[str, Any]:
    """What a named origin error adds to the worker's JSON answer (bucket, endpoint, key id)."""
    out: dict[str, Any] = {}
    for name in ("bucket", "endpoint", "key_id"):
        if hasattr(exc, name):
            out[name] = getattr(exc, name)
    return out


def _origin_error(code: str, body: dict[str, Any], message: str, path: str) -> Exception | None:
    """The named origin error of a JSON answer, rebuilt with the worker's message."""
    dataset = str(body.get("dataset", "?"))
    bucket, endpoint = str(body.get("bucket", "?")), str(body.get("endpoint", "?"))
    err: OSError
    if code == OriginBucketMissingError.code:
        err = OriginBucketMissingError(dataset, bucket, endpoint, path)
    elif code in REFUSED_BY_CODE or (code == OriginRefusedError.code):
        cls = REFUSED_BY_CODE.get(code, OriginRefusedError)
        key_id = body.get("key_id")
        err = cls(dataset, bucket, endpoint, str(key_id) if key_id else None, path)
    elif code == OriginTLSError.code:
        err = OriginTLSError(dataset, endpoint, message)
    else:
        return None
    err.strerror = message
    return err


_SECRET_PATTERNS = [
    # key=value / key: value pairs whose key names a credential
    re.compile(
        r"(?i)((?:secret|password|passwd|token|access[_.-]?key(?:[_.-]?id)?|credential|"
        r"authorization|signature|x-amz-security-token)[\"']?\s*[:=]\s*[\"']?)([^\s\"',&}]+)"
    ),
    re.compile(r"(?i)(bearer\s+)([A-Za-z0-9._~+/=-]{8,})"),
]


# A secret value counts only as a whole token: not glued to a letter, digit, "_", "-", "/" or
# a dot inside a word (so "/data/AKID/x", "AKID.txt" and "AKIDx" keep their text, while
# "key AKID," and "is AKID." lose it).
_BEFORE = r"(?<![A-Za-z0-9_\-/.])"
_AFTER = r"(?![A-Za-z0-9_\-/]|\.[A-Za-z0-9_])"


def redact(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Scrub credentials from ``text``: known secret values and ``key=value`` credential pairs.

    A known value is replaced only where it stands as a whole token (by exact value, never a
    substring of a longer word or of a path), so a tier path whose directory is named like the
    access key prints intact."""
    for value in sorted((v for v in secrets if v and len(v) >= 4), key=len, reverse=True):
        token = re.compile(_BEFORE + re.escape(value) + _AFTER)
        text = token.sub("***", text)
    text = _SECRET_PATTERNS[1].sub(lambda m: m.group(1) + "***", text)
    text = _SECRET_PATTERNS[0].sub(
        lambda m: m.group(0) if m.group(2).lower() == "bearer" else m.group(1) + "***", text
    )
    if len(text) > 2000:
        text = text[:2000] + "… (truncated)"
    return text
