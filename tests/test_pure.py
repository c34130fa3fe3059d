"""Pure layers: path normalisation, Range parsing, page arithmetic and headers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidepool.core import pages
from tidepool.core.errors import BadRequestError, RangeNotSatisfiableError, redact
from tidepool.core.paths import normalize
from tidepool.core.quantity import parse_bytes
from tidepool.core.ranges import content_range, parse_range


@pytest.mark.parametrize(
    ("raw", "want"),
    [("a/b", "a/b"), ("/a//b/", "a/b"), ("./a/./b", "a/b"), ("", ""), ("/", "")],
)
def test_normalize_ok(raw: str, want: str) -> None:
    assert normalize(raw) == want


@pytest.mark.parametrize("raw", ["../x", "a/../../etc/passwd", "a\x00b", "a\\..\\b", "a/.."])
def test_normalize_refuses_escapes(raw: str) -> None:
    with pytest.raises(BadRequestError):
        normalize(raw)


@given(st.text(max_size=200))
def test_normalize_never_escapes(raw: str) -> None:
    try:
        out = normalize(raw)
    except BadRequestError:
        return
    parts = out.split("/") if out else []
    assert ".." not in parts and "" not in parts and "\x00" not in out
    assert not out.startswith("/")
    assert normalize(out) == out


@pytest.mark.parametrize(
    ("header", "size", "want"),
    [
        (None, 10, None),
        ("bytes=0-4", 10, (0, 5)),
        ("bytes=5-", 10, (5, 10)),
        ("bytes=-3", 10, (7, 10)),
        ("bytes=-30", 10, (0, 10)),
        ("bytes=8-100", 10, (8, 10)),
    ],
)
def test_parse_range(header: str | None, size: int, want: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == want


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=12-20", "bytes=-0"])
def test_range_not_satisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiableError):
        parse_range(header, 10)


@pytest.mark.parametrize(
    "header", ["items=0-1", "bytes=a-b", "bytes=5-2", "bytes=0-1,3-4", "bytes="]
)
def test_range_malformed(header: str) -> None:
    with pytest.raises(BadRequestError):
        parse_range(header, 10)


@given(st.text(max_size=40), st.integers(min_value=0, max_value=10**12))
def test_range_parser_total(header: str, size: int) -> None:
    try:
        span = parse_range(header, size)
    except BadRequestError:
        return
    if span is not None:
        start, end = span
        assert 0 <= start < end <= size


def test_content_range() -> None:
    assert content_range(0, 5, 10) == "bytes 0-4/10"


@given(
    st.integers(min_value=0, max_value=10**9),
    st.integers(min_value=0, max_value=10**9),
    st.sampled_from([4096, 1 << 20, 3 << 20]),
)
def test_pages_cover_range(a: int, b: int, ps: int) -> None:
    start, end = min(a, b), max(a, b)
    idxs = pages.pages_for(start, end, ps)
    if end == start:
        assert len(idxs) == 0
        return
    assert idxs[0] * ps <= start < (idxs[0] + 1) * ps
    assert idxs[-1] * ps < end <= (idxs[-1] + 1) * ps


def test_page_header_roundtrip() -> None:
    data = b"x" * 1000
    header = pages.encode_header(data)
    assert len(header) == pages.HEADER_SIZE
    assert pages.decode_header(header) == (1000, pages.checksum(data))
    with pytest.raises(ValueError):
        pages.decode_header(b"NOPE" + header[4:])


def test_file_key_is_stable_and_versioned() -> None:
    k1 = pages.file_key("ds", "a/b", "v1")
    assert k1 == pages.file_key("ds", "a/b", "v1")
    assert k1 != pages.file_key("ds", "a/b", "v2")
    assert len(k1) == 32
    # pinned: page file names are an on-disk contract shared with the client fast path
    assert pages.file_key("ds", "p", "v") == "d1f83fe44a7399b69f62e6ed9f88fcd6"


def test_version_of() -> None:
    assert pages.version_of('"abc"', 5, 1.0) == "abc"
    assert pages.version_of(None, 5, 1.5) == "5-1.500000"


def test_redact() -> None:
    text = "failed: secret=hunter22 and Authorization: Bearer tok123-abcdef plus AKIAXYZ"
    out = redact(text, ("AKIAXYZ",))
    assert "hunter22" not in out and "tok123-abcdef" not in out and "AKIAXYZ" not in out
    # prose about tokens survives: only credential-looking values are scrubbed
    msg = "missing or wrong bearer token (send 'Authorization: Bearer <token>')"
    assert redact(msg) == msg


@pytest.mark.parametrize(
    ("v", "n"), [("10Gi", 10 << 30), ("512Mi", 512 << 20), ("1G", 10**9), (100, 100)]
)
def test_parse_bytes(v: str | int, n: int) -> None:
    assert parse_bytes(v) == n


def test_parse_bytes_error_names_value() -> None:
    with pytest.raises(ValueError, match="10Gb"):
        parse_bytes("10Gb")


def test_host_identity_in_and_out_of_kubernetes(monkeypatch: pytest.MonkeyPatch) -> None:
    from tidepool.pool import hostid

    monkeypatch.delenv("TIDEPOOL_HOST_ID", raising=False)
    monkeypatch.setattr(hostid.socket, "gethostname", lambda: "worker-0")
    worker = hostid.host_id()
    monkeypatch.setattr(hostid.socket, "gethostname", lambda: "fuse-x7k2p")
    assert hostid.host_id() != worker  # two Pods: their hostnames differ
    # the rendered Pods set TIDEPOOL_HOST_ID to their node's name: one node, one identity
    monkeypatch.setenv("TIDEPOOL_HOST_ID", "edge-1")
    fuse = hostid.host_id()
    monkeypatch.setattr(hostid.socket, "gethostname", lambda: "worker-0")
    assert hostid.host_id() == fuse
    monkeypatch.setenv("TIDEPOOL_HOST_ID", "edge-2")
    assert hostid.host_id() != fuse
