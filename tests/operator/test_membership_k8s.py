"""Membership ``kubernetes``: members from EndpointSlices, last-known-good when the API is away."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import kmock

from tidepool.pool.kubeapi import KubeConfig
from tidepool.pool.kubernetes import (
    SERVICE_NAME_LABEL,
    from_spec,
    members_from_slices,
    parse_spec,
)
from tidepool.pool.membership import load_last_known

SLICES = ("discovery.k8s.io", "v1", "endpointslices")


def _slice(name: str, service: str, endpoints: list[tuple[str, str, bool]]) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "edge", "labels": {SERVICE_NAME_LABEL: service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8433, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": [ip], "nodeName": node, "conditions": {"ready": ready}}
            for node, ip, ready in endpoints
        ],
    }


def test_members_from_slices_is_pure_and_skips_unready() -> None:
    s = _slice(
        "a", "svc", [("n2", "10.0.0.2", True), ("n1", "10.0.0.1", True), ("n3", "10.0.0.3", False)]
    )
    ipv6 = _slice("b", "svc", [("n4", "fd00::4", True)])
    members = members_from_slices([s, ipv6], "p1")
    assert [(m.name, m.address, m.pool) for m in members] == [
        ("n1", "http://10.0.0.1:8433", "p1"),
        ("n2", "http://10.0.0.2:8433", "p1"),
        ("n4", "http://[fd00::4]:8433", "p1"),
    ]


def test_parse_spec() -> None:
    assert parse_spec("kubernetes:edge/images-worker-p1") == ("edge", "images-worker-p1")
    assert parse_spec("kubernetes:svc", "ns") == ("ns", "svc")


async def test_members_follow_slices_and_survive_the_api_going_away(
    api: kmock.KubernetesEmulator, kube: KubeConfig, tmp_path: Path
) -> None:
    state = tmp_path / "members.json"
    api.objects[SLICES, "edge", "w-1"] = _slice(
        "w-1", "images-worker-p1", [("n1", "10.0.0.1", True)]
    )
    # another pool's service must not leak in
    api.objects[SLICES, "edge", "o-1"] = _slice(
        "o-1", "images-worker-p2", [("x", "10.9.9.9", True)]
    )
    provider = from_spec(
        "kubernetes:edge/images-worker-p1", "p1", state, config=kube, poll_interval=0.05
    )
    await provider.start()
    try:
        assert [m.name for m in provider.members()] == ["n1"]
        api.objects[SLICES, "edge", "w-1"] = _slice(
            "w-1", "images-worker-p1", [("n1", "10.0.0.1", True), ("n2", "10.0.0.2", True)]
        )
        await provider.sync()
        assert [m.name for m in provider.members()] == ["n1", "n2"]
        assert [m.name for m in load_last_known(state)] == ["n1", "n2"]

        # the API answers 503 from now on: the last-known-good list stays
        api[kmock.resource(*SLICES)] << 503
        await asyncio.sleep(0.3)
        assert provider.reachable is False
        assert [m.name for m in provider.members()] == ["n1", "n2"]
    finally:
        await provider.stop()

    # a restart while the API is unreachable starts from the state file
    offline = from_spec(
        "kubernetes:edge/images-worker-p1",
        "p1",
        state,
        config=KubeConfig(server="http://127.0.0.1:9", timeout=0.5),
        poll_interval=10,
    )
    await offline.start()
    try:
        assert [m.name for m in offline.members()] == ["n1", "n2"]
    finally:
        await offline.stop()
