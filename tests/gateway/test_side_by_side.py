"""The gateway's answers to hostile S3 requests, side by side with two real S3 implementations:
the juicefs gateway (MinIO's S3 layer; the tests' origin) and moto in server mode (with IAM
authentication on).

Where the S3 standard decides, the gateway answers as they do (a prefix no key can match lists
nothing; an unusable Range is ignored). Where the gateway deliberately differs, the test shows
both sides:

* an unknown access key id: both answer ``InvalidAccessKeyId`` (as AWS does), which tells anyone
  which key ids exist; the gateway answers ``SignatureDoesNotMatch`` as for a wrong secret;
* a credential scope for another region: both accept it; the gateway answers
  ``AuthorizationHeaderMalformed`` naming the expected region, as AWS S3 does;
* CR/LF in ``response-content-disposition``: juicefs replaces them with spaces, moto fails with
  500; the gateway answers ``400 InvalidArgument``;
* ``../`` in a prefix: moto (like AWS) lists nothing, juicefs refuses it with 400; the gateway
  lists nothing.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.exceptions
import pytest

from tidepool_lab.testbed import s3util
from tidepool_lab.testbed.s3server import S3Server, free_port

from .conftest import ACCESS_KEY, SECRET_KEY, Stack

pytestmark = pytest.mark.integration

KEY = "small.txt"
BODY = b"hello tidepool gateway\n"


@dataclass
class Endpoint:
    name: str
    url: str
    key: str
    secret: str
    bucket: str

    def client(self, key: str | None = None, secret: str | None = None, region: str = "") -> Any:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=key or self.key,
            aws_secret_access_key=secret or self.secret,
            region_name=region or s3util.REGION,
            config=s3util.botocore_config(),
        )


def outcome(call: Callable[..., Any], **kw: Any) -> tuple[int, str]:
    """(HTTP status, error code or "") of one boto3 call."""
    try:
        reply = call(**kw)
    except botocore.exceptions.ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"], exc.response["Error"]["Code"]
    return reply["ResponseMetadata"]["HTTPStatusCode"], ""


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[Endpoint]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        # the next three calls (IAM setup) go unauthenticated, every later one is checked
        reset = urllib.request.Request(
            f"{url}/moto-api/reset-auth",
            data=b"3",
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        opener.open(reset, timeout=30).read()
        iam = boto3.session.Session().client(
            "iam",
            endpoint_url=url,
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
            region_name="us-east-1",
        )
        iam.create_user(UserName="tester")
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        iam.put_user_policy(
            UserName="tester", PolicyName="all-s3", PolicyDocument=json.dumps(policy)
        )
        created = iam.create_access_key(UserName="tester")["AccessKey"]
        endpoint = Endpoint(
            "moto", url, created["AccessKeyId"], created["SecretAccessKey"], "side-by-side"
        )
        client = endpoint.client()
        client.create_bucket(Bucket=endpoint.bucket)
        client.put_object(Bucket=endpoint.bucket, Key=KEY, Body=BODY)
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(scope="module")
def juicefs_s3(s3_server: S3Server) -> Endpoint:
    bucket = "side-by-side"
    s3_server.create_bucket(bucket)
    s3_server.boto3_client().put_object(Bucket=bucket, Key=KEY, Body=BODY)
    return Endpoint(
        "juicefs", s3_server.endpoint, s3_server.access_key, s3_server.secret_key, bucket
    )


@pytest.fixture(scope="module")
def ours(stack: Stack) -> Endpoint:
    assert stack.files[KEY] == BODY
    return Endpoint("tidepool", stack.url, ACCESS_KEY, SECRET_KEY, stack.dataset)


@pytest.fixture(scope="module")
def everyone(ours: Endpoint, juicefs_s3: Endpoint, moto_s3: Endpoint) -> dict[str, Endpoint]:
    return {e.name: e for e in (ours, juicefs_s3, moto_s3)}


Act = Callable[[Endpoint], tuple[int, str]]


def each(everyone: dict[str, Endpoint], act: Act) -> dict[str, Any]:
    return {name: act(e) for name, e in everyone.items()}


def test_a_prefix_longer_than_any_key_lists_nothing(everyone: dict[str, Endpoint]) -> None:
    def act(e: Endpoint) -> tuple[int, str]:
        reply = e.client().list_objects_v2(Bucket=e.bucket, Prefix="p" * 2000)
        return reply["ResponseMetadata"]["HTTPStatusCode"], str(reply["KeyCount"])

    assert each(everyone, act) == {n: (200, "0") for n in everyone}


@pytest.mark.parametrize("value", ["bytes=" + "1" * 5000 + "-", "bytes=0-1,x"])
def test_an_unusable_range_is_ignored(everyone: dict[str, Endpoint], value: str) -> None:
    def act(e: Endpoint) -> tuple[int, str]:
        reply = e.client().get_object(Bucket=e.bucket, Key=KEY, Range=value)
        return reply["ResponseMetadata"]["HTTPStatusCode"], reply["Body"].read().decode()

    assert each(everyone, act) == {n: (200, BODY.decode()) for n in everyone}


def test_unicode_digits_in_a_range_are_ignored(ours: Endpoint, juicefs_s3: Endpoint) -> None:
    # moto is left out: it computes the signature of a non-ASCII header differently from
    # botocore and answers SignatureDoesNotMatch before it looks at the range
    for e in (ours, juicefs_s3):
        reply = e.client().get_object(Bucket=e.bucket, Key=KEY, Range="bytes=²-")
        assert reply["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert reply["Body"].read() == BODY


def test_dot_dot_prefix(everyone: dict[str, Endpoint]) -> None:
    def act(e: Endpoint) -> tuple[int, str]:
        return outcome(e.client().list_objects_v2, Bucket=e.bucket, Prefix="../../x")

    got = each(everyone, act)
    assert got["tidepool"] == got["moto"] == (200, "")
    assert got["juicefs"] == (400, "XMinioInvalidResourceName")


def test_unknown_access_key(everyone: dict[str, Endpoint]) -> None:
    def act(e: Endpoint) -> tuple[int, str]:
        return outcome(e.client(key="AKIANOSUCHKEY0000000").list_objects_v2, Bucket=e.bucket)

    def wrong_secret(e: Endpoint) -> tuple[int, str]:
        return outcome(e.client(secret="wrong-secret").list_objects_v2, Bucket=e.bucket)

    unknown, wrong = each(everyone, act), each(everyone, wrong_secret)
    assert wrong == {n: (403, "SignatureDoesNotMatch") for n in everyone}
    assert unknown["juicefs"] == unknown["moto"] == (403, "InvalidAccessKeyId")  # enumerable
    assert unknown["tidepool"] == (403, "SignatureDoesNotMatch")  # same as a wrong secret


def test_credential_scope_for_another_region(everyone: dict[str, Endpoint]) -> None:
    def act(e: Endpoint) -> tuple[int, str]:
        return outcome(e.client(region="eu-west-3").list_objects_v2, Bucket=e.bucket)

    got = each(everyone, act)
    assert got["juicefs"] == got["moto"] == (200, "")
    assert got["tidepool"] == (400, "AuthorizationHeaderMalformed")


def test_crlf_in_content_disposition(everyone: dict[str, Endpoint]) -> None:
    def act(e: Endpoint) -> tuple[int, str]:
        return outcome(
            e.client().get_object,
            Bucket=e.bucket,
            Key=KEY,
            ResponseContentDisposition="attachment\r\nX-Evil: 1",
        )

    got = each(everyone, act)
    assert got["tidepool"] == (400, "InvalidArgument")
    assert got["juicefs"] == (200, "")  # CR/LF replaced by spaces
    assert got["moto"][0] == 500
