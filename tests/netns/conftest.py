"""Fixtures for the multi-node harness: one :class:`~tidepool_lab.testbed.netns.Lab` per session.

Skips (with the precise reason) only when namespaces cannot be built here: not root, no
``ip``/``tc``, no ``/dev/net/tun`` or no ``tbf``. Namespaces left by a crashed run with this prefix
are removed before the lab is built; the lab is torn down even when tests fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tidepool_lab.testbed.netns import Lab, cleanup_stale, netns_available

PREFIX = "tpt"
"""Namespace prefix of this test suite (``tpt-<pid>-<n>-<role>``)."""
RTT_MS = 40.0
RATE_MBIT = 100.0

os.environ.pop("AWS_CA_BUNDLE", None)


@pytest.fixture(scope="session")
def netns_ok() -> None:
    reason = netns_available()
    if reason is not None:
        pytest.skip(f"multi-node harness unavailable: {reason}")
    cleanup_stale(PREFIX)


@pytest.fixture(scope="session")
def lab(netns_ok: None) -> Iterator[Lab]:
    """Cloud + WAN (40 ms RTT, 100 Mbit/s) + pool-a (3 hosts) + pool-b (2 hosts)."""
    built = Lab.create(
        prefix=PREFIX, pools={"pool-a": 3, "pool-b": 2}, rtt_ms=RTT_MS, rate_mbit=RATE_MBIT
    )
    try:
        yield built
    finally:
        built.close()
