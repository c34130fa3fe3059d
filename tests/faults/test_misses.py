"""A stream of 404s is not a stream of origin listings (issue 15, item 3).

The review found that every miss listed the missing path's whole parent directory at the origin
(a 20,000-entry directory: a full listing and 20,000 SQLite rows per 404), that misses were not
remembered, and that every ``find`` listed the origin again. Here the origin sits behind the
counting proxy: misses under a 2,000-entry directory cost a bounded number of small requests
each (never a listing of the directory), a repeated miss costs nothing within the TTL, and a
repeated ``find`` lists once.
"""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from tests.rawhttp import connect, exchange, read_answer, request_bytes

from tidepool_lab.testbed.faulty import FaultyProxy, RequestRecord

pytestmark = pytest.mark.integration

ENTRIES = 2000


def _lists_of(records: list[RequestRecord], prefix: str) -> list[str]:
    """Origin listings of the directory ``prefix`` (its prefix, not a key below it)."""
    out = []
    for r in records:
        query = parse_qs(urlsplit(r.target).query)
        if "list-type" in query and query.get("prefix", [""])[0] in (prefix, prefix.rstrip("/")):
            out.append(r.target)
    return out


def test_misses_under_a_large_directory_never_list_it(
    make_dataset: Any, start_worker: Any, proxy: FaultyProxy
) -> None:
    files = {f"big/f{i:05d}.bin": b"x" for i in range(ENTRIES)}
    cfg = make_dataset(files, endpoint=proxy.endpoint, ttl=600.0)
    w = start_worker([cfg])
    proxy.reset_records()
    names = [f"big/missing-{i}.bin" for i in range(50)]
    for name in names:
        answer = exchange(w.endpoint, request_bytes("GET", f"/v1/datasets/ds/files/{name}"))
        assert answer.status == 404, answer
    first_round = proxy.records()
    # each distinct miss costs a few small requests (a GET, perhaps a one-key listing to tell a
    # directory apart), never a listing of the 2,000-entry directory
    assert len(first_round) <= 3 * len(names), len(first_round)
    assert _lists_of(first_round, "data/big/") == []
    proxy.reset_records()
    for _ in range(4):
        for name in names:
            answer = exchange(w.endpoint, request_bytes("GET", f"/v1/datasets/ds/files/{name}"))
            assert answer.status == 404
            with contextlib.closing(connect(w.endpoint)) as sock:
                sock.sendall(request_bytes("HEAD", f"/v1/datasets/ds/files/{name}"))
                assert read_answer(sock, head_only=True).status == 404
    assert proxy.records() == []  # a known miss is remembered for the TTL
    found = exchange(w.endpoint, request_bytes("GET", "/v1/datasets/ds/find/big"))
    assert found.status == 200 and len(found.json()["files"]) == ENTRIES
    listed = len(proxy.records())
    assert _lists_of(proxy.records(), "data/big/")  # the check above can see a listing
    for _ in range(3):
        again = exchange(w.endpoint, request_bytes("GET", "/v1/datasets/ds/find/big"))
        assert again.status == 200
    assert len(proxy.records()) == listed  # a find lists once per TTL
