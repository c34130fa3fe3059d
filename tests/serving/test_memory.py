"""MemoryBudget: reservations never exceed the total, waiters are served in order, a wait
that runs out is a 429 and a cancelled waiter gives its place back."""

from __future__ import annotations

import asyncio

import pytest

from tidepool.core.errors import TooManyRequestsError, http_status
from tidepool.serving import MemoryBudget


async def test_reservations_never_exceed_the_total_and_waiters_go_in_order() -> None:
    budget = MemoryBudget(10, wait=5.0)
    order: list[str] = []
    release_a = asyncio.Event()

    async def hold(name: str, size: int, until: asyncio.Event | None = None) -> None:
        async with budget.reserve(size):
            order.append(name)
            assert budget.in_use <= budget.total
            if until is not None:
                await until.wait()

    a = asyncio.create_task(hold("a", 8, release_a))
    await asyncio.sleep(0)
    b = asyncio.create_task(hold("b", 5))
    c = asyncio.create_task(hold("c", 1))  # fits now, but b came first
    await asyncio.sleep(0.01)
    assert order == ["a"] and budget.waiting == 2 and budget.in_use == 8
    release_a.set()
    await asyncio.gather(a, b, c)
    assert order == ["a", "b", "c"] and budget.in_use == 0 and budget.waited == 2


async def test_a_wait_that_runs_out_is_too_many_requests() -> None:
    budget = MemoryBudget(4, wait=0.05)
    async with budget.reserve(4):
        with pytest.raises(TooManyRequestsError) as caught:
            async with budget.reserve(1):
                pass
    assert http_status(caught.value)[0] == 429
    assert budget.refused == 1 and budget.in_use == 0 and budget.waiting == 0
    async with budget.reserve(100):  # more than the total: takes all of it
        assert budget.in_use == 4


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    budget = MemoryBudget(4, wait=5.0)
    release = asyncio.Event()

    async def hold() -> None:
        async with budget.reserve(4):
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await holder
    assert budget.in_use == 0
    async with budget.reserve(4):
        assert budget.in_use == 4


def test_a_budget_needs_room() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        MemoryBudget(0, wait=1.0)
