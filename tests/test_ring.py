"""Rendezvous placement: stable, balanced, and minimal movement on join/leave."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidepool.core.ring import Member, file_key, owners, ranked, spread

MEMBERS = [Member(f"node-{i}", f"http://192.0.2.{10 + i}:8433", "pool-a") for i in range(5)]
KEYS = [file_key("images", f"train/{i:05d}.jpg") for i in range(20000)]


def test_same_owner_in_another_process() -> None:
    key = file_key("images", "train/00042.jpg")
    here = owners(key, MEMBERS, 2)
    code = (
        "from tidepool.core.ring import Member, file_key, owners;"
        "ms=[Member(f'node-{i}', f'http://192.0.2.{10+i}:8433', 'pool-a') for i in range(5)];"
        "print(','.join(m.name for m in owners(file_key('images','train/00042.jpg'), ms, 2)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ",".join(m.name for m in here)


def test_balanced() -> None:
    counts = spread(KEYS, MEMBERS)
    expected = len(KEYS) / len(MEMBERS)
    assert all(abs(c - expected) < 0.1 * expected for c in counts.values()), counts


def test_leave_moves_only_the_leavers_keys() -> None:
    before = {k: owners(k, MEMBERS)[0] for k in KEYS}
    gone = MEMBERS[2]
    after = {k: owners(k, [m for m in MEMBERS if m != gone])[0] for k in KEYS}
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(before[k] == gone for k in moved)
    assert abs(len(moved) / len(KEYS) - 1 / 5) < 0.03


def test_join_moves_about_one_in_n() -> None:
    before = {k: owners(k, MEMBERS[:4])[0] for k in KEYS}
    after = {k: owners(k, MEMBERS)[0] for k in KEYS}
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(after[k] == MEMBERS[4] for k in moved)
    assert abs(len(moved) / len(KEYS) - 1 / 5) < 0.03


@given(st.text(max_size=50), st.integers(min_value=1, max_value=7))
def test_replicas_are_distinct_prefix_of_ranking(key: str, r: int) -> None:
    got = owners(key, MEMBERS, r)
    assert len(got) == min(r, len(MEMBERS)) and len(set(got)) == len(got)
    assert got == ranked(key, MEMBERS)[: len(got)]


def test_replicas_must_be_positive() -> None:
    with pytest.raises(ValueError, match="replicas"):
        owners("k", MEMBERS, 0)
