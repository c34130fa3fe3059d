"""Hostile clients against a real worker (real S3 origin), over raw sockets: every class of bad
input of issue 15 gets its 4xx naming the field, and nothing it sends changes the worker's state.

Each test sends what a client library would refuse to send — Unicode digits in a Range, four
thousand digits, half a body, two Range headers, JSON that is not an object — and checks the
answer and that the worker still serves a normal read afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Callable
from typing import Any

import pytest
from tests.rawhttp import Answer, closed_by_peer, connect, exchange, read_answer, request_bytes

from tidepool.core.errors import TooManyRequestsError
from tidepool.serving import ServerLimits
from tidepool.worker import requests as worker_requests
from tidepool.worker.app import error_response
from tidepool.worker.requests import MAX_LOAD_CONCURRENCY, MAX_LOAD_PATHS

pytestmark = pytest.mark.integration

PAGE = 1 << 16
FILES = {"a/one.bin": os.urandom(200_000), "b.bin": os.urandom(1000)}


@pytest.fixture
def served(make_dataset: Any, start_worker: Any) -> Any:
    return start_worker([make_dataset(FILES, page_size=PAGE)])


def get(url: str, target: str, headers: list[tuple[str, str | bytes]] | None = None) -> Answer:
    return exchange(url, request_bytes("GET", target, headers))


def post(
    url: str, target: str, body: bytes, content_type: str | None = "application/json"
) -> Answer:
    headers: list[tuple[str, str | bytes]] = []
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    return exchange(url, request_bytes("POST", target, headers, body))


def still_serves(url: str) -> None:
    answer = get(url, "/v1/datasets/ds/files/a/one.bin")
    assert answer.status == 200 and answer.body == FILES["a/one.bin"]


def status(url: str) -> dict[str, Any]:
    raw: dict[str, Any] = get(url, "/v1/datasets/ds/status?refresh=0").json()["raw"]
    return raw


@pytest.mark.parametrize(
    "value",
    [
        "bytes=²-",
        "bytes=0-٣",
        "bytes=" + "1" * 4301 + "-",
        "bytes=-" + "9" * 5000,
        "bytes=0-1,5-9",
        "bytes=" + " " * 200 + "0-1",
        "items=0-1",
    ],
)
def test_bad_ranges_are_400_naming_the_header(served: Any, value: str) -> None:
    answer = get(served.endpoint, "/v1/datasets/ds/files/a/one.bin", [("Range", value)])
    assert answer.status == 400, answer
    body = answer.json()
    assert body["error"] == "BadRequest" and "Range" in body["message"]
    assert len(body["message"]) < 400  # the value is echoed cut short
    still_serves(served.endpoint)


def test_two_range_headers_and_raw_bytes(served: Any) -> None:
    target = "/v1/datasets/ds/files/a/one.bin"
    two = get(served.endpoint, target, [("Range", "bytes=0-1"), ("Range", "bytes=5-9")])
    assert two.status == 400 and "2 Range headers" in two.json()["message"]
    latin = get(served.endpoint, target, [("Range", b"bytes=\xb2-")])
    assert latin.status == 400
    ok = get(served.endpoint, target, [("Range", "bytes=10-19")])
    assert ok.status == 206 and ok.body == FILES["a/one.bin"][10:20]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"[]", "JSON object"),
        (b"{", "not valid JSON"),
        (b'{"concurrency":"x"}', "concurrency"),
        (b'{"concurrency":2000000}', "concurrency"),
        (b'{"concurrency":1' + b"0" * 4400 + b"}", "not valid JSON"),
        (b'{"paths":"train"}', "paths"),
        (b'{"paths":["../etc"]}', "paths.0"),
        (json.dumps({"paths": ["x"] * (MAX_LOAD_PATHS + 1)}).encode(), "paths"),
        (b'{"path":["a"]}', "'path'"),
    ],
)
def test_bad_load_bodies_are_400(served: Any, body: bytes, field: str) -> None:
    answer = post(served.endpoint, "/v1/datasets/ds/load", body)
    assert answer.status == 400, answer
    assert field in answer.json()["message"]
    assert len(served.worker.api.loads) == 0  # no job was started
    still_serves(served.endpoint)


def test_load_bounds_and_media_type(served: Any) -> None:
    url = served.endpoint
    plain = post(url, "/v1/datasets/ds/load", b'{"paths":[]}', content_type="text/plain")
    assert plain.status == 415 and plain.json()["error"] == "UnsupportedMediaType"
    bare = post(url, "/v1/datasets/ds/load", b"", content_type=None)
    assert bare.status == 415  # a browser's no-cors POST carries no JSON content type
    body = json.dumps({"paths": ["a"], "concurrency": MAX_LOAD_CONCURRENCY}).encode()
    ok = post(url, "/v1/datasets/ds/load", body)
    assert ok.status == 202
    job_id = ok.json()["id"]
    assert get(url, f"/v1/loads/{job_id}").status == 200
    for bad_id in ("load-%C2%B2", "load-" + "1" * 50, "..%2Fnode", "load-1%00"):
        assert get(url, f"/v1/loads/{bad_id}").status == 404


def test_too_many_loads_is_429() -> None:
    answer = error_response(TooManyRequestsError("dataset 'ds' has 4 load jobs running"))
    assert answer.status == 429
    assert json.loads(answer.body)["error"] == "TooManyRequests"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "body",
    [
        b'{"pages":' + str(10**400).encode() + b"}",
        b'{"pages":' + str(10**48).encode() + b"}",
        b'{"pages":3,"bytes":' + str(3 * PAGE + 1).encode() + b"}",
        b'{"pages":-1,"bytes":0}',
        b'{"pages":true}',
        b"[1, 2]",
    ],
)
def test_impossible_hit_reports_change_nothing(served: Any, body: bytes) -> None:
    before = status(served.endpoint)
    answer = post(served.endpoint, "/v1/datasets/ds/local-hits", body)
    assert answer.status == 400, answer
    after = status(served.endpoint)
    assert after["client_local_hits"] == before["client_local_hits"]
    assert after["page_hits"] == before["page_hits"]
    ok = post(served.endpoint, "/v1/datasets/ds/local-hits", b'{"pages":2,"bytes":100}')
    assert ok.status == 200
    assert status(served.endpoint)["client_local_hits"] == before["client_local_hits"] + 2


@pytest.mark.parametrize(
    "target",
    [
        "/v1/datasets/ds/status?x=1",
        "/v1/datasets/ds/status?refresh=%C2%B2",
        "/v1/datasets/ds/status?refresh=0&refresh=1",
        "/v1/datasets/ds/files/b.bin?anything=1",
        "/v1/datasets/ds/list/?" + "q" * 3000 + "=1",
    ],
)
def test_undeclared_or_bad_query_parameters_are_400(served: Any, target: str) -> None:
    answer = get(served.endpoint, target)
    assert answer.status == 400, answer
    assert "query parameter" in answer.json()["message"] or "refresh" in answer.json()["message"]


def test_healthz_names_no_dataset(served: Any) -> None:
    answer = get(served.endpoint, "/healthz")
    assert answer.status == 200 and answer.json() == {"status": "ok"}


def test_oversized_heads_are_refused_by_the_parser(served: Any) -> None:
    long_line = get(served.endpoint, "/v1/datasets/ds/files/" + "a" * 9000)
    assert long_line.status in (400, 414)
    big_header = get(served.endpoint, "/healthz", [("X-Big", "x" * 9000)])
    assert big_header.status in (400, 431)
    many = get(served.endpoint, "/healthz", [(f"X-H{i}", "1") for i in range(200)])
    assert many.status in (400, 431)
    still_serves(served.endpoint)


def _as_nobody(url: str, data: bytes) -> int:
    """Send ``data`` from a child process running as uid 65534; its answer's status."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, ask, report the status through the pipe
        code = 0
        try:
            os.close(read_end)
            os.setgid(65534)
            os.setuid(65534)
            answer = exchange(url, data)
            os.write(write_end, str(answer.status).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        text = pipe.read().decode()
    os.waitpid(pid, 0)
    return int(text or 0)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another local user")
def test_tokenless_worker_lets_only_its_own_user_change_state(served: Any) -> None:
    url = served.endpoint
    load = request_bytes(
        "POST", "/v1/datasets/ds/load", [("Content-Type", "application/json")], b"{}"
    )
    hits = request_bytes(
        "POST",
        "/v1/datasets/ds/local-hits",
        [("Content-Type", "application/json")],
        b'{"pages":1,"bytes":1}',
    )
    read = request_bytes("GET", "/v1/datasets/ds/files/b.bin")
    assert _as_nobody(url, load) == 403
    assert _as_nobody(url, hits) == 403
    assert _as_nobody(url, read) == 200  # reads stay open on a tokenless loopback worker
    assert exchange(url, hits).status == 200  # the worker's own user (root here)


# ---- connections --------------------------------------------------------------------------


def test_half_sent_heads_are_closed(make_dataset: Any, start_worker: Any) -> None:
    """50 clients that send half a request head are all cut off by the header timeout, and
    the worker serves a normal client meanwhile and afterwards."""
    limits = ServerLimits(header_timeout=1.0, idle_timeout=60.0)
    w = start_worker([make_dataset(FILES, page_size=PAGE)], limits=limits)
    socks = []
    try:
        for i in range(50):
            s = connect(w.endpoint, timeout=30)
            s.sendall(f"GET /v1/datasets/ds/files/b.bin HTTP/1.1\r\nHost: x\r\nX-{i}: ".encode())
            socks.append(s)
        still_serves(w.endpoint)
        assert all(closed_by_peer(s) for s in socks)
        assert w.worker.budget.head_timeouts >= 50
        still_serves(w.endpoint)
    finally:
        for s in socks:
            s.close()


def test_connection_cap_evicts_idle_and_refuses_when_all_busy(
    make_dataset: Any, start_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_requests, "BODY_TIMEOUT", 60.0)
    limits = ServerLimits(max_connections=6, header_timeout=30.0)
    w = start_worker([make_dataset(FILES, page_size=PAGE)], limits=limits)
    socks: list[socket.socket] = []
    try:
        # idle connections: a newcomer over the cap makes room by closing the oldest idle one
        socks += [connect(w.endpoint) for _ in range(6)]
        still_serves(w.endpoint)
        assert closed_by_peer(socks[0])
        assert w.worker.budget.evicted >= 1
        for s in socks:
            s.close()
        socks.clear()
        # busy connections (a body that never comes): the newcomer gets 503 at once
        head = (
            b"POST /v1/datasets/ds/load HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        for _ in range(6):
            s = connect(w.endpoint)
            s.sendall(head)
            socks.append(s)
        until(lambda: w.worker.budget.in_progress == 6 and w.worker.budget.open == 6, w)
        refused = get(w.endpoint, "/healthz")
        assert refused.status == 503 and refused.headers["connection"] == "close"
        assert w.worker.budget.refused >= 1
    finally:
        for s in socks:
            s.close()
    still_serves(w.endpoint)


def test_a_half_sent_body_is_cut_off(
    make_dataset: Any, start_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_requests, "BODY_TIMEOUT", 1.0)
    w = start_worker([make_dataset(FILES, page_size=PAGE)])
    with contextlib.closing(connect(w.endpoint)) as s:
        s.sendall(
            b"POST /v1/datasets/ds/load HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        answer = read_answer(s)
    assert answer.status == 400 and "did not arrive" in answer.json()["message"]


def test_an_answer_nobody_reads_is_aborted(make_dataset: Any, start_worker: Any) -> None:
    big = {"big.bin": os.urandom(24 << 20)}
    limits = ServerLimits(stall_timeout=1.0)
    w = start_worker([make_dataset(big, page_size=1 << 20)], limits=limits)
    whole = exchange(w.endpoint, request_bytes("GET", "/v1/datasets/ds/files/big.bin"))
    assert whole.body == big["big.bin"]  # cached now; a reader that reads gets everything
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(60)
    s.connect(("127.0.0.1", int(w.endpoint.rsplit(":", 1)[1])))
    try:
        s.sendall(request_bytes("GET", "/v1/datasets/ds/files/big.bin"))
        # never read: wait until the worker gives up on this answer
        until(lambda: w.worker.budget.stalled >= 1, w)
        received = 0
        with contextlib.suppress(OSError):
            while chunk := s.recv(1 << 20):
                received += len(chunk)
        assert received < len(big["big.bin"])  # cut, not completed
    finally:
        s.close()
    still_serves_big = exchange(w.endpoint, request_bytes("GET", "/v1/datasets/ds/files/big.bin"))
    assert still_serves_big.body == big["big.bin"]


def until(condition: Callable[[], bool], w: Any, polls: int = 600) -> None:
    """Wait (on the worker's loop, 0.1 s a poll) until ``condition`` holds, or fail."""
    for _ in range(polls):
        if w.call(_check(condition)):
            return
    raise AssertionError("the worker never reached the expected state")


async def _check(condition: Callable[[], bool]) -> bool:
    if condition():
        return True
    await asyncio.sleep(0.1)
    return condition()
