"""Check that a dataset's origin is usable: ``tidepool validate --check`` and ``tidepool up``.

:func:`probe_mount` asks the origin for one object under a mount's root with the mount's own
credentials (one ``ListObjectsV2`` with ``MaxKeys=1`` on S3) through the funnel, and says exactly
what is wrong, if anything: the bucket is missing, the prefix is empty or missing, the
credentials are refused (naming the access key id — never the secret — and the endpoint), the
endpoint cannot be reached, or TLS is expected where the endpoint speaks plain HTTP (or the
reverse, found by trying a TLS handshake when a plain ``http://`` endpoint hangs up).

``tidepool up`` runs the same check in the background (:func:`warn_about_origins`) and only logs:
the edge must start without its cloud, and a worker with a broken origin still serves what it
has cached.

Limits: one object is asked for, so "empty" cannot tell a missing prefix from an empty one (on
an object store they are the same thing); a bucket policy may allow listing but not reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from tidepool.core.errors import (
    OriginBucketMissingError,
    OriginRefusedError,
    OriginTLSError,
    OriginUnavailableError,
    redact,
)
from tidepool.origin.diagnose import S3_PROTOCOLS, describe_mount
from tidepool.origin.funnel import Origin, OriginSettings
from tidepool.spec.config import DatasetConfig, MountConfig

log = logging.getLogger(__name__)

State = Literal["ok", "empty", "no-bucket", "refused", "unreachable", "tls", "error"]

PROBE_SETTINGS = OriginSettings(
    timeout=10.0,
    connect_timeout=3.0,
    read_timeout=5.0,
    retries=1,
    retry_budget=3.0,
    breaker_threshold=1 << 30,  # a one-shot check: never open a breaker, never start a prober
)


@dataclass(frozen=True)
class ProbeResult:
    """What one mount's origin said."""

    dataset: str
    mount: str
    url: str
    endpoint: str
    key_id: str | None
    state: State
    message: str

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    def line(self) -> str:
        """One line for a terminal: ``dataset/mount: OK|PROBLEM: message``."""
        head = f"{self.dataset} ({self.url})"
        return f"{head}: OK: {self.message}" if self.ok else f"{head}: {self.state}: {self.message}"


async def probe_mount(
    dataset: str, mount: MountConfig, settings: OriginSettings = PROBE_SETTINGS
) -> ProbeResult:
    """Ask the origin for one object under the mount's root and say what its answer means."""
    target = describe_mount(mount)
    s3 = mount.protocol in S3_PROTOCOLS
    who = f"access key id {target.key_id!r}" if target.key_id else "no access key id"
    where = f"{mount.url} at {target.endpoint}" if s3 else mount.url

    def result(state: State, message: str) -> ProbeResult:
        return ProbeResult(
            dataset, mount.name, mount.url, target.endpoint, target.key_id, state, message
        )

    origin = Origin(dataset, mount, settings)
    try:
        await origin.start()
        found = await origin.sample()
    except OriginBucketMissingError as exc:
        return result("no-bucket", exc.strerror or str(exc))
    except OriginRefusedError as exc:
        return result("refused", exc.strerror or str(exc))
    except OriginTLSError as exc:
        return result("tls", exc.reason)
    except OriginUnavailableError as exc:
        tls = await _speaks_tls(target.endpoint) if s3 else None
        if tls:
            return result("tls", tls)
        check = (
            "the endpoint's host and port and the network"
            if s3
            else "that the directory is there (mounted)"
        )
        return result(
            "unreachable",
            f"cannot reach {target.endpoint if s3 else mount.url}: {exc.reason}; check "
            f"{check} (the worker still serves what it cached)",
        )
    except FileNotFoundError:
        found = 0
    except Exception as exc:  # an unexpected origin answer: say it, never crash the check
        return result("error", redact(f"{type(exc).__name__}: {exc}", mount.secret_values))
    finally:
        await origin.close()
    if not found:
        return result(
            "empty",
            f"no objects under {where} (the prefix is missing or empty); check the path in the "
            "mountPoint",
        )
    return result("ok", f"{where} answers {who} and holds objects")


async def _speaks_tls(endpoint: str, timeout: float = 3.0) -> str | None:
    """For an ``http://`` endpoint that hung up: whether it accepts a TLS handshake instead."""
    parts = urlsplit(endpoint)
    if parts.scheme != "http" or not parts.hostname:
        return None
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # only asking whether it speaks TLS at all
    port = parts.port or 80
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname, port, ssl=ctx), timeout
        )
    except (OSError, TimeoutError):
        return None
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    secure = endpoint.replace("http://", "https://", 1)
    return f"the endpoint speaks TLS but was given as {endpoint}: write {secure}"


async def probe_datasets(datasets: Iterable[DatasetConfig]) -> list[ProbeResult]:
    """Every mount of every dataset, probed at once."""
    jobs = [probe_mount(d.name, m) for d in datasets for m in d.mounts]
    return list(await asyncio.gather(*jobs))


async def warn_about_origins(datasets: Iterable[DatasetConfig]) -> list[ProbeResult]:
    """``tidepool up``'s check: log one clear line per mount whose origin is not usable (never
    fatal: the worker serves its cache without the cloud); returns the results."""
    results = await probe_datasets(datasets)
    for r in results:
        if r.ok:
            log.info("origin check: %s", r.line())
        elif r.state == "unreachable":
            log.warning(
                "origin check: dataset %r: %s; serving what is cached, uncached reads fail "
                "until it answers",
                r.dataset,
                r.message,
            )
        else:
            log.warning(
                "origin check: dataset %r (%s): %s: %s (`tidepool validate --check` tells more)",
                r.dataset,
                r.url,
                r.state,
                r.message,
            )
    return results


__all__ = ["ProbeResult", "State", "probe_datasets", "probe_mount", "warn_about_origins"]
