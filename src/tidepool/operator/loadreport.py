"""``tidepool load --report-job``: a load's progress, written onto its Job (edge to cloud).

The operator's load Jobs run ``tidepool load`` in the target pool with ``TIDEPOOL_REPORT_JOB``
set to the Job's ``NAMESPACE/NAME`` (downward API). While the load runs, :class:`JobReporter`
merge-patches the Job's annotation ``tidepool.io/load-progress`` with a
:class:`~.status.JobProgress` every ``interval`` seconds (only when it changed) and once more at
the end; the operator folds the Jobs' annotations into ``DataLoad.status.progress``. The cloud
never calls into the edge, so this works behind NAT through YurtHub, like the workers' reports.

Reporting never fails the load: when the API server does not answer, it logs once and tries
again at the next change. The reporter runs its own event loop in a daemon thread, so a slow API
server never stalls the load's progress bar.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

from tidepool.core.errors import ConfigError
from tidepool.operator.status import LOAD_PROGRESS_ANNOTATION, JobProgress, job_progress_from_load
from tidepool.pool.kubeapi import KubeClient, KubeConfig, KubeError, by_kind

log = logging.getLogger(__name__)

AGENT = "tidepool-load"


_LABEL_TEXT = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_LABEL = re.compile(_LABEL_TEXT, re.ASCII)
_SUBDOMAIN = re.compile(rf"{_LABEL_TEXT}(\.{_LABEL_TEXT})*", re.ASCII)


def parse_job_ref(text: str, default_namespace: str = "default") -> tuple[str, str]:
    """``NAMESPACE/NAME`` or ``NAME`` -> (namespace, name); both must be Kubernetes names."""
    ns, sep, name = text.strip().rpartition("/")
    ns = ns if sep else default_namespace
    if (
        not _LABEL.fullmatch(ns)
        or len(ns) > 63
        or not _SUBDOMAIN.fullmatch(name)
        or len(name) > 253
    ):
        raise ConfigError(
            f"--report-job {text[:80]!r} names no Job; use NAMESPACE/NAME with Kubernetes "
            "names (e.g. default/warm-load-a)"
        )
    return ns, name


def check_own_job(namespace: str, name: str, environ: Mapping[str, str]) -> None:
    """Inside a load Job's Pod (``JOB_NAME`` set by the downward API), progress may only go
    onto that Job: a load never writes onto another Job, whatever its arguments say."""
    own = environ.get("JOB_NAME")
    if own and (name, namespace) != (own, environ.get("POD_NAMESPACE", namespace)):
        raise ConfigError(
            f"--report-job {namespace}/{name} is not this Pod's Job "
            f"({environ.get('POD_NAMESPACE', namespace)}/{own}); a load reports onto its own Job"
        )


def progress_patch(progress: JobProgress) -> dict[str, Any]:
    """The merge patch that sets a Job's progress annotation (pure)."""
    return {
        "metadata": {
            "annotations": {
                LOAD_PROGRESS_ANNOTATION: progress.model_dump_json(by_alias=True),
            }
        }
    }


class JobReporter:
    """Writes the latest progress of a load onto a Job, from a thread of its own.

    ``update`` hands over the newest answer of the worker's load job (cheap, never blocks);
    ``close`` writes the last one and stops, waiting at most ``timeout`` seconds.
    """

    def __init__(
        self, config: KubeConfig, namespace: str, job: str, *, interval: float = 2.0
    ) -> None:
        self.config = config
        self.namespace, self.job = namespace, job
        self.interval = interval
        self.written: JobProgress | None = None
        """The last progress the API server accepted."""
        self._latest: JobProgress | None = None
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._closing = False
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tidepool-job-report", daemon=True)

    def start(self) -> JobReporter:
        self._thread.start()
        self._ready.wait(5)
        return self

    def update(self, load: dict[str, Any]) -> None:
        with self._lock:
            self._latest = job_progress_from_load(load, now=time.time())

    def close(self, timeout: float = 10.0) -> None:
        self._closing = True
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)
        self._thread.join(timeout)

    # ---- the reporting thread --------------------------------------------------------------

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._ready.set()
        failing = False
        async with KubeClient(self.config, agent=AGENT) as client:
            while True:
                closing = self._closing
                with self._lock:
                    latest = self._latest
                if latest is not None and _changed(latest, self.written):
                    try:
                        await client.patch(
                            by_kind("Job"), self.namespace, self.job, progress_patch(latest)
                        )
                        self.written = latest
                        if failing:
                            log.info("reporting progress on job %s again", self.job)
                        failing = False
                    except (KubeError, ConnectionError) as exc:
                        if not failing:
                            log.warning(
                                "cannot report progress on job %s/%s (%s); the load goes on",
                                self.namespace,
                                self.job,
                                exc,
                            )
                        failing = True
                if closing:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)


def _changed(new: JobProgress, old: JobProgress | None) -> bool:
    if old is None:
        return True
    return new.model_dump(exclude={"time"}) != old.model_dump(exclude={"time"})


__all__ = ["JobReporter", "check_own_job", "parse_job_ref", "progress_patch"]
