"""``POST /v1/datasets/{ds}/refresh/{path}``: refused while the origin is unreachable, so the
metadata that lets a worker serve its cached files offline is never dropped then."""

from __future__ import annotations

import dataclasses
from typing import Any

import aiohttp
import pytest

from tidepool.client import TidepoolFileSystem
from tidepool_lab.testbed.s3server import free_port

pytestmark = pytest.mark.integration


async def test_refresh_is_refused_offline_and_keeps_what_is_cached(
    make_dataset: Any, start_worker: Any
) -> None:
    cfg = make_dataset({"a.txt": b"cached", "b.txt": b"never read"}, name="ds", ttl=0.0)
    first = start_worker([cfg])
    fs = TidepoolFileSystem(first.endpoint, local_reads=False, skip_instance_cache=True)
    assert fs.cat_file("ds/a.txt") == b"cached"
    first.stop()

    (mount,) = cfg.mounts
    opts = dict(mount.storage_options)
    opts["client_kwargs"] = {
        **opts["client_kwargs"],
        "endpoint_url": f"http://127.0.0.1:{free_port()}",
    }
    offline = start_worker(
        [dataclasses.replace(cfg, mounts=(dataclasses.replace(mount, storage_options=opts),))]
    )
    fs = TidepoolFileSystem(offline.endpoint, local_reads=False, skip_instance_cache=True)
    for _ in range(3):  # uncached reads fail until the breaker calls the origin down
        with pytest.raises(OSError):
            fs.cat_file("ds/b.txt")
    url = f"{offline.endpoint}/v1/datasets/ds/refresh/"
    async with aiohttp.ClientSession() as s, s.post(url) as r:
        body = await r.json()
        assert r.status == 503 and body["error"] == "OriginUnavailable", body
        assert "cached metadata is kept" in body["message"]
    fresh = TidepoolFileSystem(offline.endpoint, local_reads=False, skip_instance_cache=True)
    assert fresh.cat_file("ds/a.txt") == b"cached"  # stat and pages still served offline
