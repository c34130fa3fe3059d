"""The demo's and the benchmark's charts, drawn from fixed result dicts (no benchmark runs)."""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from tidepool_lab.bench.options import add_bench_args
from tidepool_lab.bench.plot import main as bench_main
from tidepool_lab.bench.plot import plot_bench
from tidepool_lab.demo.options import add_demo_args
from tidepool_lab.demo.plot import main as demo_main
from tidepool_lab.demo.plot import plot_demo, pyplot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk (which must come first)."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    assert data.endswith(b"IEND\xaeB`\x82")  # a complete file ends with its IEND chunk
    return width, height


def scenario(seconds: float, read: float) -> dict[str, Any]:
    return {
        "seconds": seconds,
        "read_seconds": read,
        "files_per_s": 300 / seconds,
        "read_p50_ms": 1.0,
        "read_p99_ms": 2.0,
        "verified": True,
    }


DEMO: dict[str, Any] = {
    "files": 300,
    "bytes": 30_720_000,
    "wan": {"rtt_ms": 40.0, "rate_mbit": 100.0},
    "origin": "juicefs",
    "model": "none",
    "scenarios": {
        "direct": scenario(18.2, 17.1),
        "cold": scenario(18.9, 17.8),
        "warm": scenario(1.16, 0.058),
    },
}

BENCH: dict[str, Any] = {
    "wan": {"rtt_ms": 40.0, "rate_mbit": 100.0},
    "files": 600,
    "file_kib": 100,
    "big_mib": 256,
    "direct_small": {"seconds": 34.5, "files_per_s": 17, "p50_ms": 57, "p99_ms": 80},
    "cold_small": {"seconds": 35.5, "files_per_s": 17, "p50_ms": 59, "p99_ms": 82},
    "warm_small_http": {"seconds": 0.41, "files_per_s": 1460, "p50_ms": 0.68, "p99_ms": 1.2},
    "warm_small_local": {"seconds": 0.036, "files_per_s": 16600, "p50_ms": 0.056, "p99_ms": 0.1},
    "direct_big": {"seconds": 22.0, "first_byte_s": 0.79, "mb_per_s": 12.0},
    "cold_big": {"seconds": 22.0, "first_byte_s": 0.19, "mb_per_s": 12.0},
    "warm_big_http": {"seconds": 0.25, "first_byte_s": 0.001, "mb_per_s": 1068.0},
    "warm_big_local": {"seconds": 0.12, "first_byte_s": 0.0005, "mb_per_s": 2124.0},
}


@pytest.mark.parametrize("model", ["none", "resnet18"])
def test_demo_chart_is_a_png_of_the_expected_size(tmp_path: Path, model: str) -> None:
    report = {**DEMO, "model": model}
    out = plot_demo(report, tmp_path / "charts" / "demo.png")
    assert out == tmp_path / "charts" / "demo.png"
    assert png_size(out) == (800, 450)
    assert out.stat().st_size < 300_000


def test_demo_chart_of_fewer_scenarios_and_an_empty_result(tmp_path: Path) -> None:
    only = {**DEMO, "scenarios": {"warm": DEMO["scenarios"]["warm"]}}
    assert png_size(plot_demo(only, tmp_path / "warm.png")) == (800, 450)
    with pytest.raises(ValueError, match="no scenario"):
        plot_demo({**DEMO, "scenarios": {}}, tmp_path / "none.png")


def test_bench_chart_is_a_png_of_the_expected_size(tmp_path: Path) -> None:
    out = plot_bench(BENCH, tmp_path / "bench.png")
    assert png_size(out) == (1000, 450)
    assert out.stat().st_size < 300_000
    skipped = {k: v for k, v in BENCH.items() if not k.startswith("direct")}
    assert png_size(plot_bench(skipped, tmp_path / "skip-direct.png")) == (1000, 450)
    with pytest.raises(ValueError, match="no benchmark row"):
        plot_bench(
            {k: v for k, v in BENCH.items() if not isinstance(v, dict) or k == "wan"},
            tmp_path / "empty.png",
        )


def test_redraw_from_json(tmp_path: Path) -> None:
    (tmp_path / "demo.json").write_text(json.dumps(DEMO))
    (tmp_path / "bench.json").write_text(json.dumps(BENCH))
    assert demo_main([str(tmp_path / "demo.json"), str(tmp_path / "d.png")]) == 0
    assert bench_main([str(tmp_path / "bench.json"), str(tmp_path / "b.png")]) == 0
    assert png_size(tmp_path / "d.png") == (800, 450)
    assert png_size(tmp_path / "b.png") == (1000, 450)
    assert demo_main([]) == 2


def test_plot_options_parse() -> None:
    for add in (add_demo_args, add_bench_args):
        p = argparse.ArgumentParser()
        add(p)
        assert p.parse_args(["--plot", "docs/x.png"]).plot == Path("docs/x.png")
        assert p.parse_args([]).plot is None


def test_missing_matplotlib_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(SystemExit, match=r"pip install 'tidepool\[plot\]'"):
        pyplot()
