"""Origin mistakes keep their meaning end to end, against the real S3 server.

A wrong secret key, an unknown access key id, an anonymous request and a missing bucket each
become a named error: the worker answers 403/404 with the S3 code and the bucket, endpoint and
key id in its JSON (never "internal error 500", never the secret), the fsspec client raises
``PermissionError`` / ``FileNotFoundError`` naming the bucket, the S3 gateway answers the S3 code,
and the worker logs one line per failed request with its request id and no traceback.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
from typing import Any

import aiohttp
import pytest
from botocore.exceptions import ClientError
from tests.gateway.conftest import ThreadGateway

from tidepool.client import TidepoolFileSystem
from tidepool.core.errors import (
    OriginAccessDeniedError,
    OriginBucketMissingError,
    OriginSignatureError,
    OriginUnknownKeyError,
)
from tidepool.spec.config import DatasetConfig
from tidepool_lab.testbed import s3util

pytestmark = pytest.mark.integration

WRONG_SECRET = "not-the-secret-0123456789"
FILES = {"a/one.txt": b"one", "b.txt": b"bee"}


def with_options(cfg: DatasetConfig, name: str, **changes: Any) -> DatasetConfig:
    """The same dataset under another name, with storage options (or the root) changed."""
    (mount,) = cfg.mounts
    opts = dict(mount.storage_options)
    root = changes.pop("root", mount.root)
    for key, value in changes.items():
        if value is None:
            opts.pop(key, None)
        else:
            opts[key] = value
    secrets = tuple(v for v in (opts.get("key"), opts.get("secret")) if v)
    new_mount = dataclasses.replace(
        mount,
        name=name,
        root=root,
        url=f"s3://{root}/",
        storage_options=opts,
        secret_values=secrets,
    )
    # a tier caches one dataset: each variant gets a directory of its own
    tiers = tuple(dataclasses.replace(t, path=f"{t.path}-{name}") for t in cfg.runtime.tiers)
    runtime = dataclasses.replace(cfg.runtime, tiers=tiers)
    return dataclasses.replace(cfg, name=name, mounts=(new_mount,), runtime=runtime)


@pytest.fixture
def broken(make_dataset: Any, s3_server: Any, start_worker: Any) -> Any:
    good = make_dataset(FILES, name="good")
    configs = [
        good,
        with_options(good, "badsecret", secret=WRONG_SECRET),
        with_options(good, "badkey", key="nosuchkeyid"),
        with_options(good, "anon", key=None, secret=None, anon=True),
        with_options(good, "nobucket", root="no-such-bucket-here/data"),
    ]
    return start_worker(configs)


async def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers or {}) as r:
        return r.status, await r.json(), r.headers.copy()


@pytest.mark.parametrize(
    ("dataset", "status", "code"),
    [
        ("badsecret", 403, "SignatureDoesNotMatch"),
        ("badkey", 403, "InvalidAccessKeyId"),
        ("anon", 403, "AccessDenied"),
        ("nobucket", 404, "NoSuchBucket"),
    ],
)
async def test_worker_answers_the_origin_code_with_bucket_endpoint_and_key(
    broken: Any, s3_server: Any, dataset: str, status: int, code: str
) -> None:
    # a listing (ListObjectsV2 answers with a body, so the code is exact)
    got, body, headers = await _get(
        f"{broken.endpoint}/v1/datasets/{dataset}/list/a", {"X-Request-Id": "req-42"}
    )
    assert (got, body["error"]) == (status, code), body
    assert headers["X-Request-Id"] == "req-42" and body["request_id"] == "req-42"
    assert body["endpoint"] == s3_server.endpoint
    assert s3_server.endpoint in body["message"]
    bucket = "no-such-bucket-here" if dataset == "nobucket" else body["bucket"]
    assert f"'{bucket}'" in body["message"]
    if dataset in ("badsecret", "badkey"):
        key = "nosuchkeyid" if dataset == "badkey" else s3_server.access_key
        assert body["key_id"] == key and f"access key id '{key}'" in body["message"]
    text = str(body)
    assert s3_server.secret_key not in text and WRONG_SECRET not in text
    assert "internal error" not in text.lower()


async def test_a_refused_stat_is_asked_again_as_a_listing_to_name_the_cause(
    broken: Any, s3_server: Any
) -> None:
    # a stat of a file never listed is a HEAD: S3 answers 403 without a body, so without a
    # cause; the funnel asks again with a one-key listing, whose answer names it
    got, body, _ = await _get(f"{broken.endpoint}/v1/datasets/badsecret/info/b.txt")
    assert got == 403 and body["error"] == "SignatureDoesNotMatch", body
    got, body, _ = await _get(f"{broken.endpoint}/v1/datasets/badkey/info/b.txt")
    assert got == 403 and body["error"] == "InvalidAccessKeyId", body
    assert s3_server.endpoint in body["message"] and "'nosuchkeyid'" in body["message"]


def test_fsspec_raises_permission_and_not_found_naming_the_bucket(
    broken: Any, s3_server: Any
) -> None:
    fs = TidepoolFileSystem(broken.endpoint, local_reads=False, skip_instance_cache=True)
    with pytest.raises(OriginSignatureError) as refused:
        fs.ls("badsecret/a")
    assert isinstance(refused.value, PermissionError)
    message = str(refused.value)
    assert s3_server.endpoint in message and s3_server.access_key in message
    assert WRONG_SECRET not in message
    with pytest.raises(OriginUnknownKeyError):
        fs.ls("badkey")
    with pytest.raises(OriginAccessDeniedError):
        fs.cat_file("anon/a/one.txt")
    with pytest.raises(OriginSignatureError):
        fs.cat_file("badsecret/b.txt")
    with pytest.raises(OriginBucketMissingError) as missing:
        fs.cat_file("nobucket/a/one.txt")
    assert isinstance(missing.value, FileNotFoundError)
    assert "'no-such-bucket-here'" in str(missing.value)
    assert fs.cat_file("good/a/one.txt") == b"one"


async def test_one_log_line_per_failed_request_without_traceback(
    broken: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tidepool.worker.app")
    got, body, headers = await _get(f"{broken.endpoint}/v1/datasets/badsecret/list/a")
    assert got == 403
    rid = headers["X-Request-Id"]
    lines = [r for r in caplog.records if r.name == "tidepool.worker.app"]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    (line,) = lines
    text = line.getMessage()
    assert line.levelno == logging.WARNING and line.exc_info is None
    assert rid in text and "dataset=badsecret" in text and "path=a" in text
    assert "OriginSignatureError" in text and "SignatureDoesNotMatch" in text
    assert WRONG_SECRET not in text
    assert body["request_id"] == rid


def test_gateway_answers_the_same_s3_codes(broken: Any, s3_server: Any) -> None:
    gateway = ThreadGateway(broken.endpoint, {"gwkey": "gw-secret-123"})
    try:
        s3 = s3util.boto3_client(gateway.url, "gwkey", "gw-secret-123")
        for bucket, key, code, status in [
            ("nobucket", "a/one.txt", "NoSuchBucket", 404),
            ("anon", "a/one.txt", "AccessDenied", 403),
            ("badsecret", "a/one.txt", "AccessDenied", 403),
            ("badkey", "a/one.txt", "AccessDenied", 403),
        ]:
            with pytest.raises(ClientError) as err:
                s3.get_object(Bucket=bucket, Key=key)
            answer = err.value.response
            assert answer["Error"]["Code"] == code, answer
            assert answer["ResponseMetadata"]["HTTPStatusCode"] == status
            assert "origin" in answer["Error"]["Message"]
            assert s3_server.endpoint not in answer["Error"]["Message"]  # in the log only
        with pytest.raises(ClientError) as err:
            s3.list_objects_v2(Bucket="badsecret", Prefix="a/")
        assert "SignatureDoesNotMatch" in err.value.response["Error"]["Message"]
        assert s3.get_object(Bucket="good", Key="b.txt")["Body"].read() == b"bee"
    finally:
        gateway.stop()


def test_cli_names_bucket_endpoint_and_key(broken: Any, s3_server: Any) -> None:
    env = {**os.environ, "TIDEPOOL_ENDPOINT": broken.endpoint}
    env.pop("TIDEPOOL_TOKEN", None)

    def tidepool(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tidepool.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    cat = tidepool("cat", "badsecret/a/one.txt")
    assert cat.returncode == 1
    assert "SignatureDoesNotMatch" in cat.stderr and s3_server.endpoint in cat.stderr
    assert f"access key id '{s3_server.access_key}'" in cat.stderr
    assert "internal error" not in cat.stderr.lower() and WRONG_SECRET not in cat.stderr
    ls = tidepool("ls", "nobucket")
    assert ls.returncode == 1 and "bucket 'no-such-bucket-here' does not exist" in ls.stderr
    load = tidepool("load", "nobucket")
    assert load.returncode == 1 and load.stdout.startswith("Failed")
    assert "bucket 'no-such-bucket-here' does not exist at" in load.stderr
