"""What the CLI prints, without servers: the status table fits 80 columns in every state, the
notes name the origin's problem, a load's plain progress is a line per 10 %."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from tidepool.console import check_lines, decile, follow_load, progress_line, status_view


def status(name: str, state: str, total: str, pct: str, message: str = "") -> dict[str, Any]:
    return {
        "dataset": name,
        "ufsTotal": total,
        "fileNum": "123456",
        "ufsTotalAsOf": "2026-12-05T09:00:00Z" if state == "unreachable" else None,
        "cacheStates": {
            "cached": "1023.9 GiB",
            "cacheCapacity": "1023.9 TiB",
            "cachedPercentage": pct,
            "cacheHitRatio": "100.0%",
            "localHitRatio": "99.9%",
            "remoteHitRatio": "0.1%",
        },
        "origin": {"state": state, "message": message},
        "raw": {"origin_reachable": state != "unreachable", "stale_metadata_served": 7},
    }


STATUSES = [
    status("images-train-2026", "reachable", "1023.9 GiB", "100.0%"),
    status(
        "lake",
        "no-bucket",
        "[Unknown]",
        "-",
        "bucket 'nolake' does not exist at http://127.0.0.1:19731 (dataset 'lake'); check the "
        "bucket name in the mountPoint and the endpoint",
    ),
    status("offline", "unreachable", "66.2 MiB", "22.7%", "unreachable since 2026-12-05"),
    status("empty", "empty", "0 B", "-", "no objects under s3://b/nothing/"),
]


def render(statuses: list[dict[str, Any]], width: int = 80, wide: bool = False) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(
        status_view(statuses, "http://127.0.0.1:8433", wide=wide)
    )
    return out.getvalue()


def test_the_status_table_fits_80_columns_uncut() -> None:
    text = render(STATUSES)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    assert "…" not in text, text  # nothing cut ("CAPACI…", "reach…")
    header = next(line for line in lines if "DATASET" in line)
    for column in ("TOTAL", "CACHED", "CACHED %", "HIT RATIO", "ORIGIN"):
        assert column in header
    assert "reachable" in text and "NO BUCKET" in text and "DOWN" in text and "EMPTY" in text
    # the notes say what the words mean, wrapped within 80 columns
    assert "lake: no bucket: bucket 'nolake' does not exist" in text
    assert "offline: total as measured at 2026-12-05T09:00:00Z" in text


def test_wide_adds_columns() -> None:
    text = render(STATUSES, width=200, wide=True)
    header = next(line for line in text.splitlines() if "DATASET" in line)
    for column in ("FILES", "CAPACITY", "LOCAL HIT", "REMOTE HIT", "STALE META"):
        assert column in header
    assert "123456" in text and "1023.9 TiB" in text


def job(done: int, total: int, phase: str = "Executing") -> dict[str, Any]:
    return {
        "phase": phase,
        "files_done": done // 10,
        "files_total": total // 10,
        "bytes_done": done,
        "bytes_total": total,
        "rate_bytes_s": 1e6,
        "elapsed_s": 1.0,
    }


def test_plain_progress_is_a_line_per_tenth() -> None:
    polls = iter([job(0, 1000), *(job(d, 1000) for d in range(50, 1000, 50))])
    polls = iter([*polls, job(1000, 1000, "Complete")])
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None, force_terminal=False)
    last = follow_load(lambda: next(polls), "ds", console, interval=0)
    assert last["phase"] == "Complete"
    lines = out.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == [f"{p}%" for p in range(0, 101, 10)]
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()
    assert lines[3] == "load ds: 30% 30/100 files, 300 B of 1000 B, 1.0 MB/s, ETA 0s"


def test_progress_line_and_decile() -> None:
    assert decile(job(0, 0)) == 0 and decile(job(999, 1000)) == 9 and decile(job(5, 5)) == 10
    assert "ETA 1m40s" in progress_line("ds", job(0, 100_000_000))


def test_check_lines_verdict() -> None:
    class R:
        def __init__(self, ok: bool) -> None:
            self.ok = ok

        def line(self) -> str:
            return "x: OK" if self.ok else "x: refused: no"

    assert check_lines([R(True)])[-1] == "all 1 mount(s) answer"
    assert check_lines([R(True), R(False)])[-1] == "1 of 2 mount(s) cannot be used as they are"
