"""The pure parts of the pool's rebalance (:mod:`tidepool.worker.rebalance`), without servers:
the byte-rate bound on a virtual clock, what a peer's listing entry may hold, the status line
under the ``tidepool status`` table and the ``--rebalance-rate`` flag."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from tidepool.cli import main
from tidepool.console import rebalance_note, status_view
from tidepool.core.errors import ConfigError
from tidepool.worker.rebalance import RateLimit, _entry_info
from tidepool.worker.server import check_rebalance_rate
from tidepool_lab.testbed.specs import S3DatasetSpec


class VirtualTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_rate_limit_spaces_bytes_at_the_rate() -> None:
    t = VirtualTime()
    limit = RateLimit(1000, clock=t.clock, sleep=t.sleep)

    async def take_all() -> None:
        for n in (500, 500, 2000, 1000):
            await limit.take(n)

    asyncio.run(take_all())
    # the first take starts at once; each one after waits for the bytes booked before it
    assert t.slept == [0.5, 0.5, 2.0]
    assert t.now == pytest.approx(103.0)


def test_rate_limit_does_not_save_up_idle_time() -> None:
    t = VirtualTime()
    limit = RateLimit(1000, clock=t.clock, sleep=t.sleep)
    assert limit.reserve(1000) == 0.0
    t.now += 60.0  # idle for a minute
    assert limit.reserve(1000) == 0.0
    assert limit.reserve(1000) == pytest.approx(1.0)  # no burst of a minute's worth


def test_rate_limit_zero_never_waits() -> None:
    assert RateLimit(0).reserve(1 << 40) == 0.0


def test_a_negative_rate_is_refused_naming_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"--rebalance-rate -1 is negative.*64Mi.*0"):
        check_rebalance_rate(-1)
    check_rebalance_rate(0)


def test_a_bad_rate_flag_names_the_value_and_the_forms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = S3DatasetSpec(
        url="s3://bucket/data/",
        endpoint="http://127.0.0.1:9",
        cache=tmp_path / "cache",
        credentials="inline",
        access_key="AKIDEXAMPLE",
        secret_key="not-a-real-secret",
    ).write(tmp_path / "ds.yaml")
    assert main(["up", "-f", str(spec), "--rebalance-rate", "fast"]) == 2
    err = capsys.readouterr().err
    assert "--rebalance-rate 'fast' is not a byte rate" in err and "64Mi" in err


@pytest.mark.parametrize(
    "entry",
    [
        None,
        [],
        {"path": "a", "version": "v", "size": -1},
        {"path": "a", "version": "v", "size": True},
        {"path": "a", "version": "", "size": 1},
        {"path": "", "version": "v", "size": 1},
        {"path": "../etc/passwd", "version": "v", "size": 1},
        {"path": "a//b", "version": "v", "size": 1},
        {"path": "a", "version": "v", "size": 1, "mtime": "yesterday"},
        {"path": "a\x00b", "version": "v", "size": 1},
    ],
)
def test_malformed_listing_entries_are_refused(entry: Any) -> None:
    assert _entry_info(entry) is None


def test_a_listing_entry_becomes_file_metadata() -> None:
    got = _entry_info({"path": "d/f.bin", "version": "abc", "size": 5, "mtime": 1.5})
    assert got == {"name": "d/f.bin", "type": "file", "size": 5, "version": "abc", "mtime": 1.5}


def _status(rebalance: dict[str, Any]) -> dict[str, Any]:
    return {
        "dataset": "images-train-2026",
        "ufsTotal": "1023.9 GiB",
        "fileNum": "123456",
        "cacheStates": {
            "cached": "1023.9 GiB",
            "cacheCapacity": "1023.9 TiB",
            "cachedPercentage": "100.0%",
            "cacheHitRatio": "100.0%",
        },
        "origin": {"state": "reachable", "message": ""},
        "raw": {"rebalance": rebalance},
    }


def test_the_status_shows_a_running_or_stopped_rebalance_within_80_columns() -> None:
    running = {
        "state": "running",
        "files_done": 123456,
        "files_total": 999999,
        "bytes_done": 1023 << 30,
        "errors": 12,
    }
    stopped = {**running, "state": "stopped-full"}
    for r, words in ((running, "rebalancing 123456/999999 files"), (stopped, "cache full")):
        out = io.StringIO()
        Console(file=out, width=80, color_system=None).print(
            status_view([_status(r)], "http://127.0.0.1:8433")
        )
        text = out.getvalue()
        assert words in text, text
        assert max(len(line) for line in text.splitlines()) <= 80, text
        line = rebalance_note("images-train-2026", r)
        assert len(line) <= 80, line
    for state in ("done", "idle", "off"):
        assert rebalance_note("ds", {**running, "state": state}) == ""
    assert rebalance_note("ds", {}) == ""


@pytest.mark.integration
def test_held_listing_pages_read_the_metadata_by_range(
    make_dataset: Any, start_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass pages through the held files in path order, every file once, each page a range
    of the metadata store's rows: the dataset's files are never listed whole (nor sorted) for
    a page, and a page looks at no more than SCAN_FACTOR times its entries."""
    from tidepool.client import TidepoolFileSystem
    from tidepool.worker import metadata
    from tidepool.worker.held import SCAN_FACTOR, held_page

    files = {f"d{i % 3}/f{i:03d}": bytes([i]) * (i + 1) for i in range(40)}
    w = start_worker([make_dataset(files)])
    fs = TidepoolFileSystem(endpoint=w.endpoint, skip_instance_cache=True)
    for name, data in files.items():
        assert fs.cat_file(f"ds/{name}") == data
    svc = w.worker.services["ds"]
    w.call(svc.flush_writes())
    fs.ls("ds/d1")  # a directory row and files held: the walk skips the one, lists the others
    read: list[int] = []  # rows of each range read of the metadata store
    store = svc.metadata.store
    real_range = store.rows_from

    def counted(*args: Any, **kw: Any) -> list[tuple[str, Any, float]]:
        rows = real_range(*args, **kw)
        read.append(len(rows))
        return rows

    monkeypatch.setattr(metadata, "KNOWN_BATCH", 8)
    monkeypatch.setattr(store, "rows_from", counted)
    pages = 0

    async def walk() -> list[str]:
        listed: list[str] = []
        cursor: str | None = ""
        while cursor is not None:
            nonlocal pages
            pages += 1
            page = held_page(svc, "any", cursor, 7)
            assert len(page["files"]) <= 7
            assert page["next"] is None or page["next"] > cursor
            listed += [f["path"] for f in page["files"]]
            cursor = page["next"]
        return listed

    assert w.call(walk()) == sorted(files)
    # a page of 7 reads batches of 8 rows up to the 28 it may look at, never the dataset's 40
    assert max(read) <= 8 and sum(read) <= (SCAN_FACTOR * 7 // 8 + 2) * 8 * pages
