"""Is the origin up: an outage told apart from congestion, and the probe that sees it come back.

One :class:`OriginHealth` per mount, owned by its :class:`tidepool.origin.funnel.Origin`:

* the **circuit breaker** (:class:`tidepool.core.breaker.CircuitBreaker`, pure) opens after
  ``breaker_threshold`` calls in a row ended "unreachable"; while it is open, calls fail at once;
* **congestion**: a timeout while another call succeeded within ``congestion_grace`` seconds is a
  full link (a SYN queued behind megabytes of pages), not a cut one; the funnel then keeps
  retrying and never opens the breaker;
* the **probe**: while the breaker is open, a background task asks the origin (``probe``, an
  awaitable the funnel passes in: an ``info`` of the mount's root) every ``probe_interval``
  seconds, and the first answer closes the breaker.

Waits and "how long ago" are read from the event loop's clock (``loop.time()``), so tests run
them on a virtual clock (``looptime``); ``down_since`` is wall-clock time, for people to read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from tidepool.core.breaker import CircuitBreaker
from tidepool.origin.retry import is_retryable, is_timeout
from tidepool.origin.settings import OriginSettings

log = logging.getLogger(__name__)


class OriginHealth:
    """The breaker, the time of the last success and the probe of one mount's origin."""

    def __init__(
        self,
        dataset: str,
        settings: OriginSettings,
        probe: Callable[[], Awaitable[object]],
        describe: Callable[[BaseException], str],
    ) -> None:
        self.dataset = dataset
        self.settings = settings
        self.breaker = CircuitBreaker(threshold=settings.breaker_threshold)
        self._probe = probe
        self._describe = describe
        self._last_success = float("-inf")
        self._probe_task: asyncio.Task[None] | None = None

    def allow(self) -> bool:
        """Whether a call may go to the origin now (the breaker is closed)."""
        return self.breaker.allow()

    def answered(self) -> None:
        """The origin answered, if only to refuse (not found, denied): it is reachable."""
        self.breaker.success()

    def succeeded(self) -> None:
        """A call succeeded: reachable, and the link delivers (see :meth:`congested`)."""
        self.breaker.success()
        self._last_success = asyncio.get_running_loop().time()

    def congested(self, exc: BaseException) -> bool:
        """``exc`` is a timeout while other calls succeeded within ``congestion_grace`` seconds:
        the link is full, not cut."""
        now = asyncio.get_running_loop().time()
        recent = now - self._last_success < self.settings.congestion_grace
        return recent and is_timeout(exc)

    def unreachable(self, reason: str) -> None:
        """A call gave up on the origin; the breaker may open, and then the probe starts."""
        if self.breaker.failure(time.time(), reason):
            log.warning(
                "origin of dataset %r unreachable (%s): serving from cache only, probing every "
                "%.1fs",
                self.dataset,
                reason,
                self.settings.probe_interval,
            )
            if self._probe_task is None or self._probe_task.done():
                self._probe_task = asyncio.get_running_loop().create_task(self._probe_loop())

    def down_reason(self) -> str:
        """Why calls fail at once: since when the origin is unreachable, and the last error."""
        since = self.breaker.down_since
        when = (
            datetime.fromtimestamp(since, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if since else "?"
        )
        return f"unreachable since {when} ({self.breaker.last_error})"

    async def close(self) -> None:
        """Stop the probe."""
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
            self._probe_task = None

    async def _probe_loop(self) -> None:
        """While the breaker is open, ask the origin until it answers."""
        s = self.settings
        while not self.breaker.allow():
            await asyncio.sleep(s.probe_interval)
            try:
                await asyncio.wait_for(self._probe(), s.connect_timeout + 1.0)
            except (FileNotFoundError, PermissionError, NotADirectoryError):
                pass  # an answer all the same
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_retryable(exc) or isinstance(exc, OSError):
                    self.breaker.last_error = self._describe(exc)
                    continue
            down = time.time() - (self.breaker.down_since or time.time())
            self.breaker.success()
            log.warning("origin of dataset %r reachable again after %.1fs", self.dataset, down)
