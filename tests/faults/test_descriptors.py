"""A worker run out of file descriptors by idle clients keeps its cache.

Issue 15 chained two faults: slow clients held enough connections to exhaust the worker's
descriptors, and the next page read failed with EMFILE, which the store took for corruption and
deleted the page. Here a real worker process runs under a low ``RLIMIT_NOFILE``; idle connections
exhaust it; a read arrives on a connection opened before. Whatever that read answers, no page is
dropped: once the idle clients go, the file is served from the cache with no origin request.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from tidepool_lab.testbed.workerproc import WorkerProcess

from .conftest import client, metric, wait_until, write_spec

pytestmark = pytest.mark.integration

PAGE = 64 << 10
LIMIT = 160


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_running_out_of_descriptors_drops_no_page(
    make_dataset: Any, s3_server: Any, tmp_path: Path
) -> None:
    data = os.urandom(3 * PAGE + 5)
    make_dataset({"f.bin": data})
    spec = write_spec(
        tmp_path / "spec.yaml", s3_server, make_dataset.bucket, s3_server.endpoint, tmp_path / "c"
    )
    with WorkerProcess.start([spec], tmp_path / "w.log", max_open_files=LIMIT) as w:
        fs = client(w.endpoint)
        assert fs.cat_file("ds/f.bin") == data
        wait_until(lambda: metric(fs, "tidepool_cache_pages") == 4, 10, "4 cached pages")
        pages = sorted(p for p in (tmp_path / "c").glob("ds/pages/**/*") if p.is_file())
        assert len(pages) == 4
        assert open_fds(w.pid) < LIMIT - 40, "the worker needs more descriptors than expected"

        host, port = w.endpoint.removeprefix("http://").rsplit(":", 1)
        early = http.client.HTTPConnection(host, int(port), timeout=30)
        early.request("GET", "/healthz")
        assert early.getresponse().read()  # keep-alive: this connection is already accepted
        idle: list[socket.socket] = []
        try:
            while open_fds(w.pid) < LIMIT and len(idle) < 2 * LIMIT:
                idle.append(socket.create_connection((host, int(port)), timeout=5))
                with contextlib.suppress(AssertionError):
                    wait_until(lambda: open_fds(w.pid) >= LIMIT, 0.05, "", step=0.01)
            assert open_fds(w.pid) >= LIMIT - 1, "could not exhaust the worker's descriptors"
            early.request("GET", "/v1/datasets/ds/files/f.bin", headers={"Range": "bytes=0-99"})
            during = early.getresponse()
            body = during.read()
            if during.status == 206:  # a pooled origin connection may still have answered
                assert body == data[:100]
        finally:
            for sock in idle:
                sock.close()
            early.close()
        wait_until(lambda: open_fds(w.pid) < LIMIT - 40, 10, "the idle connections to close")

        assert metric(fs, "tidepool_cache_read_errors_total") >= 1
        assert metric(fs, "tidepool_cache_corrupt_pages_total") == 0
        assert all(p.exists() for p in pages)
        origin = metric(fs, "tidepool_origin_requests_total")
        assert fs.cat_file("ds/f.bin") == data
        assert metric(fs, "tidepool_origin_requests_total") == origin
        assert w.proc.poll() is None
