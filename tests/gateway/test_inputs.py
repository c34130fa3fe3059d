"""The gateway's parsers fed full Unicode and hostile values, without sockets: every answer is an
S3 error with a 4xx code or a value that cannot reach outside the dataset."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tidepool.core.errors import OriginUnavailableError
from tidepool.gateway.errors import s3_error
from tidepool.gateway.hosts import host_matcher, split_host
from tidepool.gateway.listing import listable_root
from tidepool.gateway.objects import MAX_OVERRIDE, override_value, plan_get
from tidepool.gateway.operations import MAX_KEYS, MAX_QUERY_VALUE, parse_request
from tidepool.gateway.sigv4 import S3Error

ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=80)
INFO = {"size": 100, "version": "abc", "mtime": 1_700_000_000.0}


@given(method=st.sampled_from(["GET", "HEAD"]), path=ANY_TEXT, query=ANY_TEXT)
@example(method="GET", path="/ds", query="list-type=2&max-keys=%C2%B2")
@example(method="GET", path="/ds", query="max-keys=" + "9" * 5000)
@example(method="GET", path="/ds", query="prefix=%FF%FE")
@example(method="GET", path="/ds/%ED%A0%80", query="")
def test_parse_request_total_on_unicode(method: str, path: str, query: str) -> None:
    try:
        op = parse_request(method, "/" + path.lstrip("/"), query)
    except S3Error as err:  # a client error, or 501 for a sub-resource (``?logging``)
        assert (400 <= err.status < 500 or err.status == 501) and err.code
        return
    if op.listing is not None:
        assert 0 <= op.listing.max_keys <= MAX_KEYS


@pytest.mark.parametrize("value", ["²", "٣", "-1", "1e3", " 5", "9" * 30])
def test_max_keys_is_ascii_digits(value: str) -> None:
    from urllib.parse import quote

    with pytest.raises(S3Error) as err:
        parse_request("GET", "/ds", f"list-type=2&max-keys={quote(value)}")
    assert err.value.code == "InvalidArgument" and "max-keys" in err.value.message


def test_max_keys_over_the_cap_is_the_cap() -> None:
    op = parse_request("GET", "/ds", "list-type=2&max-keys=2147483647")
    assert op.listing is not None and op.listing.max_keys == MAX_KEYS


def test_query_values_are_bounded() -> None:
    with pytest.raises(S3Error) as err:
        parse_request("GET", "/ds", "list-type=2&prefix=" + "p" * (MAX_QUERY_VALUE + 1))
    assert err.value.code == "InvalidArgument" and "'prefix'" in err.value.message


@pytest.mark.parametrize(
    ("prefix", "root"),
    [
        ("", ""),
        ("train/", "train"),
        ("train/x", "train"),
        ("..x", ""),
        ("a/..b/c", "a/..b"),
        ("../../v1/node", ""),
        ("../", ""),
        ("a/../../metrics", "a"),
        ("a//b", "a"),
        ("./a/b", ""),
        ("a\\b/c", ""),
        ("a\x00/b", ""),
    ],
)
def test_listable_root(prefix: str, root: str | None) -> None:
    assert listable_root(prefix) == root


@given(ANY_TEXT)
def test_listable_root_never_names_a_dot_segment(prefix: str) -> None:
    root = listable_root(prefix)
    if root is not None:
        parts = root.split("/") if root else []
        assert not any(p in ("", ".", "..") for p in parts)
        assert "\x00" not in root and "\\" not in root


@pytest.mark.parametrize(
    "value",
    ["a\r\nX-Evil: 1", "a\nb", "a\rb", "nul\x00", "bell\x07", "del\x7f", "x" * (MAX_OVERRIDE + 1)],
)
def test_header_overrides_refuse_control_characters(value: str) -> None:
    with pytest.raises(S3Error) as err:
        plan_get(INFO, "k", {}, {"response-content-disposition": value})
    assert (err.value.code, err.value.status) == ("InvalidArgument", 400)


@given(ANY_TEXT)
def test_override_value_total(value: str) -> None:
    try:
        out = override_value("response-content-type", value)
    except S3Error as err:
        assert err.code == "InvalidArgument"
        return
    assert "\r" not in out and "\n" not in out
    assert (
        override_value("response-content-disposition", 'attachment; filename="ü x.txt"\t')
        == 'attachment; filename="ü x.txt"\t'
    )


def test_errors_never_carry_internal_addresses() -> None:
    worker_down = ConnectionError(
        111, "cannot reach the Tidepool worker at http://10.0.0.7:8433 (refused)"
    )
    origin_down = OriginUnavailableError("ds", "k", "Cannot connect to host s3.internal:9000")
    internal = RuntimeError("boom at http://10.0.0.7:8433/v1/node token=abc")
    for exc in (worker_down, origin_down, internal, PermissionError("Bearer xyz wrong")):
        err = s3_error(exc)
        assert "10.0.0.7" not in err.message and "s3.internal" not in err.message
        assert "xyz" not in err.message and "abc" not in err.message


def test_host_matcher() -> None:
    loop = host_matcher("127.0.0.1", 9000)
    assert loop("127.0.0.1:9000") and loop("LOCALHOST:9000") and loop("[::1]:9000")
    assert not loop("127.0.0.1:9001") and not loop("evil.example:9000") and not loop("")
    public = host_matcher("0.0.0.0", 9000, ["s3.edge.local", "gw.example:443"])
    assert public("s3.edge.local:9000") and public("gw.example:443")
    assert not public("s3.edge.local:9001") and not public("10.0.0.1:9000")
    wildcard = host_matcher("0.0.0.0", 9000)
    assert wildcard("any.name:9000") and not wildcard("any.name:80") and not wildcard("x")
    port80 = host_matcher("10.0.0.5", 80)
    assert port80("10.0.0.5") and port80("10.0.0.5:80")
    assert split_host("[::1]:9000") == ("[::1]", 9000)
    assert split_host("h:²") == ("h", None)


@given(ANY_TEXT)
def test_host_matcher_total(value: str) -> None:
    assert host_matcher("127.0.0.1", 9000)(value) in (True, False)
