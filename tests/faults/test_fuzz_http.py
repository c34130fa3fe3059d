"""Fuzzing the worker's HTTP request handling with hypothesis-generated requests.

Raw request bytes (paths with percent-encoded junk, ``..``, NUL, unicode, very long segments;
arbitrary methods; junk ``Range`` and ``Authorization`` headers) are sent on a socket to a worker
running in-process. Two datasets: one on the S3 origin (bucket prefix ``data/``, with a canary
object beside the prefix) and one on a local directory (``file://``, with a canary file beside
it and beside the cache). Property: no answer is a 500, the worker never dies, and no canary byte
ever leaves the worker — no escape from a dataset root.

The Range parser, path normalizer and spec loader have their own property tests
(tests/test_pure.py, tests/spec); this one exercises the whole request path.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import DatasetFactory, ThreadWorker

from tidepool.spec.config import DatasetConfig, MountConfig, RuntimeConfig, TierConfig
from tidepool.worker import WorkerSettings
from tidepool_lab.testbed.s3server import S3Server

pytestmark = pytest.mark.integration

CANARY = b"CANARY-7f3a9c-never-serve-me"
TOKEN = "fuzz-token-123456"


@pytest.fixture(scope="module")
def fuzz_worker(
    s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ThreadWorker]:
    tmp = tmp_path_factory.mktemp("fuzz")
    factory = DatasetFactory(s3_server, tmp)
    s3cfg = factory({"a.txt": b"hello", "sub/b.bin": b"\x00" * 3000}, name="ds")
    s3_server.boto3_client().put_object(Bucket=factory.bucket, Key="secret.txt", Body=CANARY)
    s3_server.boto3_client().put_object(Bucket=factory.bucket, Key="data-x/s", Body=CANARY)
    root = tmp / "local" / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"local hello")
    (root / "sub" / "c.txt").write_bytes(b"c")
    (tmp / "local" / "secret.txt").write_bytes(CANARY)
    (tmp / "local" / "root-sibling").mkdir()
    (tmp / "local" / "root-sibling" / "s.txt").write_bytes(CANARY)
    (tmp / "canary.txt").write_bytes(CANARY)
    local = DatasetConfig(
        name="loc",
        mounts=(
            MountConfig(name="loc", url=f"file://{root}", protocol="file", root=str(root), path=""),
        ),
        runtime=RuntimeConfig(tiers=(TierConfig("SSD", str(tmp / "cache-loc"), 1 << 26),)),
    )
    w = ThreadWorker([s3cfg, local], WorkerSettings(port=0, state_dir=tmp / "state", token=TOKEN))
    try:
        yield w
    finally:
        w.stop()


SEGMENTS = st.one_of(
    st.sampled_from(
        [
            "..",
            ".",
            "%2e%2e",
            "%2E%2e",
            "..%2f",
            "%2f",
            "%00",
            "%ff",
            "%",
            "%zz",
            "a.txt",
            "sub",
            "b.bin",
            "c.txt",
            "secret.txt",
            "..%5c",
            "\\..",
            "~",
            "//",
            "%252e%252e",
            "data-x",
            "root-sibling",
            "s.txt",
            "s",
            "canary.txt",
            "%c0%ae%c0%ae",
        ]
    ),
    st.text(min_size=1, max_size=12).map(lambda s: "".join(f"%{b:02x}" for b in s.encode())),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8).map(
        lambda s: s.encode("utf-8", "surrogatepass").decode("latin-1")
    ),
    st.just("x" * 5000),
)
PREFIXES = st.sampled_from(
    [
        "/v1/datasets/ds/files/",
        "/v1/datasets/loc/files/",
        "/v1/datasets/ds/info/",
        "/v1/datasets/loc/list/",
        "/v1/datasets/loc/find/",
        "/v1/datasets/%2e%2e/files/",
        "/v1/datasets/loc/status",
        "/v1/loads/",
        "/",
    ]
)
RANGES = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "bytes=0-",
            "bytes=-1",
            "bytes=5-2",
            "bytes=99999999999999999999-",
            "bytes=",
            "bytes=0-0,1-1",
            "chars=0-1",
            "bytes=-0",
            "bytes=1-",
            "bytes=--1",
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
)
AUTHS = st.one_of(
    st.just(f"Bearer {TOKEN}"),
    st.none(),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
    st.just(f"bearer   {TOKEN}  "),
)


def _send(endpoint: str, raw: bytes) -> tuple[int, bytes]:
    host, port = endpoint.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(raw)
        buf = b""
        while data := sock.recv(1 << 16):
            buf += data
    status = int(buf.split(b" ", 2)[1]) if buf.startswith(b"HTTP/1.") else 0
    return status, buf


@pytest.mark.slow
@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "G\x00T"]),
    prefix=PREFIXES,
    segments=st.lists(SEGMENTS, max_size=6),
    rng=RANGES,
    auth=AUTHS,
    query=st.sampled_from(["", "?refresh=0", "?refresh=%00", "?x=" + "y" * 3000]),
)
def test_fuzzed_requests_never_500_and_never_escape(
    fuzz_worker: ThreadWorker,
    method: str,
    prefix: str,
    segments: list[str],
    rng: str | None,
    auth: str | None,
    query: str,
) -> None:
    """Any request: answered with a status below 500 (or 503 for origin trouble), the worker
    stays alive, and no canary byte from outside a dataset root is ever in an answer."""
    target = prefix + "/".join(segments) + query
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if rng is not None:
        lines.append(f"Range: {rng}")
    if auth is not None:
        lines.append(f"Authorization: {auth}")
    if method in ("POST", "PUT"):
        lines.append("Content-Length: 2")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
    if method in ("POST", "PUT"):
        raw += b"{}"
    status, answer = _send(fuzz_worker.endpoint, raw)
    assert CANARY not in answer, target
    assert status != 500 and status < 600, (target, answer[:300])
    assert status == 0 or status < 500 or status == 503, (target, answer[:300])


def test_worker_alive_after_fuzzing(fuzz_worker: ThreadWorker) -> None:
    """After the fuzz run the worker still answers and serves the right bytes."""
    raw = (
        f"GET /v1/datasets/loc/files/a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Authorization: Bearer {TOKEN}\r\n\r\n"
    ).encode()
    status, answer = _send(fuzz_worker.endpoint, raw)
    assert status == 200 and answer.endswith(b"local hello")


# ---- every header, query value and body a handler reads, with full Unicode ---------------

UNICODE = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
"""Any text but lone surrogates (which have no UTF-8 form to put on a wire)."""
HEADER_VALUES = st.one_of(
    UNICODE.map(lambda s: s.replace("\r", "").replace("\n", "")),
    st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.from_regex(r"bytes=[0-9²٣-]{0,30}(,[0-9-]{0,10})?", fullmatch=True),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | UNICODE,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(UNICODE, inner, max_size=4),
    max_leaves=12,
)
BODIES = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "paths": st.one_of(st.lists(UNICODE, max_size=5), JSON_VALUES),
            "concurrency": st.one_of(st.integers(), JSON_VALUES),
            "pages": st.one_of(st.integers(), JSON_VALUES),
            "bytes": st.one_of(st.integers(), JSON_VALUES),
        },
    ).map(lambda d: json.dumps(d).encode()),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)
POST_ROUTES = st.sampled_from(
    [
        "/v1/datasets/loc/load",
        "/v1/datasets/loc/local-hits",
        "/v1/datasets/loc/prefetch",
        "/v1/datasets/loc/refresh/",
        "/v1/datasets/ds/load",
    ]
)
GET_ROUTES = st.sampled_from(
    [
        "/v1/datasets/loc/files/a.txt",
        "/v1/datasets/loc/files/sub/c.txt",
        "/v1/datasets/loc/status",
        "/v1/datasets/loc/list/",
        "/v1/datasets/ds/info/a.txt",
        "/v1/history",
        "/v1/loads",
    ]
)


def _query(pairs: list[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    return "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


@pytest.mark.slow
@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    post=st.booleans(),
    get_route=GET_ROUTES,
    post_route=POST_ROUTES,
    headers=st.dictionaries(
        st.sampled_from(
            ["Range", "If-Match", "X-Tidepool-Peer", "Cache-Control", "Content-Type", "Accept"]
        ),
        HEADER_VALUES,
        max_size=4,
    ),
    query=st.lists(
        st.tuples(st.sampled_from(["refresh", "x", "refresh", "ä"]) | UNICODE, UNICODE),
        max_size=3,
    ),
    body=BODIES,
    json_type=st.booleans(),
)
def test_fuzzed_headers_queries_and_bodies_are_never_500(
    fuzz_worker: ThreadWorker,
    post: bool,
    get_route: str,
    post_route: str,
    headers: dict[str, str | bytes],
    query: list[tuple[str, str]],
    body: bytes,
    json_type: bool,
) -> None:
    """Full-Unicode (and raw non-UTF-8) values in every header a handler reads, any query
    parameters and any JSON or non-JSON body, on an authorised connection so that every value
    reaches the validation layer: the answer is a 4xx or a 2xx, never a 5xx, and an accepted
    load never exceeds the documented bounds."""
    method, target = ("POST", post_route) if post else ("GET", get_route)
    lines = [
        f"{method} {target}{_query(query)} HTTP/1.1".encode(),
        b"Host: 127.0.0.1",
        b"Connection: close",
        f"Authorization: Bearer {TOKEN}".encode(),
    ]
    if post and json_type and "Content-Type" not in headers:
        lines.append(b"Content-Type: application/json")
    for name, value in headers.items():
        raw_value = value if isinstance(value, bytes) else value.encode("utf-8")
        lines.append(name.encode() + b": " + raw_value)
    if post:
        lines.append(f"Content-Length: {len(body)}".encode())
    raw = b"\r\n".join(lines) + b"\r\n\r\n" + (body if post else b"")
    status, answer = _send(fuzz_worker.endpoint, raw)
    assert status != 0 and status < 500, (raw[:300], answer[:300])
    table = fuzz_worker.worker.api.loads
    assert len(table) <= 2 * (256 + 4) + 256  # running + waiting per dataset, and kept ones
