"""Zero-copy sends: byte ranges of local files written to a client's socket with ``sendfile``.

A warm large read over HTTP otherwise costs the worker a ``pread`` into a Python object and a
``send`` out of it (two copies through user space, most of its CPU when profiled). With
``sendfile`` the kernel copies from the page cache to the socket directly. asyncio's
``loop.sendfile`` does this, but uvloop (the worker's loop when installed) does not implement it,
so this module does it with the loop's own primitives, on the loop's thread, no thread per
request:

* :func:`raw_socket` says whether a transport may be written to this way — a plain TCP
  transport (never TLS: the bytes would bypass encryption) whose write buffer is empty (bytes
  already queued must go first);
* :func:`send_ranges` duplicates the socket's descriptor (so a transport closed meanwhile cannot
  hand its descriptor number to another connection under our writes), then ``os.sendfile`` s each
  range, waiting for room with ``loop.add_writer`` on the duplicate. A client that takes no byte
  for ``idle_timeout`` seconds gets :class:`TimeoutError`, as a slow reader of any other answer
  would.

The caller must not write to the transport while :func:`send_ranges` runs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

FileRange = tuple[int, int, int]
"""``(file descriptor, offset, count)``."""


class SendStalled(TimeoutError):
    """The client took no byte for the idle timeout (counted like the listener's own stalls)."""


def raw_socket(transport: asyncio.BaseTransport | None) -> int | None:
    """The socket descriptor of ``transport`` when bytes may be sent around it, else None."""
    if transport is None or transport.is_closing():
        return None
    if transport.get_extra_info("sslcontext") is not None:
        return None
    if transport.get_extra_info("ssl_object") is not None:
        return None
    buffered = getattr(transport, "get_write_buffer_size", None)  # uvloop's: no WriteTransport
    if buffered is None or buffered():
        return None
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    try:
        fd = sock.fileno()
    except (OSError, ValueError):
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None


async def send_ranges(sock_fd: int, ranges: Sequence[FileRange], idle_timeout: float) -> int:
    """Send every range to the socket ``sock_fd`` in order; bytes sent. Raises ``OSError``
    (the client went away, a file was shorter than said) or :class:`SendStalled`."""
    loop = asyncio.get_running_loop()
    out = os.dup(sock_fd)
    sent = 0
    try:
        for fd, offset, count in ranges:
            while count:
                try:
                    n = os.sendfile(out, fd, offset, count)
                except BlockingIOError:
                    await _writable(loop, out, idle_timeout)
                    continue
                if n == 0:
                    raise OSError(f"file ended {count} bytes before the range it was to send")
                offset += n
                count -= n
                sent += n
    finally:
        os.close(out)
    return sent


async def _writable(loop: asyncio.AbstractEventLoop, fd: int, timeout: float) -> None:
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        async with asyncio.timeout(timeout):
            await ready
    except TimeoutError:
        raise SendStalled(f"the client took no bytes for {timeout:g} s") from None
    finally:
        loop.remove_writer(fd)
