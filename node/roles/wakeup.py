"""What ends a role's wait between two polls early: news that may change its next decision.

The node's chain watch fires :class:`Wakeup` when it hears of a new block or a contract log (pushed by the chain
feed, or found by a poll), and the vote listener when it records a signed vote. A role's loop waits on its own
:class:`Waiter`: until something fired since the waiter last returned, or its poll interval passed, whichever is
first. The poll interval stays the fallback (a node without a feed, a lost notification), so waking early can only
make a decision sooner, never skip one: every decision is still made from what the role reads.
"""

from __future__ import annotations

import math

import trio

WAKE_GAP_S = 0.05
"""The least time between two returns of one waiter: a block's head and log notifications arrive within
milliseconds of each other, and one loop iteration covers them all."""


class Wakeup:
    """A generation counter, raised by every :meth:`fire` (trio only: call it from the node's trio thread)."""

    def __init__(self) -> None:
        self.generation = 0
        self._event = trio.Event()

    def fire(self) -> None:
        self.generation += 1
        self._event.set()
        self._event = trio.Event()

    def waiter(self, *, gap_s: float = WAKE_GAP_S) -> Waiter:
        return Waiter(self, gap_s)

    async def _changed_since(self, generation: int) -> None:
        while self.generation == generation:
            await self._event.wait()


class Waiter:
    """One loop's view of a :class:`Wakeup`: what fired while the loop was busy is not missed, because it counts
    from the generation at which its last :meth:`sleep` returned."""

    def __init__(self, wakeup: Wakeup, gap_s: float) -> None:
        self.wakeup = wakeup
        self.gap_s = gap_s
        self.seen = wakeup.generation
        self._returned_at = -math.inf

    async def sleep(self, seconds: float) -> None:
        """Return once the wakeup fired since this waiter last returned (at the earliest :attr:`gap_s` after
        that), or after ``seconds``."""
        deadline = trio.current_time() + seconds
        await trio.sleep_until(min(self._returned_at + self.gap_s, deadline))
        with trio.move_on_at(deadline):
            await self.wakeup._changed_since(self.seen)
        self.seen = self.wakeup.generation
        self._returned_at = trio.current_time()
