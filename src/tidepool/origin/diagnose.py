"""What an origin failure means, in the user's terms: which bucket, which endpoint, which key.

s3fs turns botocore's ``ClientError`` into ``FileNotFoundError`` / ``PermissionError`` and keeps
the S3 error code only on the chained cause; an SSL failure arrives as a connection error. The
funnel (:mod:`tidepool.origin.funnel`) asks :func:`classify` to turn such an exception into one
of the named errors of :mod:`tidepool.core.errors` (``NoSuchBucket``, ``AccessDenied``,
``SignatureDoesNotMatch``, ``InvalidAccessKeyId``, a TLS mismatch) carrying the mount's bucket,
endpoint and access key id — never the secret key. :func:`describe_mount` says where a mount
points, for those messages and for ``tidepool validate --check``.

Limits: S3-compatible origins only (other backends keep their own exceptions); an S3 answer to a
HEAD request has no body, so a 403 there is the unnamed :class:`OriginRefusedError`.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

from tidepool.core.errors import (
    REFUSED_BY_CODE,
    OriginBucketMissingError,
    OriginRefusedError,
    OriginTLSError,
)
from tidepool.spec.config import MountConfig

S3_PROTOCOLS = ("s3", "s3a")
AWS_DEFAULT_ENDPOINT = "https://s3.amazonaws.com (AWS default)"


@dataclass(frozen=True)
class MountTarget:
    """Where a mount points: bucket, prefix, endpoint and the access key id (never the secret)."""

    bucket: str
    prefix: str
    endpoint: str
    key_id: str | None


def describe_mount(mount: MountConfig) -> MountTarget:
    """The bucket, prefix, endpoint and access key id a mount uses (S3 terms; other protocols get
    their root as ``bucket`` and the URL as ``endpoint``)."""
    if mount.protocol not in S3_PROTOCOLS:
        return MountTarget(mount.root, "", mount.url, None)
    bucket, _, prefix = mount.root.partition("/")
    opts = mount.storage_options
    client = opts.get("client_kwargs") or {}
    endpoint = opts.get("endpoint_url") or client.get("endpoint_url") or ""
    key = opts.get("key") or opts.get("aws_access_key_id") or client.get("aws_access_key_id")
    if not key and not opts.get("anon"):
        key = os.environ.get("AWS_ACCESS_KEY_ID")
    return MountTarget(bucket, prefix, str(endpoint or AWS_DEFAULT_ENDPOINT), key or None)


def s3_code(exc: BaseException) -> str | None:
    """The S3 error code (or bare HTTP status) carried by ``exc`` or its causes."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        response = getattr(cur, "response", None)
        if isinstance(response, dict):
            err = response.get("Error") or {}
            code = err.get("Code")
            if code:
                return str(code)
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            if status:
                return str(status)
        cur = cur.__cause__ or cur.__context__
    return None


def ssl_failure(exc: BaseException) -> ssl.SSLError | None:
    """The ``ssl.SSLError`` behind ``exc``, if a TLS handshake is what failed."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLError):
            return cur
        nested = getattr(cur, "os_error", None)  # aiohttp's ClientConnectorSSLError
        if isinstance(nested, ssl.SSLError):
            return nested
        cur = cur.__cause__ or cur.__context__
    return None


def tls_reason(err: ssl.SSLError, endpoint: str) -> str:
    """What a TLS handshake failure means for the endpoint the user wrote."""
    reason = getattr(err, "reason", None) or str(err)
    text = f"{reason} {err}".upper()
    if "WRONG_VERSION_NUMBER" in text or "RECORD_LAYER_FAILURE" in text or "HTTP_REQUEST" in text:
        plain = endpoint.replace("https://", "http://", 1)
        return (
            f"TLS was expected ({endpoint}) but the endpoint does not speak TLS "
            f"({reason}); it answers plain HTTP: write {plain}"
        )
    if isinstance(err, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
        detail = getattr(err, "verify_message", "") or reason
        return (
            f"the TLS certificate of {endpoint} is not trusted ({detail}); install its CA "
            "certificate (AWS_CA_BUNDLE) or use the endpoint's correct name"
        )
    return f"the TLS handshake with {endpoint} failed ({reason})"


def classify(
    exc: BaseException, dataset: str, mount: MountConfig, path: str = ""
) -> OSError | None:
    """The named error for an origin failure, or None when it has no special meaning."""
    if mount.protocol not in S3_PROTOCOLS:
        return None
    target = describe_mount(mount)
    tls = ssl_failure(exc)
    if tls is not None:
        return OriginTLSError(dataset, target.endpoint, tls_reason(tls, target.endpoint))
    if not isinstance(exc, FileNotFoundError | PermissionError):
        return None
    code = s3_code(exc)
    if code == OriginBucketMissingError.code:
        return OriginBucketMissingError(dataset, target.bucket, target.endpoint, path)
    if isinstance(exc, PermissionError) and (code in REFUSED_BY_CODE or code in (None, "403")):
        cls = REFUSED_BY_CODE.get(code or "", OriginRefusedError)
        return cls(dataset, target.bucket, target.endpoint, target.key_id, path)
    return None


__all__ = [
    "MountTarget",
    "classify",
    "describe_mount",
    "s3_code",
    "ssl_failure",
    "tls_reason",
]
