"""The S3 origin servers speak enough real S3 for Tidepool: buckets, put/get, ranges, MD5 ETags."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tidepool_lab.testbed.s3server import S3Server, S3ServerError, find_binary

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["juicefs", "rclone"])
def any_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[S3Server]:
    """Each server kind in turn; rclone is skipped (with the reason) where it cannot run."""
    kind = request.param
    workdir = tmp_path_factory.mktemp(f"s3-{kind}")
    try:
        server = S3Server.start(workdir, kind=kind)
    except (FileNotFoundError, S3ServerError) as exc:
        if kind == "juicefs":
            raise
        pytest.skip(f"rclone serve s3 cannot run here: {exc}")
    try:
        yield server
    finally:
        server.stop()


def _status(reply: dict[str, Any]) -> int:
    status: int = reply["ResponseMetadata"]["HTTPStatusCode"]
    return status


def test_put_get_head_list(any_server: S3Server) -> None:
    client = any_server.boto3_client()
    bucket = any_server.create_bucket("basic")
    assert any_server.create_bucket("basic") == "basic"  # idempotent
    data = os.urandom(300_000)
    put = client.put_object(Bucket=bucket, Key="dir/a.bin", Body=data)
    client.put_object(Bucket=bucket, Key="dir/sub/b.txt", Body=b"hello")
    md5 = hashlib.md5(data).hexdigest()
    assert put["ETag"].strip('"') == md5

    got = client.get_object(Bucket=bucket, Key="dir/a.bin")
    assert got["Body"].read() == data
    assert got["ETag"].strip('"') == md5
    head = client.head_object(Bucket=bucket, Key="dir/a.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"') == md5

    listing = client.list_objects_v2(Bucket=bucket, Prefix="dir/", Delimiter="/")
    assert [o["Key"] for o in listing["Contents"]] == ["dir/a.bin"]
    assert [p["Prefix"] for p in listing["CommonPrefixes"]] == ["dir/sub/"]
    everything = client.list_objects_v2(Bucket=bucket)
    assert sorted(o["Key"] for o in everything["Contents"]) == ["dir/a.bin", "dir/sub/b.txt"]
    assert "basic" in [b["Name"] for b in client.list_buckets()["Buckets"]]


def test_ranged_get(any_server: S3Server) -> None:
    client = any_server.boto3_client()
    bucket = any_server.create_bucket("ranges")
    data = os.urandom(5_000_000)
    client.put_object(Bucket=bucket, Key="big", Body=data)
    reply = client.get_object(Bucket=bucket, Key="big", Range="bytes=1048576-2097151")
    assert reply["Body"].read() == data[1048576:2097152]
    if any_server.kind == "juicefs":
        assert _status(reply) == 206
        assert reply["ContentRange"] == f"bytes 1048576-2097151/{len(data)}"
    else:
        # Known limit of rclone serve s3: right bytes, status 200 (hence juicefs is the default).
        assert _status(reply) in (200, 206)
    tail = client.get_object(Bucket=bucket, Key="big", Range="bytes=-10")
    assert tail["Body"].read() == data[-10:]


def test_missing_key_and_bucket(any_server: S3Server) -> None:
    client = any_server.boto3_client()
    bucket = any_server.create_bucket("missing")
    with pytest.raises(client.exceptions.ClientError) as info:
        client.head_object(Bucket=bucket, Key="nope")
    assert info.value.response["Error"]["Code"] in ("404", "NoSuchKey")
    with pytest.raises(client.exceptions.NoSuchKey):
        client.get_object(Bucket=bucket, Key="nope")


def test_wrong_secret_is_refused(any_server: S3Server) -> None:
    from tidepool_lab.testbed.s3util import boto3_client

    client = boto3_client(any_server.endpoint, any_server.access_key, "wrong-secret-123")
    with pytest.raises(client.exceptions.ClientError):
        client.list_buckets()


def test_storage_options_are_plain_data(any_server: S3Server) -> None:
    options = any_server.storage_options()
    assert json.loads(json.dumps(options)) == options
    assert options["client_kwargs"]["endpoint_url"] == any_server.endpoint
    assert options["config_kwargs"]["s3"] == {"addressing_style": "path"}
    assert options["config_kwargs"]["request_checksum_calculation"] == "when_required"
    assert options["config_kwargs"]["response_checksum_validation"] == "when_required"


def test_repr_hides_secret(any_server: S3Server) -> None:
    text = repr(any_server)
    assert any_server.secret_key not in text
    assert any_server.endpoint in text
    assert len(any_server.secret_key) == 24
    assert any_server.endpoint.startswith("http://127.0.0.1:")


def test_secret_not_on_command_line(any_server: S3Server) -> None:
    cmdline = Path(f"/proc/{any_server.pid}/cmdline").read_bytes()
    assert any_server.secret_key.encode() not in cmdline


def test_restart_keeps_data_and_stop_ends_process(tmp_path: Path) -> None:
    with S3Server.start(tmp_path, secret_key="persisted-secret") as server:
        server.create_bucket("keep")
        server.boto3_client().put_object(Bucket="keep", Key="k", Body=b"v1")
        pid = server.pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with S3Server.start(tmp_path, secret_key="persisted-secret") as again:
        assert again.boto3_client().get_object(Bucket="keep", Key="k")["Body"].read() == b"v1"
    server.stop()  # idempotent


def test_start_failure_reports_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(S3ServerError, match="log"):
            S3Server.start(tmp_path, port=port, timeout=20)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="8 characters"):
        S3Server.start(Path("/nonexistent-never-created"), secret_key="short")
    with pytest.raises(ValueError, match="valid: juicefs, rclone"):
        S3Server.start(Path("/nonexistent-never-created"), kind="minio")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="pip install"):
        find_binary("no-such-binary-tidepool")
