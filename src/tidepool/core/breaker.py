"""Circuit breaker for the origin: a pure state machine, the clock passed in.

Edge sites lose their cloud link. Without a breaker every uncached read would spend its whole retry
budget discovering, again, that the origin is down. The breaker opens after ``threshold``
consecutive calls that ended "unreachable"; while it is open, calls fail at once and a background
probe (owned by :class:`tidepool.origin.health.OriginHealth`) asks the origin every
``probe_interval`` seconds; the first answer closes it. Successful calls reset the failure count.

Pure and synchronous so it is tested with plain values: it never sleeps and never does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

State = Literal["closed", "open"]


@dataclass
class CircuitBreaker:
    threshold: int = 2
    """Consecutive unreachable calls that open the circuit."""
    state: State = "closed"
    failures: int = 0
    down_since: float | None = None
    """When the origin was first seen unreachable in the current outage (epoch seconds)."""
    last_error: str = ""
    opened: int = 0
    """How many times the circuit opened (a counter for metrics)."""

    def allow(self) -> bool:
        """Whether a call may go to the origin now."""
        return self.state == "closed"

    def success(self) -> None:
        self.failures = 0
        self.state = "closed"
        self.down_since = None
        self.last_error = ""

    def failure(self, now: float, reason: str) -> bool:
        """Record an unreachable call; returns True when this failure opened the circuit."""
        self.failures += 1
        self.last_error = reason
        if self.down_since is None:
            self.down_since = now
        if self.state == "closed" and self.failures >= self.threshold:
            self.state = "open"
            self.opened += 1
            return True
        return False

    @property
    def reachable(self) -> bool:
        return self.state == "closed" and self.down_since is None
