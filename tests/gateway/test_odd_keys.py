"""Every key the origin lists is listed and readable through the worker (``tidepool://``) and the
S3 gateway, with the mapping of :mod:`tidepool.core.keys`: a moto origin holding the awkward-key
fixture, folder markers and the layouts juicefs cannot store (``x/y//z``, ``x/trail/`` with
content, ``x/file-and-dir`` as object and prefix), plus objects with their own headers.

The gateway's listings are compared with the origin's, request for request (with and without
the ``/`` delimiter), and every key is fetched from both. The last test stops the origin: the
headers are then served from the worker's cache.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.exceptions
import fsspec
import pytest
from tests.awkward import AWKWARD, META, ODD, MotoOrigin, origin_listing, put_meta
from tests.conftest import DatasetFactory, ThreadWorker

from tidepool.core import keys
from tidepool.origin.funnel import OriginSettings
from tidepool.worker import WorkerSettings
from tidepool_lab.testbed import s3util

from .conftest import ThreadGateway

pytestmark = pytest.mark.integration

GW_KEY, GW_SECRET = "oddkey", "odd-secret"


@dataclass
class OddStack:
    origin: MotoOrigin
    bucket: str
    worker: ThreadWorker
    gateway: ThreadGateway
    files: dict[str, bytes]

    def gw(self) -> Any:
        return s3util.boto3_client(self.gateway.url, GW_KEY, GW_SECRET)


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OddStack]:
    os.environ.pop("AWS_CA_BUNDLE", None)
    tmp: Path = tmp_path_factory.mktemp("odd")
    origin = MotoOrigin()
    try:
        files = {**AWKWARD, **ODD}
        factory = DatasetFactory(origin, tmp)  # type: ignore[arg-type]
        cfg = factory(files, name="odd")
        put_meta(origin.boto3_client(), factory.bucket)
        worker = ThreadWorker(
            [cfg], WorkerSettings(port=0, state_dir=tmp / "state", origin=OriginSettings(retries=0))
        )
        try:
            gateway = ThreadGateway(worker.endpoint, {GW_KEY: GW_SECRET})
            try:
                yield OddStack(origin, factory.bucket, worker, gateway, files)
            finally:
                gateway.stop()
        finally:
            worker.stop()
    finally:
        origin.stop()


PREFIXES = ["", "x/", "x/y/", "x/y//", "x/trail/", "x/file-and-dir", "x/file-and-dir/",
            "emptydir/", "emptydir", "photos/", "sym/", "uni/", "n0/n1/"]  # fmt: skip


@pytest.mark.parametrize("delimiter", ["", "/"])
@pytest.mark.parametrize("prefix", PREFIXES)
def test_listings_match_the_origin(odd: OddStack, prefix: str, delimiter: str) -> None:
    want = origin_listing(odd.origin.boto3_client(), odd.bucket, prefix, delimiter)
    got = origin_listing(odd.gw(), "odd", prefix, delimiter, base="")
    assert got == want


def test_every_origin_key_reads_the_same_through_the_gateway(odd: OddStack) -> None:
    objects, _ = origin_listing(odd.origin.boto3_client(), odd.bucket, "")
    gw = odd.gw()
    src = odd.origin.boto3_client()
    for key, size, etag in objects:
        head = gw.head_object(Bucket="odd", Key=key)
        assert (head["ContentLength"], head["ETag"]) == (size, etag), key
        body = gw.get_object(Bucket="odd", Key=key)["Body"].read()
        assert body == src.get_object(Bucket=odd.bucket, Key="data/" + key)["Body"].read(), key


def test_folder_markers_are_directories_in_the_tree(odd: OddStack) -> None:
    fs = fsspec.filesystem("tidepool", endpoint=odd.worker.endpoint, skip_instance_cache=True)
    assert fs.info("odd/emptydir")["type"] == "directory"
    found = fs.find("odd", detail=True)
    assert "odd/emptydir" not in found  # a marker is not a file
    assert fs.info("odd/emptydir")["type"] == "directory"  # not after a find either
    names = fs.ls("odd", detail=False)
    assert names.count("odd/photos") == 1
    assert fs.info("odd/photos")["type"] == "directory"
    assert fs.ls("odd/emptydir", detail=False) == []


def test_every_listed_path_of_the_tree_is_readable(odd: OddStack) -> None:
    fs = fsspec.filesystem("tidepool", endpoint=odd.worker.endpoint, skip_instance_cache=True)
    found = fs.find("odd", detail=True)
    want = {k: v for k, v in odd.files.items() if not (k.endswith("/") and not v)}
    want.update({k: v["Body"] for k, v in META.items()})
    got = {keys.to_key(name[len("odd/") :]): fs.cat_file(name) for name in found}
    assert got == want
    assert fs.info("odd/x/file-and-dir")["type"] == "directory"
    assert fs.cat_file("odd/x/~%file-and-dir") == ODD["x/file-and-dir"]
    assert fs.cat_file("odd/x/y/~%%2Fz") == ODD["x/y//z"]
    assert fs.cat_file("odd/x/trail/~%") == ODD["x/trail/"]


def _outcome(call: Any, **kw: Any) -> tuple[int, str, str, bytes]:
    """(status, error code, Content-Range, body) of one boto3 call."""
    try:
        reply = call(**kw)
    except botocore.exceptions.ClientError as exc:
        status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
        code = exc.response["Error"]["Code"]
        return status, "" if code == str(status) else code, "", b""
    body = reply["Body"].read() if "Body" in reply else b""
    return reply["ResponseMetadata"]["HTTPStatusCode"], "", reply.get("ContentRange", ""), body


@pytest.mark.parametrize(
    "kw",
    [
        {"IfMatch": 'W/"{etag}"'},
        {"IfMatch": '"{etag}"'},
        {"PartNumber": 1},
        {"PartNumber": 2},
    ],
    ids=["if-match-weak", "if-match", "part-1", "part-2"],
)
def test_conditions_and_parts_answer_as_moto(odd: OddStack, kw: dict[str, Any]) -> None:
    """``If-None-Match: W/"etag"`` is left out: moto compares it strongly (200), the gateway
    weakly as RFC 9110 says (304, tests/gateway/test_requests.py)."""
    src = odd.origin.boto3_client()
    key = "plain.txt"
    etag = src.head_object(Bucket=odd.bucket, Key="data/" + key)["ETag"].strip('"')
    kw = {k: v.format(etag=etag) if isinstance(v, str) else v for k, v in kw.items()}
    for op in ("get_object", "head_object"):
        want = _outcome(getattr(src, op), Bucket=odd.bucket, Key="data/" + key, **kw)
        got = _outcome(getattr(odd.gw(), op), Bucket="odd", Key=key, **kw)
        if want[0] == 416 and op == "get_object":  # moto answers 416 without its error code
            want = (416, "InvalidPartNumber", "", b"")
        if op == "head_object" and got[1]:  # a HEAD answer has no body to carry the code
            got = (got[0], "", got[2], got[3])
        assert got == want, (op, kw)


def _own_headers(head: dict[str, Any]) -> dict[str, Any]:
    names = ("ContentType", "CacheControl", "ContentDisposition", "ContentEncoding", "Metadata")
    out = {n: head.get(n) for n in names}
    out["Expires"] = head["ResponseMetadata"]["HTTPHeaders"].get("expires")
    return out


def test_object_headers_are_the_origins_even_offline(odd: OddStack) -> None:
    src = odd.origin.boto3_client()
    gw = odd.gw()
    want = {k: _own_headers(src.head_object(Bucket=odd.bucket, Key="data/" + k)) for k in META}
    assert want["meta/page.html"]["ContentType"] == "text/html"
    for key in META:
        assert _own_headers(gw.head_object(Bucket="odd", Key=key)) == want[key], key
        assert _own_headers(gw.get_object(Bucket="odd", Key=key)) == want[key], key
    odd.origin.stop()  # the last test of the module: the cache answers alone
    for key in META:
        assert _own_headers(gw.head_object(Bucket="odd", Key=key)) == want[key], key
