"""Who is "the same host": the test for the client's direct-from-disk fast path.

Two processes may read each other's page files directly when they share a kernel boot, a hostname
and a network namespace (network namespaces stand for separate hosts in the multi-node harness).

In Kubernetes every Pod has a hostname and a network namespace of its own, so two Pods on one node
would never match. There ``TIDEPOOL_HOST_ID`` (the rendered manifests set it to the node's name
through the downward API) replaces hostname and network namespace: the worker and the fuse Pod on
one node then match (same boot, same node), and the fuse Pod, which mounts the worker's tier
directories read-only, reads cached pages straight from disk. Pods on other nodes never match.
"""

from __future__ import annotations

import os
import socket


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return "?"


def host_id() -> str:
    node = os.environ.get("TIDEPOOL_HOST_ID", "").strip()
    if node:
        return f"node:{node}|{_boot_id()}"
    try:
        netns = str(os.stat("/proc/self/ns/net").st_ino)
    except OSError:
        netns = "?"
    return "|".join([socket.gethostname(), _boot_id(), netns])
