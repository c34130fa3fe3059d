"""The checksums S3 puts in ETags, read as the peer check reads them (tidepool.worker.verify).

The ETag rules are checked against two real S3 implementations (the juicefs gateway and moto),
single-part and multipart uploads with the part sizes tools use; the calibration file is read
back with the checks any input from the disk gets.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.awkward import MotoOrigin

from tidepool.core.pages import normalize_etag
from tidepool.worker.verify import (
    MD5,
    NONE,
    OFF,
    UNKNOWN,
    PeerCheck,
    etag_shape,
    matches,
    origin_name,
    part_sizes,
)

MiB = 1 << 20


def test_etag_shapes() -> None:
    digest = hashlib.md5(b"x").hexdigest()
    assert etag_shape(digest) == (digest, 0)
    assert etag_shape(digest.upper()) == (digest, 0)
    assert etag_shape(f"{digest}-3") == (digest, 3)
    for not_md5 in (
        None,
        "",
        "123-1700000000.5",
        digest[:31],
        f"{digest}-0",
        f"{digest}-x",
        "ÿ" * 32,
    ):
        assert etag_shape(not_md5) is None, not_md5


def test_part_sizes_give_exactly_n_parts() -> None:
    size = 12 * MiB + 7
    assert part_sizes(size, 3)[0] == 5 * MiB  # rclone, s3fs
    assert 8 * MiB in part_sizes(size, 2)  # aws cli, boto3
    for parts in (1, 2, 3, 7):
        for p in part_sizes(size, parts):
            assert -(-size // p) == parts
    assert part_sizes(10, 11) == [] and part_sizes(10, 0) == []


def test_matches_single_part() -> None:
    data = os.urandom(5000)
    tag = hashlib.md5(data).hexdigest()
    assert matches(tag, len(data), lambda: (data[:100], data[100:])) is True
    flipped = bytes([data[0] ^ 1]) + data[1:]
    assert matches(tag, len(data), lambda: (flipped,)) is False
    assert matches("5000-1700000000.0", len(data), lambda: (data,)) is None  # file:// version


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoOrigin]:
    origin = MotoOrigin()
    try:
        yield origin
    finally:
        origin.stop()


@pytest.mark.integration
@pytest.mark.parametrize("part", [5 * MiB, 8 * MiB])
@pytest.mark.parametrize("server", ["juicefs", "moto"])
def test_multipart_etags_of_real_servers(
    server: str, part: int, s3_server: Any, moto: MotoOrigin
) -> None:
    origin = s3_server if server == "juicefs" else moto
    s3 = origin.boto3_client()
    bucket = f"verify-{server}-{part}-{os.getpid()}"
    origin.create_bucket(bucket)
    data = os.urandom(2 * part + 12345)
    up = s3.create_multipart_upload(Bucket=bucket, Key="big.bin")
    parts = []
    for n, at in enumerate(range(0, len(data), part), 1):
        r = s3.upload_part(
            Bucket=bucket, Key="big.bin", UploadId=up["UploadId"], PartNumber=n,
            Body=data[at : at + part],
        )  # fmt: skip
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    s3.complete_multipart_upload(
        Bucket=bucket, Key="big.bin", UploadId=up["UploadId"], MultipartUpload={"Parts": parts}
    )
    tag = normalize_etag(s3.head_object(Bucket=bucket, Key="big.bin")["ETag"])
    assert etag_shape(tag) is not None and etag_shape(tag)[1] == 3  # type: ignore[index]

    def pages(blob: bytes) -> Any:
        return lambda: (blob[i : i + MiB] for i in range(0, len(blob), MiB))

    assert matches(tag, len(data), pages(data)) is True
    bad = bytearray(data)
    bad[part + 1] ^= 0x40
    assert matches(tag, len(data), pages(bytes(bad))) is False
    # and a single-part upload of the same bytes: the plain MD5
    s3.upload_fileobj(io.BytesIO(data[:3000]), bucket, "small.bin")
    small = normalize_etag(s3.head_object(Bucket=bucket, Key="small.bin")["ETag"])
    assert matches(small, 3000, lambda: (data[:3000],)) is True


def test_calibration_is_kept_owner_only_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "peer-verify.json"
    data = b"hello"
    tag = hashlib.md5(data).hexdigest()
    check = PeerCheck(path)
    assert check.mode("s3://b/p/", tag) == UNKNOWN and check.checkable("s3://b/p/", tag)
    assert check.calibrate("s3://b/p/", tag, data) is True
    assert check.calibrate("s3://kms/", tag, b"other bytes") is False  # an SSE-KMS origin
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = PeerCheck(path)
    assert again.mode("s3://b/p/", tag) == MD5
    assert again.mode("s3://kms/", tag) == OFF and not again.checkable("s3://kms/", tag)
    assert again.mode("s3://b/p/", "5-1700000000.0") == NONE  # no ETag: nothing to check
    assert again.status(["s3://b/p/", "s3://new/"])["modes"] == {
        "s3://b/p/": MD5,
        "s3://new/": UNKNOWN,
    }


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        json.dumps({"version": 2, "origins": {"s3://b/": "md5"}}).encode(),
        json.dumps({"version": 1, "origins": {"s3://b/": "trust-me"}}).encode(),
        json.dumps({"version": 1, "origins": ["s3://b/"]}).encode(),
        json.dumps({"version": 1, "origins": {f"s3://{i}/": "md5" for i in range(1001)}}).encode(),
        b"x" * (300 * 1024),
    ],
)
def test_a_damaged_or_foreign_calibration_file_is_ignored(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "peer-verify.json"
    path.write_bytes(content)
    check = PeerCheck(path)
    assert check.modes == {}
    assert check.mode("s3://b/", hashlib.md5(b"").hexdigest()) == UNKNOWN


def test_origin_names_carry_the_endpoint_and_no_secret() -> None:
    opts = {"key": "AKIA", "secret": "s3cr3t", "client_kwargs": {"endpoint_url": "http://h:9000"}}
    name = origin_name("s3://b/p/", opts)
    assert name == "s3://b/p/ at http://h:9000" and "s3cr3t" not in name
    assert origin_name("s3://b/p/", {"endpoint_url": "http://x"}) == "s3://b/p/ at http://x"
    assert origin_name("file:///data/", {}) == "file:///data/"


@pytest.mark.integration
def test_a_file_origin_says_its_bytes_cannot_be_checked(tmp_path: Path, start_worker: Any) -> None:
    from tidepool.spec.config import DatasetConfig, MountConfig, RuntimeConfig, TierConfig

    root = tmp_path / "origin"
    root.mkdir()
    (root / "a.txt").write_bytes(b"a" * 100)
    mount = MountConfig(name="loc", url=f"file://{root}", protocol="file", root=str(root), path="")
    cfg = DatasetConfig(
        name="loc",
        mounts=(mount,),
        runtime=RuntimeConfig(tiers=(TierConfig("SSD", str(tmp_path / "cache"), 1 << 26),)),
    )
    w = start_worker([cfg])
    with urllib.request.urlopen(f"{w.endpoint}/v1/datasets/loc/status", timeout=30) as r:
        check = json.loads(r.read())["raw"]["peer_check"]
    assert check["modes"] == {f"file://{root}": NONE}
