"""The large-file benchmark runs end to end on a small file and a fast link, and every case it
reports read the origin's bytes (figures are not checked: tests never judge wall-clock time)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tidepool_lab.bench import large

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.skipif(
    shutil.which("fusermount3") is None or not Path("/dev/fuse").exists(), reason="needs FUSE"
)
def test_large_file_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "large.json"
    rc = large.main(
        [
            "--big-mib", "8", "--rtt-ms", "2", "--rate-mbit", "800", "--repeats", "1",
            "--huge-gib", "0", "--workdir", str(tmp_path / "work"), "--json", str(out),
        ]
    )  # fmt: skip
    res = json.loads(out.read_text())
    assert rc == 0 and res["verified"]
    for case in (
        "direct", "filecache_cold", "filecache_warm", "tidepool_cold", "tidepool_warm_local",
        "tidepool_warm_http", "tidepool_warm_mount", "random_local", "random_mount",
    ):  # fmt: skip
        assert res[case]["verified"], case
    assert res["layout"]["pages"]["verified"] and res["layout"]["extent"]["verified"]
    assert set(large.targets(res)) >= {"cold_first_byte", "warm_local", "warm_mount"}
