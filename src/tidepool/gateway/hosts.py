"""Which ``Host`` values the S3 gateway answers to: pure, no I/O.

SigV4 signs the ``Host`` header, so a signature is only good for the endpoint it was made for;
the gateway checks that the signed host is one of its own addresses (:func:`host_matcher`),
so a request signed for another endpoint that shares the access key (a second gateway, the
origin itself) cannot be replayed here.

The addresses are, in order of preference: the ``--public-host`` names given (exactly, or with
the listen port added when a name has none); else the listen address with its port (and, on
loopback, ``localhost``, ``127.0.0.1`` and ``[::1]`` with that port); on a wildcard listen address
(``0.0.0.0``, ``::``) any host name with the listen port, since the names a machine is reached by
are not known to it — give ``--public-host`` to check names too. A bare name stands for port 80.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence

__all__ = ["host_matcher", "split_host"]

_WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})


def split_host(value: str) -> tuple[str, int | None]:
    """``name:port``, ``[v6]:port`` or a bare name -> (lower-case name, port or None)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        name = f"[{name}]"
    elif value.count(":") == 1:
        name, _, port_text = value.partition(":")
    else:
        name, port_text = value, ""
    if port_text.isascii() and port_text.isdigit() and len(port_text) <= 5:
        return name, int(port_text)
    return name, None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_matcher(listen_host: str, port: int, public: Sequence[str] = ()) -> Callable[[str], bool]:
    """A predicate over ``Host`` header values: True for an address of this gateway."""
    allowed: set[tuple[str, int | None]] = set()
    for entry in public:
        name, given = split_host(entry)
        allowed.add((name, given if given is not None else port))
    if not public and listen_host.lower() not in _WILDCARDS:
        name = listen_host.lower()
        if ":" in name and not name.startswith("["):
            name = f"[{name}]"
        allowed.add((name, port))
        if _is_loopback(name):
            allowed |= {("localhost", port), ("127.0.0.1", port), ("[::1]", port)}
    any_name = not allowed

    def ok(value: str) -> bool:
        name, given = split_host(value)
        effective = given if given is not None else (80 if ":" not in value else None)
        if any_name:
            return bool(name) and effective == port
        return (name, effective) in allowed

    return ok
