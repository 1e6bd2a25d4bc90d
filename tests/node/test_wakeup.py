"""A role's wait between polls: ended by news, never missing news that came while the role was busy, at most once
per gap, and never longer than its poll."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from node.roles.wakeup import Wakeup


async def test_a_wait_ends_at_news_or_at_its_poll(autojump_clock: trio.testing.MockClock) -> None:
    wakeup = Wakeup()
    waiter = wakeup.waiter(gap_s=0.05)
    start = trio.current_time()
    await waiter.sleep(1.0)  # nothing fired: the whole poll
    assert trio.current_time() - start == pytest.approx(1.0)

    async def fire_at(t: float) -> None:
        await trio.sleep(t)
        wakeup.fire()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fire_at, 0.3)
        start = trio.current_time()
        await waiter.sleep(1.0)
        assert trio.current_time() - start == pytest.approx(0.3)


async def test_news_while_busy_is_not_missed_and_bursts_wake_once_per_gap(
        autojump_clock: trio.testing.MockClock) -> None:
    wakeup = Wakeup()
    waiter = wakeup.waiter(gap_s=0.05)
    await waiter.sleep(0.0)
    wakeup.fire()  # while the loop works, before it waits again
    start = trio.current_time()
    await waiter.sleep(1.0)
    assert trio.current_time() - start == pytest.approx(0.05)  # at once, yet a gap after the last return
    for _ in range(5):
        wakeup.fire()  # a burst: one block's head and logs
    await waiter.sleep(1.0)
    start = trio.current_time()
    await waiter.sleep(1.0)  # the burst was consumed by one return
    assert trio.current_time() - start == pytest.approx(1.0)


async def test_each_waiter_counts_for_itself(autojump_clock: trio.testing.MockClock) -> None:
    wakeup = Wakeup()
    first, second = wakeup.waiter(gap_s=0.0), wakeup.waiter(gap_s=0.0)
    wakeup.fire()
    await first.sleep(1.0)
    start = trio.current_time()
    await second.sleep(1.0)  # the same news ends the other loop's wait too
    assert trio.current_time() == start
