"""A wall clock that does not jump within a process, for freshness (issue 15, item 9).

Metadata freshness compares the time an entry was fetched with "now", and entries outlive a
restart (they are stored with epoch seconds), so the time must be a wall clock. But the wall clock
can be stepped (NTP, a VM resumed, an operator's ``date -s``): stepped back, every entry looks
younger than it is and a changed origin file goes unnoticed for as long as the step; stepped
forward, the whole cache goes stale at once. :func:`steady_time` is the wall clock read once when
this module is imported plus the monotonic time elapsed since: within one process ages only grow,
at the rate of real time, whatever happens to the system clock. Across a restart the wall clock is
read again; an entry stamped in the future then has a negative age and counts as stale (the
sanity bound in :meth:`tidepool.worker.metadata.MetadataService.fresh`).
"""

from __future__ import annotations

import time

_WALL0 = time.time()
_MONO0 = time.monotonic()


def steady_time() -> float:
    """Epoch seconds: the wall clock at start plus the monotonic seconds since."""
    return _WALL0 + (time.monotonic() - _MONO0)
