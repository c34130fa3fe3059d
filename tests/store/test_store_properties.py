"""Property test: whatever the sequence of puts, reads, drops and reopens across two tiers, no
tier's disk use ever exceeds its quota — checked at every file write, not only after each
operation — and ``get`` only ever returns the bytes that were put."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidepool.core.pages import HEADER_SIZE, PageKey
from tidepool.spec.config import TierConfig
from tidepool.store import PageStore, pagestore
from tidepool.store import tiers as tiers_mod

from .conftest import PAGE, key, payload, tier_bytes

FULL = PAGE + HEADER_SIZE

sizes = st.one_of(st.just(PAGE), st.integers(PAGE // 2, PAGE), st.integers(0, PAGE))
ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 24), sizes),
        st.tuples(st.just("put"), st.integers(0, 24), sizes),
        st.tuples(st.just("put"), st.integers(0, 24), sizes),
        st.tuples(st.just("get"), st.integers(0, 24), st.just(0)),
        st.tuples(st.just("drop"), st.integers(0, 24), st.just(0)),
        st.tuples(st.just("reopen"), st.just(0), st.just(0)),
    ),
    min_size=5,
    max_size=60,
)
watermarks = st.tuples(st.floats(0.3, 1.0), st.floats(0.3, 1.0)).map(sorted)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=ops,
    mem_pages=st.floats(0.5, 4.0),
    ssd_pages=st.floats(0.5, 8.0),
    mem_marks=watermarks,
    ssd_marks=watermarks,
)
def test_quota_holds_and_reads_are_exact(
    ops: list[tuple[str, int, int]],
    mem_pages: float,
    ssd_pages: float,
    mem_marks: Sequence[float],
    ssd_marks: Sequence[float],
) -> None:
    root = Path(tempfile.mkdtemp(prefix="tp-prop-"))
    tiers = [
        TierConfig(
            "MEM",
            str(root / "mem"),
            quota=int(mem_pages * FULL),
            low=mem_marks[0],
            high=mem_marks[1],
        ),
        TierConfig(
            "SSD",
            str(root / "ssd"),
            quota=int(ssd_pages * FULL),
            low=ssd_marks[0],
            high=ssd_marks[1],
        ),
    ]
    quotas = {str(Path(t.path).resolve() / "ds"): t.quota for t in tiers}
    real_write = tiers_mod.write_page_file

    def checked_write(path: str, chunks: Sequence[bytes | bytearray | memoryview]) -> None:
        # a page is written in place (pages/...), a demoted copy in the tier's tmp/ first
        tier_root = (
            path.rsplit("/pages/", 1)[0] if "/pages/" in path else path.rsplit("/tmp/", 1)[0]
        )
        incoming = sum(memoryview(c).nbytes for c in chunks)
        assert tier_bytes(tier_root) + incoming <= quotas[tier_root], "quota exceeded"
        real_write(path, chunks)

    model: dict[PageKey, bytes] = {}

    def open_store() -> PageStore:
        return PageStore(tiers, root / "state", dataset="ds", page_size=PAGE, flush_interval=None)

    store = open_store()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(pagestore, "write_page_file", checked_write)
            for op, n, size in ops:
                k = key(n % 6, n // 6)
                if op == "put":
                    data = payload(k, size)
                    present = store.contains(k)
                    ok = store.put(k, data)
                    if not present and ok:
                        model[k] = data
                    assert ok or size + HEADER_SIZE > max(t.quota for t in tiers)
                elif op == "get":
                    got = store.get(k)
                    assert got is None or bytes(got) == model[k]
                elif op == "drop":
                    store.drop_file(k.dataset, k.file_key)
                    assert not store.contains(k)
                else:
                    store.close()
                    store = open_store()
                for t, u in zip(tiers, store.usage(), strict=True):
                    assert u.used <= u.capacity
                    assert tier_bytes(t.path) == u.used
                for mk, data in model.items():
                    if store.contains(mk):
                        got = store.get(mk)
                        assert got is not None and bytes(got) == data
        assert store.stats().corrupt == 0
    finally:
        store.close()
        shutil.rmtree(root, ignore_errors=True)
