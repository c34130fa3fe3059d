"""Bytes from a pool peer checked against the origin's own checksum before they are cached.

A peer (another worker of the node pool) proves who it is with the peer credential, and its
answer is checked against the file's version and size (:mod:`tidepool.worker.placement`). That
does not prove its bytes: a broken disk, a bug or a hostile member holding the credential could
serve other bytes under the right version. S3 has no per-page checksum, but its ETag is one for
the whole object in the common case:

* a single-part upload's ETag is the MD5 of the object (32 hex digits);
* a multipart upload's ETag is ``MD5(MD5(part 1) + … + MD5(part N))-N``: checkable when the part
  size can be guessed (the tools' usual sizes, or the size that gives exactly N parts);
* with SSE-KMS or SSE-C the ETag is not an MD5 at all; nothing in the answer says so.

So the worker calibrates per origin (:class:`PeerCheck`): the first whole object it fetches from
the origin itself tells whether that origin's ETags are MD5s of its bytes. Until then peer bytes
are checked anyway, and a mismatch is settled by the origin's own bytes — which also calibrates.
The calibration is kept in the state directory (``peer-verify.json``, owner-only) and read back
with the same checks as any input. Origins without ETags (``file://``: the version is size and
mtime) cannot be checked; the status says so (mode ``none``).

What this does not cover (stated in the status, not hidden): a member holding the peer
credential that answers the *first* read of a file names the version itself, so it can pair
forged bytes with their own MD5; reads whose version came from the origin or a listing are
checked against the origin's ETag.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "peer-verify.json"
MAX_ORIGINS = 1000
"""Calibrations kept (one per origin of the dataset; more means the file is not ours)."""

MD5 = "md5"
"""The origin's ETags are MD5s of the bytes (seen on an origin fetch): peer bytes are checked."""
OFF = "off"
"""The origin's ETags are not MD5s (SSE-KMS, SSE-C, a gateway's own tags): not checkable."""
UNKNOWN = "unknown"
"""Not calibrated yet: peer bytes are checked, a mismatch is settled by the origin's bytes."""
NONE = "none"
"""The origin has no ETags (``file://``): not checkable."""
MODES = (MD5, OFF)
"""The modes that are stored (the others are derived)."""

_SINGLE = re.compile(r"[0-9a-f]{32}")
_MULTI = re.compile(r"([0-9a-f]{32})-([1-9][0-9]{0,4})")
MiB = 1 << 20
PART_SIZES = (5 * MiB, 8 * MiB, 16 * MiB, 15 * MiB, 32 * MiB, 64 * MiB, 100 * MiB, 128 * MiB)
"""Part sizes of the common uploaders (aws cli 8 MiB, boto3 8 MiB, s3fs 5 to 50 MiB, rclone 5 MiB,
mc 16 MiB, s5cmd 50 MiB…), tried before the size that divides the object into exactly N parts."""
MAX_PART_GUESSES = 4


def etag_shape(version: str | None) -> tuple[str, int] | None:
    """``(md5 hex, parts)`` of an S3 ETag (``parts`` 0 for a single-part upload), or None when
    the version is not an S3-style ETag (``file://`` versions, SSE-C tags of other shapes)."""
    if not version:
        return None
    v = version.lower()
    if _SINGLE.fullmatch(v):
        return v, 0
    m = _MULTI.fullmatch(v)
    if m:
        return m.group(1), int(m.group(2))
    return None


def part_sizes(size: int, parts: int) -> list[int]:
    """Part sizes that split ``size`` bytes into exactly ``parts`` parts, likeliest first."""
    if parts < 1 or size < parts:
        return []
    out: list[int] = []
    for p in PART_SIZES:
        if -(-size // p) == parts:
            out.append(p)
    even = -(-size // parts)  # the size that gives N parts, rounded up to whole MiB and not
    for p in (-(-even // MiB) * MiB, even):
        if p not in out and -(-size // p) == parts:
            out.append(p)
    return out[:MAX_PART_GUESSES]


def matches(
    version: str | None, size: int, chunks: Callable[[], Iterable[bytes | memoryview]]
) -> bool | None:
    """Whether the bytes ``chunks()`` yields (the whole object, in order) are what the ETag
    ``version`` says; None when the ETag says nothing checkable. ``chunks`` is called once per
    part size tried for a multipart ETag."""
    shape = etag_shape(version)
    if shape is None:
        return None
    digest, parts = shape
    if parts == 0:
        h = hashlib.md5(usedforsecurity=False)
        for c in chunks():
            h.update(c)
        return h.hexdigest() == digest
    guesses = part_sizes(size, parts)
    if not guesses:
        return False  # N parts cannot hold this many bytes: not this object
    return any(_multipart_digest(chunks(), p) == digest for p in guesses)


def _multipart_digest(chunks: Iterable[bytes | memoryview], part: int) -> str:
    outer = hashlib.md5(usedforsecurity=False)
    h = hashlib.md5(usedforsecurity=False)
    filled = 0
    for c in chunks:
        view = memoryview(c)
        while view:
            take = min(len(view), part - filled)
            h.update(view[:take])
            filled += take
            view = view[take:]
            if filled == part:
                outer.update(h.digest())
                h = hashlib.md5(usedforsecurity=False)
                filled = 0
    if filled:
        outer.update(h.digest())
    return outer.hexdigest()


class PeerCheck:
    """Per-origin calibration and the counts of one dataset's checked peer answers.

    ``origin`` names are the mount's URL and endpoint (no secrets)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.modes: dict[str, str] = self._load() if path is not None else {}
        self.verified = 0
        """Peer answers whose bytes matched the origin's checksum."""
        self.rejected = 0
        """Peer answers whose bytes did not: dropped, the origin's bytes served instead."""
        self.unchecked = 0
        """Peer answers that could not be checked (no MD5 ETag, or an ``off`` origin)."""

    def mode(self, origin: str, version: str | None) -> str:
        """How bytes of ``version`` from ``origin`` are checked: one of md5/off/unknown/none."""
        if etag_shape(version) is None:
            return NONE
        return self.modes.get(origin, UNKNOWN)

    def checkable(self, origin: str, version: str | None) -> bool:
        return self.mode(origin, version) in (MD5, UNKNOWN)

    def calibrate(self, origin: str, version: str | None, data: bytes) -> bool | None:
        """Learn from a whole object the origin itself sent whether its ETags are MD5s.
        Returns whether ``data`` matches ``version`` (None: not a single-part ETag)."""
        shape = etag_shape(version)
        if shape is None or shape[1] != 0:
            return None
        ok = hashlib.md5(data, usedforsecurity=False).hexdigest() == shape[0]
        mode = MD5 if ok else OFF
        if self.modes.get(origin) != mode:
            self.modes[origin] = mode
            if mode == OFF:
                log.warning(
                    "peer bytes of %s cannot be checked: its ETags are not MD5s of the objects "
                    "(SSE-KMS or SSE-C?); pool answers are checked against version and size only",
                    origin,
                )
            self._save()
        return ok

    def status(
        self, origins: Iterable[str], without_etags: Iterable[str] = ()
    ) -> dict[str, object]:
        """The mode of each origin (``none`` for those in ``without_etags``) and the counts."""
        modes = {o: self.modes.get(o, UNKNOWN) for o in origins}
        modes.update((o, NONE) for o in without_etags)
        return {
            "modes": modes,
            "verified": self.verified,
            "rejected": self.rejected,
            "unchecked": self.unchecked,
        }

    # ---- persistence -----------------------------------------------------------------------

    def _load(self) -> dict[str, str]:
        """The stored calibrations, or none when the file is missing, foreign or damaged (then
        the origins are calibrated again: nothing from the disk is trusted unchecked)."""
        assert self.path is not None
        try:
            with open(self.path, "rb") as f:
                raw = f.read(256 * 1024 + 1)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning("ignoring %s: %s", self.path, exc)
            return {}
        try:
            doc = json.loads(raw) if len(raw) <= 256 * 1024 else None
        except ValueError:
            doc = None
        modes = doc.get("origins") if isinstance(doc, dict) and doc.get("version") == 1 else None
        if (
            not isinstance(modes, dict)
            or len(modes) > MAX_ORIGINS
            or not all(
                isinstance(k, str) and len(k) <= 4096 and v in MODES for k, v in modes.items()
            )
        ):
            log.warning("ignoring %s: not a peer-verification file of this version", self.path)
            return {}
        return dict(modes)

    def _save(self) -> None:
        if self.path is None:
            return
        doc = json.dumps({"version": 1, "origins": self.modes}, sort_keys=True).encode()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, doc)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:  # the calibration is redone after a restart: never fatal
            log.warning("could not keep the peer-check calibration in %s: %s", self.path, exc)
            tmp.unlink(missing_ok=True)


def origin_name(url: str, storage_options: dict[str, object]) -> str:
    """The name a calibration is kept under: the mount URL and its endpoint (no credentials)."""
    endpoint = storage_options.get("endpoint_url")
    if endpoint is None:
        kwargs = storage_options.get("client_kwargs")
        if isinstance(kwargs, dict):
            endpoint = kwargs.get("endpoint_url")
    return f"{url} at {endpoint}" if endpoint else url


__all__ = [
    "MD5",
    "NONE",
    "OFF",
    "UNKNOWN",
    "PeerCheck",
    "etag_shape",
    "matches",
    "origin_name",
    "part_sizes",
]
