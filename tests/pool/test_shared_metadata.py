"""Metadata is fetched from the origin once per pool: listings, ``find`` results and stats are
asked of the member that owns the directory (or file) — as data is — and served to every other
member over the LAN. A member whose own cloud link is cut still lists what the pool knows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tidepool.client import TidepoolFileSystem

from .test_pool_loopback import FILES, flush, start_pool

pytestmark = pytest.mark.integration

META = ("info", "ls", "find")


def metadata_calls(workers: list[Any]) -> dict[str, int]:
    calls = [w.worker.services["ds"].origins[0].stats.calls for w in workers]
    return {op: sum(c.get(op, 0) for c in calls) for op in META}


def walk(fs: TidepoolFileSystem) -> tuple[list[str], dict[str, list[str]], dict[str, int]]:
    found = sorted(fs.find("ds"))
    listed = {d: sorted(fs.ls(f"ds/{d}", detail=False)) for d in ("", "d0", "d1", "d2", "d3")}
    sizes = {name: fs.info(f"ds/{name}")["size"] for name in FILES}
    return found, listed, sizes


def test_second_member_lists_and_stats_without_the_origin(
    make_dataset: Any, start_worker: Any, tmp_path: Path
) -> None:
    workers, _ = start_pool(make_dataset, start_worker, tmp_path, n=2)
    fs0 = TidepoolFileSystem(workers[0].endpoint, local_reads=False, skip_instance_cache=True)
    fs1 = TidepoolFileSystem(workers[1].endpoint, local_reads=False, skip_instance_cache=True)

    first = walk(fs0)
    assert first[0] == sorted(f"ds/{n}" for n in FILES)
    assert first[2] == {n: len(d) for n, d in FILES.items()}
    flush(workers)
    after_first = metadata_calls(workers)
    assert after_first["find"] == 1  # one recursive listing for the whole pool

    assert walk(fs1) == first
    assert metadata_calls(workers) == after_first  # the second member asked the first


def test_member_with_its_link_cut_lists_through_the_pool(
    make_dataset: Any, start_worker: Any, tmp_path: Path
) -> None:
    workers, _ = start_pool(make_dataset, start_worker, tmp_path, n=2)
    fs0 = TidepoolFileSystem(workers[0].endpoint, local_reads=False, skip_instance_cache=True)
    first = walk(fs0)
    for name, data in FILES.items():
        assert fs0.cat_file(f"ds/{name}") == data
    flush(workers)

    # Worker 1's origin now refuses every call: what it lists and reads comes from the pool.
    origin1 = workers[1].worker.services["ds"].origins[0]

    async def down(*_a: Any, **_k: Any) -> Any:
        raise OSError("link cut (test)")

    for op in ("_info", "_ls", "_find", "_cat_file"):
        if hasattr(origin1.fs, op):
            setattr(origin1.fs, op, down)
    fs1 = TidepoolFileSystem(workers[1].endpoint, local_reads=False, skip_instance_cache=True)
    assert walk(fs1) == first
    for name, data in FILES.items():
        assert fs1.cat_file(f"ds/{name}") == data, name
