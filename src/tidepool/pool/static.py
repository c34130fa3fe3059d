"""Membership provider ``static``: a fixed member list from the command line, a file or the spec.

The list is configuration (not signed, unlike etcd entries), and it is its own last-known-good:
it is written to the state file at start so tools that read that file see the same pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tidepool.core.errors import ConfigError
from tidepool.core.ring import Member
from tidepool.pool.membership import PoolContext, save_members


def parse_static(spec: str, pool: str = "") -> list[Member]:
    """Members from ``[static:]NAME=URL,NAME=URL`` or ``[static:]URL,URL`` (name = host:port)."""
    text = spec.removeprefix("static:").strip()
    out = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, sep, url = item.partition("=")
        if not sep:
            name, url = "", item
        if "://" not in url:
            url = f"http://{url}"
        if not name:
            name = url.split("://", 1)[1].rstrip("/")
        out.append(Member(name=name, address=url.rstrip("/"), pool=pool))
    if not out:
        raise ConfigError(
            f"member list {spec!r} is empty; use static:NAME=http://HOST:PORT,... "
            "or static:HOST:PORT,HOST:PORT"
        )
    return out


class StaticMembership:
    """A fixed member list (it is its own last-known-good)."""

    def __init__(self, members: Sequence[Member], state_file: Path | None = None) -> None:
        self._members = sorted(members)
        self._state = state_file

    @classmethod
    def from_source(cls, source: str, context: PoolContext) -> StaticMembership:
        """From ``NAME=URL,...`` or ``URL,...`` (see :func:`parse_static`)."""
        return cls(parse_static(source, context.pool), context.state_file)

    def members(self) -> list[Member]:
        return list(self._members)

    async def start(self) -> None:
        save_members(self._state, self._members)

    async def stop(self) -> None:
        return None
