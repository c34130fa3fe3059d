"""The fsspec client's find a page at a time (issue 16): ``find``, ``iter_find`` and the fsspec
semantics kept (``detail``, ``withdirs``, ``maxdepth``, ``glob``), on a real worker and S3."""

from __future__ import annotations

import gc
import itertools
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from tests.client.conftest import Serve, client
from tests.conftest import ThreadWorker

from tidepool.client import fs as client_fs

pytestmark = pytest.mark.integration

FILES = {f"d{i % 5}/e{i % 11}/f{i:05d}.bin": b"x" * (i % 17) for i in range(3000)}
FILES["top.txt"] = b"top"
FIND_ROUTE = "/v1/datasets/{ds}/find/{path}"


@pytest.fixture(scope="module")
def worker(serve: Serve) -> ThreadWorker:
    return serve({"ds": FILES})


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The client asks for pages of 97 entries (so 3,001 files take 31 pages)."""
    monkeypatch.setattr(client_fs, "FIND_PAGE", 97)
    yield 97


def _find_requests(worker: ThreadWorker) -> float:
    registry = worker.worker.metrics.registry
    value = registry.get_sample_value(
        "tidepool_http_requests_total", {"route": FIND_ROUTE, "status": "200"}
    )
    return value or 0.0


def test_find_pages_through_the_worker(worker: ThreadWorker, small_pages: int) -> None:
    fs = client(worker)
    before = _find_requests(worker)
    names = fs.find("ds")
    assert names == sorted(f"ds/{k}" for k in FILES)
    assert _find_requests(worker) - before == -(-len(FILES) // small_pages)
    detail = fs.find("tidepool://ds/d3", detail=True)
    assert isinstance(detail, dict)
    assert {k: v["size"] for k, v in detail.items()} == {
        f"ds/{k}": len(v) for k, v in FILES.items() if k.startswith("d3/")
    }
    assert list(detail) == sorted(detail)
    assert fs.find("ds/top.txt") == ["ds/top.txt"]
    assert fs.find("ds/nothing") == []


def test_iter_find_yields_what_find_returns(worker: ThreadWorker, small_pages: int) -> None:
    fs = client(worker)
    whole = fs.find("ds", detail=True)
    streamed = list(fs.iter_find("ds"))
    assert [e["name"] for e in streamed] == list(whole)
    assert all(e == whole[e["name"]] for e in streamed)
    assert [e["name"] for e in fs.iter_find("ds/d1/e2")] == [
        n for n in whole if n.startswith("ds/d1/e2/")
    ]
    assert [e["name"] for e in fs.iter_find("ds/top.txt")] == ["ds/top.txt"]
    assert list(fs.iter_find("ds/nothing")) == []
    assert [e["name"] for e in fs.iter_find("")] == list(whole)  # the root: every dataset


def test_iter_find_fetches_only_the_pages_it_is_asked_for(
    worker: ThreadWorker, small_pages: int
) -> None:
    fs = client(worker)
    fs.find("ds/d2")  # the worker's listing is in place
    before = _find_requests(worker)
    first = list(itertools.islice(fs.iter_find("ds"), small_pages + 1))
    assert len(first) == small_pages + 1
    assert _find_requests(worker) - before == 2


def test_walk_glob_withdirs_maxdepth_keep_fsspec_meaning(
    worker: ThreadWorker, small_pages: int
) -> None:
    fs = client(worker)
    assert fs.find("ds", maxdepth=1) == ["ds/top.txt"]
    with_dirs = fs.find("ds/d4", withdirs=True)
    assert "ds/d4/e3" in with_dirs and "ds/d4/e3/" + "f00004.bin" not in with_dirs
    assert sorted(with_dirs) == with_dirs
    assert fs.glob("ds/d0/e1/*.bin") == sorted(f"ds/{k}" for k in FILES if k.startswith("d0/e1/"))
    walked = [f"{root}/{f}" for root, _dirs, files in fs.walk("ds/d1") for f in files]
    assert sorted(walked) == sorted(f"ds/{k}" for k in FILES if k.startswith("d1/"))


def test_iter_find_memory_stays_flat(worker: ThreadWorker, small_pages: int) -> None:
    """Allocation peaks (tracemalloc, not time): iterating holds one page, find holds all."""
    fs = client(worker)
    fs.find("ds")  # the worker's listing is in place; its own memory is not measured here

    def peak(run: Any) -> int:
        gc.collect()
        tracemalloc.start()
        try:
            run()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    counts: dict[str, int] = {}

    def iterate(path: str) -> None:
        counts[path] = sum(1 for _ in fs.iter_find(path))

    iterate("ds/d0")  # first use: imports, connections
    part = peak(lambda: iterate("ds/d0/e0"))
    streamed = peak(lambda: iterate("ds"))
    whole = peak(lambda: fs.find("ds", detail=True))
    assert counts["ds"] == len(FILES) and counts["ds/d0/e0"] < len(FILES) // 40
    assert streamed * 3 < whole, (part, streamed, whole)
    assert streamed < part * 1.5 + 100_000, (part, streamed, whole)  # flat: 3,001 entries or 55


def _requests(worker: ThreadWorker, route: str) -> float:
    registry = worker.worker.metrics.registry
    total = 0.0
    for status in ("200", "404"):
        total += (
            registry.get_sample_value(
                "tidepool_http_requests_total", {"route": route, "status": status}
            )
            or 0.0
        )
    return total


def test_what_find_remembers_answers_info_as_the_worker_does(worker: ThreadWorker) -> None:
    """Differential: after ``find``, ``info`` of any file found is answered from what the
    client remembered (no request), and is exactly the worker's entry for it; each answer is
    the caller's own dict."""
    fs = client(worker)
    names = fs.find("ds")
    truth = client(worker).find("ds", detail=True)
    before = _requests(worker, "/v1/datasets/{ds}/info/{path:.*}")
    for name in names:
        assert fs.info(name) == truth[name], name
    assert _requests(worker, "/v1/datasets/{ds}/info/{path:.*}") == before
    mine = fs.info(names[0])
    mine["size"] = -1
    assert fs.info(names[0]) == truth[names[0]]


def test_find_remembers_each_file_compactly(worker: ThreadWorker) -> None:
    """What a client keeps after ``find`` of 3,001 files, names and metadata together (a
    tracemalloc count, not time): under 450 bytes a file (a dict per file was ~560 more)."""
    fs = client(worker)
    fs.find("ds/d0")  # first use: imports, connections
    gc.collect()
    tracemalloc.start(8)
    try:
        names = fs.find("ds")
        gc.collect()
        snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # the client's own: allocated below a call of the client's code (the worker answering in
    # this process keeps caches of its own, which are not the client's)
    mine = snapshot.filter_traces(
        [tracemalloc.Filter(True, "*/tidepool/client/*", all_frames=True)]
    )
    kept = sum(trace.size for trace in mine.traces)
    assert len(names) == len(FILES)
    assert 100 < kept / len(FILES) < 450, kept / len(FILES)
