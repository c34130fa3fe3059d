"""The one error table across surfaces, for the origin's named errors, and redaction by value.

Pure: exceptions are built as s3fs and botocore build them (a ``ClientError`` chained under the
``PermissionError`` s3fs raises), then mapped to the worker's HTTP status, rebuilt by the client
from the JSON answer, and mapped to FUSE errno and S3 codes.
"""

from __future__ import annotations

import errno
import ssl

import pytest
from botocore.exceptions import ClientError

from tidepool.core.errors import (
    OriginAccessDeniedError,
    OriginBucketMissingError,
    OriginRefusedError,
    OriginSignatureError,
    OriginTLSError,
    OriginUnknownKeyError,
    error_details,
    from_http,
    http_status,
    redact,
)
from tidepool.fuse.source import errno_for
from tidepool.gateway.errors import s3_error
from tidepool.origin.diagnose import classify, describe_mount, tls_reason
from tidepool.spec.config import MountConfig

MOUNT = MountConfig(
    name="lake",
    url="s3://nolake/data/",
    protocol="s3",
    root="nolake/data",
    path="",
    storage_options={
        "key": "AKIDEXAMPLE",
        "secret": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "endpoint_url": "http://127.0.0.1:19731",
    },
    secret_values=("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
)


def s3fs_error(code: str, cls: type[OSError], operation: str = "ListObjectsV2") -> OSError:
    """What s3fs raises: the translated OSError with botocore's ClientError as its context."""
    try:
        try:
            raise ClientError({"Error": {"Code": code, "Message": "origin says no"}}, operation)
        except ClientError as inner:
            raise cls(errno.EACCES, "origin says no") from inner
    except OSError as outer:
        return outer


@pytest.mark.parametrize(
    ("code", "cls", "raised", "status"),
    [
        ("NoSuchBucket", OriginBucketMissingError, FileNotFoundError, 404),
        ("AccessDenied", OriginAccessDeniedError, PermissionError, 403),
        ("SignatureDoesNotMatch", OriginSignatureError, PermissionError, 403),
        ("InvalidAccessKeyId", OriginUnknownKeyError, PermissionError, 403),
        ("403", OriginRefusedError, PermissionError, 403),
    ],
)
def test_origin_codes_keep_their_meaning_on_every_surface(
    code: str, cls: type[OSError], raised: type[OSError], status: int
) -> None:
    named = classify(s3fs_error(code, raised), "lake", MOUNT, "train/x.jpg")
    assert type(named) is cls and isinstance(named, raised)
    message = str(named)
    assert "'nolake'" in message and "http://127.0.0.1:19731" in message
    assert "wJalrXUtnFEMI" not in message
    if isinstance(named, OriginRefusedError):
        assert "access key id 'AKIDEXAMPLE'" in message

    # worker: status and code from the one table; the JSON carries bucket, endpoint, key id
    got_status, got_code = http_status(named)
    expected_code = "AccessDenied" if code == "403" else code
    assert (got_status, got_code) == (status, expected_code)
    body = {"error": got_code, "message": named.strerror, "dataset": "lake", "path": "train/x.jpg"}
    body.update(error_details(named))
    assert "wJalrXUtnFEMI" not in str(body)

    # client: the same exception type, a PermissionError / FileNotFoundError naming the bucket
    back = from_http(got_status, body, "lake/train/x.jpg")
    # a bare 403 travels as AccessDenied (its wire code), with the worker's own message
    assert type(back) is (OriginAccessDeniedError if code == "403" else cls)
    assert isinstance(back, raised) and back.strerror == named.strerror
    assert "'nolake'" in str(back) and back.filename == "lake/train/x.jpg"

    # FUSE and the S3 gateway
    assert errno_for(back) == (errno.ENOENT if raised is FileNotFoundError else errno.EACCES)
    gw = s3_error(back)
    assert (gw.code, gw.status) == (
        ("NoSuchBucket", 404) if code == "NoSuchBucket" else ("AccessDenied", 403)
    )
    assert "origin" in gw.message and "internal" not in gw.message.lower()
    assert "127.0.0.1" not in gw.message and "AKIDEXAMPLE" not in gw.message


def test_other_missing_files_stay_plain() -> None:
    assert classify(s3fs_error("NoSuchKey", FileNotFoundError), "lake", MOUNT) is None
    local = MountConfig(name="l", url="/srv/x", protocol="file", root="/srv/x", path="")
    assert classify(s3fs_error("NoSuchBucket", FileNotFoundError), "l", local) is None


def test_tls_mismatch_says_which_scheme_to_write() -> None:
    https = MountConfig(
        name="m",
        url="s3://b/",
        protocol="s3",
        root="b",
        path="",
        storage_options={"endpoint_url": "https://127.0.0.1:19731"},
    )
    wrong = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    wrong.reason = "WRONG_VERSION_NUMBER"
    try:
        raise ConnectionError("Cannot connect to host") from wrong
    except ConnectionError as exc:
        named = classify(exc, "lake", https)
    assert isinstance(named, OriginTLSError)
    assert "write http://127.0.0.1:19731" in str(named)
    assert http_status(named) == (502, "OriginTLS")
    assert errno_for(from_http(502, {"error": "OriginTLS", "message": "m"}, "p")) == errno.EPROTO
    untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed")
    untrusted.verify_message = "self-signed certificate"
    assert "not trusted (self-signed certificate)" in tls_reason(untrusted, "https://x")


def test_describe_mount_names_endpoint_and_key_never_the_secret() -> None:
    target = describe_mount(MOUNT)
    assert (target.bucket, target.prefix, target.endpoint, target.key_id) == (
        "nolake",
        "data",
        "http://127.0.0.1:19731",
        "AKIDEXAMPLE",
    )
    assert "wJalr" not in repr(target)


def test_redact_by_exact_value_never_inside_a_path() -> None:
    key = "images"  # an access key id that is also a directory name
    line = f"SSD /mnt/{key}/cache: 1.00GiB; key {key}, secret={key}; mount {key}.d"
    out = redact(line, (key,))
    assert "/mnt/images/cache" in out and "images.d" in out
    assert "key ***," in out and "secret=***" in out
    assert redact(f"the secret is {key}.", (key,)) == "the secret is ***."
    assert redact(f"'{key}'", (key,)) == "'***'"
    # a secret with regex characters is matched literally
    odd = "a+b/c=="
    assert redact(f"value {odd} end", (odd,)) == "value *** end"
