"""The cache worker: dataset services, HTTP API, load jobs and metrics."""

from __future__ import annotations

from tidepool.worker.server import Worker, WorkerSettings

__all__ = ["Worker", "WorkerSettings"]
