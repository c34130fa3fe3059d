"""Membership entries as a registry (etcd) stores them: signed with the pool's peer credential.

A registry entry tells every worker of a pool "a member called NAME answers at ADDRESS", and
workers send that address their peer credential and take bytes from it. Anyone who can write to
the registry must therefore not be able to add a member. Each entry carries an HMAC-SHA256, keyed
with the pool's peer credential, over ``(name, address, pool)``; a worker takes an entry into its
view only if the signature verifies, the entry's pool is its own and the name matches the key the
entry is stored under. Unsigned or badly signed entries are ignored (the caller logs them).

Static member lists (flags, files, the runtime spec) are configuration and are not signed;
Kubernetes EndpointSlices come from the API server, which authenticates their writers.

Limits: a signature binds the fields, not time: whoever can write to the registry can re-put an
entry a member once wrote (the same name and address, so it only keeps a departed member in
view until its lease runs out) or delete entries (denial of service, not impersonation). Every
worker of a pool must share the peer credential; changing it means restarting the pool.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from tidepool.core.ring import Member

ENTRY_FORMAT = "tidepool-member-v1"
"""Domain separation: a signature over a member entry is never valid for anything else."""


def signature(member: Member, key: str) -> str:
    """The hex HMAC-SHA256 of ``member``'s name, address and pool under the peer credential."""
    message = json.dumps(
        [ENTRY_FORMAT, member.name, member.address, member.pool], separators=(",", ":")
    )
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


def encode_entry(member: Member, key: str) -> str:
    """The JSON value a member registers under its key."""
    return json.dumps(
        {
            "name": member.name,
            "address": member.address,
            "pool": member.pool,
            "sig": signature(member, key),
        }
    )


def decode_entry(raw: bytes | str, key: str, pool: str, name: str) -> Member:
    """The member an entry stored under ``name`` describes; ``ValueError`` saying why if the entry
    is malformed, unsigned, badly signed, of another pool or stored under another name."""
    try:
        data: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    name_, address, pool_ = (data.get(f) for f in ("name", "address", "pool"))
    if not (isinstance(name_, str) and isinstance(address, str) and isinstance(pool_, str)):
        raise ValueError("name, address and pool must be strings")
    member = Member(name=name_, address=address, pool=pool_)
    sig = data.get("sig")
    if not isinstance(sig, str) or not sig:
        raise ValueError("unsigned (no 'sig'; written without the pool's peer credential?)")
    if not hmac.compare_digest(sig.encode(), signature(member, key).encode()):
        raise ValueError("bad signature (written with another peer credential, or altered)")
    if member.pool != pool:
        raise ValueError(f"signed for pool {member.pool!r}, not {pool!r}")
    if member.name != name:
        raise ValueError(f"names member {member.name!r} but is stored under {name!r}")
    if not member.address.startswith(("http://", "https://")):
        raise ValueError(f"address {member.address[:100]!r} is not an http(s) URL")
    return member
