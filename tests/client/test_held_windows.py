"""A first epoch that never listed still reads the files this host's worker holds from their page
files: the client asks the worker for a window of what it holds (``GET …/cached``) instead of
asking for each file over HTTP. Every byte is compared with what was uploaded, and the worker's
own request counters show which path each read took."""

from __future__ import annotations

import http.client
import json
import random
from typing import Any
from urllib.parse import urlsplit

import pytest
from tests.conftest import ThreadWorker

from tidepool.client import TidepoolFileSystem
from tidepool.client import fs as client_fs
from tidepool.core.pages import file_key

from .conftest import Serve, client, flush

pytestmark = pytest.mark.integration

PAGE = 16 << 10
rng = random.Random(7)
FILES = {f"a/f{i:03d}.bin": rng.randbytes(1000 + 97 * i) for i in range(40)}
FILES |= {f"b/f{i:03d}.bin": rng.randbytes(500 + i) for i in range(10)}
FILES["a/multi.bin"] = rng.randbytes(3 * PAGE + 5)
FILES["top.bin"] = b"top of the dataset"
WINDOW_ROUTE = "/v1/datasets/{ds}/cached"
FILE_ROUTE = "/v1/datasets/{ds}/files/{path}"


def requests_to(worker: ThreadWorker, route: str, status: int = 200) -> int:
    value = worker.worker.metrics.registry.get_sample_value(
        "tidepool_http_requests_total", {"route": route, "status": str(status)}
    )
    return int(value or 0)


def file_reads(worker: ThreadWorker) -> int:
    """Reads answered whole (200) or in part (206)."""
    return requests_to(worker, FILE_ROUTE, 200) + requests_to(worker, FILE_ROUTE, 206)


def warmed(serve: Serve, files: dict[str, bytes], held: list[str]) -> ThreadWorker:
    """A worker over ``files`` that holds ``held`` (read once over HTTP, metadata fresh)."""
    worker = serve({"ds": files}, page_size=PAGE)
    http_only = client(worker, local_reads=False)
    for rel in held:
        assert http_only.cat_file(f"ds/{rel}") == files[rel]
    flush(worker)
    return worker


@pytest.fixture(scope="module")
def worker(serve: Serve) -> ThreadWorker:
    return warmed(serve, FILES, list(FILES))


def fast_client(worker: ThreadWorker) -> TidepoolFileSystem:
    fs = client(worker, local_reads=True)
    fs.cat_file("ds/top.bin")  # learns the worker's layout (and one window)
    assert fs._local is not None, "the client did not enable the fast path on the worker's host"
    return fs


def test_a_first_epoch_without_a_listing_reads_held_files_from_disk(worker: ThreadWorker) -> None:
    fs = client(worker, local_reads=True)
    order = sorted(FILES)
    random.Random(3).shuffle(order)
    windows, reads = requests_to(worker, WINDOW_ROUTE), file_reads(worker)
    for rel in order:
        assert fs.cat_file(f"ds/{rel}") == FILES[rel], rel
    assert fs._local is not None
    assert fs._local.hits == len(FILES)
    assert file_reads(worker) == reads, "a held file was read over HTTP"
    # the first path's directory onwards, then what sorts before it: at most two windows
    assert 1 <= requests_to(worker, WINDOW_ROUTE) - windows <= 2
    # open() (and info()) use the same windows: nothing more is asked
    other = client(worker, local_reads=True)
    windows = requests_to(worker, WINDOW_ROUTE)
    with other.open("ds/a/multi.bin") as f:
        assert f.read() == FILES["a/multi.bin"]
    assert other.info("ds/a/f007.bin")["size"] == len(FILES["a/f007.bin"])
    assert requests_to(worker, WINDOW_ROUTE) - windows == 1
    assert file_reads(worker) == reads


def test_windows_are_bounded_and_tile_the_paths(
    worker: ThreadWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_fs, "HELD_WINDOW", 7)
    fs = client(worker, local_reads=True)
    windows, reads = requests_to(worker, WINDOW_ROUTE), file_reads(worker)
    for rel in sorted(FILES):
        assert fs.cat_file(f"ds/{rel}") == FILES[rel], rel
    assert requests_to(worker, WINDOW_ROUTE) - windows == -(-len(FILES) // 7)
    assert file_reads(worker) == reads


def test_concurrent_reads_share_one_window(worker: ThreadWorker) -> None:
    fs = client(worker, local_reads=True)
    fs.info("ds/top.bin")  # (the fast path starts with the first call)
    names = [f"ds/a/f{i:03d}.bin" for i in range(0, 40, 2)]
    windows, reads = requests_to(worker, WINDOW_ROUTE), file_reads(worker)
    got = fs.cat_ranges(names, None, None, on_error="raise")
    assert got == [FILES[n[3:]] for n in names]
    assert requests_to(worker, WINDOW_ROUTE) - windows == 1
    assert file_reads(worker) == reads


def test_files_not_held_here_are_read_over_http_without_asking_again(serve: Serve) -> None:
    files = {f"d/f{i:02d}.bin": rng.randbytes(300 + i) for i in range(12)}
    held = [rel for i, rel in enumerate(sorted(files)) if i % 2]
    worker = warmed(serve, files, held)
    fs = client(worker, local_reads=True)
    windows, reads = requests_to(worker, WINDOW_ROUTE), file_reads(worker)
    for rel in sorted(files):
        assert fs.cat_file(f"ds/{rel}") == files[rel], rel
    assert fs._local is not None and fs._local.hits == len(held)
    assert file_reads(worker) - reads == len(files) - len(held)
    assert requests_to(worker, WINDOW_ROUTE) - windows == 1


def test_a_file_evicted_after_the_window_is_read_over_http(serve: Serve) -> None:
    # one page: a streamed (multi-page) answer is counted only after the client has it
    files = {"x/one.bin": rng.randbytes(PAGE - 9), "x/two.bin": rng.randbytes(99)}
    worker = warmed(serve, files, list(files))
    fs = client(worker, local_reads=True)
    assert fs.cat_file("ds/x/two.bin") == files["x/two.bin"]  # the window lists one.bin too
    svc = worker.worker.services["ds"]
    info = fs._cached_info("ds/x/one.bin")
    assert info is not None
    svc.store.drop_file("ds", file_key("ds", "x/one.bin", info["version"]))
    assert fs._local is not None
    reads, misses = file_reads(worker), fs._local.misses
    assert fs.cat_file("ds/x/one.bin") == files["x/one.bin"]
    assert (file_reads(worker), fs._local.misses) == (reads + 1, misses + 1)


def test_stale_metadata_is_not_listed(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {"s/a.bin": b"a" * 100, "s/b.bin": b"b" * 200}
    worker = warmed(serve, files, list(files))
    svc = worker.worker.services["ds"]
    status, answer = get(worker, "/v1/datasets/ds/cached?start_at=s/")
    assert status == 200 and [e["name"] for e in answer["files"]] == ["s/a.bin", "s/b.bin"]
    assert answer["through"] is None
    monkeypatch.setattr(svc.metadata, "fresh", lambda fetched_at: False)
    status, answer = get(worker, "/v1/datasets/ds/cached")
    assert (status, answer) == (200, {"files": [], "through": None})
    # and the client reads them over HTTP (where the worker asks the origin again)
    fs = client(worker, local_reads=True)
    for rel, data in files.items():
        assert fs.cat_file(f"ds/{rel}") == data
    assert fs._local is not None and fs._local.hits == 0


def test_a_window_answers_a_bounded_scan(
    worker: ThreadWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files not listed (here: all stale) still count against the window's scan budget, and
    ``through`` says how far it looked."""
    svc = worker.worker.services["ds"]
    monkeypatch.setattr(svc.metadata, "fresh", lambda fetched_at: False)
    status, answer = get(worker, "/v1/datasets/ds/cached?start_at=a/&limit=2")
    assert status == 200 and answer["files"] == []
    assert answer["through"] == sorted(k for k in FILES if k >= "a/")[7]  # 4 x 2 looked at


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("start_at=../up", "start_at"),
        ("start_after=a", "start_after"),
    ],
)
def test_the_window_route_checks_its_query(worker: ThreadWorker, query: str, named: str) -> None:
    status, answer = get(worker, f"/v1/datasets/ds/cached?{query}")
    assert status == 400 and named in answer["message"], answer


def test_a_worker_without_windows_is_asked_once_per_ttl(
    worker: ThreadWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older worker (no ``cached`` route: 404) serves every read over HTTP, as before."""
    fs = fast_client(worker)
    fs._held = client_fs.HeldWindows(lambda: 0.0)  # forget the first window, stop the clock
    real = fs._window_steps
    monkeypatch.setattr(
        fs, "_window_steps", lambda ds, start, path: real(ds + "-gone", start, path)
    )
    missing, reads = requests_to(worker, WINDOW_ROUTE, 404), file_reads(worker)
    for rel in ["a/f001.bin", "b/f002.bin", "top.bin"]:
        fs._infos.pop(f"ds/{rel}", None)
        assert fs.cat_file(f"ds/{rel}") == FILES[rel]
    assert requests_to(worker, WINDOW_ROUTE, 404) - missing == 1
    assert file_reads(worker) - reads == 3


def get(worker: ThreadWorker, target: str) -> tuple[int, Any]:
    url = urlsplit(worker.endpoint)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        conn.request("GET", target)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()
