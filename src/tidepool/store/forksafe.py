"""SQLite and ``fork()``: no SQLite call may be in flight in another thread when a process forks.

SQLite keeps process-wide mutexes (its unix VFS's, its memory accounting's). A thread inside an
SQLite call at the moment another thread forks leaves the child with that mutex held by a thread
that does not exist there, and the child's first SQLite call — opening a connection of its own,
as a forked data-loader worker does to read packed pages (:mod:`tidepool.store.packs`) — waits
forever. Each object here that makes SQLite calls does so holding its own locks; it registers
them with :func:`guard`, and a fork takes every registered lock first (waiting for calls in
flight to end), then releases them in the parent and the child alike.

Limits: SQLite used by other code in the same process is not covered. The locks are taken in
registration order, each object's in the order it gives them: an object's locks must not be
taken in another order elsewhere.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Protocol


class _Holder(Protocol):
    def fork_locks(self) -> list[threading.Lock]:
        """The locks held around this object's SQLite calls, in the order they nest."""
        ...


_holders: weakref.WeakSet[_Holder] = weakref.WeakSet()
_held: list[threading.Lock] = []


def guard(holder: _Holder) -> None:
    """Take ``holder``'s locks around every fork of this process (until it is collected)."""
    _holders.add(holder)


def _before() -> None:
    for holder in list(_holders):
        for lock in holder.fork_locks():
            lock.acquire()
            _held.append(lock)


def _after() -> None:
    while _held:
        _held.pop().release()


os.register_at_fork(before=_before, after_in_parent=_after, after_in_child=_after)
