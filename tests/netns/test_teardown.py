"""Labs leave nothing behind: namespaces, links and processes go, also after failures/crashes."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tidepool_lab.testbed.netns import Lab, LabError, cleanup_stale

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PREFIX = "tpz"


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def _links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_close_removes_namespaces_links_and_processes(netns_ok: None) -> None:
    lab = Lab.create(prefix=PREFIX, pools={"p": 2}, origin=False)
    try:
        host = lab.hosts["p"][0]
        tracked = host.exec(["sleep", "600"])
        # A process that left the lab's process group: found through `ip netns pids`.
        escaped = host.run(["sh", "-c", "setsid sleep 600 >/dev/null 2>&1 & echo $!"])
        escaped_pid = int(escaped.stdout)
        relay_pid = lab.wan.link.pid
        assert all(_alive(p) for p in (tracked.pid, escaped_pid, relay_pid))
        assert sum(lab.id in line for line in _namespaces().splitlines()) == 5
    finally:
        lab.close()
    deadline = time.monotonic() + 5
    while _alive(escaped_pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # killed, but reaped by init, not by us
    assert tracked.poll() is not None
    assert not _alive(escaped_pid) and not _alive(relay_pid)
    assert lab.id not in _namespaces()
    assert lab.id not in _links()
    assert not any(
        line.split(":")[1].strip().startswith(("br", "p0h")) for line in _links().splitlines()
    )
    lab.close()  # idempotent


def test_failed_create_tears_down_what_it_built(
    netns_ok: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(self: Lab, access_key: str, secret_key: str) -> None:
        raise LabError("origin failed on purpose")

    monkeypatch.setattr(Lab, "_start_origin", fail)
    before = _namespaces()
    with pytest.raises(LabError, match="on purpose"):
        Lab.create(prefix=PREFIX, pools={"p": 1})
    assert _namespaces() == before
    assert f"{PREFIX}-{os.getpid()}-" not in _namespaces()


def test_cleanup_stale_removes_a_crashed_runs_namespaces(netns_ok: None) -> None:
    dead = subprocess.Popen(["true"])  # its PID no longer exists once reaped
    dead.wait()
    # A prefix of this test's own: cleanup_stale(PREFIX) in another run on this machine (or its
    # Lab.create) would otherwise remove this namespace too, or this call would remove theirs.
    prefix = f"{PREFIX}{os.getpid()}"
    name = f"{prefix}-{dead.pid}-1-cloud"
    subprocess.run(["ip", "netns", "add", name], check=True)
    leftover = subprocess.Popen(
        ["ip", "netns", "exec", name, "sleep", "600"], start_new_session=True
    )
    try:
        assert cleanup_stale(prefix) == [name]
        assert leftover.wait(timeout=5) != 0  # SIGKILLed
        assert name not in _namespaces()
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
