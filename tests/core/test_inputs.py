"""Every parser of client values, fed full Unicode: it answers a value or a BadRequestError, never
another exception, and its message names the field, echoes the value cut short and says what
is valid."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tidepool.core.errors import BadRequestError, RangeNotSatisfiableError
from tidepool.core.inputs import ECHO_LIMIT, echo, parse_bool, parse_int
from tidepool.core.ranges import MAX_DIGITS, MAX_HEADER, parse_range
from tidepool.worker.requests import (
    MAX_LOAD_CONCURRENCY,
    MAX_LOAD_PATHS,
    MAX_LOCAL_HIT_PAGES,
    parse_load,
    parse_local_hits,
)

# every code point class, surrogates included, plus the digits that are not ASCII
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=200)
UNICODE_DIGITS = st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=30)


# ---- integers and booleans ------------------------------------------------------------------


@given(ANY_TEXT)
@example("²")
@example("٣")
@example("1_000")
@example(" 5")
@example("9" * 5000)
def test_parse_int_is_total(text: str) -> None:
    try:
        value = parse_int(text, "max-keys", lo=0, hi=1000)
    except BadRequestError as exc:
        message = str(exc)
        assert message.startswith("max-keys: got ")
        assert "expected a whole number from 0 to 1000" in message
        assert len(message) < 220  # the value is echoed cut short
        return
    assert 0 <= value <= 1000
    assert text.isascii() and text.isdigit()


@given(UNICODE_DIGITS)
def test_parse_int_refuses_non_ascii_digits(text: str) -> None:
    if text.isascii():
        return
    with pytest.raises(BadRequestError):
        parse_int(text, "n", lo=0, hi=10**9)


@given(st.integers(min_value=0, max_value=10**6))
def test_parse_int_round_trips(n: int) -> None:
    assert parse_int(str(n), "n", lo=0, hi=10**6) == n


@given(ANY_TEXT)
def test_parse_bool_is_total(text: str) -> None:
    try:
        parse_bool(text, "refresh")
    except BadRequestError as exc:
        assert "refresh" in str(exc) and "1, 0, true, false" in str(exc)


@given(st.one_of(ANY_TEXT, st.binary(max_size=300), st.integers()))
@example(10**5000)
def test_echo_is_short_and_one_line(value: str | bytes | int) -> None:
    shown = echo(value)
    assert len(shown) <= 3 * ECHO_LIMIT + 30
    assert "\r" not in shown and "\n" not in shown and "\x00" not in shown


# ---- Range -------------------------------------------------------------------------------------


@given(ANY_TEXT, st.integers(min_value=0, max_value=10**15))
@example("bytes=²-", 10)
@example("bytes=0-٣", 10)
@example("bytes=" + "1" * 4301 + "-", 10)
@example("bytes=-" + "9" * 5000, 10)
@example("bytes=0-1\r\nX: y", 10)
def test_range_parser_total_unicode(header: str, size: int) -> None:
    try:
        span = parse_range(header, size)
    except RangeNotSatisfiableError:
        return
    except BadRequestError as exc:
        assert "Range" in str(exc)
        assert len(str(exc)) < 300
        return
    if span is not None:
        start, end = span
        assert 0 <= start < end <= size
        assert header.isascii()


@given(st.integers(0, 10**18), st.integers(0, 10**18), st.integers(1, 10**18))
def test_range_valid_spans(a: int, b: int, size: int) -> None:
    lo, hi = min(a, b), max(a, b)
    if lo >= size:
        with pytest.raises(RangeNotSatisfiableError):
            parse_range(f"bytes={lo}-{hi}", size)
    else:
        assert parse_range(f"bytes={lo}-{hi}", size) == (lo, min(hi + 1, size))


def test_range_bounds_are_named() -> None:
    with pytest.raises(BadRequestError, match=f"at most {MAX_HEADER}"):
        parse_range("bytes=" + "1" * MAX_HEADER + "-", 10)
    with pytest.raises(BadRequestError, match="ASCII digits"):
        parse_range("bytes=" + "1" * (MAX_DIGITS + 1) + "-", 10)
    with pytest.raises(BadRequestError, match="ASCII digits"):
        parse_range("bytes=²-", 10)


# ---- worker bodies -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        (b"[]", ["JSON object"]),
        (b"{", ["not valid JSON"]),
        (b'{"concurrency":"x"}', ["concurrency", "'x'", f"1 to {MAX_LOAD_CONCURRENCY}"]),
        (b'{"concurrency":true}', ["concurrency", "True"]),
        (b'{"concurrency":0}', ["concurrency", f"1 to {MAX_LOAD_CONCURRENCY}"]),
        (b'{"concurrency":2000000}', ["concurrency", "2000000"]),
        (b'{"concurrency":1' + b"0" * 5000 + b"}", ["not valid JSON"]),
        (b'{"paths":"train"}', ["paths", "list"]),
        (b'{"paths":["../x"]}', ["paths.0", "'..'"]),
        (b'{"paths":["a\\u0000b"]}', ["paths.0", "NUL"]),
        (b'{"path":[]}', ["'path'", "paths, concurrency"]),
    ],
)
def test_bad_load_bodies_name_the_field(raw: bytes, names: list[str]) -> None:
    with pytest.raises(BadRequestError) as info:
        parse_load(raw)
    for name in names:
        assert name in str(info.value), str(info.value)
    assert len(str(info.value)) < 400


def test_load_body_bounds() -> None:
    assert parse_load(b"").paths == []
    assert parse_load(b'{"paths":["/a//b/"],"concurrency":256}').paths == ["a/b"]
    too_many = json.dumps({"paths": ["p"] * (MAX_LOAD_PATHS + 1)}).encode()
    with pytest.raises(BadRequestError, match="paths"):
        parse_load(too_many)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"pages":' + str(10**400).encode() + b"}",
        b'{"pages":' + str(10**48).encode() + b"}",
        b'{"pages":' + str(MAX_LOCAL_HIT_PAGES + 1).encode() + b"}",
        b'{"pages":-1}',
        b'{"pages":1.5}',
        b'{"pages":"3"}',
        b'{"pages":3,"bytes":' + str(3 * 4096 + 1).encode() + b"}",
        b"[3]",
        b"{}",
    ],
)
def test_bad_local_hits(raw: bytes) -> None:
    with pytest.raises(BadRequestError):
        parse_local_hits(raw, page_size=4096)


def test_local_hits_bounds() -> None:
    hits = parse_local_hits(b'{"pages":3,"bytes":12288}', page_size=4096)
    assert (hits.pages, hits.bytes) == (3, 12288)
    with pytest.raises(BadRequestError, match=r"at most pages x page size = 3 x 4096"):
        parse_local_hits(b'{"pages":3,"bytes":12289}', page_size=4096)


@given(st.one_of(st.binary(max_size=300), ANY_TEXT.map(lambda t: t.encode("utf-8", "replace"))))
def test_body_parsers_are_total(raw: bytes) -> None:
    for parse in (parse_load, lambda r: parse_local_hits(r, 1 << 20)):
        try:
            parse(raw)
        except BadRequestError as exc:
            assert len(str(exc)) < 500


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(ANY_TEXT, inner, max_size=5),
    max_leaves=20,
)


@given(
    st.dictionaries(
        st.sampled_from(["paths", "concurrency", "pages", "bytes", "x"]), JSON_VALUES, max_size=3
    )
)
def test_body_parsers_total_on_json_objects(body: dict[str, object]) -> None:
    raw = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    for parse in (parse_load, lambda r: parse_local_hits(r, 1 << 20)):
        try:
            parsed = parse(raw)
        except BadRequestError:
            continue
        for name in ("concurrency", "pages"):
            value = getattr(parsed, name, None)
            assert value is None or 0 <= value <= MAX_LOCAL_HIT_PAGES
