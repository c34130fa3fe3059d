"""Paged finds (issue 16, listings that stream): ``GET /find/{path}?limit=N&start_after=P`` on a
real worker over a real S3 origin, compared with the origin's own listing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tidepool.spec.config import DatasetConfig, MountConfig, RuntimeConfig, TierConfig
from tidepool.worker import requests as worker_requests

pytestmark = pytest.mark.integration

FILES = 3000


def _tree(n: int) -> dict[str, bytes]:
    """``n`` small files in nested directories (and a few at the top)."""
    files = {f"d{i % 7}/e{i % 13}/f{i:05d}.bin": f"{i}".encode() for i in range(n - 5)}
    files.update({f"top{i}.txt": b"t" for i in range(5)})
    return files


def _origin_keys(make_dataset: Any, under: str = "") -> list[str]:
    """The keys of the dataset's bucket below ``data/`` as S3 lists them (its own order)."""
    client = make_dataset.server.boto3_client()
    keys: list[str] = []
    prefix = f"data/{under}"
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=make_dataset.bucket, Prefix=prefix
    ):
        keys += [o["Key"][len("data/") :] for o in page.get("Contents") or []]
    return keys


async def _get(s: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with s.get(url) as r:
        return r.status, await r.json()


async def _pages(s: aiohttp.ClientSession, base: str, limit: int) -> list[list[dict[str, Any]]]:
    """Every page of a find, following ``next``; checks each page's own shape."""
    pages: list[list[dict[str, Any]]] = []
    after = None
    while True:
        url = f"{base}?limit={limit}" + (f"&start_after={after}" if after else "")
        status, body = await _get(s, url)
        assert status == 200, body
        files = body["files"]
        assert len(files) <= limit
        pages.append(files)
        if "next" not in body:
            return pages
        assert files, "a page with a next cursor holds entries"
        assert body["next"] == files[-1]["name"]
        after = body["next"]
        assert len(pages) <= FILES + 1, "the cursor never ends"


async def _get_params(s: aiohttp.ClientSession, url: str, **params: str) -> tuple[int, Any]:
    async with s.get(url, params=params) as r:
        return r.status, await r.json()


def _find_calls(w: Any) -> int:
    return int(w.worker.services["ds"].origins[0].stats.calls.get("find", 0))


async def test_pages_are_the_origin_listing_in_order(
    make_dataset: Any, start_worker: Any, tmp_path: Any
) -> None:
    cfg = make_dataset(_tree(FILES))
    w = start_worker([cfg])
    origin = _origin_keys(make_dataset)
    assert len(origin) == FILES
    base = f"{w.endpoint}/v1/datasets/ds/find/"
    async with aiohttp.ClientSession() as s:
        first = await _pages(s, base, 1000)
        listed = _find_calls(w)
        assert listed == 3  # one ListObjectsV2 page per 1,000 keys, once
        for limit in (1, 7, 1000, 10000):
            pages = first if limit == 1000 else await _pages(s, base, limit)
            names = [f["name"] for page in pages for f in page]
            assert names == origin, f"limit={limit}"
            assert len(set(names)) == len(names)
            assert all(len(p) == limit for p in pages[:-1])
            sizes = {f["name"]: f["size"] for page in pages for f in page}
            assert sizes["top3.txt"] == 1
        # the ends: after the last key nothing follows; after a key not listed, the next ones
        status, body = await _get(s, f"{base}?limit=5&start_after={origin[-1]}")
        assert (status, body) == (200, {"files": []})
        status, body = await _get(s, f"{base}?limit=2&start_after=d3/e1/f0")
        assert [f["name"] for f in body["files"]] == [k for k in origin if k > "d3/e1/f0"][:2]
        # a prefix below a listed one, and the unpaged form, are served from the same rows
        status, body = await _get(s, f"{base}d3/e5?limit=10000")
        assert [f["name"] for f in body["files"]] == _origin_keys(make_dataset, "d3/e5/")
        status, body = await _get(s, base)
        assert [f["name"] for f in body["files"]] == origin
        assert _find_calls(w) == listed, "pages of a fresh find never list the origin again"
    # a restarted worker pages from what it stored, without listing again
    w.stop()
    w2 = start_worker([cfg])
    async with aiohttp.ClientSession() as s:
        pages = await _pages(s, f"{w2.endpoint}/v1/datasets/ds/find/", 10000)
    assert [f["name"] for p in pages for f in p] == origin
    assert _find_calls(w2) == 0


@pytest.mark.parametrize(
    "value", ["0", "-1", "10001", "x", "\uff11", "1" * 5000, "", "1.5", " 5", "+5"]
)
async def test_bad_limit_is_400_naming_it(make_dataset: Any, start_worker: Any, value: str) -> None:
    w = start_worker([make_dataset({"a/b.bin": b"x"})])
    async with aiohttp.ClientSession() as s:
        status, body = await _get_params(s, f"{w.endpoint}/v1/datasets/ds/find/", limit=value)
    assert status == 400, body
    assert body["message"].startswith("query parameter limit: got ")
    assert repr(value[:40]) in body["message"]
    assert "from 1 to 10000" in body["message"]
    assert len(body["message"]) < 300
    assert _find_calls(w) == 0


async def test_bad_cursor_and_parameters(make_dataset: Any, start_worker: Any) -> None:
    w = start_worker([make_dataset({"a/b.bin": b"x"})])
    url = f"{w.endpoint}/v1/datasets/ds/find/"
    async with aiohttp.ClientSession() as s:
        for params, named in (
            ({"limit": "5", "start_after": "../etc"}, "start_after"),
            ({"limit": "5", "start_after": "a\\b"}, "start_after"),
            ({"limit": "5", "start_after": "a" * 5000}, "start_after"),
            ({"limit": "5", "cursor": "x"}, "cursor"),
        ):
            async with s.get(url, params=params) as r:
                body = await r.json()
            assert r.status == 400, (params, body)
            assert named in body["message"], body
        async with s.get(f"{url}?limit=1&limit=2") as r:
            assert r.status == 400
            assert "limit" in (await r.json())["message"]


async def test_first_pages_share_one_listing(make_dataset: Any, start_worker: Any) -> None:
    w = start_worker([make_dataset(_tree(40))])
    url = f"{w.endpoint}/v1/datasets/ds/find/?limit=10"
    async with aiohttp.ClientSession() as s:
        answers = await asyncio.gather(*(_get(s, url) for _ in range(16)))
    assert {str(a) for a in answers} == {str(answers[0])}
    assert answers[0][1]["next"] == answers[0][1]["files"][-1]["name"]
    assert _find_calls(w) == 1


async def test_unpaged_find_is_bounded(
    make_dataset: Any, start_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_requests, "MAX_UNPAGED_FIND", 30)
    w = start_worker([make_dataset(_tree(40))])
    async with aiohttp.ClientSession() as s:
        status, body = await _get(s, f"{w.endpoint}/v1/datasets/ds/find/")
        assert status == 400
        assert "more than 30 entries" in body["message"] and "limit" in body["message"]
        status, body = await _get(s, f"{w.endpoint}/v1/datasets/ds/find/d1")
        assert status == 200 and len(body["files"]) == 5


async def test_a_new_listing_drops_what_the_origin_no_longer_has(
    make_dataset: Any, start_worker: Any
) -> None:
    w = start_worker([make_dataset(_tree(40), ttl=0.0)])  # every find lists again
    base = f"{w.endpoint}/v1/datasets/ds"
    async with aiohttp.ClientSession() as s:
        _, before = await _get(s, f"{base}/find/?limit=100")
        gone = before["files"][3]["name"]
        make_dataset.server.boto3_client().delete_object(
            Bucket=make_dataset.bucket, Key=f"data/{gone}"
        )
        _, after = await _get(s, f"{base}/find/?limit=100")
        assert [f["name"] for f in after["files"]] == _origin_keys(make_dataset)
        assert gone not in {f["name"] for f in after["files"]}
        assert len(after["files"]) == len(before["files"]) - 1


async def test_a_pool_member_pages_the_owner_of_the_listing(
    make_dataset: Any, start_worker: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.pool.poolkit import start_pool

    from tidepool.worker import metadata

    monkeypatch.setattr(metadata, "POOL_PAGE", 100)  # the member asks its owner 13 times
    workers, _ = start_pool(make_dataset, start_worker, tmp_path, _tree(1200), n=2)
    origin = _origin_keys(make_dataset)
    async with aiohttp.ClientSession() as s:
        for w in workers:
            pages = await _pages(s, f"{w.endpoint}/v1/datasets/ds/find/", 333)
            assert [f["name"] for p in pages for f in p] == origin
    calls = sorted(_find_calls(w) for w in workers)
    assert calls == [0, 2]  # two ListObjectsV2 pages, by the owner, for the whole pool


async def test_a_local_origin_is_walked_a_directory_at_a_time(
    start_worker: Any, tmp_path: Path
) -> None:
    root = tmp_path / "origin"
    names = sorted(_tree(600))
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(name.encode())
    (root / "d1" / "loop").symlink_to(root / "d1")  # a cycle: not entered, as find -L does
    mount = MountConfig(name="ds", url=f"file://{root}", protocol="file", root=str(root), path="")
    cfg = DatasetConfig(
        name="ds",
        mounts=(mount,),
        runtime=RuntimeConfig(tiers=(TierConfig("SSD", str(tmp_path / "cache"), 1 << 26),)),
    )
    w = start_worker([cfg])
    async with aiohttp.ClientSession() as s:
        pages = await _pages(s, f"{w.endpoint}/v1/datasets/ds/find/", 7)
        listed = [f["name"] for p in pages for f in p]
        assert listed == names
        walked = _find_calls(w)
        assert walked == 7 * 13 + 1 + 1  # one call per directory holding files, one at the end
        _, body = await _get(s, f"{w.endpoint}/v1/datasets/ds/list/d1/e3")
        assert sorted(e["name"] for e in body["entries"]) == [
            n for n in names if n.startswith("d1/e3/")
        ]
    assert _find_calls(w) == walked


def test_the_writer_places_files_that_are_directories_and_folder_markers(
    tmp_path: Path,
) -> None:
    """Pages cut anywhere: a key that is a file and a prefix (``a/b`` beside ``a/b/c``) moves
    to its escaped name in a later page; a folder marker is listed once, as its directory."""
    from tidepool.core.fileinfo import dir_info, file_info
    from tidepool.core.keys import escaped
    from tidepool.store.metadata import MetadataStore
    from tidepool.worker.findwriter import FindWriter

    store = MetadataStore(tmp_path / "state")
    try:
        marker = dict(dir_info("m"), marker=True, version="e0")
        pages = [
            [file_info("a/b", 1, "e1", None), file_info("a/b.txt", 2, "e2", None)],
            [dict(file_info("a/b/c", 3, "e3", None)), marker],
            [file_info("m/x", 4, "e4", None), file_info("z", 5, "e5", None)],
        ]
        writer = FindWriter(store, "ds", "", 100.0)
        for page in pages:
            writer.add([dict(e) for e in page])  # type: ignore[misc]
        writer.finish()
        store.flush()
        listing = {e["name"]: e["type"] for e in store.get_listing("ds", "a")[0]}  # type: ignore[index]
        assert listing == {escaped("a/b"): "file", "a/b.txt": "file", "a/b": "directory"}
        root = store.get_listing("ds", "")[0]  # type: ignore[index]
        assert {e["name"]: e.get("marker", False) for e in root} == {
            "a": False,
            "m": True,
            "z": False,
        }
        assert [e["name"] for e in store.get_listing("ds", "m")[0]] == ["m/x"]  # type: ignore[index]
        rows = [name for name, info in store.info_rows("ds", "", "", 100)]
        assert rows == sorted(rows)
        assert store.get_info("ds", "a/b")[0]["type"] == "directory"  # type: ignore[index]
        assert store.get_info("ds", escaped("a/b"))[0]["size"] == 1  # type: ignore[index]
        assert (writer.files, writer.bytes) == (5, 15)
    finally:
        store.close()


_CYCLE = """<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>{bucket}</Name>
<Prefix>data/</Prefix><KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated>
<NextContinuationToken>again</NextContinuationToken>
<Contents><Key>data/a.bin</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified>
<ETag>"0cc175b9c0f1b6a831c399e269772661"</ETag><Size>1</Size></Contents>
<Contents><Key>data/b.bin</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified>
<ETag>"92eb5ffee6ae2fec3ad71c777531578f"</ETag><Size>1</Size></Contents>
</ListBucketResult>"""


async def test_a_listing_whose_tokens_cycle_is_an_error(
    make_dataset: Any, start_worker: Any
) -> None:
    """An origin that hands out the same page and token forever (a broken S3 implementation)
    ends in a 502 that says so, not in an endless listing."""
    from aiohttp import web

    async def listing(request: web.Request) -> web.Response:
        bucket = request.match_info["bucket"]
        return web.Response(text=_CYCLE.format(bucket=bucket), content_type="application/xml")

    app = web.Application()
    app.router.add_get("/{bucket}", listing)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        w = start_worker([make_dataset({"x": b"x"}, endpoint=f"http://127.0.0.1:{port}")])
        async with aiohttp.ClientSession() as s:
            status, body = await _get(s, f"{w.endpoint}/v1/datasets/ds/find/?limit=10")
        assert status == 502, body
        assert "went back" in body["message"] and "cycle of continuation tokens" in body["message"]
        assert _find_calls(w) == 2
    finally:
        await runner.cleanup()


async def test_a_cursor_continues_its_listing_after_the_ttl(
    make_dataset: Any, start_worker: Any
) -> None:
    """Only a first page lists the origin again once the TTL has passed; the later pages of a
    listing continue it (a listing that takes longer than the TTL to page through used to list
    the origin again for every page after that)."""
    files = {f"d/f{i:03d}.bin": b"x" for i in range(50)}
    w = start_worker([make_dataset(files, ttl=0.2)])
    base = f"{w.endpoint}/v1/datasets/ds/find/"
    async with aiohttp.ClientSession() as s:
        status, body = await _get(s, f"{base}?limit=10")
        assert status == 200 and len(body["files"]) == 10
        listed = _find_calls(w)
        assert listed >= 1
        names = [f["name"] for f in body["files"]]
        while "next" in body:
            await asyncio.sleep(0.3)  # every page is asked for after the TTL
            status, body = await _get(s, f"{base}?limit=10&start_after={body['next']}")
            assert status == 200, body
            names += [f["name"] for f in body["files"]]
        assert names == sorted(files)
        assert _find_calls(w) == listed, "a later page listed the origin again"
        status, body = await _get(s, f"{base}?limit=10")  # a new listing: the TTL holds
        assert status == 200 and _find_calls(w) > listed
