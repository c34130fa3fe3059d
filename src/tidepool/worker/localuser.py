"""Who is on the other end of a loopback TCP connection: the local user behind a request.

A worker without a token listens on loopback only, where every local user can connect. Reads are
meant for them (that is what a tokenless loopback worker is for), but starting loads and posting
hit counts change the worker's state, so those routes answer only the worker's own user and root
(:class:`LocalUsers`). The kernel knows the owner of the client's socket: Linux lists every TCP
socket of the network namespace with its uid in ``/proc/net/tcp`` and ``/proc/net/tcp6``; the
client's socket is the entry whose local address is our peer and whose remote address is us.

Limits: Linux only. Where ``/proc/net/tcp`` cannot be read (another OS, a restricted ``/proc``)
:meth:`LocalUsers.available` is False and the worker logs at start that the mutating routes are
open to every local user (give it a token to close them). A process of an allowed user can still
act for another user (it is that user's choice); a token is the way to authenticate beyond that.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from aiohttp import web

__all__ = ["LocalUsers", "owner_uid"]

log = logging.getLogger(__name__)

Address = tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]


def _decode(text: str) -> Address | None:
    """``0100007F:1F90`` (or the 32-hex-digit IPv6 form) -> (address, port); pure."""
    host, sep, port = text.partition(":")
    if not sep:
        return None
    try:
        raw = bytes.fromhex(host)
        number = int(port, 16)
    except ValueError:
        return None
    if len(raw) not in (4, 16):
        return None
    # the kernel prints each 32-bit word in host byte order
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    addr = ipaddress.ip_address(raw)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr, number


def _normal(host: str, port: int) -> Address:
    addr = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr, port


def owner_uid(tables: Iterable[str], client: Address, server: Address) -> int | None:
    """The uid owning the socket ``client -> server`` in ``/proc/net/tcp*`` text; pure."""
    for table in tables:
        for line in table.splitlines()[1:]:
            fields = line.split()
            if len(fields) < 8:
                continue
            if _decode(fields[1]) == client and _decode(fields[2]) == server:
                try:
                    return int(fields[7])
                except ValueError:
                    return None
    return None


class LocalUsers:
    """Answers "may this connection change state?" for a tokenless loopback worker."""

    def __init__(
        self,
        allowed: frozenset[int] | None = None,
        proc: Path = Path("/proc/net"),
    ) -> None:
        self.allowed = allowed if allowed is not None else frozenset({0, os.geteuid()})
        self.proc = proc

    @property
    def available(self) -> bool:
        return (self.proc / "tcp").is_file()

    def _tables(self) -> list[str]:
        out = []
        for name in ("tcp", "tcp6"):
            try:
                out.append((self.proc / name).read_text())
            except OSError:
                continue
        return out

    def uid_of(self, request: web.BaseRequest) -> int | None:
        transport = request.transport
        if transport is None:
            return None
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        if not (isinstance(peer, tuple) and isinstance(sock, tuple)):
            return None  # a Unix socket or a closed transport
        try:
            client, server = _normal(peer[0], peer[1]), _normal(sock[0], sock[1])
        except ValueError:
            return None
        return owner_uid(self._tables(), client, server)

    def __call__(self, request: web.BaseRequest) -> bool:
        uid = self.uid_of(request)
        if uid is None:
            log.debug("cannot tell the local user of %s", request.remote)
            return False
        return uid in self.allowed
