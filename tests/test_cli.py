"""The ``tidepool`` command end to end: validate, up, ls, cat, load, status, demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tidepool.cli import main
from tidepool_lab.testbed.specs import S3DatasetSpec, write_secrets_dir
from tidepool_lab.testbed.workerproc import WorkerProcess

SEED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "seed-demo.yaml"
SEED_COPY = Path(__file__).parent / "spec" / "fixtures" / "seed-demo.yaml"


def seed() -> Path:
    return SEED if SEED.exists() else SEED_COPY


def test_validate_seed_without_secret_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-f", str(seed())]) == 2
    err = capsys.readouterr().err
    assert "mysecret" in err and "seed-demo.yaml" in err
    assert "spec.mounts[0].encryptOptions[0]" in err
    assert "TIDEPOOL_SECRET_MYSECRET_FS_OSS_ACCESSKEYID" in err


def test_validate_seed_with_env_secret_hides_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDEPOOL_SECRET_MYSECRET_FS_OSS_ACCESSKEYID", "AKID-very-secret-1")
    monkeypatch.setenv("TIDEPOOL_SECRET_MYSECRET_FS_OSS_ACCESSKEYSECRET", "sk-very-secret-2")
    assert main(["validate", "-f", str(seed())]) == 0
    out = capsys.readouterr()
    text = out.out + out.err
    assert "dataset images" in text and "np763275de88194dabbb34b86ffaa2615e" in text
    assert "AKID-very-secret-1" not in text and "sk-very-secret-2" not in text
    assert "Pod resnet" in text  # the skipped document is mentioned


def test_bad_spec_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: data.fluid.io/v1alpha1\nkind: AlluxioRuntime\nmetadata: {name: x}\n"
        "spec:\n  tieredstore:\n    levels:\n      - {mediumtype: DISK, path: /tmp/x, quota: 1Gi}\n"
    )
    assert main(["validate", "-f", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "mediumtype" in err and "DISK" in err


def tidepool(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "tidepool.cli", *args], capture_output=True, env=e, timeout=120
    )


@pytest.mark.integration
def test_up_ls_cat_load_status(make_dataset: Any, s3_server: Any, tmp_path: Path) -> None:
    files = {"x/a.bin": os.urandom(1000), "x/b.bin": os.urandom(2_000_000), "c.txt": b"hello\n"}
    make_dataset(files)
    spec = S3DatasetSpec(
        url=f"s3://{make_dataset.bucket}/data/",
        endpoint=s3_server.endpoint,
        cache=tmp_path / "cache",
        kind="tidepool",
    ).write(tmp_path / "spec.yaml")
    write_secrets_dir(tmp_path / "secrets", s3_server.access_key, s3_server.secret_key)
    with WorkerProcess.start(
        [spec], tmp_path / "w.log", extra_args=["--secrets-dir", str(tmp_path / "secrets")]
    ) as w:
        env = {"TIDEPOOL_ENDPOINT": w.endpoint}
        r = tidepool("ls", "ds", env=env)
        assert r.returncode == 0, r.stderr
        assert r.stdout.decode().split() == ["ds/c.txt", "ds/x/"]
        r = tidepool("ls", "-R", "-l", "tidepool://ds", env=env)
        assert "ds/x/b.bin" in r.stdout.decode()
        r = tidepool("cat", "ds/x/b.bin", env=env)
        assert r.returncode == 0 and r.stdout == files["x/b.bin"]
        r = tidepool("load", "ds", env=env)
        assert r.returncode == 0, r.stderr
        assert b"Complete: 3/3 files" in r.stdout
        r = tidepool("status", "--json", env=env)
        status = json.loads(r.stdout)[0]
        assert status["cacheStates"]["cachedPercentage"] == "100.0%"
        r = tidepool("status", env=env)
        assert r.returncode == 0 and b"100.0%" in r.stdout
        r = tidepool("cat", "ds/nope.bin", env=env)
        assert r.returncode == 1 and b"nope.bin" in r.stderr
        log = (tmp_path / "w.log").read_text()
        assert s3_server.secret_key not in log


def test_client_commands_explain_a_missing_worker() -> None:
    r = tidepool("ls", "ds", env={"TIDEPOOL_ENDPOINT": "http://127.0.0.1:9"})
    assert r.returncode == 1
    assert b"http://127.0.0.1:9" in r.stderr and b"tidepool up" in r.stderr


@pytest.mark.integration
@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo.json"
    r = tidepool(
        "demo",
        "--files",
        "12",
        "--size-kib",
        "20",
        "--rtt-ms",
        "10",
        "--rate-mbit",
        "200",
        "--json",
        str(out),
    )
    assert r.returncode == 0, r.stdout.decode()[-2000:] + r.stderr.decode()[-2000:]
    report = json.loads(out.read_text())
    assert report["files"] == 12
    assert set(report["scenarios"]) == {"direct", "cold", "warm"}
    assert all(s["verified"] for s in report["scenarios"].values())
    for key in ("seconds", "read_seconds", "files_per_s", "read_p50_ms", "read_p99_ms"):
        assert key in report["scenarios"]["warm"]
    assert set(report["speedup"]) == {
        "warm_vs_direct",
        "cold_vs_direct",
        "end_to_end_warm_vs_direct",
    }
    assert report["wan"] == {"rtt_ms": 10.0, "rate_mbit": 200.0}


def test_validate_reports_a_foreign_tier_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The spec is fine, but its tier is a user's directory: validate says so (exit 2) and
    touches nothing there."""
    home = tmp_path / "home"
    (home / "tmp").mkdir(parents=True)
    (home / "tmp" / "thesis.tex").write_text("chapter 1")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "apiVersion: data.fluid.io/v1alpha1\nkind: Dataset\nmetadata: {name: ds}\n"
        "spec:\n  mounts: [{mountPoint: 'local:///data', name: data, path: /}]\n---\n"
        "apiVersion: data.fluid.io/v1alpha1\nkind: AlluxioRuntime\nmetadata: {name: ds}\n"
        f"spec:\n  tieredstore:\n    levels:\n      - {{mediumtype: SSD, path: {home}, "
        "quota: 1Gi}\n"
    )
    assert main(["validate", "-f", str(spec)]) == 2
    err = capsys.readouterr().err
    assert f"problem: dataset ds: tier SSD directory {home} is not empty" in err
    assert "'tmp'" in err
    assert sorted(p.name for p in home.rglob("*")) == ["thesis.tex", "tmp"]
    (home / "tmp" / "thesis.tex").unlink()
    (home / "tmp").rmdir()
    assert main(["validate", "-f", str(spec)]) == 0
    assert list(home.iterdir()) == []
