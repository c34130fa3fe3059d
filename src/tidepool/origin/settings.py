"""How hard the origin funnel tries before it gives up on the origin: one frozen dataclass.

The worker builds one :class:`OriginSettings` (from flags, or tests with their own values) and
passes it to every :class:`tidepool.origin.funnel.Origin`; nothing here is read from the
environment or changed at run time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OriginSettings:
    """How hard the funnel tries before it gives up on the origin."""

    timeout: float = 15.0
    """Seconds one attempt of one call may take (a 1 MiB page over a slow link included)."""
    connect_timeout: float = 1.5
    """Seconds to open a connection to the origin (a cut link must be noticed quickly)."""
    congestion_grace: float = 1.0
    """A timeout while another call succeeded within this many seconds is taken for congestion
    (a full link still delivers; a pulled cable delivers nothing): the call keeps retrying, up to
    ``timeout``, as long as that stays true, and the breaker stays closed. A refused or reset
    connection is never congestion, so a cut link is still reported at once."""
    read_timeout: float = 1.5
    """Seconds the origin may stay silent (no byte of an answer arrives) before an attempt is
    abandoned. A pulled cable keeps pooled connections open and answers nothing; this bounds the
    first uncached read after it to about two seconds. (A slow listing is retried, and while
    other calls still succeed the funnel treats silence as congestion, not an outage.)"""
    retries: int = 4
    """Extra attempts after the first for retryable errors."""
    retry_budget: float = 1.0
    """Seconds after which a failing call stops retrying, so an unreachable origin is reported
    within about two seconds instead of hanging the reader."""
    backoff_base: float = 0.1
    """First backoff step in seconds; doubles each retry."""
    backoff_cap: float = 1.0
    """Longest single backoff in seconds."""
    breaker_threshold: int = 2
    """Consecutive unreachable calls that open the circuit breaker."""
    probe_interval: float = 1.0
    """Seconds between background probes while the breaker is open."""
    max_concurrency: int = 32
    """Origin calls in flight at once for one mount."""
    seed: int | None = None
    """Seed of the jitter generator (tests)."""
