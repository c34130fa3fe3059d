"""Read-through behaviour: single flight, pages, quotas, version changes (real S3 origin)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import aiohttp
import pytest

from tidepool.spec.config import TierConfig

pytestmark = pytest.mark.integration

PAGE = 64 * 1024


async def read(url: str, session: aiohttp.ClientSession) -> bytes:
    async with session.get(url) as r:
        assert r.status == 200, await r.read()
        return await r.read()


async def test_single_flight_one_origin_read_per_page(make_dataset: Any, start_worker: Any) -> None:
    data = os.urandom(PAGE * 6 + 123)  # 7 pages
    w = start_worker([make_dataset({"f.bin": data}, page_size=PAGE)])
    url = f"{w.endpoint}/v1/datasets/ds/files/f.bin"
    async with aiohttp.ClientSession() as s:
        bodies = await asyncio.gather(*(read(url, s) for _ in range(32)))
    assert all(b == data for b in bodies)
    origin = w.worker.services["ds"].origins[0]
    assert origin.stats.calls.get("read") == 7


async def test_quota_holds_and_bytes_stay_right(
    make_dataset: Any, start_worker: Any, tmp_path: Any
) -> None:
    data = os.urandom(PAGE * 20)
    quota = (PAGE + 32) * 4
    tiers = (TierConfig("SSD", str(tmp_path / "tiny"), quota, high=0.99, low=0.5),)
    w = start_worker([make_dataset({"f.bin": data}, page_size=PAGE, tiers=tiers)])
    url = f"{w.endpoint}/v1/datasets/ds/files/f.bin"
    async with aiohttp.ClientSession() as s:
        assert await read(url, s) == data
        assert await read(url, s) == data
    await asyncio.sleep(0)
    w.call(w.worker.services["ds"].flush_writes())
    store = w.worker.stores["ds"]
    used = sum(t.used for t in store.usage())
    assert used <= quota
    on_disk = sum(
        p.stat().st_size
        for p in (tmp_path / "tiny").rglob("*")
        if p.is_file() and "pages" in p.parts
    )
    assert on_disk <= quota


async def test_changed_object_is_served_new_after_ttl(
    make_dataset: Any, start_worker: Any, s3_server: Any
) -> None:
    old, new = os.urandom(PAGE * 2 + 5), os.urandom(PAGE * 3 + 7)
    factory = make_dataset
    cfg = factory({"f.bin": old}, page_size=PAGE, ttl=0.5)
    w = start_worker([cfg])
    url = f"{w.endpoint}/v1/datasets/ds/files/f.bin"
    async with aiohttp.ClientSession() as s:
        assert await read(url, s) == old
        s3_server.boto3_client().put_object(Bucket=factory.bucket, Key="data/f.bin", Body=new)
        time.sleep(0.6)
        assert await read(url, s) == new
        assert await read(url, s) == new
