"""The testbed: the real parts that the demo, the benchmarks and the integration tests run on.

* :class:`~tidepool_lab.testbed.s3server.S3Server` — a real S3 server (``juicefs gateway``
  by default, ``rclone serve s3`` as an alternative) standing in for the cloud origin;
* :class:`~tidepool_lab.testbed.wan.WanRelay` — a user-space WAN emulator (delay + shared bandwidth,
  link cut) between the edge and that origin, in its own process;
* :func:`~tidepool_lab.testbed.images.make_jpegs` — a deterministic sample JPEG dataset;
* :mod:`~tidepool_lab.testbed.s3util` — correctly configured s3fs/boto3 clients and bulk upload.

Everything binds to 127.0.0.1 only and every process it starts is stopped by its PID (process
group). Layering: the testbed may import ``tidepool.core.errors``/``tidepool.core.quantity``
and third-party libraries, never the worker, client or CLI. Names are exported lazily so that
``python -m tidepool_lab.testbed.wan`` starts without importing boto3 or Pillow.

This module also holds the two process helpers the servers share.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tidepool_lab.testbed.images import make_jpegs, write_tree
    from tidepool_lab.testbed.s3server import S3Server
    from tidepool_lab.testbed.s3util import s3fs_filesystem, upload
    from tidepool_lab.testbed.wan import WanRelay

__all__ = [
    "S3Server",
    "WanRelay",
    "make_jpegs",
    "s3fs_filesystem",
    "stop_process_group",
    "upload",
    "write_tree",
]

_LAZY = {
    "S3Server": "tidepool_lab.testbed.s3server",
    "WanRelay": "tidepool_lab.testbed.wan",
    "make_jpegs": "tidepool_lab.testbed.images",
    "write_tree": "tidepool_lab.testbed.images",
    "s3fs_filesystem": "tidepool_lab.testbed.s3util",
    "upload": "tidepool_lab.testbed.s3util",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tidepool_lab.testbed' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def stop_process_group(process: subprocess.Popen[Any], timeout: float = 5.0) -> int | None:
    """SIGTERM, then SIGKILL, the process group of a child started with ``start_new_session``.

    Signals only the group whose id is the child's PID (the child is its leader, and the group
    cannot be reused while the unreaped child exists). Returns the exit code, or ``None`` if the
    child could not be reaped.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
    return process.poll()


def log_tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log at {path}: {exc})"


def json_line_call(sock: socket.socket, request: dict[str, Any], what: str) -> dict[str, Any]:
    """Send one JSON request line on a connected control socket and read the one-line reply.

    The WAN emulators (``wan``, ``wanlink``) speak this; a reply without ``"ok"`` raises
    ``ValueError`` naming ``what`` refused which request and why.
    """
    sock.sendall(json.dumps(request).encode() + b"\n")
    buf = b""
    while not buf.endswith(b"\n"):
        data = sock.recv(65536)
        if not data:
            break
        buf += data
    reply: dict[str, Any] = json.loads(buf)
    if not reply.get("ok"):
        raise ValueError(f"{what} refused {request!r}: {reply.get('error')}")
    return reply
