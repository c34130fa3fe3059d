"""Fixtures for the fsspec client tests: workers that live for a whole module, and clients.

The root ``conftest`` fixtures are function scoped (a fresh bucket and worker per test); the client
tests read the same trees many times, so they share one worker per module instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.conftest import DatasetFactory, ThreadWorker

from tidepool.client import TidepoolFileSystem
from tidepool.core.pages import DEFAULT_PAGE_SIZE
from tidepool.spec.config import DatasetConfig
from tidepool.worker import WorkerSettings
from tidepool_lab.testbed.s3server import S3Server

Serve = Callable[..., ThreadWorker]


@pytest.fixture(scope="module")
def serve(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """``serve({"ds": files}, page_size=..., **worker_settings)``: upload, start a worker."""
    started: list[ThreadWorker] = []

    def start(
        trees: dict[str, dict[str, bytes]], *, page_size: int = DEFAULT_PAGE_SIZE, **kw: Any
    ) -> ThreadWorker:
        tmp = tmp_path_factory.mktemp("client")
        factory = DatasetFactory(s3_server, tmp)
        cfgs: list[DatasetConfig] = [
            factory(files, name=name, page_size=page_size) for name, files in trees.items()
        ]
        worker = ThreadWorker(cfgs, WorkerSettings(port=0, state_dir=tmp / "state", **kw))
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if not worker.loop.is_closed():  # a test may have stopped it already
            worker.stop()


def client(worker: ThreadWorker, **kw: Any) -> TidepoolFileSystem:
    """A fresh client (not fsspec's cached instance) for one worker."""
    return TidepoolFileSystem(worker.endpoint, skip_instance_cache=True, **kw)


def flush(worker: ThreadWorker) -> None:
    """Wait until every fetched page has been written to the worker's store."""
    for svc in worker.worker.services.values():
        worker.call(svc.flush_writes())
