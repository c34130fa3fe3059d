"""One error family for the whole package, and the one table that maps it across surfaces.

Python callers get built-in ``OSError`` subclasses carrying the path (``FileNotFoundError``,
``PermissionError`` …) so fsspec, pandas and PyTorch handle them as usual; package-specific causes
share the base :class:`TidepoolError`. :data:`HTTP_STATUS` is the single mapping from an exception
type to the worker's HTTP status and the JSON ``error`` code, and :func:`from_http` is its inverse
used by the client. Later surfaces (FUSE errno, S3 error codes) extend the same table.

Messages never carry secrets: :func:`redact` scrubs anything that looks like a credential before
a message reaches a log or an HTTP body.
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


# exception type -> (HTTP status, error code). Checked in order: put subclasses first.
HTTP_STATUS: list[tuple[type[BaseException], int, str]] = [
    (RangeNotSatisfiableError, 416, "InvalidRange"),
    (UnsupportedMediaError, 415, "UnsupportedMediaType"),
    (BadRequestError, 400, "BadRequest"),
    (UnknownDatasetError, 404, "NoSuchDataset"),
    (PeerAuthError, 403, "Forbidden"),
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
    if code == "OriginUnavailable":
        err = OriginUnavailableError(
            str(body.get("dataset", "?")), str(body.get("path", path)), message
        )
        err.args = (errno.EIO, message)
        err.strerror = message
        return err
    return OriginError(errno.EIO, f"{message} (HTTP {status})", path)


_SECRET_PATTERNS = [
    # key=value / key: value pairs whose key names a credential
    re.compile(
        r"(?i)((?:secret|password|passwd|token|access[_.-]?key(?:[_.-]?id)?|credential|"
        r"authorization|signature|x-amz-security-token)[\"']?\s*[:=]\s*[\"']?)([^\s\"',&}]+)"
    ),
    re.compile(r"(?i)(bearer\s+)([A-Za-z0-9._~+/=-]{8,})"),
]


def redact(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Scrub credentials from ``text``: known secret values and ``key=value`` credential pairs."""
    for value in secrets:
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    text = _SECRET_PATTERNS[1].sub(lambda m: m.group(1) + "***", text)
    text = _SECRET_PATTERNS[0].sub(
        lambda m: m.group(0) if m.group(2).lower() == "bearer" else m.group(1) + "***", text
    )
    if len(text) > 2000:
        text = text[:2000] + "… (truncated)"
    return text
