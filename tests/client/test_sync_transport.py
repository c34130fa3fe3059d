"""The blocking transport's own HTTP/1.1, side by side with ``http.client`` on the same answers
(a scripted server writes each answer byte for byte), its failures mapped to the three errors
the read policy knows, and every length it reads bounded; then against a real worker over TLS."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tidepool.client.transport import (
    MAX_HEADERS,
    MAX_LINE,
    Request,
    StaleConnection,
    SyncTransport,
    Truncated,
    Unreachable,
)


class Scripted:
    """A TCP server on loopback that answers the n-th request it reads with ``answers[n]``:
    ``(bytes, close)``, or None to close the connection without answering."""

    def __init__(self, answers: list[tuple[bytes, bool] | None]) -> None:
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                self._one(conn)

    def _one(self, conn: socket.socket) -> None:
        buf = b""
        while self.answers:
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buf) < length:
                buf += conn.recv(65536)
            self.requests.append(head + b"\r\n\r\n" + buf[:length])
            buf = buf[length:]
            answer = self.answers.pop(0)
            if answer is None:
                return
            conn.sendall(answer[0])
            if answer[1]:
                return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def scripted() -> Iterator[Any]:
    servers: list[Scripted] = []

    def make(answers: list[tuple[bytes, bool] | None]) -> Scripted:
        servers.append(Scripted(answers))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def _transport() -> SyncTransport:
    return SyncTransport({"Authorization": "Bearer t"}, 2.0, 5.0)


def _with_http_client(base: str, method: str, answers: int) -> list[tuple[int, bytes, Any]]:
    port = int(base.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    out = []
    for _ in range(answers):
        conn.request(method, "/x", headers={"Authorization": "Bearer t"})
        resp = conn.getresponse()
        out.append((resp.status, resp.read(), resp.headers))
        if resp.will_close:
            conn.close()
    conn.close()
    return out


ANSWERS = {
    "length": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Tidepool-Size: 5\r\n\r\nhello",
    "case and repeats": (
        b"HTTP/1.1 206 Partial Content\r\ncontent-LENGTH: 3\r\nX-A: one\r\nx-a: two\r\n"
        b'ETag:   "v1"  \r\n\r\nabc'
    ),
    "chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4;ext=1\r\nwiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: t\r\n\r\n"
    ),
    "empty 204": b"HTTP/1.1 204 No Content\r\nX-B: b\r\n\r\n",
    "interim 100": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "bare LF": b"HTTP/1.1 404 Not Found\nContent-Length: 4\nX-C: c\n\nnope",
}


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_answers_read_as_http_client_reads_them(scripted: Any, name: str) -> None:
    """Twice on one keep-alive connection: status, body and headers as http.client sees them."""
    raw = ANSWERS[name]
    ours_srv, theirs_srv = scripted([(raw, False)] * 2), scripted([(raw, False)] * 2)
    t = _transport()
    ours = [t.send(Request(ours_srv.base, "/x")) for _ in range(2)]
    theirs = _with_http_client(theirs_srv.base, "GET", 2)
    for mine, (status, body, headers) in zip(ours, theirs, strict=True):
        assert (mine.status, mine.body) == (status, body)
        for key in set(headers.keys()):  # http.client keeps trailing whitespace; RFC 9110 does not
            assert mine.headers.get(key) == headers.get(key).strip(), key
            assert mine.headers.get(key.lower()) == headers.get(key).strip(), key
            assert mine.headers.getall(key) == [v.strip() for v in headers.get_all(key)], key
    assert ours_srv.connections == theirs_srv.connections == 1


def test_head_close_and_http10(scripted: Any) -> None:
    """HEAD has no body whatever its Content-Length; ``Connection: close`` and an HTTP/1.0
    answer without keep-alive end the connection (the next request opens a new one, as
    http.client does); an answer without a length is read up to the close."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nab"
    old = b"HTTP/1.0 200 OK\r\n\r\nuntil the end"
    srv = scripted([(head, False), (closing, True), (old, True), (head, False)])
    t = _transport()
    assert t.send(Request(srv.base, "/x", method="HEAD")).body == b""
    assert t.send(Request(srv.base, "/x")).body == b"ab"
    assert t.send(Request(srv.base, "/x")).body == b"until the end"
    assert t.send(Request(srv.base, "/x", method="HEAD")).status == 200
    assert srv.connections == 3
    theirs = scripted([(old, True)])
    assert _with_http_client(theirs.base, "GET", 1)[0][1] == b"until the end"


def test_request_bytes(scripted: Any) -> None:
    """One request: the method, target, Host, the transport's and the request's headers, and a
    body with its Content-Length."""
    srv = scripted([(ANSWERS["length"], False)] * 2)
    t = _transport()
    t.send(Request(srv.base, "/v1/datasets/ds/files/a%20b?x=1", {"Range": "bytes=0-1"}))
    t.send(Request(srv.base, "/v1/load", method="POST", body=b'{"a": 1}'))
    first, second = srv.requests
    other = scripted([(ANSWERS["length"], False)])  # an address with a user: never in Host
    t.send(Request(other.base.replace("//", "//user:pw@"), "/x"))
    assert f"Host: 127.0.0.1:{other.port}\r\n".encode() in other.requests[0]
    assert b"pw" not in other.requests[0]
    assert first.startswith(b"GET /v1/datasets/ds/files/a%20b?x=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{srv.port}\r\n".encode() in first
    assert b"Authorization: Bearer t\r\n" in first and b"Range: bytes=0-1\r\n" in first
    assert second.startswith(b"POST /v1/load HTTP/1.1\r\n")
    assert second.endswith(b'Content-Length: 8\r\n\r\n{"a": 1}')


def test_header_injection_is_refused(scripted: Any) -> None:
    srv = scripted([(ANSWERS["length"], False)])
    t = _transport()
    with pytest.raises(ValueError, match="line break"):
        t.send(Request(srv.base, "/x", {"If-Match": '"v"\r\nX-Evil: 1'}))
    with pytest.raises(ValueError, match="no spaces or control"):
        t.send(Request(srv.base, "/x HTTP/1.1\r\nX-Evil: 1"))
    assert srv.requests == []  # nothing was sent


def test_short_body_is_truncated(scripted: Any) -> None:
    srv = scripted([(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", True)])
    with pytest.raises(Truncated, match="3 of 10"):
        _transport().send(Request(srv.base, "/x"))
    chunks = scripted([(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", True)])
    with pytest.raises(Truncated):
        _transport().send(Request(chunks.base, "/x"))


def test_closed_keep_alive_is_stale_and_a_fresh_one_unreachable(scripted: Any) -> None:
    """A reused connection the worker closed fails as stale (the policy retries once on a new
    one); a new connection closed without an answer is a worker that cannot answer."""
    srv = scripted([(ANSWERS["length"], False), None, (ANSWERS["length"], False), None])
    t = _transport()
    assert t.send(Request(srv.base, "/x")).body == b"hello"
    with pytest.raises(StaleConnection):
        t.send(Request(srv.base, "/x"))
    assert t.send(Request(srv.base, "/x")).body == b"hello"  # a new connection
    fresh = scripted([None])
    with pytest.raises(Unreachable):
        _transport().send(Request(fresh.base, "/x"))


@pytest.mark.parametrize(
    "raw",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-Long: " + b"a" * MAX_LINE + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * (MAX_HEADERS + 1) + b"\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nNoColonHere\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n Folded: x\r\n\r\n",
    ],
    ids=[
        "not-http",
        "bad-status",
        "long-line",
        "many-headers",
        "negative-length",
        "huge-length",
        "negative-chunk",
        "chunk-without-crlf",
        "no-colon",
        "folded",
    ],
)
def test_answers_that_are_not_http_fail_as_unreachable(scripted: Any, raw: bytes) -> None:
    """Nothing the network hands back is trusted: a bad answer fails the request (the policy
    then tries another worker), with no unbounded read or allocation."""
    srv = scripted([(raw, True)])
    with pytest.raises(Unreachable):
        _transport().send(Request(srv.base, "/x"))


def test_a_refused_port_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
        with pytest.raises(Unreachable):
            _transport().send(Request(f"http://127.0.0.1:{port}", "/x"))
    with pytest.raises(ValueError, match="http:// or https://"):
        _transport().send(Request("ftp://127.0.0.1:21", "/x"))


@pytest.mark.integration
def test_reads_from_a_tls_worker(
    make_dataset: Any,
    start_worker: Any,
    tls_files: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker serving https://: the bytes as in the origin, the certificate checked against
    the authorities of SSL_CERT_FILE (an unknown authority: unreachable, never read)."""
    import os

    from tidepool.client import TidepoolFileSystem

    files = {"a.bin": os.urandom(300_000), "b.bin": os.urandom(10)}
    cfg = make_dataset(files, page_size=64 * 1024)
    w = start_worker([cfg], tls_cert=tls_files.cert, tls_key=tls_files.key)
    assert w.endpoint.startswith("https://")
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files.ca))
    fs = TidepoolFileSystem(endpoint=w.endpoint, local_reads=False, skip_instance_cache=True)
    for name, data in files.items():
        assert fs.cat_file(f"ds/{name}") == data
        assert fs.cat_file(f"ds/{name}", start=3, end=9) == data[3:9]
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files.other_ca))
    with pytest.raises(Unreachable, match="CERTIFICATE_VERIFY_FAILED"):
        SyncTransport({}, 2.0, 5.0).send(Request(w.endpoint, "/v1/node"))
