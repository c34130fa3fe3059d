"""The funnel's waits, on a virtual clock (``looptime``): backoff and the retry budget, a congested
link waited for up to the call's timeout, the breaker and the probe that closes it.

:class:`Origin` and :class:`OriginHealth` read the event loop's clock (``loop.time()``) and sleep
with ``asyncio.sleep``; under ``looptime`` both are virtual, so a minute of backoff takes no real
time and the elapsed loop time is exact. The origin is a real local mount; the failures are the
calls handed to the funnel (``Origin._call`` takes its I/O as an argument).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tidepool.core.errors import OriginUnavailableError
from tidepool.origin.funnel import Origin, OriginSettings
from tidepool.origin.health import OriginHealth
from tidepool.origin.retry import backoff_delay
from tidepool.spec.config import MountConfig

pytestmark = pytest.mark.looptime


@pytest.fixture
def mount(tmp_path: Path) -> MountConfig:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.bin").write_bytes(b"a" * 100)
    return MountConfig(name="loc", url=f"file://{root}", protocol="file", root=str(root), path="")


@pytest.fixture
async def make_origin(mount: MountConfig) -> AsyncIterator[type[Origin]]:
    made: list[Origin] = []

    class Started(Origin):
        def __init__(self, settings: OriginSettings) -> None:
            super().__init__("ds", mount, settings)
            made.append(self)

    yield Started
    for origin in made:
        await origin.close()


class Failing:
    """An origin call that fails with ``exc`` every time, counting its attempts."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.attempts = 0

    async def __call__(self) -> bytes:
        self.attempts += 1
        raise self.exc


async def test_backoff_waits_on_the_loop_clock(make_origin: type[Origin]) -> None:
    """Four retries with backoff up to 30 s each: the call waits exactly the jittered delays."""
    settings = OriginSettings(retries=4, retry_budget=120, backoff_base=4, backoff_cap=30, seed=7)
    origin = make_origin(settings)
    await origin.start()
    rng = random.Random(7)
    delays = [backoff_delay(i, 4, 30, rng) for i in range(4)]
    failing = Failing(ConnectionRefusedError("refused"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(OriginUnavailableError, match="refused"):
        await origin._call("read", "a.bin", failing)
    assert failing.attempts == 5
    assert origin.stats.retries == 4
    assert loop.time() - started == pytest.approx(sum(delays), abs=0.01)
    assert sum(delays) > 10  # minutes of real sleeping without the virtual clock


async def test_a_failing_call_gives_up_within_its_retry_budget(
    make_origin: type[Origin],
) -> None:
    settings = OriginSettings(retries=50, retry_budget=5.0, backoff_base=1, backoff_cap=2, seed=1)
    origin = make_origin(settings)
    await origin.start()
    failing = Failing(ConnectionResetError("reset"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(OriginUnavailableError):
        await origin._call("read", "a.bin", failing)
    assert loop.time() - started <= settings.retry_budget
    assert 3 <= failing.attempts < 51
    assert origin.stats.failures == 1


async def test_a_congested_link_is_waited_for_and_never_opens_the_breaker(
    make_origin: type[Origin],
) -> None:
    """Timeouts while other calls still succeed are a full link: the call retries past its retry
    budget (up to three times the retries), then says "too slow"; the breaker stays closed. A
    refused connection at the same moment is an outage: given up within the budget."""
    settings = OriginSettings(
        retries=4, retry_budget=1.0, backoff_base=0.1, backoff_cap=0.5, breaker_threshold=1, seed=3
    )
    origin = make_origin(settings)
    await origin.start()

    async def ok() -> bytes:
        return b"page"

    async def others() -> None:  # other readers, served every 0.3 s
        while True:
            await origin._call("read", "a.bin", ok)
            await asyncio.sleep(0.3)

    loop = asyncio.get_running_loop()
    busy = loop.create_task(others())
    try:
        await asyncio.sleep(0)
        timing_out = Failing(TimeoutError())
        started = loop.time()
        with pytest.raises(OriginUnavailableError, match="origin too slow"):
            await origin._call("read", "a.bin", timing_out)
        assert timing_out.attempts == 13  # retries * 3 + 1
        assert loop.time() - started > settings.retry_budget
        assert origin.reachable and origin.breaker.opened == 0

        refused = Failing(ConnectionRefusedError("refused"))
        started = loop.time()
        with pytest.raises(OriginUnavailableError, match="refused"):
            await origin._call("read", "a.bin", refused)
        assert loop.time() - started <= settings.retry_budget
        assert not origin.reachable and origin.breaker.opened == 1
    finally:
        busy.cancel()


async def test_an_open_breaker_fails_at_once_until_the_probe_gets_an_answer(
    make_origin: type[Origin],
) -> None:
    """Opened, the breaker refuses calls without trying them; the probe (an ``info`` of the real
    local root) closes it after one ``probe_interval``."""
    settings = OriginSettings(retries=0, breaker_threshold=1, probe_interval=30.0)
    origin = make_origin(settings)
    await origin.start()
    with pytest.raises(OriginUnavailableError):
        await origin._call("read", "a.bin", Failing(ConnectionRefusedError("refused")))
    assert not origin.reachable
    never = Failing(AssertionError("an open breaker must not call the origin"))
    with pytest.raises(OriginUnavailableError, match="unreachable since"):
        await origin._call("read", "a.bin", never)
    assert never.attempts == 0 and origin.stats.fast_failures == 1

    await asyncio.sleep(settings.probe_interval - 1)
    assert not origin.reachable
    await asyncio.sleep(2)
    for _ in range(100):  # the probe's info runs in a thread: real time, a few milliseconds
        if origin.reachable:
            break
        await asyncio.sleep(0.01)
    assert origin.reachable
    assert await origin.read("a.bin", 0, 4) == b"aaaa"


async def test_the_probe_keeps_asking_every_interval_until_the_origin_answers() -> None:
    answers: list[float] = []
    loop = asyncio.get_running_loop()

    async def probe() -> None:
        answers.append(loop.time())
        if len(answers) < 3:
            raise ConnectionRefusedError("still down")

    settings = OriginSettings(breaker_threshold=1, probe_interval=5.0)
    health = OriginHealth("ds", settings, probe, lambda exc: str(exc))
    started = loop.time()
    health.unreachable("cut")
    try:
        assert not health.allow()
        await asyncio.sleep(11)
        assert not health.allow() and health.breaker.last_error == "still down"
        await asyncio.sleep(5)
        assert health.allow()
        assert [t - started for t in answers] == pytest.approx([5.0, 10.0, 15.0], abs=0.01)
    finally:
        await health.close()
