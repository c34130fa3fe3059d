"""Warm reads over HTTP leave the page files with ``sendfile`` (no copy through the worker): the
bytes of every range are the origin's, a page is checked against the index once and again when
its file changed, and a page that is bad or gone falls back to the ordinary read path."""

from __future__ import annotations

import os
import random
from typing import Any

import pytest
from tests.rawhttp import exchange, request_bytes

import tidepool.worker.dataset as dataset_mod
from tidepool.core.pages import HEADER_SIZE, PageKey, file_key

pytestmark = pytest.mark.integration

PAGE = 64 << 10
DATA = random.Random(18).randbytes(5 * PAGE + 321)


@pytest.fixture
def warm(make_dataset: Any, start_worker: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    w = start_worker([make_dataset({"big.bin": DATA}, page_size=PAGE)])
    assert get(w, None) == DATA  # cold: read through, cached
    w.call(w.worker.services["ds"].reader.settle())  # prefetch and read-ahead included
    return count_sends(w, monkeypatch)


def count_sends(w: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``w`` with ``w.sent``: the bytes of each ``send_ranges`` call (one per sendfile run)."""
    sent: list[int] = []
    real = dataset_mod.send_ranges

    async def counting(sock_fd: int, ranges: Any, idle_timeout: float) -> int:
        # counted before the bytes leave: the client may have them before this task resumes
        sent.append(sum(count for _fd, _offset, count in ranges))
        return await real(sock_fd, ranges, idle_timeout)

    monkeypatch.setattr(dataset_mod, "send_ranges", counting)
    w.sent = sent
    return w


def get(w: Any, span: tuple[int, int] | None) -> bytes:
    headers = [] if span is None else [("Range", f"bytes={span[0]}-{span[1] - 1}")]
    answer = exchange(w.endpoint, request_bytes("GET", "/v1/datasets/ds/files/big.bin", headers))
    assert answer.status == (200 if span is None else 206), answer.body[:300]
    return answer.body


def page_path(w: Any, idx: int) -> str:
    svc = w.worker.services["ds"]
    version = w.call(svc.stat("big.bin"))["version"]
    path = svc.store.locate(PageKey("ds", file_key("ds", "big.bin", version), idx))
    assert path is not None
    return str(path)


@pytest.mark.parametrize(
    "span",
    [None, (0, 2 * PAGE), (PAGE - 7, 3 * PAGE + 11), (4 * PAGE + 5, len(DATA)), (1, len(DATA))],
)
def test_every_range_of_a_warm_file_is_sent_from_the_page_files(
    warm: Any, span: tuple[int, int] | None
) -> None:
    lo, hi = span or (0, len(DATA))
    assert get(warm, span) == DATA[lo:hi]
    assert sum(warm.sent) == hi - lo, "the warm range was not sent with sendfile"


def test_a_page_changed_after_it_was_checked_is_checked_again(warm: Any) -> None:
    assert get(warm, None) == DATA  # every page checked once and sent
    path = page_path(warm, 2)
    with open(path, "r+b") as f:  # damage it in place: same inode, new mtime
        f.seek(HEADER_SIZE + 100)
        f.write(b"\x00" * 8)
    warm.sent.clear()
    assert get(warm, None) == DATA  # page 2 refused, read (and refetched) the ordinary way
    assert sum(warm.sent) < len(DATA)
    warm.call(warm.worker.services["ds"].reader.settle())
    warm.sent.clear()
    assert get(warm, None) == DATA  # refetched and rewritten: all sent from the files again
    assert sum(warm.sent) == len(DATA)


def test_a_page_gone_from_disk_falls_back_to_the_read_path(warm: Any) -> None:
    os.unlink(page_path(warm, 3))
    warm.sent.clear()
    assert get(warm, (0, len(DATA))) == DATA
    assert sum(warm.sent) == 3 * PAGE  # pages 0-2 sent from files, the rest read


@pytest.fixture
def warm_extent(make_dataset: Any, start_worker: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """As ``warm``, the file held as one extent (issue 18)."""
    w = start_worker([make_dataset({"big.bin": DATA}, page_size=PAGE)])
    w.worker.services["ds"].store.extent_min_bytes = 2 * PAGE
    assert get(w, None) == DATA
    w.call(w.worker.services["ds"].reader.settle())
    assert page_path(w, 0).endswith(".x")
    return count_sends(w, monkeypatch)


@pytest.mark.parametrize("span", [None, (PAGE - 7, 3 * PAGE + 11), (4 * PAGE + 5, len(DATA))])
def test_a_range_of_an_extent_leaves_in_one_sendfile(
    warm_extent: Any, span: tuple[int, int] | None
) -> None:
    lo, hi = span or (0, len(DATA))
    assert get(warm_extent, span) == DATA[lo:hi]
    assert warm_extent.sent == [hi - lo], "not one sendfile run from the extent"


def test_a_bad_page_in_an_extent_ends_the_run_before_it(warm_extent: Any) -> None:
    path = page_path(warm_extent, 2)
    with open(path, "r+b") as f:  # damage page 2 in place: same inode, new mtime
        f.seek(2 * PAGE + 100)
        f.write(b"\x00" * 8)
    assert get(warm_extent, None) == DATA
    assert warm_extent.sent[0] == 2 * PAGE  # pages 0-1, checked again, sent; 2 refused
    assert sum(warm_extent.sent) < len(DATA)
    # the bad page dropped the extent; pages 0-1 (already sent) come back with the next read
    for _ in range(2):
        warm_extent.call(warm_extent.worker.services["ds"].reader.settle())
        warm_extent.sent.clear()
        assert get(warm_extent, None) == DATA
    assert page_path(warm_extent, 0).endswith(".x")  # whole again: an extent, one run
    assert warm_extent.sent == [len(DATA)]
