"""The S3 gateway over TLS: boto3 reads through HTTPS when it trusts the CA, else refuses."""

from __future__ import annotations

import boto3
import botocore.exceptions
import pytest
from tests.conftest import TlsFiles

from tidepool.gateway.cli import main as gateway_main
from tidepool.pool.tls import server_context
from tidepool_lab.testbed import s3util

from .conftest import ACCESS_KEY, SECRET_KEY, Stack, ThreadGateway

pytestmark = pytest.mark.integration


def s3(url: str, verify: str) -> object:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=s3util.REGION,
        verify=verify,
        config=s3util.botocore_config(),
    )


def test_the_gateway_serves_https(stack: Stack, tls_files: TlsFiles) -> None:
    tls = server_context(tls_files.cert, tls_files.key)
    gateway = ThreadGateway(stack.worker.endpoint, {ACCESS_KEY: SECRET_KEY}, ssl_context=tls)
    try:
        assert gateway.url.startswith("https://127.0.0.1:")
        client = s3(gateway.url, str(tls_files.ca))
        body = client.get_object(Bucket=stack.dataset, Key="small.txt")["Body"].read()  # type: ignore[attr-defined]
        assert body == stack.files["small.txt"]
        with pytest.raises(botocore.exceptions.SSLError):
            s3(gateway.url, str(tls_files.other_ca)).head_bucket(Bucket=stack.dataset)  # type: ignore[attr-defined]
    finally:
        gateway.stop()


def test_half_a_tls_configuration_is_refused(
    tls_files: TlsFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--access-key", "k", "--secret-key", "s", "--tls-cert", str(tls_files.cert)]
    assert gateway_main(args) == 2
    assert "both --tls-cert and --tls-key" in capsys.readouterr().err
