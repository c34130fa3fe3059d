"""Signed membership entries: only an entry signed with the pool's peer credential, for this pool,
under its own name, describes a member (pure; no etcd)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidepool.core.ring import Member
from tidepool.pool.entries import decode_entry, encode_entry, signature

KEY = "the-pool-peer-credential"
ME = Member("node-1", "https://10.0.0.1:8433", "factory-1")


def test_a_signed_entry_round_trips() -> None:
    assert decode_entry(encode_entry(ME, KEY), KEY, "factory-1", "node-1") == ME


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"address": "http://evil.example:80"}, "bad signature"),
        ({"name": "node-2"}, "bad signature"),
        ({"pool": "other"}, "bad signature"),
        ({"sig": "0" * 64}, "bad signature"),
        ({"sig": None}, "unsigned"),
        ({"sig": ""}, "unsigned"),
        ({"name": 7}, "must be strings"),
    ],
)
def test_an_altered_or_unsigned_entry_is_refused(change: dict[str, object], reason: str) -> None:
    entry = json.loads(encode_entry(ME, KEY))
    entry.update(change)
    with pytest.raises(ValueError, match=reason):
        decode_entry(json.dumps(entry), KEY, "factory-1", "node-1")


def test_an_entry_signed_with_another_credential_is_refused() -> None:
    with pytest.raises(ValueError, match="bad signature"):
        decode_entry(encode_entry(ME, "a-guessed-credential"), KEY, "factory-1", "node-1")


def test_a_valid_entry_of_another_pool_or_key_is_refused() -> None:
    with pytest.raises(ValueError, match="signed for pool 'factory-1', not 'factory-2'"):
        decode_entry(encode_entry(ME, KEY), KEY, "factory-2", "node-1")
    with pytest.raises(ValueError, match="stored under 'node-9'"):
        decode_entry(encode_entry(ME, KEY), KEY, "factory-1", "node-9")


def test_only_http_addresses() -> None:
    odd = Member("node-1", "file:///etc/passwd", "factory-1")
    with pytest.raises(ValueError, match="not an http"):
        decode_entry(encode_entry(odd, KEY), KEY, "factory-1", "node-1")


@pytest.mark.parametrize("raw", [b"", b"\xff\xfe", b"[]", b'"x"', b"{", b"null"])
def test_junk_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode_entry(raw, KEY, "factory-1", "node-1")


@given(st.text(), st.text(), st.text(), st.text(min_size=1))
def test_any_unicode_fields_verify_only_with_their_own_signature(
    name: str, address: str, pool: str, key: str
) -> None:
    member = Member(name, "http://" + address, pool)
    sig = signature(member, key)
    assert signature(member, key) == sig
    assert signature(Member(name + "x", member.address, pool), key) != sig
    assert signature(Member(name, member.address, pool), key + "x") != sig
    assert decode_entry(encode_entry(member, key), key, pool, name) == member
