"""Recursive ListObjectsV2 through the gateway read the worker's paged find (issue 16): the same
keys, pages and tokens as moto for the same page sizes, and no whole listing in the gateway.

The keys put folder markers (``p/``) beside names that sort between ``p`` and ``p/`` (``p.txt``,
``p-1``, ``p 2``), where S3's key order and the worker's path order differ."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.awkward import MotoOrigin, origin_listing
from tests.conftest import DatasetFactory, ThreadWorker

from tidepool.worker import WorkerSettings
from tidepool_lab.testbed import s3util

from .conftest import ThreadGateway

pytestmark = pytest.mark.integration

GW_KEY, GW_SECRET = "pagekey", "page-secret"


def _keys() -> dict[str, bytes]:
    files = {f"d{i % 4}/e{i % 9}/f{i:05d}.bin": b"x" * (i % 5) for i in range(1200)}
    for p in ("d1/e2/f00011", "d2/m", "top"):
        files[p + "/"] = b""  # a folder marker
        files[p + ".txt"] = b"dot"
        files[p + "-1"] = b"dash"
        files[p + " 2"] = b"space"
        files[p + "/inner.bin"] = b"inner"
    files["d3/empty/"] = b""
    return files


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str, ThreadGateway]]:
    os.environ.pop("AWS_CA_BUNDLE", None)
    tmp: Path = tmp_path_factory.mktemp("paged")
    origin = MotoOrigin()
    try:
        factory = DatasetFactory(origin, tmp)
        cfg = factory(_keys(), name="pg")
        worker = ThreadWorker([cfg], WorkerSettings(port=0, state_dir=tmp / "state"))
        try:
            gateway = ThreadGateway(worker.endpoint, {GW_KEY: GW_SECRET})
            try:
                yield origin, factory.bucket, gateway
            finally:
                gateway.stop()
        finally:
            worker.stop()
    finally:
        origin.stop()


@pytest.mark.parametrize("page_size", [1, 7, 1000])
@pytest.mark.parametrize("prefix", ["", "d1/", "d1/e2/f0001", "d2/m", "top", "d3/e"])
def test_recursive_pages_match_moto(
    stack: tuple[Any, str, ThreadGateway], prefix: str, page_size: int
) -> None:
    origin, bucket, gateway = stack
    if page_size == 1 and prefix == "":
        pytest.skip("1,200 one-key requests add nothing the 7-key pages do not check")
    want = origin_listing(origin.boto3_client(), bucket, prefix, page_size=page_size)
    gw = s3util.boto3_client(gateway.url, GW_KEY, GW_SECRET)
    got = origin_listing(gw, "pg", prefix, base="", page_size=page_size)
    assert got == want
    assert want[0], "the prefix names keys"
    assert not gateway.gateway._snapshots, "no whole listing was taken in the gateway"


def test_start_after_and_max_keys_match_moto(stack: tuple[Any, str, ThreadGateway]) -> None:
    origin, bucket, gateway = stack
    gw = s3util.boto3_client(gateway.url, GW_KEY, GW_SECRET)
    src = origin.boto3_client()
    for start in ("d1/e2/f00011", "d1/e2/f00011.txt", "d1/e2/f00011/", "top 2", "d3/empty/", "zz"):
        for max_keys in (1, 3, 50):
            theirs = src.list_objects_v2(
                Bucket=bucket, Prefix="data/", StartAfter="data/" + start, MaxKeys=max_keys
            )
            ours = gw.list_objects_v2(Bucket="pg", StartAfter=start, MaxKeys=max_keys)
            assert [o["Key"][5:] for o in theirs.get("Contents", [])] == [
                o["Key"] for o in ours.get("Contents", [])
            ], (start, max_keys)
            assert theirs["IsTruncated"] == ours["IsTruncated"], (start, max_keys)
