"""The worker's HTTP API against a real S3 origin: bytes, ranges, errors, auth, metrics, load."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tidepool.core.errors import ConfigError
from tidepool.worker import Worker, WorkerSettings

pytestmark = pytest.mark.integration

FILES = {
    "a/one.bin": os.urandom(300_000),
    "a/two.bin": os.urandom(10),
    "b/c/deep.bin": os.urandom(2_500_000),
    "empty.bin": b"",
}


@pytest.fixture
def served(make_dataset: Any, start_worker: Any) -> Any:
    cfg = make_dataset(FILES, page_size=1 << 20)
    return start_worker([cfg])


async def get(url: str | URL, **kw: Any) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s, s.get(url, **kw) as r:
        return r.status, dict(r.headers), await r.read()


async def test_full_and_ranged_reads_match_origin(served: Any) -> None:
    base = f"{served.endpoint}/v1/datasets/ds/files"
    for name, data in FILES.items():
        status, headers, body = await get(f"{base}/{name}")
        assert status == 200 and body == data
        assert headers["Content-Length"] == str(len(data))
    big = FILES["b/c/deep.bin"]
    for rng, want in [
        ("bytes=0-9", big[:10]),
        ("bytes=1048570-1048585", big[1048570:1048586]),  # crosses a page boundary
        ("bytes=-100", big[-100:]),
        ("bytes=2000000-", big[2000000:]),
    ]:
        status, headers, body = await get(f"{base}/b/c/deep.bin", headers={"Range": rng})
        assert status == 206, rng
        assert body == want, rng
        assert headers["Content-Range"].endswith(f"/{len(big)}")


async def test_head_gives_headers_only(served: Any) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.head(f"{served.endpoint}/v1/datasets/ds/files/a/one.bin") as r,
    ):
        assert r.status == 200
        assert r.headers["Content-Length"] == str(len(FILES["a/one.bin"]))
        assert r.headers["X-Tidepool-Version"]
        assert await r.read() == b""


async def test_range_past_eof_is_416(served: Any) -> None:
    status, _, body = await get(
        f"{served.endpoint}/v1/datasets/ds/files/a/two.bin", headers={"Range": "bytes=10-20"}
    )
    assert status == 416
    assert b"InvalidRange" in body


@pytest.mark.parametrize("raw", ["a/%2e%2e/%2e%2e/etc/passwd", "a/one%00.bin", "%2e%2e"])
async def test_escaping_paths_are_400(served: Any, raw: str) -> None:
    url = URL(f"{served.endpoint}/v1/datasets/ds/files/{raw}", encoded=True)
    status, headers, body = await get(url)
    assert status == 400, body
    assert headers["Content-Type"].startswith("application/json")


async def test_unknown_dataset_is_404_json(served: Any) -> None:
    status, _, body = await get(f"{served.endpoint}/v1/datasets/nope/files/x")
    assert status == 404
    assert b"nope" in body and b"NoSuchDataset" in body


async def test_missing_file_is_404(served: Any) -> None:
    status, _, body = await get(f"{served.endpoint}/v1/datasets/ds/files/a/missing.bin")
    assert status == 404 and b"NoSuchKey" in body


async def test_listing_and_find(served: Any) -> None:
    import json

    _, _, body = await get(f"{served.endpoint}/v1/datasets/ds/list/")

    names = {e["name"]: e["type"] for e in json.loads(body)["entries"]}
    assert names == {"a": "directory", "b": "directory", "empty.bin": "file"}
    _status, _, body = await get(f"{served.endpoint}/v1/datasets/ds/find/")
    files = {e["name"]: e["size"] for e in json.loads(body)["files"]}
    assert files == {k: len(v) for k, v in FILES.items()}


async def test_token_required_and_checked(make_dataset: Any, start_worker: Any) -> None:
    w = start_worker([make_dataset(FILES)], token="s3cret-token-1")
    url = f"{w.endpoint}/v1/datasets/ds/files/a/two.bin"
    status, _headers, body = await get(url)
    assert status == 401 and b"s3cret" not in body
    status, _, _ = await get(url, headers={"Authorization": "Bearer wrong"})
    assert status == 401
    status, _, body = await get(url, headers={"Authorization": "Bearer s3cret-token-1"})
    assert status == 200 and body == FILES["a/two.bin"]
    status, _, _ = await get(f"{w.endpoint}/healthz")
    assert status == 200


def test_listening_beyond_loopback_needs_a_token(make_dataset: Any) -> None:
    with pytest.raises(ConfigError, match="token"):
        Worker([make_dataset(FILES)], WorkerSettings(host="0.0.0.0", port=0))


async def test_metrics_count_cache_and_origin_bytes(served: Any) -> None:
    url = f"{served.endpoint}/v1/datasets/ds/files/a/one.bin"
    await get(url)
    await get(url)
    _, _, text = await get(f"{served.endpoint}/metrics")
    metrics = text.decode()

    def value(name: str) -> float:
        for line in metrics.splitlines():
            if line.split(" ")[0] == name:
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{name} not in metrics")

    n = len(FILES["a/one.bin"])
    assert value('tidepool_bytes_served_total{dataset="ds",source="origin"}') == n
    assert value('tidepool_bytes_served_total{dataset="ds",source="cache"}') == n
    assert value('tidepool_cache_hits_total{dataset="ds"}') == 1
    assert value('tidepool_cache_misses_total{dataset="ds"}') == 1
    assert "tidepool_cache_used_bytes" in metrics and "tidepool_cache_capacity_bytes" in metrics
    route = "/v1/datasets/{ds}/files/{path}"
    assert value(f'tidepool_http_requests_total{{route="{route}",status="200"}}') == 2


async def test_load_warms_everything(served: Any) -> None:
    import json

    async with aiohttp.ClientSession() as s:
        async with s.post(f"{served.endpoint}/v1/datasets/ds/load", json={"paths": []}) as r:
            assert r.status == 202
            job = await r.json()
        deadline = time.monotonic() + 60
        while job["phase"] not in ("Complete", "Failed") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            async with s.get(f"{served.endpoint}/v1/loads/{job['id']}") as r:
                job = await r.json()
    assert job["phase"] == "Complete", job
    assert job["files_done"] == job["files_total"] == len(FILES)
    assert job["bytes_done"] == sum(len(v) for v in FILES.values())
    _, _, body = await get(f"{served.endpoint}/v1/datasets/ds/status")
    status = json.loads(body)
    assert status["cacheStates"]["cachedPercentage"] == "100.0%"
    assert status["raw"]["cached_bytes"] == sum(len(v) for v in FILES.values())


async def test_load_rejects_bad_paths(served: Any) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{served.endpoint}/v1/datasets/ds/load", json={"paths": ["../x"]}) as r,
    ):
        assert r.status == 400
