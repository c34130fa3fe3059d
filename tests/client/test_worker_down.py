"""A same-host ``tidepool://`` client whose worker is SIGKILLed keeps reading what this host
holds (issue 14, item 4 for the client as for the mount): past the metadata TTL, whole and ranged
reads, ``open().read()`` and ``info`` of fully cached files answer from the client's last known
metadata and the page files; a read that needs the worker fails at once; a restarted worker is
used again."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from tests.conftest import DatasetFactory

from tidepool.client import TidepoolFileSystem
from tidepool_lab.testbed.workerproc import WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TTL = 1.0
OUTAGE = float(os.environ.get("TIDEPOOL_TEST_OUTAGE_SECONDS", 3 * TTL))
"""How long the worker stays dead before the reads (issue 14 asks for 5 minutes: run with
``TIDEPOOL_TEST_OUTAGE_SECONDS=300`` and ``--timeout 900``: both tests pass; 3x the TTL by
default, which already outlives all metadata)."""


def test_a_killed_worker_leaves_cached_files_readable_through_the_client(
    make_dataset: DatasetFactory, tmp_path: Path
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
        fs = TidepoolFileSystem(worker.endpoint, skip_instance_cache=True)
        cached = [n for n in files if "uncached" not in n]
        for n in cached:
            assert fs.cat_file(f"ds/{n}") == files[n]
        time.sleep(0.5)  # the worker writes the pages it served
        assert all(fs.read_local(f"ds/{n}", fs.info(f"ds/{n}"), 0, 1) for n in cached)
        worker.kill()
        time.sleep(OUTAGE)  # every piece of metadata the client holds is past its TTL
        for n in cached:
            data = files[n]
            assert fs.cat_file(f"ds/{n}") == data
            assert fs.cat_file(f"ds/{n}", 1000, 70_000) == data[1000:70_000]
            assert fs.info(f"ds/{n}")["size"] == len(data)
            with fs.open(f"ds/{n}") as f:
                assert f.read() == data
        t0 = time.monotonic()
        with pytest.raises(OSError):
            fs.cat_file("ds/d/uncached.bin")
        assert time.monotonic() - t0 < 2.0
        port = int(worker.endpoint.rsplit(":", 1)[1])
        with WorkerProcess.start([spec], tmp_path / "w2.log", port=port):
            assert fs.cat_file("ds/d/uncached.bin") == files["d/uncached.bin"]
    finally:
        worker.stop()
