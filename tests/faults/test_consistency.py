"""A changed or deleted origin object: nothing stale is served as current, no read mixes versions.

Objects are overwritten and deleted on the real S3 origin; the worker reaches it through the WAN
relay (to cut the link) or the faulty proxy (to hold a read at a precise point).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from typing import Any

import pytest

from tidepool.core.errors import OriginUnavailableError
from tidepool_lab.testbed.faulty import Fault, FaultyProxy
from tidepool_lab.testbed.s3server import S3Server
from tidepool_lab.testbed.wan import WanRelay

from .conftest import FAST, client, metric, raw_get, wait_until

pytestmark = pytest.mark.integration

PAGE = 64 * 1024
TTL = 1.0


def _put(server: S3Server, bucket: str, name: str, data: bytes) -> None:
    server.boto3_client().put_object(Bucket=bucket, Key=f"data/{name}", Body=data)


def _delete(server: S3Server, bucket: str, name: str) -> None:
    server.boto3_client().delete_object(Bucket=bucket, Key=f"data/{name}")


@pytest.mark.parametrize("new_size", ["same", "longer"])
def test_changed_object_is_never_served_after_the_ttl(
    new_size: str, s3_server: S3Server, make_dataset: Any, start_worker: Any, relay: WanRelay
) -> None:
    """An object overwritten at the origin after it was cached (every page): once the TTL has
    passed, readers get the new bytes only — through the same client, a fresh client, the listing
    and a ranged read — and the old pages are never served as current."""
    old = os.urandom(5 * PAGE + 10)
    new = os.urandom(len(old)) if new_size == "same" else os.urandom(7 * PAGE + 3)
    cfg = make_dataset(
        {"a/x.bin": old, "a/y.bin": b"y"}, page_size=PAGE, ttl=TTL, endpoint=relay.endpoint
    )
    w = start_worker([cfg], origin=FAST)
    fs = client(w.endpoint)
    fs.find("ds")
    assert fs.cat_file("ds/a/x.bin") == old
    _put(s3_server, make_dataset.bucket, "a/x.bin", new)
    time.sleep(TTL + 0.3)
    assert fs.cat_file("ds/a/x.bin") == new
    assert client(w.endpoint).cat_file("ds/a/x.bin") == new
    assert (
        client(w.endpoint).cat_file("ds/a/x.bin", start=PAGE - 5, end=2 * PAGE)
        == new[PAGE - 5 : 2 * PAGE]
    )
    sizes = {e["name"]: e["size"] for e in client(w.endpoint).ls("ds/a", detail=True)}
    assert sizes["ds/a/x.bin"] == len(new)


@pytest.mark.slow
def test_overwrite_during_a_multi_page_read_never_mixes_versions(
    s3_server: S3Server, make_dataset: Any, start_worker: Any, proxy: FaultyProxy
) -> None:
    """The object is overwritten while a 12-page read is in flight (page 0 fetched, the other
    pages held at the proxy until the overwrite is done). Proves the read either delivers one
    version entirely or fails cleanly — the connection is cut short promptly, with nothing in
    the body but bytes of one version — and the next read gets the new version in full."""
    old = os.urandom(12 * PAGE)
    new = os.urandom(12 * PAGE)
    cfg = make_dataset({"mix.bin": old}, page_size=PAGE, endpoint=proxy.endpoint)
    w = start_worker([cfg], origin=FAST)
    fs = client(w.endpoint)
    fs.info("ds/mix.bin")
    proxy.inject(
        Fault("hold", method="GET", ranged=True, path_contains="mix.bin", skip=1, times=-1)
    )
    result: dict[str, Any] = {}
    reader = threading.Thread(
        target=lambda: result.update(r=raw_get(w.endpoint, "mix.bin", timeout=4))
    )
    reader.start()
    try:
        wait_until(lambda: any(r.fault == "hold" for r in proxy.records()), 10, "a held GET")
        _put(s3_server, make_dataset.bucket, "mix.bin", new)
    finally:
        proxy.release()
        reader.join(30)
    head, body, end = result["r"]
    assert head.startswith(b"HTTP/1.1 200")
    if end == "complete":
        assert body in (old, new), "a completed read mixed two versions"
    else:
        assert old.startswith(body) or new.startswith(body), "a cut-short read mixed versions"
        assert end == "eof", "the reader was left hanging on an open connection"
    proxy.clear()
    assert fs.cat_file("ds/mix.bin") == new
    head, body, end = raw_get(w.endpoint, "mix.bin", timeout=10)
    assert (end, body) == ("complete", new)


@pytest.mark.slow
def test_client_read_across_an_overwrite_returns_one_version(
    s3_server: S3Server, make_dataset: Any, start_worker: Any, proxy: FaultyProxy
) -> None:
    """The same overwrite in the middle of a read, through the fsspec client: it returns one whole
    version (it retries a read cut short by a version change) — never a mix."""
    old = os.urandom(10 * PAGE)
    new = os.urandom(10 * PAGE)
    cfg = make_dataset({"mix.bin": old}, page_size=PAGE, endpoint=proxy.endpoint)
    w = start_worker([cfg], origin=FAST)
    fs = client(w.endpoint)
    fs.info("ds/mix.bin")
    proxy.inject(Fault("hold", method="GET", ranged=True, path_contains="mix.bin", skip=1, times=1))
    result: dict[str, Any] = {}

    def read() -> None:
        try:
            result["data"] = fs.cat_file("ds/mix.bin")
        except OSError as exc:
            result["error"] = exc

    reader = threading.Thread(target=read)
    reader.start()
    try:
        wait_until(lambda: any(r.fault == "hold" for r in proxy.records()), 10, "a held GET")
        _put(s3_server, make_dataset.bucket, "mix.bin", new)
    finally:
        proxy.release()
        reader.join(5)
    assert not reader.is_alive(), "the client read hung"
    if "data" in result:
        assert result["data"] in (old, new)
    else:
        assert "mix.bin" in str(result["error"])
    assert fs.cat_file("ds/mix.bin") == new


@pytest.mark.slow
def test_deleted_object_disappears_online_and_is_served_stale_offline(
    s3_server: S3Server, make_dataset: Any, start_worker: Any, relay: WanRelay
) -> None:
    """Two objects deleted at the origin. Online: after the TTL the deleted one is gone (stat, read
    and listing). Offline (link cut before the other one's deletion is seen): the last known state
    is served — stat, listing and cached bytes — and tidepool_stale_metadata_served_total counts
    it; once the link is back it disappears too."""
    files = {"keep.bin": os.urandom(PAGE), "gone.bin": os.urandom(PAGE), "late.bin": b"L" * 999}
    cfg = make_dataset(files, page_size=PAGE, ttl=TTL, endpoint=relay.endpoint)
    w = start_worker([cfg], origin=FAST)
    fs = client(w.endpoint)
    fs.find("ds")
    for n, data in files.items():
        assert fs.cat_file(f"ds/{n}") == data
    _delete(s3_server, make_dataset.bucket, "gone.bin")
    time.sleep(TTL + 0.3)
    with pytest.raises(FileNotFoundError):
        client(w.endpoint).cat_file("ds/gone.bin")
    assert not client(w.endpoint).exists("ds/gone.bin")
    assert sorted(client(w.endpoint).ls("ds", detail=False)) == ["ds/keep.bin", "ds/late.bin"]

    relay.set_link(False)
    _delete(s3_server, make_dataset.bucket, "late.bin")
    time.sleep(TTL + 0.3)
    stale_before = metric(fs, "tidepool_stale_metadata_served_total")
    fresh = client(w.endpoint)
    assert fresh.info("ds/late.bin")["size"] == 999
    assert fresh.cat_file("ds/late.bin") == files["late.bin"]
    assert sorted(client(w.endpoint).ls("ds", detail=False)) == ["ds/keep.bin", "ds/late.bin"]
    assert metric(fs, "tidepool_stale_metadata_served_total") > stale_before
    assert fs.status("ds", refresh=False)["raw"]["stale_metadata_served"] > 0

    relay.set_link(True)
    wait_until(lambda: fs.status("ds", refresh=False)["raw"]["origin_reachable"], 15, "probe")
    time.sleep(TTL + 0.3)

    def gone() -> bool:
        try:
            client(w.endpoint).info("ds/late.bin")
        except FileNotFoundError:
            return True
        except OriginUnavailableError:
            return False
        return False

    wait_until(gone, 10, "late.bin to disappear once online")


def test_immutable_dataset_skips_revalidation(
    s3_server: S3Server, make_dataset: Any, start_worker: Any, proxy: FaultyProxy
) -> None:
    """``immutable`` mode: past the TTL, cached metadata and pages are served without asking the
    origin anything (no request reaches the proxy), as declared."""
    data = os.urandom(3 * PAGE)
    cfg = make_dataset({"m.bin": data}, page_size=PAGE, ttl=0.2, endpoint=proxy.endpoint)
    cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, immutable=True))
    w = start_worker([cfg], origin=FAST)
    fs = client(w.endpoint)
    fs.find("ds")
    assert fs.cat_file("ds/m.bin") == data
    proxy.reset_records()
    time.sleep(0.5)
    for _ in range(3):
        c = client(w.endpoint)
        assert c.info("ds/m.bin")["size"] == len(data)
        assert c.ls("ds", detail=False) == ["ds/m.bin"]
        assert c.cat_file("ds/m.bin") == data
    assert proxy.records() == []
