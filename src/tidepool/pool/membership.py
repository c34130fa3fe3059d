"""Who is in my node pool: the provider interface, the one map of providers by name, and the
last-known-good member list every provider keeps on disk.

A provider answers one question — the workers of this node pool, now — for the placement ring
(:mod:`tidepool.core.ring`). It is picked by name from :data:`PROVIDERS` (a worker's
``--members NAME:SOURCE`` or ``--etcd``, see :func:`choose_provider`), and its module is imported
only when picked:

* ``static`` (:mod:`.static`): a list given on the command line, in the runtime spec or in a file;
* ``etcd`` (:mod:`.etcd`): lease-based registration and polling through etcd's JSON gateway;
* ``kubernetes`` (:mod:`.kubernetes`): the EndpointSlices of the pool's worker Service.

Every provider writes the member list it last saw to ``state_file`` and starts from it, so a pool
keeps routing when its source (etcd, the Kubernetes API) is unreachable or the node restarts
offline.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tidepool.core.errors import ConfigError
from tidepool.core.ring import Member

log = logging.getLogger(__name__)

PROVIDERS: dict[str, str] = {
    "static": "tidepool.pool.static:StaticMembership",
    "etcd": "tidepool.pool.etcd:EtcdMembership",
    "kubernetes": "tidepool.pool.kubernetes:KubernetesMembership",
}
"""Membership providers by name, as ``"module:Class"``; each class has
``from_source(source, context)``."""


class Membership(Protocol):
    def members(self) -> list[Member]: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True)
class PoolContext:
    """What a provider may need besides its source: who this worker is and where it keeps state."""

    pool: str
    """This node's pool (``apps.openyurt.io/nodepool``); empty for an unnamed pool."""
    me: Member
    """This worker as the other members reach it (the providers that register it use this)."""
    state_file: Path | None
    """Where the last-known-good member list is kept (None: nowhere)."""
    peer_token: str = field(default="", repr=False)
    """The pool's peer credential (``etcd`` signs and checks member entries with it)."""
    ssl_context: ssl.SSLContext | None = None
    """Verifies ``https://`` sources (None: the system's CAs)."""


def choose_provider(members: str, etcd: Sequence[str]) -> tuple[str, str] | None:
    """(provider name, its source) from a worker's ``--members`` and ``--etcd``; None: no pool.

    ``--members NAME:SOURCE`` names a provider of :data:`PROVIDERS`; a list without a name is
    ``static``; ``--etcd URL,...`` is ``etcd`` unless ``--members`` names another provider.
    """
    name, sep, rest = members.partition(":")
    if sep and name in PROVIDERS and name != "static":
        return name, rest
    if etcd:
        return "etcd", ",".join(etcd)
    if members:
        return "static", members.removeprefix("static:")
    return None


def open_membership(name: str, source: str, context: PoolContext) -> Membership:
    """The provider called ``name`` over ``source`` (not started yet)."""
    target = PROVIDERS.get(name)
    if target is None:
        raise ConfigError(
            f"unknown membership provider {name!r}; valid: {', '.join(sorted(PROVIDERS))}"
        )
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"membership provider {name!r} cannot be loaded ({exc}); reinstall tidepool"
        ) from exc
    provider: Membership = getattr(module, class_name).from_source(source, context)
    return provider


def save_members(state_file: Path | None, members: Sequence[Member]) -> None:
    """Write the last-known-good list, readable by the worker's user only (it is trusted on the
    next start, like configuration)."""
    if state_file is None:
        return
    state_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = state_file.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps([m.__dict__ for m in members], indent=1))
    os.replace(tmp, state_file)


def load_last_known(state_file: Path | None) -> list[Member]:
    """The member list saved by the last run, or ``[]``."""
    if state_file is None or not state_file.exists():
        return []
    try:
        return [Member(**m) for m in json.loads(state_file.read_text())]
    except (ValueError, TypeError, OSError) as exc:
        log.warning("ignoring unreadable member list %s: %s", state_file, exc)
        return []
