"""SigV4 verification without sockets: AWS's published examples and botocore's own signer."""

from __future__ import annotations

import calendar
import time
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tidepool.gateway.errors import S3Error
from tidepool.gateway.sigv4 import EMPTY_SHA256, MAX_SKEW, verify

AK, SK = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
KEYS = {AK: SK, "other": "another-secret-key"}
EXAMPLE_NOW = float(calendar.timegm((2013, 5, 24, 0, 0, 0)))
HOST = "127.0.0.1:9000"


def lookup(key: str) -> str | None:
    return KEYS.get(key)


def check(
    method: str, url: str, headers: list[tuple[str, str]], now: float, keys: Any = lookup
) -> str:
    parts = urlsplit(url)
    return verify(method, parts.path, parts.query, headers, now, keys)


# ---- AWS's published examples (S3 "Signature Calculations" pages) ---------------------------


def test_aws_example_get_object_header() -> None:
    headers = [
        ("Host", "examplebucket.s3.amazonaws.com"),
        ("Range", "bytes=0-9"),
        ("x-amz-content-sha256", EMPTY_SHA256),
        ("x-amz-date", "20130524T000000Z"),
        (
            "Authorization",
            f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3/aws4_request,"
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        ),
    ]
    assert check("GET", "http://x/test.txt", headers, EXAMPLE_NOW) == AK


def test_aws_example_list_objects() -> None:
    headers = [
        ("Host", "examplebucket.s3.amazonaws.com"),
        ("x-amz-content-sha256", EMPTY_SHA256),
        ("x-amz-date", "20130524T000000Z"),
        (
            "Authorization",
            f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3/aws4_request,"
            "SignedHeaders=host;x-amz-content-sha256;x-amz-date,"
            "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        ),
    ]
    assert check("GET", "http://x/?max-keys=2&prefix=J", headers, EXAMPLE_NOW) == AK


PRESIGNED_EXAMPLE = (
    "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    f"&X-Amz-Credential={AK}%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
    "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
)


def test_aws_example_presigned() -> None:
    headers = [("Host", "examplebucket.s3.amazonaws.com")]
    assert check("GET", PRESIGNED_EXAMPLE, headers, EXAMPLE_NOW + 3600) == AK
    with pytest.raises(S3Error) as err:
        check("GET", PRESIGNED_EXAMPLE, headers, EXAMPLE_NOW + 86401)
    assert (err.value.code, err.value.message) == ("AccessDenied", "Request has expired")
    with pytest.raises(S3Error) as err:
        check("GET", PRESIGNED_EXAMPLE.replace("test.txt", "test2.txt"), headers, EXAMPLE_NOW)
    assert err.value.code == "SignatureDoesNotMatch"


# ---- botocore's signer ----------------------------------------------------------------------


def signed(
    key: str,
    *,
    query: str = "",
    method: str = "GET",
    creds: tuple[str, str] = (AK, SK),
    presign: bool = False,
    extra: dict[str, str] | None = None,
    region: str = "us-east-1",
) -> tuple[str, list[tuple[str, str]]]:
    """(url, headers) of a request botocore signs the way its S3 client does."""
    url = f"http://{HOST}/bucket/{quote(key, safe='/~')}" + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, headers=dict(extra or {}))
    credentials = Credentials(*creds)
    if presign:
        S3SigV4QueryAuth(credentials, "s3", region, expires=600).add_auth(request)
    else:
        request.headers["X-Amz-Content-SHA256"] = EMPTY_SHA256
        S3SigV4Auth(credentials, "s3", region).add_auth(request)
    prepared = request.prepare()
    headers = [("Host", HOST), *prepared.headers.items()]
    return prepared.url, headers


SPECIAL_KEYS = [
    "plain.txt",
    "dir with space/a b.txt",
    "ünïcödé/日本語.bin",
    "a+b=c&d.txt",
    "percent%20literal.txt",
    "tilde~star*(paren)!$@.txt",
    "colon:semi;comma,'quote'.txt",
    "hash#question?.txt",
    "double//slash/./dot/../x",
    "trailing/",
    "emoji/🙂.png",
    '<xml>&amp;"quoted"',
    "back\\slash",
]


@pytest.mark.parametrize("key", SPECIAL_KEYS)
@pytest.mark.parametrize("presign", [False, True], ids=["header", "presigned"])
def test_botocore_signatures_verify(key: str, presign: bool) -> None:
    url, headers = signed(key, presign=presign)
    assert check("GET", url, headers, time.time()) == AK


@pytest.mark.parametrize(
    "query",
    [
        "list-type=2&prefix=a%20b%2Fc&delimiter=%2F&max-keys=10",
        "continuation-token=dHAxOmFiYw%3D%3D&encoding-type=url&list-type=2",
        "location",
        "response-content-disposition=attachment%3B%20filename%3D%22x%20y.txt%22",
        "prefix=%E6%97%A5%E6%9C%AC&start-after=a%2Bb",
    ],
)
def test_botocore_query_parameters(query: str) -> None:
    for presign in (False, True):
        url, headers = signed("k", query=query, presign=presign)
        assert check("GET", url, headers, time.time()) == AK


def test_other_regions_and_signed_extra_headers() -> None:
    url, headers = signed(
        "k", region="eu-central-1", extra={"Range": "bytes=0-9", "If-None-Match": '"abc"'}
    )
    assert check("GET", url, headers, time.time()) == AK


@settings(max_examples=150, deadline=None)
@given(key=st.text(min_size=1, max_size=40), presign=st.booleans())
def test_any_key_botocore_signs_verifies(key: str, presign: bool) -> None:
    url, headers = signed(key, presign=presign)
    assert check("GET", url, headers, time.time()) == AK


def errors_of(url: str, headers: list[tuple[str, str]], now: float | None = None) -> str:
    with pytest.raises(S3Error) as err:
        check("GET", url, headers, time.time() if now is None else now)
    return err.value.code


def test_wrong_secret_unknown_key_and_tampering() -> None:
    url, headers = signed("k", creds=(AK, "wrong-secret"))
    assert errors_of(url, headers) == "SignatureDoesNotMatch"
    # an unknown key id answers like a wrong secret: key ids cannot be enumerated
    url, headers = signed("k", creds=("nobody", SK))
    assert errors_of(url, headers) == "SignatureDoesNotMatch"
    url, headers = signed("k", presign=True, creds=("nobody", SK))
    assert errors_of(url, headers) == "SignatureDoesNotMatch"
    url, headers = signed("k", extra={"Range": "bytes=0-9"})
    tampered = [(n, "bytes=0-99" if n == "Range" else v) for n, v in headers]
    assert errors_of(url, tampered) == "SignatureDoesNotMatch"
    url, headers = signed("k", query="prefix=a")
    assert errors_of(url.replace("prefix=a", "prefix=b"), headers) == "SignatureDoesNotMatch"
    url, headers = signed("k", presign=True)
    assert errors_of(url + "&extra=1", headers) == "SignatureDoesNotMatch"
    moved = [(n, "127.0.0.1:9001" if n == "Host" else v) for n, v in headers]
    assert errors_of(url, moved) == "SignatureDoesNotMatch"


def test_anonymous_and_unsupported_schemes() -> None:
    assert errors_of(f"http://{HOST}/bucket/k", [("Host", HOST)]) == "AccessDenied"
    v2 = [("Host", HOST), ("Authorization", "AWS AKID:c2lnbmF0dXJl")]
    assert errors_of(f"http://{HOST}/bucket/k", v2) == "InvalidRequest"
    broken = [("Host", HOST), ("Authorization", "AWS4-HMAC-SHA256 Credential=x")]
    assert errors_of(f"http://{HOST}/bucket/k", broken) == "AuthorizationHeaderMalformed"
    url, headers = signed("k", presign=True)
    partial = url.replace("X-Amz-Expires=600&", "")
    assert errors_of(partial, headers) == "AuthorizationQueryParametersError"


def test_clock_skew_and_presigned_validity() -> None:
    url, headers = signed("k")
    assert errors_of(url, headers, time.time() + MAX_SKEW + 60) == "RequestTimeTooSkewed"
    assert errors_of(url, headers, time.time() - MAX_SKEW - 60) == "RequestTimeTooSkewed"
    assert check("GET", url, headers, time.time() + MAX_SKEW - 60) == AK
    url, headers = signed("k", presign=True)  # valid for 600 s, however far the clocks differ
    assert check("GET", url, headers, time.time() + 590) == AK
    assert errors_of(url, headers, time.time() + 700) == "AccessDenied"
    assert errors_of(url, headers, time.time() - MAX_SKEW - 60) == "AccessDenied"
    too_long = url.replace("X-Amz-Expires=600", "X-Amz-Expires=604801")
    assert errors_of(too_long, headers) == "AuthorizationQueryParametersError"


def test_unsigned_host_is_refused() -> None:
    url, headers = signed("k")
    auth = dict(headers)["Authorization"].replace("SignedHeaders=host;", "SignedHeaders=")
    headers = [(n, auth if n == "Authorization" else v) for n, v in headers]
    assert errors_of(url, headers) == "AccessDenied"


def test_region_must_be_the_gateways() -> None:
    url, headers = signed("k", region="eu-central-1")
    parts = urlsplit(url)
    with pytest.raises(S3Error) as err:
        verify("GET", parts.path, parts.query, headers, time.time(), lookup, region="us-east-1")
    assert err.value.code == "AuthorizationHeaderMalformed"
    assert "'eu-central-1' is wrong; expecting 'us-east-1'" in err.value.message
    url, headers = signed("k", region="eu-central-1", presign=True)
    parts = urlsplit(url)
    with pytest.raises(S3Error) as err:
        verify("GET", parts.path, parts.query, headers, time.time(), lookup, region="us-east-1")
    assert err.value.code == "AuthorizationQueryParametersError"


def test_signed_host_must_be_ours() -> None:
    url, headers = signed("k")
    parts = urlsplit(url)
    ours = verify(
        "GET", parts.path, parts.query, headers, time.time(), lookup, host_ok=lambda h: h == HOST
    )
    assert ours == AK
    with pytest.raises(S3Error) as err:
        verify(
            "GET", parts.path, parts.query, headers, time.time(), lookup, host_ok=lambda h: False
        )
    assert (err.value.code, err.value.status) == ("AccessDenied", 403)


@settings(max_examples=200, deadline=None)
@given(
    value=st.text(st.characters(exclude_categories=()), max_size=60),
    raw=st.binary(max_size=40),
    name=st.sampled_from(["Range", "x-amz-meta-a", "If-None-Match", "x-amz-date", "Authorization"]),
)
@example(value="\ud800", raw=b"\xff\xfe", name="x-amz-meta-a")
@example(value="²", raw=b"\xc3", name="Range")
def test_any_header_value_is_a_clean_answer(value: str, raw: bytes, name: str) -> None:
    """Full Unicode and non-UTF-8 bytes (as aiohttp hands them over: surrogate escapes) in a
    signed header: the request verifies or fails with an S3 error, never another exception."""
    url, headers = signed("k", extra={"Range": "bytes=0-9", "x-amz-meta-a": "x"})
    escaped = raw.decode("utf-8", "surrogateescape")
    for new in (value, escaped):
        changed = [(n, new if n.lower() == name.lower() else v) for n, v in headers]
        parts = urlsplit(url)
        try:
            verify("GET", parts.path, parts.query, changed, time.time(), lookup, region="us-east-1")
        except S3Error as exc:
            assert 400 <= exc.status < 500
