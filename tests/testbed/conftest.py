"""Fixtures for the testbed's own tests: a real S3 origin, a blob server and WAN relays.

``s3_origin`` is meant to move to ``tests/conftest.py``; the others stay here. Every fixture
stops the processes it started, by PID, even when the test fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tidepool_lab.testbed import stop_process_group
from tidepool_lab.testbed.s3server import S3Server
from tidepool_lab.testbed.wan import WanRelay

os.environ.pop("AWS_CA_BUNDLE", None)


@pytest.fixture(scope="session")
def s3_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A started juicefs S3 server (the default origin kind) for the whole session."""
    server = S3Server.start(tmp_path_factory.mktemp("s3-origin"), kind="juicefs")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def blob_server() -> Iterator[tuple[str, int]]:
    """``(host, port)`` of ``blobserver.py`` running in its own process."""
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("blobserver.py"))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield ("127.0.0.1", port)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            stop_process_group(process)
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture
def start_relay(tmp_path: Path) -> Iterator[Callable[..., WanRelay]]:
    """Factory ``start_relay(target, rtt_ms=40, rate_mbit=100, **kw)``; all are stopped after."""
    started: list[WanRelay] = []

    def start(target: tuple[str, int], *args: Any, **kw: Any) -> WanRelay:
        kw.setdefault("workdir", tmp_path / "wan")
        relay = WanRelay.start(target, *args, **kw)
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.stop()


@pytest.fixture
def relay(start_relay: Callable[..., WanRelay], blob_server: tuple[str, int]) -> WanRelay:
    """A reference-WAN relay (40 ms RTT, 100 Mbit/s) in front of the blob server."""
    return start_relay(blob_server)
