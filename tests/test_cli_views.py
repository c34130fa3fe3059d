"""The terminal views of the ``tidepool`` command against a real worker and S3 origin.

``load`` ends Incomplete (exit 3) when the data does not fit under the quota, saying how much
fitted and which setting to change; its progress is a plain line per 10 % on a pipe and a live
bar with files, bytes, rate and ETA on a terminal. ``status -o json|wide`` and ``--watch``.
``refresh`` makes a change at the origin visible before the metadata TTL runs out.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tidepool.client import TidepoolFileSystem
from tidepool.spec.config import TierConfig

pytestmark = pytest.mark.integration

PAGE = 64 * 1024


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def tidepool(endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TIDEPOOL_ENDPOINT": endpoint}
    env.pop("TIDEPOOL_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "tidepool.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )


@pytest.fixture
def small_cache(make_dataset: Any, start_worker: Any, tmp_path: Path) -> Any:
    """2.4 MB of files over a 640 KiB tier: the dataset cannot fit."""
    files = {f"d/f{i:02d}.bin": os.urandom(100_000 + i) for i in range(24)}
    tier = TierConfig("SSD", str(tmp_path / "tiny"), 640 * 1024, high=0.95, low=0.7)
    return start_worker([make_dataset(files, name="ds", page_size=PAGE, tiers=(tier,))])


def test_load_that_does_not_fit_ends_incomplete(small_cache: Any) -> None:
    done = tidepool(small_cache.endpoint, "load", "ds")
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith("Incomplete: 24/24 files")
    assert "stayed in the cache" in done.stderr and "does not fit under the cache quota" in (
        done.stderr
    )
    assert "tieredstore.levels[].quota" in done.stderr and "SSD 640.0 KiB" in done.stderr
    # the pipe gets plain lines, one per tenth at most, ending at 100 %
    lines = [line for line in done.stdout.splitlines() if line.startswith("load ds:")]
    assert lines and lines[-1].startswith("load ds: 100% 24/24 files")
    percents = [int(line.split()[2].rstrip("%")) for line in lines]
    assert percents == sorted(set(percents)) and len(lines) <= 11
    assert "\x1b" not in done.stdout and "\r" not in done.stdout
    # the job record (what the operator's DataLoad status is made of) says the same
    fs = TidepoolFileSystem(small_cache.endpoint, local_reads=False, skip_instance_cache=True)
    job = fs.start_load("ds", ["d"])
    deadline = time.monotonic() + 240
    while (job := fs.load_progress(job["id"]))["phase"] not in ("Complete", "Incomplete"):
        assert job["phase"] != "Failed" and time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["phase"] == "Incomplete", job
    assert 0 < job["bytes_cached"] <= 640 * 1024 < job["bytes_checked"] == job["bytes_total"]
    assert job["files_cached"] < job["files_checked"] == 24
    assert "tieredstore.levels[].quota" in job["message"]


def test_load_that_fits_is_complete(make_dataset: Any, start_worker: Any) -> None:
    files = {f"f{i}.bin": os.urandom(30_000) for i in range(5)}
    worker = start_worker([make_dataset(files, name="ds", page_size=PAGE)])
    done = tidepool(worker.endpoint, "load", "ds")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("Complete: 5/5 files")


def test_load_on_a_terminal_shows_a_live_bar_with_eta(small_cache: Any) -> None:
    primary, secondary = pty.openpty()
    env = {**os.environ, "TIDEPOOL_ENDPOINT": small_cache.endpoint, "COLUMNS": "160"}
    env.pop("TIDEPOOL_TOKEN", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidepool.cli", "load", "ds"],
        stdout=secondary,
        stderr=secondary,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    os.close(secondary)
    out = b""
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(primary, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        assert proc.wait(30) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(primary)
    text = out.decode(errors="replace")
    assert "ETA" in text and "24/24 files" in text and "Incomplete" in text
    assert "\x1b[" in text  # drawn as a live display, not plain lines


def test_status_outputs_and_watch(make_dataset: Any, start_worker: Any) -> None:
    worker = start_worker([make_dataset({"a.txt": b"a" * 100}, name="ds")])
    as_json = tidepool(worker.endpoint, "status", "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    (record,) = json.loads(as_json.stdout)
    assert record["dataset"] == "ds" and record["origin"]["state"] == "reachable"
    wide = tidepool(worker.endpoint, "status", "-o", "wide")
    assert "FILES" in wide.stdout and "CAPACITY" in wide.stdout and "LOCAL HIT" in wide.stdout
    table = tidepool(worker.endpoint, "status")
    assert max(len(line) for line in table.stdout.splitlines()) <= 80, table.stdout

    env = {**os.environ, "TIDEPOOL_ENDPOINT": worker.endpoint}
    env.pop("TIDEPOOL_TOKEN", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidepool.cli", "status", "--watch", "--interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # Ctrl-C at a terminal reaches a process whose SIGINT is at its default; a shell that runs
        # `make test &` starts the suite with SIGINT ignored, and the child would inherit that
        preexec_fn=_default_sigint,
    )
    try:
        frames = 0
        assert proc.stdout is not None
        for line in proc.stdout:
            frames += line.startswith("--- ")
            if frames >= 3:
                break
        assert frames >= 3, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGINT)
        # drain both pipes while it exits: a child blocked writing to a full pipe never exits
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_refresh_shows_a_change_before_the_ttl(
    make_dataset: Any, start_worker: Any, s3_server: Any
) -> None:
    cfg = make_dataset({"a.txt": b"old", "d/b.txt": b"b"}, name="ds", ttl=3600)
    worker = start_worker([cfg])
    bucket = make_dataset.bucket

    def fresh_client() -> TidepoolFileSystem:
        return TidepoolFileSystem(worker.endpoint, local_reads=False, skip_instance_cache=True)

    fs = fresh_client()
    assert fs.cat_file("ds/a.txt") == b"old"
    assert fs.ls("ds/d", detail=False) == ["ds/d/b.txt"]
    s3 = s3_server.boto3_client()
    s3.put_object(Bucket=bucket, Key="data/a.txt", Body=b"new and longer")
    s3.put_object(Bucket=bucket, Key="data/d/c.txt", Body=b"c")
    # within the TTL the worker still answers what it knew
    assert fresh_client().cat_file("ds/a.txt") == b"old"
    assert fresh_client().ls("ds/d", detail=False) == ["ds/d/b.txt"]

    done = tidepool(worker.endpoint, "refresh", "ds/a.txt")
    assert done.returncode == 0, done.stderr
    assert "ds/a.txt: refreshed from the origin: file, 14 bytes" in done.stdout
    assert "(was " in done.stdout
    assert fresh_client().cat_file("ds/a.txt") == b"new and longer"

    done = tidepool(worker.endpoint, "refresh", "tidepool://ds/d")
    assert done.returncode == 0, done.stderr
    assert "directory, 2 entries" in done.stdout
    assert fresh_client().ls("ds/d", detail=False) == ["ds/d/b.txt", "ds/d/c.txt"]

    gone = tidepool(worker.endpoint, "refresh", "ds/no/such")
    assert gone.returncode == 0 and "gone at the origin" in gone.stdout
    unknown = tidepool(worker.endpoint, "refresh", "nods/x")
    assert unknown.returncode == 1 and "unknown dataset 'nods'" in unknown.stderr
