"""The client's read-ahead (:class:`tidepool.client.file.ReadAheadCache`) as a unit: the bytes it
returns for any read pattern, and how it cuts its requests — small first, growing for a
sequential reader, and one request per read (returned as fetched, no copy) for large reads."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tidepool.client.file import ALIGN_MIN, MIN_FETCH, ReadAheadCache

MiB = 1 << 20
DATA = random.Random(7).randbytes(40 * MiB + 12345)


class Recorder:
    """A fetcher over DATA that remembers each request and the object it returned."""

    def __init__(self) -> None:
        self.requests: list[tuple[int, int]] = []
        self.returned: dict[int, bytes] = {}
        self.lock = threading.Lock()

    def __call__(self, start: int, end: int) -> bytes:
        data = DATA[start:end]
        with self.lock:
            self.requests.append((start, end))
            self.returned[start] = data
        return data


@pytest.fixture
def pool() -> ThreadPoolExecutor:
    with ThreadPoolExecutor(4) as ex:
        yield ex


def test_large_sequential_reads_get_one_request_each_returned_as_fetched(
    pool: ThreadPoolExecutor,
) -> None:
    rec = Recorder()
    cache = ReadAheadCache(16 * MiB, rec, len(DATA), executor=pool)
    first = cache._fetch(0, MiB)
    assert first == DATA[:MiB]
    assert rec.requests[0] == (0, MiB)  # the first byte waits for one small request only
    pos, chunk, outs = MiB, 4 * MiB, []
    while pos < len(DATA):
        out = cache._fetch(pos, pos + chunk)
        assert out == DATA[pos : pos + chunk]
        outs.append((pos, out))
        pos += len(out)
    # once the reader is known to read 4 MiB at a time, each read is one request of that read
    # (cut at the read boundaries) and its bytes are the fetched object itself
    aligned = [(p, o) for p, o in outs if p >= 9 * MiB]
    assert aligned
    for p, out in aligned:
        assert rec.returned.get(p) is out, f"read at {p} was copied or stitched"
    assert all(e - s <= 4 * MiB for s, e in rec.requests)


@pytest.mark.parametrize("chunk", [1, 4096, MIN_FETCH - 1, ALIGN_MIN + 1, 3 * MiB + 7])
def test_any_read_size_returns_the_right_bytes(pool: ThreadPoolExecutor, chunk: int) -> None:
    rec = Recorder()
    cache = ReadAheadCache(16 * MiB, rec, len(DATA), executor=pool)
    pos, got = 0, []
    while pos < len(DATA):
        out = cache._fetch(pos, pos + chunk)
        got.append(out)
        pos += len(out)
        if chunk == 1 and pos >= 3 * MiB:  # byte-at-a-time: enough to show it
            assert b"".join(got) == DATA[:pos]
            return
    assert b"".join(got) == DATA


def test_seeks_back_and_forth_return_the_right_bytes(pool: ThreadPoolExecutor) -> None:
    rec = Recorder()
    cache = ReadAheadCache(16 * MiB, rec, len(DATA), executor=pool)
    rng = random.Random(3)
    for _ in range(200):
        start = rng.randrange(len(DATA))
        size = rng.choice([10, 4096, MiB, 4 * MiB + 3])
        assert cache._fetch(start, start + size) == DATA[start : start + size]
        if rng.random() < 0.5:  # continue sequentially for a while
            pos = min(len(DATA), start + size)
            for _ in range(3):
                assert cache._fetch(pos, pos + size) == DATA[pos : pos + size]
                pos = min(len(DATA), pos + size)
    cache.close()
