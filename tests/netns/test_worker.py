"""A real Tidepool worker on one edge host, read from another host of its pool over the LAN."""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
from pathlib import Path

import pytest

from tidepool_lab.testbed.netns import Lab
from tidepool_lab.testbed.specs import S3DatasetSpec, write_secrets_dir

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUCKET = "workerds"
SIZE = 3 * 2**20 + 12345

CLIENT = """\
import hashlib, os, sys
from tidepool.client import TidepoolFileSystem
fs = TidepoolFileSystem(endpoint=sys.argv[1], token=os.environ["TIDEPOOL_TOKEN"])
data = fs.cat_file(sys.argv[2])
print(hashlib.md5(data).hexdigest(), len(data))
"""


def _spec(lab: Lab, tmp: Path) -> tuple[Path, Path]:
    spec = S3DatasetSpec(
        url=f"s3://{BUCKET}/data/",
        prefetch="off",  # these tests count what the origin is asked
        endpoint=lab.origin.endpoint,
        cache=tmp / "cache",
        kind="tidepool",
    ).write(tmp / "spec.yaml")
    return spec, write_secrets_dir(tmp / "secrets", lab.origin.access_key, lab.origin.secret_key)


def test_worker_serves_its_pool_over_the_lan(lab: Lab, tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    lab.origin.create_bucket(BUCKET)
    lab.origin.upload(BUCKET, {"data/models/m.bin": data})
    spec, secrets_dir = _spec(lab, tmp_path)
    token = secrets.token_hex(16)
    server, readers = lab.hosts["pool-a"][0], lab.hosts["pool-a"][1:]
    worker = server.start_worker(
        [spec],
        tmp_path / "worker.log",
        token=token,
        extra_args=["--secrets-dir", str(secrets_dir), "--state-dir", str(tmp_path / "state")],
    )
    try:
        assert worker.endpoint == f"http://{server.address}:8433"
        wan = []
        for reader in readers:  # cold (through the worker, from the origin), then warm
            before = lab.wan.stats()["payload_down"]
            result = reader.run(
                [sys.executable, "-c", CLIENT, worker.endpoint, "ds/models/m.bin"],
                env={**os.environ, "TIDEPOOL_TOKEN": token},
                timeout=60,
            )
            assert result.returncode == 0, result.stderr.decode()[-2000:]
            assert result.stdout.decode().split() == [hashlib.md5(data).hexdigest(), str(SIZE)]
            wan.append(lab.wan.stats()["payload_down"] - before)
        assert wan[0] >= SIZE  # the cold read crossed the WAN once ...
        assert wan[1] < SIZE // 10  # ... the warm read from another host did not
        assert token not in (tmp_path / "worker.log").read_text()
    finally:
        worker.stop()
