"""Pure core: the mount routing table shared by worker and client, and If-Match parsing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidepool.core.conditions import parse_if_match
from tidepool.core.errors import BadRequestError
from tidepool.core.mounts import MountTable


def test_longest_mount_wins_and_names_map_back() -> None:
    table = MountTable([("", "root"), ("a/b", "deep"), ("a", "mid")])
    route = table.route("a/b/c.txt")
    assert route is not None and (route.target, route.orel, route.prefix) == (
        "deep",
        "c.txt",
        "a/b",
    )
    assert route.to_dataset("c.txt") == "a/b/c.txt"
    mid = table.route("a/x")
    assert mid is not None and (mid.target, mid.orel) == ("mid", "x")
    assert table.route("z").target == "root"  # type: ignore[union-attr]


def test_directories_above_mount_points_are_virtual() -> None:
    table = MountTable([("x/y", 1), ("x/z/w", 2)])
    assert table.route("x") is None and table.is_virtual_dir("x") and table.is_virtual_dir("")
    assert [e["name"] for e in table.virtual_children("")] == ["x"]
    assert [e["name"] for e in table.virtual_children("x")] == ["x/y", "x/z"]
    assert not table.is_virtual_dir("q")


def test_two_mounts_on_one_path_are_refused() -> None:
    with pytest.raises(ValueError, match="share one path"):
        MountTable([("a", 1), ("a", 2)])


def test_if_match() -> None:
    assert parse_if_match(None) is None and parse_if_match("*") is None
    assert parse_if_match('"abc"') == "abc"
    assert parse_if_match('W/"abc"') == "W/abc"  # a weak tag matches no version
    for bad in ('"a", "b"', "abc", '"', "x" * 2000):
        with pytest.raises(BadRequestError):
            parse_if_match(bad)


@given(st.text())
def test_if_match_never_raises_anything_but_a_bad_request(text: str) -> None:
    with contextlib.suppress(BadRequestError):
        parse_if_match(text)
