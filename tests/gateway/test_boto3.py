"""boto3 against the gateway, in front of a real worker reading a real S3 origin.

Every byte is compared with what the origin returns for the same key.
"""

from __future__ import annotations

import hashlib
import time
import urllib.request
from typing import Any

import pytest
from botocore.exceptions import ClientError

from .conftest import CHUNK, ODD_KEYS, Stack

pytestmark = pytest.mark.integration


def error_code(call: Any, **kw: Any) -> tuple[str, int]:
    with pytest.raises(ClientError) as err:
        call(**kw)
    reply = err.value.response
    return reply["Error"]["Code"], reply["ResponseMetadata"]["HTTPStatusCode"]


def test_buckets(stack: Stack) -> None:
    s3 = stack.client()
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["ds", "offline"]
    assert s3.get_bucket_location(Bucket="ds")["LocationConstraint"] is None
    s3.head_bucket(Bucket="ds")
    assert error_code(s3.head_bucket, Bucket="nope") == ("404", 404)
    assert error_code(s3.list_objects_v2, Bucket="nope") == ("NoSuchBucket", 404)
    assert error_code(s3.get_object, Bucket="nope", Key="k") == ("NoSuchBucket", 404)


@pytest.mark.parametrize(
    "key", ["small.txt", "empty.bin", "mid/100k.bin", "big/five.bin", *ODD_KEYS]
)
def test_get_and_head_match_the_origin(stack: Stack, key: str) -> None:
    s3 = stack.client()
    origin = stack.origin.boto3_client().head_object(Bucket=stack.bucket, Key=f"data/{key}")
    expected = stack.origin_bytes(key)
    head = s3.head_object(Bucket="ds", Key=key)
    assert head["ContentLength"] == len(expected)
    assert head["ETag"] == origin["ETag"] == f'"{hashlib.md5(expected).hexdigest()}"'
    assert head["LastModified"] == origin["LastModified"]
    reply = s3.get_object(Bucket="ds", Key=key)
    assert reply["Body"].read() == expected
    assert reply["ETag"] == origin["ETag"] and reply["ContentLength"] == len(expected)


@pytest.mark.parametrize(
    ("header", "span"),
    [
        ("bytes=0-9", (0, 10)),
        ("bytes=-100", (-100, None)),
        ("bytes=1000-", (1000, None)),
        (f"bytes={CHUNK - 7}-{3 * CHUNK + 5}", (CHUNK - 7, 3 * CHUNK + 6)),  # crosses chunks
        ("bytes=5-999999999", (5, None)),
    ],
)
def test_ranged_get(stack: Stack, header: str, span: tuple[int, int | None]) -> None:
    key = "big/five.bin"
    expected = stack.origin_bytes(key)[span[0] : span[1]]
    reply = stack.client().get_object(Bucket="ds", Key=key, Range=header)
    assert reply["ResponseMetadata"]["HTTPStatusCode"] == 206
    size = len(stack.files[key])
    start = span[0] % size
    assert reply["ContentRange"] == f"bytes {start}-{start + len(expected) - 1}/{size}"
    assert reply["Body"].read() == expected


def test_range_errors_and_conditions(stack: Stack) -> None:
    s3 = stack.client()
    size = len(stack.files["mid/100k.bin"])
    assert error_code(s3.get_object, Bucket="ds", Key="mid/100k.bin", Range=f"bytes={size}-") == (
        "InvalidRange",
        416,
    )
    etag = s3.head_object(Bucket="ds", Key="mid/100k.bin")["ETag"]
    assert error_code(s3.get_object, Bucket="ds", Key="mid/100k.bin", IfNoneMatch=etag) == (
        "304",
        304,
    )
    assert error_code(s3.get_object, Bucket="ds", Key="mid/100k.bin", IfMatch='"nope"') == (
        "PreconditionFailed",
        412,
    )
    modified = s3.head_object(Bucket="ds", Key="mid/100k.bin")["LastModified"]
    assert error_code(
        s3.head_object, Bucket="ds", Key="mid/100k.bin", IfModifiedSince=modified
    ) == (
        "304",
        304,
    )
    reply = s3.get_object(Bucket="ds", Key="mid/100k.bin", IfMatch=etag)
    assert reply["Body"].read() == stack.origin_bytes("mid/100k.bin")


def test_missing_objects_and_writes(stack: Stack) -> None:
    s3 = stack.client()
    assert error_code(s3.get_object, Bucket="ds", Key="no/such.key") == ("NoSuchKey", 404)
    assert error_code(s3.get_object, Bucket="ds", Key="nested") == ("NoSuchKey", 404)
    assert error_code(s3.get_object, Bucket="ds", Key="nested/../small.txt") == ("NoSuchKey", 404)
    assert error_code(s3.head_object, Bucket="ds", Key="no/such.key") == ("404", 404)
    assert error_code(s3.put_object, Bucket="ds", Key="new", Body=b"x") == ("AccessDenied", 403)
    assert error_code(s3.delete_object, Bucket="ds", Key="small.txt") == ("AccessDenied", 403)


def test_wrong_credentials(stack: Stack) -> None:
    bad = stack.client(secret="not-the-secret")
    assert error_code(bad.get_object, Bucket="ds", Key="small.txt") == (
        "SignatureDoesNotMatch",
        403,
    )
    assert error_code(bad.list_buckets) == ("SignatureDoesNotMatch", 403)
    unknown = stack.client(key="nobody")  # the same answer: key ids cannot be enumerated
    assert error_code(unknown.list_objects_v2, Bucket="ds") == ("SignatureDoesNotMatch", 403)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as err:
        opener.open(f"{stack.url}/ds/small.txt", timeout=10)
    assert err.value.code == 403 and b"<Code>AccessDenied</Code>" in err.value.read()


def test_presigned_urls(stack: Stack) -> None:
    s3 = stack.client(signature_version="s3v4")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for key in ["big/five.bin", *ODD_KEYS]:
        url = s3.generate_presigned_url(
            "get_object", Params={"Bucket": "ds", "Key": key}, ExpiresIn=300
        )
        with opener.open(url, timeout=30) as reply:
            assert reply.read() == stack.origin_bytes(key), key
    url = s3.generate_presigned_url(
        "get_object",
        Params={"Bucket": "ds", "Key": "small.txt", "ResponseContentType": "text/x-test"},
    )
    with opener.open(url, timeout=30) as reply:
        assert reply.headers["Content-Type"] == "text/x-test"
    with pytest.raises(urllib.error.HTTPError) as err:
        opener.open(url.replace("small.txt", "empty.bin"), timeout=10)
    assert err.value.code == 403 and b"SignatureDoesNotMatch" in err.value.read()
    short = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "ds", "Key": "small.txt"}, ExpiresIn=1
    )
    time.sleep(2.1)
    with pytest.raises(urllib.error.HTTPError) as err:
        opener.open(short, timeout=10)
    assert err.value.code == 403 and b"Request has expired" in err.value.read()
    v2 = stack.client(signature_version="s3").generate_presigned_url(
        "get_object", Params={"Bucket": "ds", "Key": "small.txt"}
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        opener.open(v2, timeout=10)
    assert err.value.code == 400 and b"Signature Version 4" in err.value.read()


async def test_presigned_url_with_aiohttp(stack: Stack) -> None:
    import aiohttp
    from yarl import URL

    url = stack.client(signature_version="s3v4").generate_presigned_url(
        "get_object", Params={"Bucket": "ds", "Key": ODD_KEYS[4]}
    )
    async with (
        aiohttp.ClientSession() as session,
        session.get(URL(url, encoded=True), headers={"Range": "bytes=2-9"}) as reply,
    ):
        assert reply.status == 206
        assert await reply.read() == stack.origin_bytes(ODD_KEYS[4])[2:10]


def test_list_objects_v2_paging_over_2500_keys(stack: Stack) -> None:
    s3 = stack.client()
    expected = stack.origin_keys("many/")
    assert len(expected) == 2500
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket="ds", Prefix="many/"))
    assert [p["KeyCount"] for p in pages] == [1000, 1000, 500]
    assert [o["Key"] for p in pages for o in p["Contents"]] == expected
    small = list(
        s3.get_paginator("list_objects_v2").paginate(
            Bucket="ds", Prefix="many/d3/", PaginationConfig={"PageSize": 99}
        )
    )
    assert [o["Key"] for p in small for o in p["Contents"]] == stack.origin_keys("many/d3/")
    assert all(p["KeyCount"] <= 99 for p in small) and len(small) > 1
    after = s3.list_objects_v2(Bucket="ds", Prefix="many/", StartAfter=expected[2400])
    assert [o["Key"] for o in after["Contents"]] == expected[2401:]
    v1 = list(s3.get_paginator("list_objects").paginate(Bucket="ds", Prefix="many/d1/"))
    assert [o["Key"] for p in v1 for o in p["Contents"]] == stack.origin_keys("many/d1/")
    first = s3.list_objects_v2(Bucket="ds", Prefix="many/", MaxKeys=5000)
    assert first["KeyCount"] == 1000 and first["IsTruncated"]


def test_list_with_delimiter_matches_origin(stack: Stack) -> None:
    s3 = stack.client()
    origin = stack.origin.boto3_client()
    for prefix in ["", "many/", "sym/", "dir with space/", "nested/", "nested/deep/"]:
        mine = s3.list_objects_v2(Bucket="ds", Prefix=prefix, Delimiter="/")
        theirs = origin.list_objects_v2(Bucket=stack.bucket, Prefix=f"data/{prefix}", Delimiter="/")
        assert [o["Key"] for o in mine.get("Contents", [])] == [
            o["Key"][5:] for o in theirs.get("Contents", [])
        ]
        assert [p["Prefix"] for p in mine.get("CommonPrefixes", [])] == [
            p["Prefix"][5:] for p in theirs.get("CommonPrefixes", [])
        ]
        assert [(o["Size"], o["ETag"]) for o in mine.get("Contents", [])] == [
            (o["Size"], o["ETag"]) for o in theirs.get("Contents", [])
        ]
    paged = list(
        s3.get_paginator("list_objects_v2").paginate(
            Bucket="ds", Delimiter="/", PaginationConfig={"PageSize": 2}
        )
    )
    prefixes = [p["Prefix"] for page in paged for p in page.get("CommonPrefixes", [])]
    keys = [o["Key"] for page in paged for o in page.get("Contents", [])]
    assert prefixes == ["big/", "dir with space/", "many/", "mid/", "nested/", "sym/", "unicode/"]
    assert keys == ["empty.bin", "small.txt"]


def test_origin_unreachable_is_service_unavailable(stack: Stack) -> None:
    s3 = stack.client()
    code = error_code(s3.get_object, Bucket="offline", Key="never-cached.bin")
    assert code == ("ServiceUnavailable", 503)
    assert error_code(s3.list_objects_v2, Bucket="offline") == ("ServiceUnavailable", 503)
