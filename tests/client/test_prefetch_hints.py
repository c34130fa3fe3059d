"""Announcing reads: ``fs.prefetch`` and the :mod:`tidepool.torch` helpers, against a real worker.

PyTorch stays optional: the helpers are exercised with plain samplers; a real ``DataLoader``
runs too when torch is installed.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import random
import time
from typing import Any

import pytest
from tests.conftest import ThreadWorker

from tidepool.client import TidepoolFileSystem
from tidepool.torch import PrefetchSampler, TidepoolDataset

pytestmark = pytest.mark.integration

FILES = {f"img/{i:03d}.jpg": os.urandom(5_000 + i) for i in range(40)}
NAMES = sorted(FILES)


@pytest.fixture
def worker(make_dataset: Any, start_worker: Any) -> ThreadWorker:
    cfg = make_dataset(FILES, prefetch="pattern")
    return start_worker([dataclasses.replace(cfg)])


def client(w: ThreadWorker) -> TidepoolFileSystem:
    return TidepoolFileSystem(w.endpoint, local_reads=False, skip_instance_cache=True)


def hinted(fs: TidepoolFileSystem) -> int:
    return int(fs.status("ds", refresh=False)["raw"]["prefetch"]["hinted"])


def wait_prefetched(fs: TidepoolFileSystem, files: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        st = fs.status("ds", refresh=False)["raw"]["prefetch"]
        if st["files"] >= files and st["queued"] == 0 and st["inflight"] == 0:
            return
        time.sleep(0.05)
    raise AssertionError("prefetch did not finish")


def test_sampler_announces_each_epoch_and_the_dataset_reads_batches(worker: ThreadWorker) -> None:
    fs = client(worker)
    dataset = TidepoolDataset([f"ds/{n}" for n in NAMES], fs=fs, transform=len)
    order = list(range(len(NAMES)))
    random.Random(3).shuffle(order)
    sampler = PrefetchSampler(order, dataset)
    assert len(sampler) == len(NAMES)
    assert list(sampler) == order  # the sampler's own order, unchanged
    assert sampler.announced == len(NAMES) and hinted(fs) == len(NAMES)
    wait_prefetched(fs, len(NAMES))
    batch = order[:8]
    assert dataset.__getitems__(batch) == [len(FILES[NAMES[i]]) for i in batch]
    assert dataset[order[9]] == len(FILES[NAMES[order[9]]])
    raw = TidepoolDataset([f"ds/{n}" for n in NAMES], fs=fs)
    assert raw.__getitems__([0, 5]) == [FILES[NAMES[0]], FILES[NAMES[5]]]


def test_an_announcement_that_cannot_be_delivered_does_not_stop_the_epoch() -> None:
    fs = TidepoolFileSystem("http://127.0.0.1:9", local_reads=False, skip_instance_cache=True)
    sampler = PrefetchSampler([2, 0, 1], paths=["ds/a", "ds/b", "ds/c"], fs=fs)
    assert list(sampler) == [2, 0, 1] and sampler.announced == 0


def _child(fs: TidepoolFileSystem, conn: Any) -> None:
    try:
        accepted = fs.prefetch([f"ds/{n}" for n in NAMES[:5]])
        ok = all(fs.cat_file(f"ds/{n}") == FILES[n] for n in NAMES[:5])
        conn.send((accepted, ok))
    except BaseException as exc:
        conn.send(("error", repr(exc)))
    finally:
        conn.close()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_announces_and_reads_with_the_parents_client(
    worker: ThreadWorker,
) -> None:
    fs = client(worker)
    fs.cat_file(f"ds/{NAMES[-1]}")  # the parent used it first (sessions, pools, threads)
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(fs, child))
    proc.start()
    child.close()
    answer = parent.recv()
    proc.join(30)
    assert answer == (5, True), answer


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_real_dataloader_with_forked_workers(worker: ThreadWorker) -> None:
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, RandomSampler

    fs = client(worker)
    dataset = TidepoolDataset([f"ds/{n}" for n in NAMES], fs=fs, transform=len)
    sampler = PrefetchSampler(RandomSampler(dataset), dataset)
    loader = DataLoader(
        dataset, batch_size=4, sampler=sampler, num_workers=2, multiprocessing_context="fork"
    )
    seen = sorted(int(x) for batch in loader for x in batch)
    assert seen == sorted(len(FILES[n]) for n in NAMES)
    assert sampler.announced == len(NAMES)
    assert torch is not None
