"""DataLoad: the Job (``Once``) or CronJob (``Cron``) that warms a pool's cache, and its phase.

One Job per pool the dataset is cached in: a pool's cache is its own, and warming it must happen
inside the pool (``tidepool load`` talks to the pool's workers over the LAN, through the pool's
headless Service). ``phase_of`` maps the Jobs' status to the DataLoad's phase (Pending,
Executing, Complete, Failed), ``duration_of`` gives Fluid's ``duration``, and ``progress_of``
folds the progress each Job's ``tidepool load --report-job`` writes onto it (:mod:`.loadreport`)
into the DataLoad's ``progress``. A load whose data does not fit under a pool's cache quota ends
``Incomplete`` (``tidepool load`` exits 3): its Job fails at once (a ``podFailurePolicy``: a retry
cannot make the data fit) and :func:`incomplete_message` tells, per pool, how much fitted and which
setting to change; the DataLoad's phase is then ``Incomplete`` with that message. Pure: the
handlers do the I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from tidepool.operator.render import (
    COMPONENT_LABEL,
    DATASET_LABEL,
    POOL_NAME_LABEL,
    Obj,
    RenderOptions,
    field_env,
    labels_for,
    load_service_account_name,
    meta_for,
    node_selector,
    option,
    pool_suffix,
    short_name,
    token_env,
    worker_name,
)
from tidepool.operator.status import LoadProgress, load_progress, parse_job_progress
from tidepool.spec.models import DataLoad

DATALOAD_LABEL = "tidepool.io/dataload"
JOB_HASH_ANNOTATION = "tidepool.io/job-hash"
"""On a load Job: a hash of its rendered spec. A Job's pod template cannot be changed, so a
DataLoad whose spec changed has its Job replaced (the load runs again with the new targets)."""
LOAD_INCOMPLETE_EXIT = 3
"""``tidepool load``'s exit code when the data does not fit under the cache quota."""
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
"""Set by the Job controller on its Pods (1.27+): how a load Pod learns its Job's name."""


def job_name(load: str, pool: str) -> str:
    return short_name(load, "load", pool_suffix(pool))


def load_args(load: DataLoad, pool: str, options: RenderOptions) -> list[str]:
    """``tidepool load`` arguments for one pool: options first, then ``--`` and the dataset and
    target paths, so no target can be read as an option (``--concurrency=…``,
    ``--report-job=…``); the Job it reports onto comes from the downward API, never the spec."""
    spec = load.spec
    ns = spec.dataset.namespace
    endpoint = f"http://{worker_name(spec.dataset.name, pool)}.{ns}.svc:{options.port}"
    return [
        "load",
        option("--endpoint", endpoint),
        "--",
        spec.dataset.name,
        *(t.path for t in spec.target),
    ]


def load_objects(load: DataLoad, pools: Sequence[str], options: RenderOptions) -> list[Obj]:
    """A Job (or CronJob for ``policy: Cron``) per pool; owner is the DataLoad when uid is known."""
    name, ns = load.metadata.name, load.metadata.namespace
    out = []
    for pool in pools:
        labels = {
            **labels_for(load.spec.dataset.name, "dataload", pool, options),
            DATALOAD_LABEL: name,
        }
        pod: Obj = {
            "restartPolicy": "Never",  # podFailurePolicy needs it: each retry is a new Pod
            "containers": [
                {
                    "name": "load",
                    "image": options.image,
                    "imagePullPolicy": options.image_pull_policy,
                    "args": load_args(load, pool, options),
                    "env": [
                        {"name": "TIDEPOOL_NODEPOOL", "value": pool},
                        token_env(load.spec.dataset.name),
                        field_env("POD_NAMESPACE", "metadata.namespace"),
                        field_env("JOB_NAME", f"metadata.labels['{JOB_NAME_LABEL}']"),
                        # progress onto the Job itself (edge to cloud), see loadreport
                        {"name": "TIDEPOOL_REPORT_JOB", "value": "$(POD_NAMESPACE)/$(JOB_NAME)"},
                    ],
                }
            ],
            "serviceAccountName": load_service_account_name(load.spec.dataset.name),
        }
        if pool:
            pod["nodeSelector"] = node_selector(pool)
        job_spec: Obj = {
            "backoffLimit": 3,
            # data that does not fit under the quota will not fit on a retry either
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": "load",
                            "operator": "In",
                            "values": [LOAD_INCOMPLETE_EXIT],
                        },
                    },
                    {
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    },
                ]
            },
            "template": {"metadata": {"labels": labels}, "spec": pod},
        }
        meta = meta_for(job_name(name, pool), ns, labels, options, name)
        for ref in meta.get("ownerReferences", []):
            ref["kind"] = "DataLoad"
        digest = json.dumps(job_spec, sort_keys=True).encode()
        meta["annotations"] = {JOB_HASH_ANNOTATION: hashlib.sha256(digest).hexdigest()[:16]}
        if load.spec.policy == "Cron":
            out.append(
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "metadata": meta,
                    "spec": {
                        "schedule": load.spec.schedule or "@daily",
                        "concurrencyPolicy": "Forbid",
                        "jobTemplate": {"metadata": {"labels": labels}, "spec": job_spec},
                    },
                }
            )
        else:
            out.append(
                {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job_spec}
            )
    return out


def phase_of(jobs: Sequence[dict[str, Any]], expected: int, cron: bool = False) -> str:
    """DataLoad phase from the status of its Jobs (``expected`` of them, one per pool).

    Failed as soon as one Job failed for good; Complete when all succeeded; Executing while some
    run. A CronJob is Executing while scheduled (each run is a Job of its own).
    """
    if cron:
        return "Executing" if jobs else "Pending"
    if not jobs:
        return "Pending"
    done = 0
    for job in jobs:
        conditions = (job.get("status") or {}).get("conditions") or []
        states = {c.get("type") for c in conditions if c.get("status") == "True"}
        if "Failed" in states:
            return "Failed"
        if "Complete" in states or (job.get("status") or {}).get("succeeded"):
            done += 1
    if done >= expected:
        return "Complete"
    return "Executing"


def needs_replacing(existing: dict[str, Any] | None, wanted: dict[str, Any]) -> bool:
    """Whether an existing Job must be deleted and created again to match ``wanted``."""
    if existing is None or wanted.get("kind") != "Job":
        return False
    have = ((existing.get("metadata") or {}).get("annotations") or {}).get(JOB_HASH_ANNOTATION)
    return bool(have != wanted["metadata"]["annotations"][JOB_HASH_ANNOTATION])


def _time(text: Any) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def duration_of(jobs: Sequence[dict[str, Any]], now: float) -> str:
    """Fluid's ``duration``: from the first Job's start to the last one's end (or now)."""
    starts = [t for j in jobs if (t := _time((j.get("status") or {}).get("startTime")))]
    if not starts:
        return ""
    ends = [_time((j.get("status") or {}).get("completionTime")) for j in jobs]
    end = max(e for e in ends if e) if ends and all(ends) else now
    seconds = max(0, int(end - min(starts)))
    minutes, sec = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "") + f"{sec}s"


def newest_per_pool(jobs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The latest Job of each pool (a CronJob leaves one per run)."""
    newest: dict[str, dict[str, Any]] = {}
    for job in jobs:
        meta = job.get("metadata") or {}
        pool = (meta.get("labels") or {}).get(POOL_NAME_LABEL, "")
        stamp = str(meta.get("creationTimestamp") or "")
        old = newest.get(pool)
        if old is None or stamp >= str((old.get("metadata") or {}).get("creationTimestamp") or ""):
            newest[pool] = job
    return list(newest.values())


def incomplete_message(jobs: Sequence[dict[str, Any]]) -> str:
    """Why the load is Incomplete, per pool, from its Jobs' progress ("" when it is not)."""
    notes = []
    for job in jobs:
        meta = job.get("metadata") or {}
        progress = parse_job_progress(meta.get("annotations"))
        if progress is None or progress.phase != "Incomplete":
            continue
        pool = (meta.get("labels") or {}).get(POOL_NAME_LABEL, "")
        why = progress.message or "the data does not fit under the cache quota"
        notes.append(f"pool {pool}: {why}" if pool else why)
    return "; ".join(notes)


def progress_of(jobs: Sequence[dict[str, Any]], expected: int) -> LoadProgress:
    """``DataLoad.status.progress`` from the progress annotations of its Jobs."""
    found = [parse_job_progress((j.get("metadata") or {}).get("annotations")) for j in jobs]
    return load_progress(found, expected)


__all__ = [
    "COMPONENT_LABEL",
    "DATALOAD_LABEL",
    "DATASET_LABEL",
    "JOB_HASH_ANNOTATION",
    "JOB_NAME_LABEL",
    "LOAD_INCOMPLETE_EXIT",
    "POOL_NAME_LABEL",
    "duration_of",
    "incomplete_message",
    "job_name",
    "load_args",
    "load_objects",
    "needs_replacing",
    "newest_per_pool",
    "phase_of",
    "progress_of",
]
