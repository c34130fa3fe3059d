"""Mount lifecycle: prepare the mount point, mount, serve until a signal, always unmount.

* **Stale mount points.** A mount whose process died (SIGKILL, OOM) leaves the mount point in
  place with the kernel answering ``ENOTCONN`` ("Transport endpoint is not connected") to every
  access. :func:`prepare_mountpoint` detects that state and detaches it with a lazy unmount
  (``fusermount3 -uz``, or ``umount -l`` as root) before mounting again, instead of failing.
* **Signals.** SIGTERM and SIGINT end the FUSE loop (``pyfuse3.terminate``); the mount is then
  unmounted by ``pyfuse3.close(unmount=True)`` in a ``finally``, so a clean stop never leaves a
  stale mount point behind. An external ``fusermount3 -u`` ends the loop the same way.
* **Read-ahead.** The kernel sizes FUSE read-ahead from the mount's backing device
  (``/sys/class/bdi/<major>:<minor>/read_ahead_kb``, 128 KiB by default); it is raised after the
  mount when this process may write it (root), which lets the kernel ask for up to 1 MiB per
  request and keep several in flight on sequential reads.

Limits: Linux only (``/proc/self/mountinfo``, ``fusermount3``); foreground only (run it under a
supervisor: systemd, a Kubernetes DaemonSet); one mount per process (pyfuse3 is process-global).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyfuse3

log = logging.getLogger(__name__)

STALE_ERRNOS = frozenset({errno.ENOTCONN, errno.ECONNABORTED, errno.EIO})
# No ``max_read=`` mount option: the kernel's default is unlimited, and libfuse 3.14 refuses the
# option unless the init() callback sets the same value, which pyfuse3 does not expose. The size
# of one read request is then bounded by libfuse's receive buffer: 256 pages (1 MiB).


class MountError(RuntimeError):
    """The mount point cannot be used (missing, not a directory, already mounted, …)."""


@dataclass(frozen=True)
class MountSettings:
    """Everything ``tidepool mount`` needs; built by the CLI from arguments and environment."""

    mountpoint: Path
    """Directory to mount on (must exist)."""
    dataset: str | None = None
    """Dataset exposed at the root; None exposes every dataset as a top-level directory."""
    endpoint: str | None = None
    """Worker URL (default ``TIDEPOOL_ENDPOINT`` or http://127.0.0.1:8433)."""
    token: str | None = None
    """Bearer token (default ``TIDEPOOL_TOKEN``)."""
    allow_other: bool = False
    """Let other users see the mount (needs ``user_allow_other`` in /etc/fuse.conf unless root)."""
    read_ahead_kb: int = 8192
    """Kernel read-ahead for the mount (0 leaves the kernel default)."""
    max_tasks: int = 64
    """Most FUSE requests served at once (pyfuse3 worker tasks)."""


def mount_entry(mountpoint: Path) -> tuple[str, str] | None:
    """``(major:minor, fstype)`` of the mount at ``mountpoint`` from /proc/self/mountinfo."""
    target = os.path.abspath(mountpoint)
    found = None
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 10:
                    continue
                mnt = fields[4].replace("\\040", " ").replace("\\011", "\t")
                if mnt == target:
                    sep = fields.index("-")
                    found = (fields[2], fields[sep + 1])  # the last (top) mount wins
    except OSError:
        return None
    return found


def is_stale(mountpoint: Path) -> bool:
    """True when ``mountpoint`` is a dead FUSE mount ("Transport endpoint is not connected")."""
    try:
        # statvfs always reaches the FUSE server; stat may be answered from cached attributes
        os.statvfs(mountpoint)
    except OSError as exc:
        return exc.errno in STALE_ERRNOS and mount_entry(mountpoint) is not None
    return False


def lazy_unmount(mountpoint: Path) -> None:
    """Detach a (dead) mount now; the kernel frees it when the last user lets go."""
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    cmds = [[tool, "-uz", str(mountpoint)]] if tool else []
    if os.geteuid() == 0:
        cmds.append(["umount", "-l", str(mountpoint)])
    for cmd in cmds:
        res = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=30)
        if res.returncode == 0:
            return
        log.debug("%s failed: %s", " ".join(cmd), res.stderr.strip())
    raise MountError(
        f"cannot detach the stale mount at {mountpoint}; run `fusermount3 -uz {mountpoint}`"
    )


def prepare_mountpoint(mountpoint: Path) -> None:
    """Make ``mountpoint`` ready to mount on, recovering it from a crashed mount."""
    if is_stale(mountpoint):
        log.warning("%s is left over from a crashed mount; detaching it", mountpoint)
        lazy_unmount(mountpoint)
    try:
        st = os.stat(mountpoint)
    except FileNotFoundError:
        raise MountError(f"mount point {mountpoint} does not exist; create it first") from None
    except OSError as exc:
        raise MountError(f"mount point {mountpoint} is not usable: {exc.strerror}") from None
    if not os.path.isdir(mountpoint) or not (st.st_mode & 0o040000):
        raise MountError(f"mount point {mountpoint} is not a directory")
    if os.path.ismount(mountpoint):
        raise MountError(f"{mountpoint} is already a mount point; unmount it first")


def tune_read_ahead(mountpoint: Path, kib: int) -> None:
    """Raise the kernel read-ahead of the mount's backing device (best effort)."""
    entry = mount_entry(mountpoint)
    if kib <= 0 or entry is None:
        return
    path = Path("/sys/class/bdi") / entry[0] / "read_ahead_kb"
    try:
        path.write_text(f"{kib}\n")
        log.debug("read-ahead of %s set to %d KiB", mountpoint, kib)
    except OSError as exc:
        log.info("kernel read-ahead left at its default (%s: %s)", path, exc.strerror)


def mount_options(settings: MountSettings, fsname: str) -> set[str]:
    opts = {
        "ro",
        "default_permissions",
        f"fsname={fsname}",
        "subtype=tidepool",
    }
    if settings.allow_other:
        opts.add("allow_other")
    return opts


def serve(settings: MountSettings, ops: pyfuse3.Operations, fsname: str) -> None:
    """Mount ``ops`` on the mount point and serve until unmounted or signalled."""
    import pyfuse3
    import trio

    mp = settings.mountpoint

    async def watch_signals() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("%s: unmounting %s", signal.Signals(signum).name, mp)
                pyfuse3.terminate()
                return

    def tune_after_init() -> None:
        # the kernel clamps read-ahead while it processes the INIT reply; statvfs returns
        # only after that (it is a FUSE request itself), so the new value sticks
        with contextlib.suppress(OSError):
            os.statvfs(mp)
        tune_read_ahead(mp, settings.read_ahead_kb)

    async def tune() -> None:
        await trio.to_thread.run_sync(tune_after_init)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_signals)
            nursery.start_soon(tune)
            await pyfuse3.main(min_tasks=1, max_tasks=settings.max_tasks)
            nursery.cancel_scope.cancel()

    # until trio's own receiver takes over (and after it lets go), SIGTERM must still reach
    # the ``finally`` that unmounts
    previous = signal.signal(signal.SIGTERM, _interrupt)
    mounted = False
    try:
        pyfuse3.init(ops, str(mp), mount_options(settings, fsname))
        mounted = True
        log.info("mounted %s on %s", fsname, mp)
        trio.run(main)
    except KeyboardInterrupt:
        log.info("interrupted: unmounting %s", mp)
    finally:
        if mounted:
            with contextlib.suppress(Exception):
                pyfuse3.close(unmount=True)
            log.info("unmounted %s", mp)
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
