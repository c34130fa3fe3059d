"""Fixtures for the FUSE tests: a real mount in a child process, always unmounted afterwards.

The mount runs as ``python -m tidepool.fuse`` in its own process group so this process can use
plain file I/O on it (a FUSE server must never be blocked by its own client). Teardown sends
SIGTERM and checks that the mount went away and the process exited 0; a ``finally`` falls back to
``fusermount3 -uz`` and SIGKILL so a failing test never leaves a mount behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tidepool.fuse.mount import mount_entry

if not os.path.exists("/dev/fuse"):
    pytest.skip(
        "/dev/fuse is absent: the FUSE tests need the fuse kernel module "
        "(run scripts/system-deps.sh, or use a container with --device /dev/fuse)",
        allow_module_level=True,
    )


def fuse_mounted(path: Path) -> bool:
    """Mounted (live or stale), judged from /proc without touching the mount itself."""
    entry = mount_entry(path)
    return entry is not None and entry[1].startswith("fuse")


class Mount:
    """A ``python -m tidepool.fuse`` child process and its mount point."""

    def __init__(self, proc: subprocess.Popen[bytes], path: Path, log_path: Path) -> None:
        self.proc = proc
        self.path = path
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as a crash would: the mount point is left behind, stale."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int | None:
        """SIGTERM, then the mount must be gone and the exit code 0 (returned)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(20)
        return self.proc.poll()

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if fuse_mounted(self.path):
            subprocess.run(["fusermount3", "-uz", str(self.path)], check=False, timeout=30)


def start_mount(
    mountpoint: Path, args: list[str], endpoint: str, log_path: Path, timeout: float = 30.0
) -> Mount:
    """Start a mount and return once the kernel lists it in /proc/self/mountinfo."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "tidepool.fuse", *args, str(mountpoint), "--endpoint", endpoint]
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    mount = Mount(proc, mountpoint, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fuse_mounted(mountpoint) and "mounted" in mount.log():
            return mount
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    mount.cleanup()
    raise AssertionError(f"mount did not come up (exit {proc.poll()}):\n{mount.log()}")


MountFactory = Callable[..., Mount]


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[MountFactory]:
    """``mount(["DATASET"] or ["--all"], endpoint, mountpoint=None) -> Mount``.

    Teardown checks a clean SIGTERM unmount of every mount still running, and always cleans up.
    """
    started: list[Mount] = []
    counter = iter(range(1000))

    def start(args: list[str], endpoint: str, mountpoint: Path | None = None) -> Mount:
        n = next(counter)
        mp = mountpoint or tmp_path / f"mnt{n}"
        m = start_mount(mp, args, endpoint, tmp_path / f"mount{n}.log")
        started.append(m)
        return m

    try:
        yield start
        for m in started:
            if m.proc.poll() is None:
                code = m.stop()
                assert code == 0, f"mount exited {code} on SIGTERM:\n{m.log()}"
                assert not fuse_mounted(m.path), "SIGTERM left the mount behind"
    finally:
        for m in started:
            m.cleanup()
