"""A mount whose worker is SIGKILLed keeps serving what this host holds (issue 14 item 4): past
the metadata TTL, ``stat``, ``ls`` and ``md5sum`` of fully cached files answer from the mount's
last known metadata and the page files; a read that needs the worker fails with EIO at once; the
outage is logged once. A restarted worker is picked up again."""

from __future__ import annotations

import errno
import hashlib
import os
import time
from pathlib import Path

import pytest
from tests.conftest import DatasetFactory

from tidepool_lab.testbed.workerproc import WorkerProcess

from .conftest import MountFactory

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TTL = 1.0
OUTAGE = float(os.environ.get("TIDEPOOL_TEST_OUTAGE_SECONDS", 3 * TTL))
"""How long the worker stays dead before the reads (issue 14 asks for 5 minutes: run with
``TIDEPOOL_TEST_OUTAGE_SECONDS=300`` and ``--timeout 900``: both tests pass; 3x the TTL by
default, which already outlives all metadata)."""


def test_a_killed_worker_leaves_cached_files_readable(
    make_dataset: DatasetFactory, mount: MountFactory, tmp_path: Path
) -> None:
    files = {f"d/f{i}.bin": os.urandom(300_000 + i) for i in range(3)}
    files["d/uncached.bin"] = os.urandom(200_000)
    make_dataset(files)
    spec = make_dataset.spec_file(
        tmp_path / "spec.yaml",
        tmp_path / "cache",
        page_size="64Ki",
        metadata_sync={"ttl": f"{TTL}s"},
        prefetch="off",  # d/uncached.bin must stay uncached
    )
    worker = WorkerProcess.start([spec], tmp_path / "w.log")
    try:
        m = mount(["ds"], worker.endpoint)
        root = m.path
        cached = [n for n in files if "uncached" not in n]
        for n in cached:
            assert (root / n).read_bytes() == files[n]
        listing = sorted(os.listdir(root / "d"))
        worker.kill()
        time.sleep(OUTAGE)  # every attribute and listing the mount holds is past its TTL
        for _ in range(2):
            assert sorted(os.listdir(root / "d")) == listing
            for n in cached:
                assert os.stat(root / n).st_size == len(files[n])
                digest = hashlib.md5((root / n).read_bytes()).hexdigest()
                assert digest == hashlib.md5(files[n]).hexdigest(), n
            t0 = time.monotonic()
            with pytest.raises(OSError) as err:
                (root / "d" / "uncached.bin").read_bytes()
            assert err.value.errno == errno.EIO
            assert time.monotonic() - t0 < 2.0
            with pytest.raises(FileNotFoundError):
                os.stat(root / "d" / "never-listed.bin")
            time.sleep(TTL)
        assert m.log().count("cannot be reached") == 1, m.log()
        port = int(worker.endpoint.rsplit(":", 1)[1])
        with WorkerProcess.start([spec], tmp_path / "w2.log", port=port):
            time.sleep(TTL)
            assert (root / "d" / "uncached.bin").read_bytes() == files["d/uncached.bin"]
            assert "answers again" in m.log()
    finally:
        worker.stop()
