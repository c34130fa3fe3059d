"""SIGKILL and restart: the cache comes back and is served without origin reads."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from tidepool.client import TidepoolFileSystem
from tidepool_lab.testbed.specs import S3DatasetSpec
from tidepool_lab.testbed.workerproc import WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def metric(fs: TidepoolFileSystem, name: str) -> float:
    total = 0.0
    for line in fs.metrics_text().splitlines():
        if line.split(" ")[0].split("{")[0] == name and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_cached(fs: TidepoolFileSystem, want: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    cached = 0
    while time.monotonic() < deadline:
        cached = fs.status("ds", refresh=False)["raw"]["cached_bytes"]
        if cached >= want:
            return int(cached)
        time.sleep(0.05)
    return int(cached)


@pytest.fixture
def spec(make_dataset: Any, s3_server: Any, tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    files = {f"img/{i:03d}.jpg": os.urandom(50_000 + i * 7) for i in range(40)}
    files["big.bin"] = os.urandom(3_000_000)
    make_dataset(files)
    path = tmp_path / "spec.yaml"
    S3DatasetSpec(
        url=f"s3://{make_dataset.bucket}/data/",
        endpoint=s3_server.endpoint,
        cache=tmp_path / "cache",
        credentials="secret_doc",
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        page_size="256Ki",
        watermarks=("0.95", "0.7"),
    ).write(path)
    return path, files


def read_all(fs: TidepoolFileSystem, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        assert fs.cat_file(f"ds/{name}") == data, name


def test_sigkill_then_restart_serves_cache_without_origin(spec: Any, tmp_path: Path) -> None:
    path, files = spec
    total = sum(len(v) for v in files.values())
    with WorkerProcess.start([path], tmp_path / "w1.log") as w1:
        fs = TidepoolFileSystem(w1.endpoint, local_reads=False, skip_instance_cache=True)
        fs.find("ds")
        read_all(fs, files)
        assert wait_cached(fs, total) == total
        w1.kill()
    with WorkerProcess.start([path], tmp_path / "w2.log") as w2:
        fs = TidepoolFileSystem(w2.endpoint, local_reads=False, skip_instance_cache=True)
        read_all(fs, files)
        assert metric(fs, "tidepool_origin_requests_total") == 0
        assert metric(fs, "tidepool_cache_misses_total") == 0
        assert metric(fs, "tidepool_bytes_served_total") == total


def test_sigkill_during_load_restarts_cleanly(spec: Any, tmp_path: Path) -> None:
    path, files = spec
    with WorkerProcess.start([path], tmp_path / "w1.log") as w1:
        fs = TidepoolFileSystem(w1.endpoint, local_reads=False, skip_instance_cache=True)
        job = fs.start_load("ds", [], concurrency=4)
        deadline = time.monotonic() + 30
        while fs.load_progress(job["id"])["files_done"] < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        cached_before = fs.status("ds", refresh=False)["raw"]["cached_bytes"]
        w1.kill()
    with WorkerProcess.start([path], tmp_path / "w2.log") as w2:
        assert not list((tmp_path / "cache" / "tmp").glob("*"))
        fs = TidepoolFileSystem(w2.endpoint, local_reads=False, skip_instance_cache=True)
        assert fs.status("ds", refresh=False)["raw"]["cached_bytes"] >= cached_before
        read_all(fs, files)
