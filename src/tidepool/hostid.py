"""Who is "the same host": the test for the client's direct-from-disk fast path.

Two processes may read each other's page files directly when they share a kernel boot, a hostname
and a network namespace (network namespaces stand for separate hosts in the multi-node harness, and
in Kubernetes a pod on another node never matches).
"""

from __future__ import annotations

import os
import socket


def host_id() -> str:
    parts = [socket.gethostname()]
    for path in ("/proc/sys/kernel/random/boot_id",):
        try:
            with open(path) as f:
                parts.append(f.read().strip())
        except OSError:
            parts.append("?")
    try:
        parts.append(str(os.stat("/proc/self/ns/net").st_ino))
    except OSError:
        parts.append("?")
    return "|".join(parts)
