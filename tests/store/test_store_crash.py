"""A worker killed with SIGKILL in the middle of writing pages comes back consistent.

The writer's files are four pages of 16 KiB each, the first shorter than a page: page 0 is packed
into the tier's pack database (:mod:`tidepool.store.packs`), the others are page files, so every
kill lands among both kinds of write, eviction and demotion."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tidepool.core.pages import HEADER_SIZE, TMP_DIR
from tidepool.spec.config import TierConfig
from tidepool.store import PageStore

from .conftest import disk_bytes, key, packed_rows, page_files, payload, store_root

PAGE = 16 << 10
FULL = PAGE + HEADER_SIZE

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from conftest import key, payload
    from tidepool.spec.config import TierConfig
    from tidepool.store import PageStore

    mem, ssd, state, mem_q, ssd_q, start = sys.argv[2:8]
    tiers = [
        TierConfig("MEM", mem, quota=int(mem_q), high=0.9, low=0.6),
        TierConfig("SSD", ssd, quota=int(ssd_q), high=1.0, low=0.8),
    ]
    store = PageStore(tiers, Path(state), dataset="ds", page_size=16 << 10, flush_interval=0.01)
    n = int(start)
    while True:
        k = key(n // 4, n % 4)
        if store.put(k, payload(k, (16 << 10) - n % 100)):
            print(n, flush=True)
        store.get(key(max(0, n - 3) // 4, max(0, n - 3) % 4))
        n += 1
    """
)


def run_and_kill(
    tmp_path: Path, quotas: tuple[int, int], start: int, kill_after: int, child: str = CHILD
) -> list[int]:
    """Run the writer ``child`` until it reported ``kill_after`` puts, SIGKILL it, return its
    puts."""
    args = [
        sys.executable,
        "-c",
        child,
        str(Path(__file__).parent),
        str(tmp_path / "mem"),
        str(tmp_path / "ssd"),
        str(tmp_path / "state"),
        str(quotas[0]),
        str(quotas[1]),
        str(start),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    committed: list[int] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            committed.append(int(line))
            if len(committed) >= kill_after:
                os.kill(proc.pid, signal.SIGKILL)
                break
        committed.extend(int(line) for line in proc.stdout)
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err
    return committed


def check_consistent(tmp_path: Path, tiers: list[TierConfig]) -> PageStore:
    """Reopen the store after a kill: every page file and every packed row is a page it
    serves byte for byte (no row left that the index does not vouch for), and the tiers'
    accounting is what is on disk."""
    store = PageStore(tiers, tmp_path / "state", dataset="ds", page_size=PAGE, flush_interval=None)
    assert store.wait_verified(30)  # the restart check runs in the background
    for tier, usage in zip(tiers, store.usage(), strict=True):
        assert not list((store_root(tier.path) / TMP_DIR).iterdir())
        rows = packed_rows(tier.path)
        packed = sum(length + HEADER_SIZE for _, _, length in rows)
        assert usage.used == disk_bytes(tier.path) + packed <= usage.capacity
        assert usage.pages == len(page_files(tier.path)) + len(rows)
        pages = [
            (int(f.name.split(".")[0], 16), int(f.name.split(".")[1]))
            for f in page_files(tier.path)
        ]
        pages += [(int(fk, 16), idx) for fk, idx, _ in rows]
        for n4, idx in pages:
            n_key = key(n4, idx)
            got = store.get(n_key)
            assert got is not None, n_key
            assert bytes(got) == payload(n_key, PAGE - (n4 * 4 + idx) % 100)
    assert store.stats().corrupt == 0
    return store


@pytest.mark.slow
def test_sigkill_without_eviction_loses_no_committed_page(tmp_path: Path) -> None:
    quotas = (1000 * FULL, 1000 * FULL)
    tiers = [
        TierConfig("MEM", str(tmp_path / "mem"), quota=quotas[0], high=0.9, low=0.6),
        TierConfig("SSD", str(tmp_path / "ssd"), quota=quotas[1], high=1.0, low=0.8),
    ]
    committed: list[int] = []
    for round_, kill_after in enumerate((150, 97, 211)):
        committed += run_and_kill(tmp_path, quotas, round_ * 1000, kill_after)
        store = check_consistent(tmp_path, tiers)
        missing = [n for n in committed if not store.contains(key(n // 4, n % 4))]
        assert not missing
        store.close()


@pytest.mark.slow
def test_sigkill_during_eviction_and_demotion_stays_consistent(tmp_path: Path) -> None:
    quotas = (40 * FULL, 100 * FULL)
    tiers = [
        TierConfig("MEM", str(tmp_path / "mem"), quota=quotas[0], high=0.9, low=0.6),
        TierConfig("SSD", str(tmp_path / "ssd"), quota=quotas[1], high=1.0, low=0.8),
    ]
    for round_, kill_after in enumerate((300, 251, 377)):
        committed = run_and_kill(tmp_path, quotas, round_ * 1000, kill_after)
        store = check_consistent(tmp_path, tiers)
        last = committed[-1]
        assert store.contains(key(last // 4, last % 4))  # the newest page is never the LRU
        assert store.usage()[1].pages > 0
        store.close()
