"""Large files are placed by chunk: each chunk on its own owner, so reads and space spread.

Pure checks of the keys and the client's routing, then three real workers on loopback against
the real S3 origin with a small chunk size (2 MiB of 1 MiB pages) and a file of several chunks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.pool import poolkit

from tidepool.client import TidepoolFileSystem
from tidepool.client.routing import PoolView
from tidepool.core.errors import ConfigError
from tidepool.core.pages import file_key as page_file_key
from tidepool.core.ring import (
    DEFAULT_CHUNK_SIZE,
    Member,
    chunk_key,
    chunk_of,
    file_key,
    owners,
    ranked,
)
from tidepool.worker.server import check_chunk_size, default_chunk_size

MiB = 1 << 20
CHUNK = 2 * MiB
BIG = os.urandom(11 * MiB + 5)  # 12 pages, 6 chunks
SMALL = {f"s{i}.bin": os.urandom(10_000 + i) for i in range(6)}


def test_chunk_zero_is_the_file_and_the_rest_are_keyed_apart() -> None:
    assert chunk_key("ds", "a/b", 0) == file_key("ds", "a/b")
    keys = {chunk_key("ds", "a/b", c) for c in range(1, 50)}
    assert len(keys) == 49 and file_key("ds", "a/b") not in keys
    assert all("\x00" in k.split("\x00", 1)[1] for k in keys)  # no path can spell them
    assert chunk_of(0, CHUNK) == 0 and chunk_of(CHUNK - 1, CHUNK) == 0
    assert chunk_of(CHUNK, CHUNK) == 1 and chunk_of(10 * CHUNK + 3, CHUNK) == 10
    assert chunk_of(10 * CHUNK, 0) == 0  # chunk size 0: files placed whole


def test_the_client_asks_each_chunks_owner() -> None:
    members = [Member(f"w{i}", f"http://127.0.0.1:{9000 + i}", "p") for i in range(3)]
    view = PoolView("http://127.0.0.1:9000", "p")
    view.update({"nodepool": "p", "members": [m.__dict__ for m in members], "chunk_size": CHUNK})
    for c in range(20):
        want = ranked(chunk_key("ds", "big.bin", c), members)[0].address
        assert view.targets("ds", "big.bin", c * CHUNK + 7)[0] == want
    firsts = {view.targets("ds", "big.bin", c * CHUNK)[0] for c in range(20)}
    assert len(firsts) == 3  # spread over every member
    view.update({"nodepool": "p", "members": [m.__dict__ for m in members]})  # an older worker
    assert {view.targets("ds", "big.bin", c * CHUNK)[0] for c in range(20)} == {
        view.targets("ds", "big.bin")[0]
    }


def test_a_chunk_size_must_be_whole_pages(make_dataset: Any) -> None:
    cfg = make_dataset({"a": b"a"}, page_size=MiB)
    check_chunk_size(0, [cfg])
    check_chunk_size(64 * MiB, [cfg])
    with pytest.raises(ConfigError, match=r"--chunk-size 1\.5 MiB is not a whole number of pages"):
        check_chunk_size(3 * MiB // 2, [cfg])
    with pytest.raises(ConfigError, match="out of range"):
        check_chunk_size(-1, [cfg])


def test_the_default_chunk_size_is_whole_pages_of_every_dataset(make_dataset: Any) -> None:
    def ds(page: int) -> Any:
        return make_dataset({"a": b"a"}, page_size=page)

    assert default_chunk_size([ds(MiB)]) == DEFAULT_CHUNK_SIZE == 16 * MiB
    assert default_chunk_size([ds(MiB), ds(32 * MiB)]) == 32 * MiB  # not a refusal at start
    assert default_chunk_size([ds(3 * MiB)]) == 18 * MiB
    for cfgs in ([ds(MiB), ds(32 * MiB)], [ds(3 * MiB), ds(2 * MiB)]):
        check_chunk_size(default_chunk_size(cfgs), cfgs)


def test_up_names_a_chunk_size_that_is_not_a_size(make_dataset: Any, tmp_path: Path) -> None:
    make_dataset({"a": b"a"})
    spec = make_dataset.spec_file(tmp_path / "spec.yaml", tmp_path / "cache")
    out = subprocess.run(
        [sys.executable, "-m", "tidepool.cli", "up", "-f", str(spec), "--chunk-size", "lots"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "--chunk-size 'lots' is not a size" in out.stderr, out.stderr


# ---- a pool of three real workers ---------------------------------------------------------


def start_pool(
    make_dataset: Any, start_worker: Any, tmp: Path, chunk_sizes: tuple[int, ...]
) -> tuple[list[Any], list[Member]]:
    files = {**SMALL, "big.bin": BIG}
    return poolkit.start_pool(make_dataset, start_worker, tmp, files, chunk_sizes=chunk_sizes)


def origin_reads(w: Any) -> int:
    return int(w.worker.services["ds"].origins[0].stats.calls.get("read", 0))


def held_pages(w: Any, name: str) -> set[int]:
    svc = w.worker.services["ds"]
    w.call(svc.flush_writes())
    info = svc.metadata.known(name)
    version = info[0]["version"] if info is not None and info[0] is not None else None
    if version is None:
        return set()
    return set(svc.store.pages_of("ds", page_file_key("ds", name, version)))


def test_chunks_live_on_their_owners_and_cross_the_wan_once(
    make_dataset: Any, start_worker: Any, tmp_path: Path
) -> None:
    workers, members = start_pool(make_dataset, start_worker, tmp_path, (CHUNK,) * 3)
    fs = TidepoolFileSystem(workers[0].endpoint, local_reads=False, skip_instance_cache=True)
    with fs.open("ds/big.bin", "rb", block_size=MiB) as f:
        got = b"".join(iter(lambda: f.read(3 * MiB // 2), b""))
    assert got == BIG
    for name, data in SMALL.items():
        assert fs.cat_file(f"ds/{name}") == data
    pages = -(-len(BIG) // MiB)
    per = CHUNK // MiB
    want: dict[str, set[int]] = {m.name: set() for m in members}
    for c in range(-(-pages // per)):
        owner = owners(chunk_key("ds", "big.bin", c), members)[0]
        want[owner.name].update(range(c * per, min(pages, (c + 1) * per)))
    assert len([n for n, p in want.items() if p]) >= 2  # the file is spread (6 chunks, 3 owners)
    for w, m in zip(workers, members, strict=True):
        # each worker learns the metadata of the file it holds chunks of when it serves them
        if want[m.name]:
            assert held_pages(w, "big.bin") == want[m.name], m.name
    # every page crossed the WAN once (plus one GET per small file), whoever fetched it
    first = sum(origin_reads(w) for w in workers)
    assert first == pages + len(SMALL)
    # a second reader on another worker: nothing from the origin
    fs2 = TidepoolFileSystem(workers[2].endpoint, local_reads=False, skip_instance_cache=True)
    assert fs2.cat_file("ds/big.bin") == BIG
    assert fs2.cat_file("ds/big.bin", start=5 * MiB + 3, end=9 * MiB) == BIG[5 * MiB + 3 : 9 * MiB]
    assert sum(origin_reads(w) for w in workers) == first
    # a file placed by chunk is never whole on one member: no whole-file check waits for it
    for w in workers:
        svc = w.worker.services["ds"]
        assert not svc._pending_checks and not svc._checks, w.worker.settings.node_name


def test_a_load_fills_each_owner_with_its_chunks(
    make_dataset: Any, start_worker: Any, tmp_path: Path
) -> None:
    workers, _members = start_pool(make_dataset, start_worker, tmp_path, (CHUNK,) * 3)
    svc = workers[0].worker.services["ds"]
    workers[0].call(svc.warm("big.bin"))
    pages = -(-len(BIG) // MiB)
    held = [held_pages(w, "big.bin") for w in workers]
    assert set().union(*held) == set(range(pages))  # the whole file is in the pool
    assert sum(len(h) for h in held) == pages  # once (r = 1)
    for w in workers:
        info = w.worker.services["ds"].metadata.known("big.bin")
        if info is not None and info[0] is not None:
            assert set(w.worker.services["ds"].owned_pages(info[0])) == held_pages(w, "big.bin")
    fs = TidepoolFileSystem(workers[1].endpoint, local_reads=False, skip_instance_cache=True)
    before = sum(origin_reads(w) for w in workers)
    assert fs.cat_file("ds/big.bin") == BIG
    assert sum(origin_reads(w) for w in workers) == before


def test_members_with_another_chunk_size_are_refused_and_reads_stay_right(
    make_dataset: Any, start_worker: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    workers, _members = start_pool(make_dataset, start_worker, tmp_path, (CHUNK, 4 * MiB))
    for w in workers:
        fs = TidepoolFileSystem(w.endpoint, local_reads=False, skip_instance_cache=True)
        assert fs.cat_file("ds/big.bin") == BIG
        for name, data in SMALL.items():
            assert fs.cat_file(f"ds/{name}") == data
    assert "give every member of the pool the same --chunk-size" in caplog.text
