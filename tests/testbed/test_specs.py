"""The spec builder the tests and benchmarks share: its output loads as a user's file does."""

from __future__ import annotations

import pytest

from tidepool.spec.loader import load_text
from tidepool_lab.testbed.specs import S3DatasetSpec

BASE = {"url": "s3://bkt/data/", "endpoint": "http://127.0.0.1:9000", "cache": "/tmp/tp-cache"}


@pytest.mark.parametrize("credentials", ["secret_ref", "secret_doc", "inline"])
def test_every_credential_style_loads(credentials: str) -> None:
    spec = S3DatasetSpec(
        **BASE,  # type: ignore[arg-type]
        credentials=credentials,  # type: ignore[arg-type]
        access_key="AKID-1",
        secret_key="sk-2",
        page_size="64Ki",
        metadata_sync={"ttl": "30s"},
        watermarks=("0.9", "0.5"),
    )
    env = {"TIDEPOOL_SECRET_CLOUD_ACCESS": "AKID-1", "TIDEPOOL_SECRET_CLOUD_SECRET": "sk-2"}
    bundle = load_text(spec.text(), environ=env if credentials == "secret_ref" else {})
    (cfg,) = list(bundle.datasets.values())
    assert cfg.runtime.page_size == 64 * 1024 and cfg.runtime.metadata_ttl == 30.0
    (tier,) = cfg.runtime.tiers
    assert (tier.path, tier.high, tier.low) == ("/tmp/tp-cache", 0.9, 0.5)
    (mount,) = cfg.mounts
    assert mount.root == "bkt/data" and "sk-2" in mount.secret_values


def test_pools_replicas_and_tidepool_kinds() -> None:
    spec = S3DatasetSpec(
        **BASE,  # type: ignore[arg-type]
        kind="tidepool",
        nodepools=["factory-1"],
        replicas=3,
        data_replicas=2,
        name="images",
    )
    env = {"TIDEPOOL_SECRET_CLOUD_ACCESS": "a", "TIDEPOOL_SECRET_CLOUD_SECRET": "b"}
    bundle = load_text(spec.text(), environ=env)
    assert bundle.runtime_models["images"].kind == "CacheRuntime"
    cfg = bundle.datasets["images"]
    assert cfg.nodepools == ("factory-1",) and cfg.runtime.data_replicas == 2
