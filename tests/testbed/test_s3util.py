"""s3fs and boto3 clients built by the testbed work against the real origin; bulk upload."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from tidepool_lab.testbed.s3server import S3Server
from tidepool_lab.testbed.s3util import s3fs_filesystem, upload

pytestmark = pytest.mark.integration


def test_upload_returns_md5_and_objects_exist(s3_origin: S3Server) -> None:
    bucket = s3_origin.create_bucket("upload")
    items = {f"d/{i:03d}.bin": bytes([i]) * (1000 + i) for i in range(40)}
    digests = upload(s3_origin, bucket, iter(items.items()), concurrency=4)
    assert digests == {k: hashlib.md5(v).hexdigest() for k, v in items.items()}
    client = s3_origin.boto3_client()
    listed = client.list_objects_v2(Bucket=bucket, Prefix="d/")["Contents"]
    assert {o["Key"]: o["ETag"].strip('"') for o in listed} == digests
    # A boto3 client is accepted as well as a server.
    assert upload(client, bucket, [("one", b"1")]) == {"one": hashlib.md5(b"1").hexdigest()}


def test_upload_consumes_lazily(s3_origin: S3Server) -> None:
    bucket = s3_origin.create_bucket("upload-lazy")
    produced: list[int] = []

    def items() -> Iterator[tuple[str, bytes]]:
        for i in range(30):
            produced.append(i)
            yield f"k{i}", b"x" * i

    assert len(upload(s3_origin, bucket, items(), concurrency=2)) == 30
    assert produced == list(range(30))
    with pytest.raises(ValueError, match="concurrency"):
        upload(s3_origin, bucket, [], concurrency=0)


def test_s3fs_filesystem(s3_origin: S3Server) -> None:
    bucket = s3_origin.create_bucket("s3fs")
    data = bytes(range(256)) * 1000
    upload(s3_origin, bucket, [("a/x.bin", data), ("a/b/y.bin", b"y")])
    fs = s3fs_filesystem(s3_origin.endpoint, s3_origin.access_key, s3_origin.secret_key)
    assert fs is not s3fs_filesystem(s3_origin.endpoint, s3_origin.access_key, s3_origin.secret_key)
    assert fs.dircache.use_listings_cache is False
    assert sorted(fs.ls(f"{bucket}/a", detail=False)) == [f"{bucket}/a/b", f"{bucket}/a/x.bin"]
    info = fs.info(f"{bucket}/a/x.bin")
    assert info["size"] == len(data)
    assert info["ETag"].strip('"') == hashlib.md5(data).hexdigest()
    assert fs.cat_file(f"{bucket}/a/x.bin", start=1000, end=1100) == data[1000:1100]
    assert fs.cat_ranges([f"{bucket}/a/x.bin"] * 2, [0, 5], [3, 9]) == [data[0:3], data[5:9]]
    with pytest.raises(FileNotFoundError):
        fs.info(f"{bucket}/a/missing")


def test_s3fs_extra_kwargs_merge(s3_origin: S3Server) -> None:
    fs = s3fs_filesystem(
        s3_origin.endpoint,
        s3_origin.access_key,
        s3_origin.secret_key,
        use_listings_cache=True,
        config_kwargs={"connect_timeout": 3},
    )
    assert fs.dircache.use_listings_cache is True
    assert fs.config_kwargs["connect_timeout"] == 3
    assert fs.config_kwargs["s3"] == {"addressing_style": "path"}
    assert fs.client_kwargs["verify"] is True
