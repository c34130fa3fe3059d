"""A client whose node pool may not cache a dataset reads its origin directly, never a worker."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from tidepool.client import TidepoolFileSystem
from tidepool_lab.testbed.specs import S3DatasetSpec

pytestmark = pytest.mark.integration


def factory_spec(bucket: str, endpoint: str, path: Path) -> Path:
    """A dataset only pool ``factory-1`` may cache; no runtime document."""
    return S3DatasetSpec(
        url=f"s3://{bucket}/data/", endpoint=endpoint, cache=None, nodepools=["factory-1"]
    ).write(path)


def test_client_outside_the_allowed_pools_reads_the_origin(
    make_dataset: Any,
    s3_server: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    files = {"a/x.bin": os.urandom(5000), "b.bin": os.urandom(2_000_000)}
    make_dataset(files)
    spec = factory_spec(make_dataset.bucket, s3_server.endpoint, tmp_path / "spec.yaml")
    monkeypatch.setenv("TIDEPOOL_SECRET_CLOUD_ACCESS", s3_server.access_key)
    monkeypatch.setenv("TIDEPOOL_SECRET_CLOUD_SECRET", s3_server.secret_key)
    caplog.set_level(logging.WARNING, logger="tidepool.client.fs")
    # the endpoint is a closed port: any attempt to use a worker would fail loudly
    fs = TidepoolFileSystem(
        "http://127.0.0.1:9", nodepool="factory-2", spec=str(spec), skip_instance_cache=True
    )
    assert sorted(fs.find("ds")) == ["ds/a/x.bin", "ds/b.bin"]
    assert fs.ls("ds", detail=False) == ["ds/a", "ds/b.bin"]
    for name, data in files.items():
        assert fs.cat_file(f"ds/{name}") == data
        assert fs.cat_file(f"ds/{name}", 10, 20) == data[10:20]
    with fs.open("ds/b.bin") as f:
        f.seek(1_000_000)
        assert f.read(100) == files["b.bin"][1_000_000:1_000_100]
    said = [
        r.getMessage() for r in caplog.records if "reading it from its origin" in r.getMessage()
    ]
    assert len(said) == 1 and "factory-2" in said[0] and "factory-1" in said[0]
    assert s3_server.secret_key not in caplog.text


def test_client_in_an_allowed_pool_does_not_go_direct(
    make_dataset: Any, s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_dataset({"f": b"x"})
    spec = factory_spec(make_dataset.bucket, s3_server.endpoint, tmp_path / "spec.yaml")
    monkeypatch.setenv("TIDEPOOL_SECRET_CLOUD_ACCESS", s3_server.access_key)
    monkeypatch.setenv("TIDEPOOL_SECRET_CLOUD_SECRET", s3_server.secret_key)
    fs = TidepoolFileSystem(
        "http://127.0.0.1:9", nodepool="factory-1", spec=str(spec), skip_instance_cache=True
    )
    with pytest.raises(ConnectionError, match="tidepool up"):
        fs.cat_file("ds/f")  # it uses its pool's worker (here: none is running)
