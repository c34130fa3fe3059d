"""Administration calls on a worker (what the CLI uses): datasets, status, loads, metrics, pool.

Blocking calls over the client's synchronous transport, with the read policy's failure rules
(:func:`tidepool.client.reads.json_steps`); they talk to the configured endpoint only, except
:func:`pool_status`, which asks every member of the pool.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tidepool.client.reads import error_from, json_steps, run_sync
from tidepool.client.transport import TRANSPORT_ERRORS, Request, Response
from tidepool.core.ring import file_key, spread

if TYPE_CHECKING:
    from tidepool.client.fs import TidepoolFileSystem

Send = Callable[[Request], Response]


class WorkerAdmin:
    def __init__(self, endpoint: str, send: Send) -> None:
        self.endpoint = endpoint
        self._send = send

    def call(self, target: str, what: str, payload: Any = None, base: str | None = None) -> Any:
        """``GET`` (or ``POST`` with a JSON ``payload``) and the parsed JSON answer."""
        body = None if payload is None else json.dumps(payload).encode()
        steps = json_steps(
            [base or self.endpoint],
            target,
            what,
            lambda _b: None,
            method="GET" if body is None else "POST",
            body=body,
        )
        return run_sync(steps, self._send)

    def datasets(self) -> list[str]:
        """Names of the datasets the worker serves."""
        return [d["name"] for d in self.call("/v1/datasets", "")["datasets"]]

    def status(self, dataset: str, refresh: bool = True) -> dict[str, Any]:
        """Fluid-style status of one dataset."""
        target = f"/v1/datasets/{quote(dataset)}/status?refresh={int(refresh)}"
        return self.call(target, dataset)  # type: ignore[no-any-return]

    def start_load(
        self, dataset: str, paths: list[str], concurrency: int | None = None
    ) -> dict[str, Any]:
        """Start a warm-up job; returns its first progress record (with ``id``)."""
        body: dict[str, Any] = {"paths": paths}
        if concurrency:
            body["concurrency"] = concurrency
        return self.call(f"/v1/datasets/{quote(dataset)}/load", dataset, body)  # type: ignore[no-any-return]

    def refresh(self, dataset: str, rel: str = "") -> dict[str, Any]:
        """Revalidate the metadata at and below a path now (drops what the worker knew)."""
        target = f"/v1/datasets/{quote(dataset)}/refresh/{quote(rel)}"
        return self.call(target, f"{dataset}/{rel}", {})  # type: ignore[no-any-return]

    def load_progress(self, job_id: str) -> dict[str, Any]:
        return self.call(f"/v1/loads/{quote(job_id)}", job_id)  # type: ignore[no-any-return]

    def post_local_hits(self, base: str, dataset: str, pages: int, nbytes: int) -> None:
        """Report fast-path reads to the worker whose pages they were; OSError on failure."""
        target = f"/v1/datasets/{quote(dataset)}/local-hits"
        self.call(target, dataset, {"pages": pages, "bytes": nbytes}, base=base)

    def metrics_text(self) -> str:
        resp = self._send(Request(self.endpoint, "/metrics"))
        if resp.status >= 400:
            raise error_from(resp, "/metrics")
        return resp.body.decode()


async def pool_status(fs: TidepoolFileSystem, datasets: list[str]) -> dict[str, Any]:
    """The pool as this client sees it: members, whether they answer, files each owns (by the
    ring, over the datasets' files) and bytes each has cached."""
    await fs._ensure_node()
    members = fs.pool.members
    keys = []
    for ds in datasets:
        async for info in fs._iter_find(ds):
            keys.append(file_key(ds, info["name"].partition("/")[2]))
    owned = spread(keys, members) if members else {}

    async def probe(address: str) -> tuple[str, int | None]:
        send = fs.transport_async.send
        try:
            health = await send(Request(address, "/healthz"))
            state = "up" if health.status == 200 else f"HTTP {health.status}"
            cached = 0
            for ds in datasets:
                resp = await send(Request(address, f"/v1/datasets/{quote(ds)}/status?refresh=0"))
                if resp.status == 200:
                    cached += int(json.loads(resp.body)["raw"]["cached_bytes"])
            return state, cached
        except (*TRANSPORT_ERRORS, ValueError, KeyError):
            return "down", None

    answers = await asyncio.gather(*(probe(m.address) for m in members))
    return {
        "nodepool": fs.pool.nodepool or fs.pool.pool,
        "replicas": fs.pool.replicas,
        "members": [
            {
                "name": m.name,
                "address": m.address,
                "state": state,
                "files_owned": owned.get(m.name, 0),
                "cached_bytes": cached,
            }
            for m, (state, cached) in zip(members, answers, strict=True)
        ],
    }
