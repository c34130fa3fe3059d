"""Tier and state directories are Tidepool's own: claimed with a marker, private, and locked.

A cache directory is where a worker deletes files and where the same-host fast path trusts what it
reads, so it must hold nothing but Tidepool's files, be writable by nobody else, and be used by one
worker at a time. A tier directory (``TierConfig.path``) looks like this::

    <tier>/                      0700, owned by the worker's user
      .tidepool-tier             marker: this directory was created (or adopted empty) by Tidepool
      <dataset>/                 0700, one per dataset cached in this tier
        .tidepool-dataset        marker: the dataset's name and whether it agreed to share the tier
        .lock                    flock held by the worker serving the dataset; holds its PID
        pages/<dataset>/...      page files, 0600 (layout: tidepool.core.pages.PageKey.relpath)
        tmp/                     pages being written
        state/                   index and metadata, when this is the dataset's first disk tier

Rules, applied by :func:`claim_tier` when a page store opens:

* A missing tier directory is created. An existing one must be owned by the worker's user; it is
  adopted if it carries the marker or is empty, and refused otherwise (the error names the path, a
  few of the foreign entries and what to do). Nothing in a refused directory is touched.
* A tier holds one dataset unless every dataset in it declared the level ``shared: true``; each
  dataset lives in its own subdirectory with its own index, so datasets sharing a tier never see,
  count or evict each other's pages.
* The dataset's subdirectory is locked with ``fcntl.flock`` for the life of the page store: a
  second worker on the same tier fails at once, naming the PID of the worker that holds it. The
  lock is released by the kernel when the process dies (SIGKILL included), so a crash never
  leaves a stale lock behind.
* Directories are 0700 and files 0600: other local users can neither read the cache nor plant a
  page at a predictable path (see :mod:`tidepool.client.local` for what the fast path checks).

:func:`claim_state_dir` gives a state directory (index, metadata, members) the same privacy and
lock. :func:`inspect_tier` runs the claim's checks without changing anything, for
``tidepool validate``.

Limits: ``flock`` locks are advisory and per host (two hosts sharing one NFS directory are not
kept apart); a tier directory that was created by an older Tidepool (``pages/``, ``tmp/``,
``.tidepool-state/`` without a marker) is refused like any foreign directory, with a message that
says so: its pages were written world-readable and cannot be trusted now.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tidepool.core.errors import ConfigError
from tidepool.spec.config import TierConfig

log = logging.getLogger(__name__)

TIER_MARKER = ".tidepool-tier"
DATASET_MARKER = ".tidepool-dataset"
LOCK_FILE = ".lock"
STATE_DIR = "state"
MARKER_FORMAT = 1
DIR_MODE = 0o700
FILE_MODE = 0o600
LEGACY_ENTRIES = frozenset({"pages", "tmp", ".tidepool-state"})
"""What a tier written by Tidepool before tier markers holds."""

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class TierInUseError(ConfigError):
    """Another process holds the lock of a tier or state directory."""


def dataset_root(tier_path: str | Path, dataset: str) -> Path:
    """Where ``dataset``'s pages, temp files and (maybe) state live inside a tier directory."""
    return Path(os.path.abspath(os.path.expanduser(str(tier_path)))) / dataset


def state_dir_in(tier_path: str | Path, dataset: str) -> Path:
    """The state directory of ``dataset`` when ``tier_path`` is its first persistent tier."""
    return dataset_root(tier_path, dataset) / STATE_DIR


class DirLock:
    """An exclusive ``flock`` on ``<directory>/.lock`` that records the holder's PID.

    Taken without waiting: :class:`TierInUseError` names the holder when the lock is taken.
    """

    def __init__(self, directory: Path, what: str) -> None:
        self.path = directory / LOCK_FILE
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _O_CLOEXEC | _O_NOFOLLOW, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"PID {holder}" if holder else "another process"
            raise TierInUseError(
                f"{what} {directory} is in use by another Tidepool worker ({who}); stop that "
                "worker first, or give this one its own directories"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        """Give the lock up (the kernel also does when the process ends)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the last descriptor releases the flock


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


@dataclass
class TierClaim:
    """A tier directory claimed for one dataset: its root and the lock held on it."""

    tier: Path
    """The tier directory (``TierConfig.path``, absolute)."""
    root: Path
    """The dataset's subdirectory: the page store's root in this tier."""
    lock: DirLock

    def release(self) -> None:
        self.lock.release()


def claim_tier(config: TierConfig, dataset: str) -> TierClaim:
    """Create or adopt ``config.path`` for ``dataset`` and lock the dataset's subdirectory.

    :class:`ConfigError` (the path, the reason, what to do) when the directory is not Tidepool's,
    belongs to another user, is another dataset's unshared tier, or is in use by another worker.
    """
    tier = Path(os.path.abspath(os.path.expanduser(config.path)))
    what = f"tier {config.medium}"
    if not tier.exists():
        tier.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another worker may create it right now
            tier.mkdir(mode=DIR_MODE)
    problem = _ownership_problem(tier, what)
    if problem is None and not _has_marker(tier, TIER_MARKER):
        problem = _foreign_problem(tier, what)  # checked before anything is written there
    if problem:
        raise ConfigError(problem)
    _make_private(tier)
    with _marker_lock(tier):
        if not _has_marker(tier, TIER_MARKER):
            problem = _foreign_problem(tier, what)
            if problem:
                raise ConfigError(problem)
            _write_marker(tier / TIER_MARKER, {"tidepool": "tier", "format": MARKER_FORMAT})
            log.info("%s %s: created a Tidepool tier directory", what, tier)
        problem = _sharing_problem(tier, dataset, config.shared, what)
        if problem:
            raise ConfigError(problem)
        root = tier / dataset
        _claim_dataset_dir(root, dataset, config.shared, what)
    lock = DirLock(root, f"{what} directory")
    return TierClaim(tier, root, lock)


def claim_state_dir(path: Path) -> DirLock:
    """Create ``path`` (0700, owned by us) and lock it; :class:`ConfigError` if it cannot be."""
    path = Path(os.path.abspath(os.path.expanduser(str(path))))
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    problem = _ownership_problem(path, "state directory")
    if problem:
        raise ConfigError(problem)
    _make_private(path)
    return DirLock(path, "state directory")


def private_dir(path: Path) -> Path:
    """Make ``path`` (and missing parents) a directory only its owner can enter."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    _make_private(path)
    return path


def make_dirs(path: str, top: str) -> None:
    """Create ``path`` and its missing parents below ``top`` (which exists), each 0700.

    ``os.makedirs`` applies its mode to the leaf only; the parents would get the umask's 0755.
    """
    missing: list[str] = []
    cur = path
    while cur != top and not os.path.isdir(cur):
        missing.append(cur)
        cur = os.path.dirname(cur)
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, DIR_MODE)


def inspect_tier(config: TierConfig, dataset: str) -> list[str]:
    """What :func:`claim_tier` would refuse, without creating or changing anything."""
    tier = Path(os.path.abspath(os.path.expanduser(config.path)))
    what = f"tier {config.medium}"
    if not tier.exists():
        return []
    problems = [p for p in (_ownership_problem(tier, what),) if p]
    if problems:
        return problems
    if not _has_marker(tier, TIER_MARKER):
        problem = _foreign_problem(tier, what)
        return [problem] if problem else []
    problem = _sharing_problem(tier, dataset, config.shared, what)
    if problem:
        problems.append(problem)
    root = tier / dataset
    if root.exists() and not _has_marker(root, DATASET_MARKER) and _entries(root):
        problems.append(_foreign_dataset_dir(root, what))
    return problems


# ---- checks ----------------------------------------------------------------------------------


def _ownership_problem(path: Path, what: str) -> str | None:
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"{what} directory {path}: cannot be used: {exc.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{what} path {path} is not a directory; point the tier at a directory"
    me = os.geteuid()
    if st.st_uid != me:
        return (
            f"{what} directory {path} belongs to uid {st.st_uid}, not to this worker's user "
            f"(uid {me}); Tidepool keeps its cache only in directories it owns: choose "
            "another directory (it is created), or chown this one to the worker's user"
        )
    return None


def _entries(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def _foreign_problem(tier: Path, what: str) -> str | None:
    entries = [e for e in _entries(tier) if not _is_ours(e)]
    if not entries:
        return None
    shown = ", ".join(repr(e) for e in entries[:5]) + (" …" if len(entries) > 5 else "")
    if set(entries) <= LEGACY_ENTRIES and (tier / ".tidepool-state" / "index.sqlite3").exists():
        return (
            f"{what} directory {tier} holds a cache written by an older Tidepool ({shown}, no "
            f"{TIER_MARKER} marker) whose pages cannot be trusted now; remove those entries "
            "(the cache refills from the origin) or choose another directory"
        )
    return (
        f"{what} directory {tier} is not empty and was not created by Tidepool (no "
        f"{TIER_MARKER} marker; it holds {shown}); Tidepool never mixes its cache with other "
        "files: choose a new or empty directory (it is created), or empty this one"
    )


def _foreign_dataset_dir(root: Path, what: str) -> str:
    return (
        f"{what}: {root} is not empty and is not a Tidepool dataset directory (no "
        f"{DATASET_MARKER} marker); move its files elsewhere"
    )


def _datasets_in(tier: Path) -> dict[str, bool]:
    """The datasets cached in a tier and whether each agreed to share it."""
    found: dict[str, bool] = {}
    for name in _entries(tier):
        marker = tier / name / DATASET_MARKER
        data = _read_marker(marker)
        if data is not None:
            found[name] = bool(data.get("shared", False))
    return found


def _sharing_problem(tier: Path, dataset: str, shared: bool, what: str) -> str | None:
    others = {n: s for n, s in _datasets_in(tier).items() if n != dataset}
    refusing = sorted(n for n, s in others.items() if not (s and shared))
    if not refusing:
        return None
    names = ", ".join(repr(n) for n in refusing)
    return (
        f"{what} directory {tier} already caches dataset(s) {names}; a tier serves one dataset "
        "unless every dataset using it sets 'shared: true' on that tieredstore level (each "
        "then keeps its pages in its own subdirectory); give this dataset its own directory, "
        "or mark the level shared in every runtime that uses it"
    )


def _claim_dataset_dir(root: Path, dataset: str, shared: bool, what: str) -> None:
    if not root.exists():
        with contextlib.suppress(FileExistsError):
            root.mkdir(mode=DIR_MODE)
    elif not _has_marker(root, DATASET_MARKER) and _entries(root):
        raise ConfigError(_foreign_dataset_dir(root, what))
    _make_private(root)
    wanted = {"tidepool": "dataset", "format": MARKER_FORMAT, "dataset": dataset, "shared": shared}
    if _read_marker(root / DATASET_MARKER) != wanted:
        _write_marker(root / DATASET_MARKER, wanted)


# ---- files -----------------------------------------------------------------------------------


def _has_marker(directory: Path, name: str) -> bool:
    return _read_marker(directory / name) is not None


def _read_marker(path: Path) -> dict[str, object] | None:
    """A marker's content if ``path`` is a regular file of ours holding one, else None."""
    try:
        fd = os.open(path, os.O_RDONLY | _O_CLOEXEC | _O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_size > 4096:
            return None
        data = json.loads(os.pread(fd, 4096, 0) or b"null")
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    if not isinstance(data, dict) or not isinstance(data.get("tidepool"), str):
        return None
    return data


def _write_marker(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_CLOEXEC | _O_NOFOLLOW, FILE_MODE)
    try:
        os.write(fd, (json.dumps(data, sort_keys=True) + "\n").encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _make_private(path: Path) -> None:
    """Drop group and other permissions from a directory we own (an older or hand-made one)."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        os.chmod(path, mode & 0o700 | 0o700)
        log.info("%s: permissions %o -> %o (owner only)", path, mode, mode & 0o700 | 0o700)


@contextlib.contextmanager
def _marker_lock(tier: Path) -> Iterator[None]:
    """Serialise claims of one tier by several workers starting at once (held for milliseconds).

    The lock file is the tier's ``.lock``: it never holds data, so it may exist before the marker.
    """
    fd = os.open(tier / LOCK_FILE, os.O_RDWR | os.O_CREAT | _O_CLOEXEC | _O_NOFOLLOW, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _is_ours(name: str) -> bool:
    """Whether a tier-level entry is one :func:`claim_tier` itself creates before the marker."""
    return name == LOCK_FILE or (name.startswith(TIER_MARKER + ".") and name.endswith(".tmp"))


__all__ = [
    "DATASET_MARKER",
    "STATE_DIR",
    "TIER_MARKER",
    "DirLock",
    "TierClaim",
    "TierInUseError",
    "claim_state_dir",
    "claim_tier",
    "dataset_root",
    "inspect_tier",
    "make_dirs",
    "private_dir",
    "state_dir_in",
]
