"""The scale benchmark (issue 16) runs end to end on a small dataset: every row it reports read
the origin's bytes, found every file, and served a cached file after a SIGKILL with the origin
moved away (figures are not checked: tests never judge wall-clock time)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tidepool_lab.bench import scale

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_scale_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    rc = scale.main(
        [
            "--files", "300", "--files", "600", "--dirs", "7", "--sample", "200",
            "--workdir", str(tmp_path / "work"), "--json", str(out),
        ]
    )  # fmt: skip
    res = json.loads(out.read_text())
    assert rc == 0 and res["verified"]
    assert [r["files"] for r in res["rows"]] == [300, 600]
    for row in res["rows"]:
        assert row["find_files"] == row["find_held_files"] == row["files"]
        assert row["warm_verified"] and row["warm_same_host_hits"] >= row["warm_files"] == 200
        assert row["restart_served_from_cache"]
        assert row["disk_mib"] > 0 and row["worker_rss_after_load_mib"] > 0
        assert row["gateway"]["keys"] == row["files"]
        assert set(scale.targets(row)) == {
            "worker_rss",
            "disk",
            "restart",
            "find",
            "load",
            "warm",
            "gateway_rss",
        }
    assert not (tmp_path / "work" / "n300").exists(), "a case's files were kept"


def test_scale_benchmark_refuses_bad_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        scale.main(["--files", "0"])
    assert e.value.code == 2
    assert "--files" in capsys.readouterr().err
