"""A read spread over several requests is pinned to the version it started with.

The origin object is overwritten between two blocks of one read. Every surface must then refuse
the second block instead of stitching bytes of two versions together: the fsspec client raises
``OSError(ESTALE)`` (:class:`~tidepool.core.errors.VersionGoneError`), the worker answers 412,
the FUSE mount fails the read with ESTALE, the S3 gateway answers 412 ``PreconditionFailed`` —
and a read that starts afresh gets the new version whole.
"""

from __future__ import annotations

import errno
import http.client
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from tests.fuse.conftest import start_mount
from tests.gateway.conftest import ThreadGateway

from tidepool.core.errors import VersionGoneError
from tidepool_lab.testbed import s3util
from tidepool_lab.testbed.s3server import S3Server

from .conftest import client

pytestmark = pytest.mark.integration

PAGE = 16 * 1024
FAR = 9 << 20
"""An offset no read-ahead of the first block reaches (client: 256 KiB, the mount: 4 MiB, the
worker: 8 pages past a read)."""


def _overwrite(server: S3Server, bucket: str, data: bytes) -> None:
    server.boto3_client().put_object(Bucket=bucket, Key="data/f.bin", Body=data)


def _get(endpoint: str, headers: dict[str, str]) -> tuple[int, bytes]:
    url = urlsplit(endpoint)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    try:
        conn.request("GET", "/v1/datasets/ds/files/f.bin", headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.fixture
def changing(s3_server: S3Server, make_dataset: Any, start_worker: Any) -> Any:
    old, new = os.urandom(12 << 20), os.urandom(12 << 20)
    cfg = make_dataset({"f.bin": old}, page_size=PAGE, ttl=3600.0)
    w = start_worker([cfg])
    return w, old, new, lambda: _overwrite(s3_server, make_dataset.bucket, new)


def test_fsspec_block_after_an_overwrite_is_estale(changing: Any) -> None:
    w, old, new, overwrite = changing
    fs = client(w.endpoint)
    with fs.open("ds/f.bin", block_size=PAGE) as f:
        assert f.read(100) == old[:100]
        overwrite()
        f.seek(FAR)
        with pytest.raises(OSError) as info:
            f.read(100)
    assert info.value.errno == errno.ESTALE and isinstance(info.value, VersionGoneError)
    assert client(w.endpoint).cat_file("ds/f.bin") == new  # a new read: the new version, whole
    with fs.open("ds/f.bin") as f:  # the same client, opened again
        f.seek(FAR)
        assert f.read(100) == new[FAR : FAR + 100]


def test_worker_answers_412_to_a_read_pinned_to_a_version_that_is_gone(changing: Any) -> None:
    w, _old, new, overwrite = changing
    version = client(w.endpoint).info("ds/f.bin")["version"]
    overwrite()
    span = f"bytes={FAR}-{FAR + 99}"
    status, body = _get(w.endpoint, {"If-Match": f'"{version}"', "Range": span})
    assert status == 412 and b"PreconditionFailed" in body
    status, body = _get(w.endpoint, {"Range": span})
    assert status == 206 and body == new[FAR : FAR + 100]


def test_fuse_read_after_an_overwrite_fails_instead_of_mixing(
    changing: Any, tmp_path: Path
) -> None:
    w, old, _new, overwrite = changing
    m = start_mount(tmp_path / "mnt", ["ds"], w.endpoint, tmp_path / "mount.log")
    try:
        fd = os.open(m.path / "f.bin", os.O_RDONLY)
        try:
            assert os.pread(fd, 100, 0) == old[:100]
            overwrite()
            with pytest.raises(OSError) as info:
                os.pread(fd, 100, FAR)
            assert info.value.errno in (errno.ESTALE, errno.EIO)
        finally:
            os.close(fd)
    finally:
        m.stop()
        m.cleanup()


def test_gateway_answers_precondition_failed(changing: Any) -> None:
    w, _old, _new, overwrite = changing
    gw = ThreadGateway(w.endpoint, {"gwkey": "gwsecret-0123456789"})
    try:
        s3 = s3util.boto3_client(gw.url, "gwkey", "gwsecret-0123456789")
        s3.head_object(Bucket="ds", Key="f.bin")  # the gateway's client now knows the version
        overwrite()
        from botocore.exceptions import ClientError

        with pytest.raises(ClientError) as info:
            s3.get_object(Bucket="ds", Key="f.bin", Range=f"bytes={FAR}-{FAR + 99}")
        assert info.value.response["Error"]["Code"] == "PreconditionFailed"
    finally:
        gw.stop()
