from __future__ import annotations

import pytest

from tidepool.store.eviction import EvictionPolicy, LRUPolicy


def test_lru_orders_by_recency() -> None:
    lru: LRUPolicy[str] = LRUPolicy()
    for name, size in [("a", 1), ("b", 2), ("c", 3)]:
        lru.add(name, size)
    assert list(lru.victims()) == ["a", "b", "c"]
    assert lru.touch("a")
    assert list(lru.victims()) == ["b", "c", "a"]
    assert lru.total == 6 and len(lru) == 3 and "b" in lru


def test_lru_remove_and_pop() -> None:
    lru: LRUPolicy[int] = LRUPolicy()
    lru.add(1, 10)
    lru.add(2, 20)
    assert lru.remove(1) == 10
    assert lru.remove(1) is None
    assert not lru.touch(1)
    assert lru.pop_victim() == (2, 20)
    assert lru.pop_victim() is None
    assert lru.total == 0 and len(lru) == 0


def test_lru_re_add_updates_size_and_recency() -> None:
    lru: LRUPolicy[str] = LRUPolicy()
    lru.add("a", 1)
    lru.add("b", 1)
    lru.add("a", 5)
    assert list(lru.victims()) == ["b", "a"]
    assert lru.total == 6


def test_lru_rejects_negative_size() -> None:
    with pytest.raises(ValueError, match="size"):
        LRUPolicy[str]().add("a", -1)


def test_lru_satisfies_protocol() -> None:
    policy: EvictionPolicy[str] = LRUPolicy()
    policy.add("x", 1)
    assert policy.pop_victim() == ("x", 1)
