"""Hostile clients against the S3 gateway over raw sockets (issue 15, items 2, 5 and 10).

Requests are signed by botocore's own SigV4 signer and then sent byte for byte, so the tests can
put in what boto3 would refuse: CR/LF in a header override, bytes that are not UTF-8 in a signed
header, a listing prefix that walks up the worker's routes, a signature for another host.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from tests.rawhttp import Answer, closed_by_peer, connect, exchange, read_answer, request_bytes

from tidepool.gateway import Gateway
from tidepool.serving import ServerLimits
from tidepool_lab.testbed.s3server import free_port

from .conftest import ACCESS_KEY, SECRET_KEY, Stack, ThreadGateway

pytestmark = pytest.mark.integration


def signed(
    base: str,
    target: str,
    *,
    key: str = ACCESS_KEY,
    secret: str = SECRET_KEY,
    region: str = "us-east-1",
    host: str | None = None,
    extra: dict[str, str] | None = None,
) -> tuple[str, list[tuple[str, str | bytes]]]:
    """(request target, headers) of a GET botocore signs; ``host`` signs for another Host."""
    netloc = host or urlsplit(base).netloc
    request = AWSRequest(method="GET", url=f"http://{netloc}{target}", headers=dict(extra or {}))
    request.headers["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
    S3SigV4Auth(Credentials(key, secret), "s3", region).add_auth(request)
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return path, [(k, v) for k, v in prepared.headers.items()]


def send(base: str, target: str, headers: list[tuple[str, str | bytes]], host: str = "") -> Answer:
    return exchange(base, request_bytes("GET", target, headers, host=host or urlsplit(base).netloc))


def code(answer: Answer) -> str:
    text = answer.body.decode()
    return text.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in text else ""


def node_requests(stack: Stack) -> float:
    """How many times the worker answered /v1/node (from its own metrics)."""
    metrics = exchange(stack.worker.endpoint, request_bytes("GET", "/metrics")).body.decode()
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("tidepool_http_requests_total") and 'route="/v1/node"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize(
    "prefix",
    [
        "../../../../v1/node",  # /v1/datasets/ds/list/ + this = /v1/node once dots are resolved
        "../../../../metrics",
        "a/../../../../../v1/node",
        "..%2F..%2F..%2F..%2Fv1%2Fnode",
        "../",
    ],
)
def test_a_prefix_cannot_steer_to_other_worker_routes(stack: Stack, prefix: str) -> None:
    target, headers = signed(stack.url, "/ds?list-type=2&prefix=nested%2F")
    assert send(stack.url, target, headers).status == 200  # the client has met the worker
    before = node_requests(stack)
    query = f"list-type=2&prefix={quote(prefix, safe='')}"
    for delimiter in ("", "&delimiter=%2F"):
        target, headers = signed(stack.url, f"/ds?{query}{delimiter}")
        answer = send(stack.url, target, headers)
        assert answer.status == 200, answer.body
        assert b"<KeyCount>0</KeyCount>" in answer.body
        assert b"host_id" not in answer.body and b"tidepool_" not in answer.body
    assert node_requests(stack) == before


def test_crlf_in_a_header_override_is_400_and_the_connection_lives(stack: Stack) -> None:
    bad = quote("attachment\r\nX-Evil: 1", safe="")
    target, headers = signed(stack.url, f"/ds/small.txt?response-content-disposition={bad}")
    with contextlib.closing(connect(stack.url)) as sock:
        sock.sendall(request_bytes("GET", target, headers, host=urlsplit(stack.url).netloc))
        answer = read_answer(sock)
        assert (answer.status, code(answer)) == (400, "InvalidArgument")
        assert "x-evil" not in answer.headers
        target, headers = signed(stack.url, "/ds/small.txt")
        sock.sendall(request_bytes("GET", target, headers, host=urlsplit(stack.url).netloc))
        again = read_answer(sock)  # the same connection answers the next request
        assert again.status == 200 and again.body == stack.files["small.txt"]


def test_non_utf8_signed_header_is_403_not_500(stack: Stack) -> None:
    target, headers = signed(stack.url, "/ds/small.txt", extra={"x-amz-meta-a": "plain"})
    raw = [(n, b"\xff\xfe\xc3" if n.lower() == "x-amz-meta-a" else v) for n, v in headers]
    answer = send(stack.url, target, raw)
    assert (answer.status, code(answer)) == (403, "SignatureDoesNotMatch")


def test_unknown_key_and_wrong_secret_answer_alike(stack: Stack) -> None:
    target, headers = signed(stack.url, "/ds/small.txt", key="no-such-key-id")
    unknown = send(stack.url, target, headers)
    target, headers = signed(stack.url, "/ds/small.txt", secret="not-the-secret")
    wrong = send(stack.url, target, headers)
    assert unknown.status == wrong.status == 403
    assert code(unknown) == code(wrong) == "SignatureDoesNotMatch"
    strip = lambda a: a.body.split(b"<RequestId>")[0]  # noqa: E731
    assert strip(unknown) == strip(wrong)


def test_region_and_host_must_be_the_gateways(stack: Stack) -> None:
    target, headers = signed(stack.url, "/ds/small.txt", region="eu-west-3")
    answer = send(stack.url, target, headers)
    assert (answer.status, code(answer)) == (400, "AuthorizationHeaderMalformed")
    assert b"expecting 'us-east-1'" in answer.body
    target, headers = signed(stack.url, "/ds/small.txt", host="s3.other.example:9000")
    answer = send(stack.url, target, headers, host="s3.other.example:9000")
    assert (answer.status, code(answer)) == (403, "AccessDenied")


def test_unavailable_answers_name_no_internal_address(stack: Stack) -> None:
    worker_port = urlsplit(stack.worker.endpoint).port
    target, headers = signed(stack.url, "/offline/never-cached.bin")
    answer = send(stack.url, target, headers)
    assert (answer.status, code(answer)) == (503, "ServiceUnavailable")
    assert str(worker_port).encode() not in answer.body
    assert b"127.0.0.1" not in answer.body and b"http" not in answer.body.split(b"?>", 1)[1]


def test_gateway_with_its_worker_down_names_no_address() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    gw = ThreadGateway(dead, {ACCESS_KEY: SECRET_KEY})
    try:
        target, headers = signed(gw.url, "/ds/x")
        answer = send(gw.url, target, headers)
        assert answer.status == 503
        assert dead.encode() not in answer.body and dead.split(":")[-1].encode() not in answer.body
    finally:
        gw.stop()


@pytest.mark.parametrize("value", ["bytes=²-", "bytes=" + "1" * 4400 + "-", "bytes=0-٣"])
def test_unusable_ranges_are_ignored_as_s3_does(stack: Stack, value: str) -> None:
    target, headers = signed(stack.url, "/ds/small.txt", extra={"Range": value})
    answer = send(stack.url, target, headers)
    assert answer.status == 200 and answer.body == stack.files["small.txt"]


@pytest.mark.parametrize("value", ["%C2%B2", "-5", "1e9"])
def test_bad_max_keys_is_invalid_argument(stack: Stack, value: str) -> None:
    target, headers = signed(stack.url, f"/ds?list-type=2&max-keys={value}")
    answer = send(stack.url, target, headers)
    assert (answer.status, code(answer)) == (400, "InvalidArgument")


def test_gateway_connections_are_budgeted(stack: Stack) -> None:
    limits = ServerLimits(max_connections=8, header_timeout=1.0)
    gw = ThreadGateway(stack.worker.endpoint, {ACCESS_KEY: SECRET_KEY}, limits=limits)
    socks: list[socket.socket] = []
    try:
        for i in range(50):
            s = connect(gw.url)
            s.sendall(f"GET /ds/small.txt HTTP/1.1\r\nHost: x\r\nX-{i}: ".encode())
            socks.append(s)
        assert all(closed_by_peer(s) for s in socks)  # evicted or timed out, every one
        budget = gw.gateway.budget
        assert budget.evicted + budget.head_timeouts >= 50 and budget.open <= 8
        target, headers = signed(gw.url, "/ds/small.txt")
        answer = send(gw.url, target, headers)
        assert answer.status == 200 and answer.body == stack.files["small.txt"]
    finally:
        for s in socks:
            s.close()
        gw.stop()


def test_gateway_object_has_public_hosts() -> None:
    gw = Gateway("http://127.0.0.1:1", None, {"k": "s"}, public_hosts=["s3.edge.local"])
    assert gw._host_ok("s3.edge.local:9000") and not gw._host_ok("127.0.0.1:9000")


def test_readers_that_never_read_hold_no_more_than_the_stream_budget(stack: Stack) -> None:
    """Issue 15, item 5 on the gateway: every streamed GetObject reserves what it may hold (three
    chunks) from one budget; clients that ask for a large object and never read fill it, the
    ones that find no room get a 503 SlowDown once the wait runs out (before any byte), the
    stalled ones are cut by the stall timeout, and a normal client is served afterwards."""
    chunk = 1 << 20
    limits = ServerLimits(stall_timeout=1.0, stream_memory_mib=6)  # room for two streams
    gw = ThreadGateway(
        stack.worker.endpoint, {ACCESS_KEY: SECRET_KEY}, chunk_size=chunk, limits=limits
    )
    socks: list[socket.socket] = []
    try:
        target, headers = signed(gw.url, "/ds/big/five.bin")
        request = request_bytes("GET", target, headers, host=urlsplit(gw.url).netloc)
        for _ in range(8):
            s = connect(gw.url, timeout=60)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(request)
            socks.append(s)
        streams = gw.gateway.streams
        peak = 0
        for _ in range(100):  # while they are held: never more than the budget reserved
            peak = max(peak, gw.call(_in_use(streams)))
        assert 0 < peak <= streams.total
        # the first bytes of each answer: a 200 stream (stalled, or cut by the stall timeout) or
        # a whole 503 SlowDown document for those that found no room
        heads = []
        for s in socks:
            s.settimeout(30)
            with contextlib.suppress(OSError):
                heads.append(s.recv(4096))
        slow = [h for h in heads if h.startswith(b"HTTP/1.1 503")]
        assert slow and all(b"<Code>SlowDown</Code>" in h for h in slow), heads[:2]
        assert all(h.startswith((b"HTTP/1.1 200", b"HTTP/1.1 503")) for h in heads if h)
        assert streams.refused == len(slow)
        for s in socks:
            s.close()  # the held streams end: their reservations are returned
        assert eventually_zero(gw, streams)
        answer = send(gw.url, target, headers)
        assert answer.status == 200 and answer.body == stack.files["big/five.bin"]
    finally:
        for s in socks:
            s.close()
        gw.stop()


def eventually_zero(gw: ThreadGateway, streams: Any) -> bool:
    return any(gw.call(_in_use(streams)) == 0 for _ in range(250))


async def _in_use(streams: Any) -> int:
    await asyncio.sleep(0.02)
    return int(streams.in_use)
