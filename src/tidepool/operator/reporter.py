"""The worker's reporter: reads its cache statistics and writes them to a Lease (edge to cloud).

Runs as a sidecar of each worker Pod (``python -m tidepool.operator.reporter``). Every
``interval`` seconds it asks the local worker (``GET /v1/datasets/<ds>/status?refresh=0``) and
writes the numbers as a :class:`~.status.Report` into the annotation ``tidepool.io/report`` of a
Lease named after the dataset and node, renewing the Lease as a heartbeat. The operator reads the
Leases; the cloud never connects to the edge, so this works behind NAT through YurtHub.

When the API server or the worker does not answer, it logs once and tries again next round; it
never exits because the cloud is away.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp

from tidepool.operator.render import (
    DATASET_LABEL,
    MANAGED_BY,
    POOL_NAME_LABEL,
    pool_suffix,
    short_name,
)
from tidepool.operator.status import REPORT_ANNOTATION, Report, report_from_worker
from tidepool.pool.kubeapi import KubeClient, KubeConfig, KubeError
from tidepool.spec.credentials import add_secret_args, resolve_secret

log = logging.getLogger(__name__)

AGENT = "tidepool-reporter"
REPORT_LABEL = "tidepool.io/report"
"""Label value ``"true"`` on report Leases, so the operator lists only those."""


def lease_name(dataset: str, node: str) -> str:
    return short_name("tidepool", dataset, node, limit=253)


def lease_body(report: Report, namespace: str, interval: float) -> dict[str, Any]:
    """The Lease carrying one report (pure)."""
    now = datetime.fromtimestamp(report.time, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": lease_name(report.dataset, report.node),
            "namespace": namespace,
            "labels": {
                DATASET_LABEL: report.dataset,
                POOL_NAME_LABEL: pool_suffix(report.pool),
                REPORT_LABEL: "true",
                **MANAGED_BY,
            },
            "annotations": {REPORT_ANNOTATION: report.model_dump_json(by_alias=True)},
        },
        "spec": {
            "holderIdentity": report.node,
            "leaseDurationSeconds": max(1, int(interval * 4)),
            "renewTime": now,
        },
    }


StatusReader = Callable[[], Awaitable[dict[str, Any]]]


def worker_reader(endpoint: str, dataset: str, token: str | None) -> StatusReader:
    """Reads ``/v1/datasets/<ds>/status`` of the local worker."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def read() -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=5)
        async with (
            aiohttp.ClientSession(timeout=timeout, headers=headers) as session,
            session.get(f"{endpoint.rstrip('/')}/v1/datasets/{dataset}/status?refresh=0") as resp,
        ):
            resp.raise_for_status()
            data: dict[str, Any] = await resp.json()
            return data

    return read


async def report_once(
    client: KubeClient,
    read: StatusReader,
    *,
    dataset: str,
    namespace: str,
    pool: str,
    node: str,
    interval: float,
) -> Report:
    """Read the worker once and write its Lease; raises on failure of either side."""
    status = await read()
    report = report_from_worker(status, pool=pool, node=node, now=time.time())
    report = report.model_copy(update={"dataset": dataset})
    await client.apply(lease_body(report, namespace, interval))
    return report


async def run(
    config: KubeConfig,
    read: StatusReader,
    *,
    dataset: str,
    namespace: str,
    pool: str,
    node: str,
    interval: float = 15.0,
    rounds: int | None = None,
) -> None:
    """Report every ``interval`` seconds (``rounds`` times, or forever)."""
    failing = False
    done = 0
    async with KubeClient(config, agent=AGENT) as client:
        while rounds is None or done < rounds:
            try:
                await report_once(
                    client,
                    read,
                    dataset=dataset,
                    namespace=namespace,
                    pool=pool,
                    node=node,
                    interval=interval,
                )
                if failing:
                    log.info("reporting again for %s on %s", dataset, node)
                failing = False
            except (KubeError, ConnectionError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                if not failing:
                    log.warning("cannot report %s (%s); will retry", dataset, exc)
                failing = True
            done += 1
            if rounds is None or done < rounds:
                await asyncio.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tidepool.operator.reporter", description=__doc__)
    p.add_argument("--dataset", required=True)
    p.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", "default"))
    p.add_argument("--pool", default=os.environ.get("TIDEPOOL_NODEPOOL", ""))
    p.add_argument("--node", default=os.environ.get("NODE_NAME", ""))
    p.add_argument("--endpoint", default="http://127.0.0.1:8433")
    add_secret_args(p, "token", "TIDEPOOL_TOKEN", "bearer token of the worker")
    p.add_argument("--interval", type=float, default=15.0)
    p.add_argument("--server", default=None, help="API server URL (default: in-cluster)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    token = resolve_secret(
        args.token, args.token_file, os.environ, name="token", env="TIDEPOOL_TOKEN"
    )
    read = worker_reader(args.endpoint, args.dataset, token)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            until_stopped(
                run(
                    KubeConfig.from_env(args.server),
                    read,
                    dataset=args.dataset,
                    namespace=args.namespace,
                    pool=args.pool,
                    node=args.node or os.uname().nodename,
                    interval=args.interval,
                )
            )
        )
    return 0


async def until_stopped(main: Awaitable[None]) -> None:
    """Run ``main`` until it ends or SIGTERM/SIGINT arrives, then return cleanly.

    The sidecar's ``command`` replaces the image's entrypoint (tini), so it may run as PID 1,
    where the kernel ignores SIGTERM unless a handler is installed: without this, deleting a
    worker Pod would wait out its whole grace period and end in SIGKILL.
    """
    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


if __name__ == "__main__":
    raise SystemExit(main())
