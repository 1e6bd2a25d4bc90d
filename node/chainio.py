"""Calling the sync chain adapter from trio: every call in a worker thread, under a deadline.

web3.py's async API is asyncio-only, so roles use the sync :class:`~protocols.chain.client.JobManagerClient` through
:func:`trio.to_thread.run_sync`. A call that outlives its deadline raises :class:`ChainTimeout`; the worker thread
is abandoned (its HTTP request has its own timeout), so a chain that hangs never hangs a node.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import TypeVar

import trio

from protocols.chain.errors import ChainUnavailable

T = TypeVar("T")


class ChainTimeout(ChainUnavailable, TimeoutError):
    """The chain did not answer within the configured deadline."""


class AsyncChain:
    """Runs blocking chain calls off the trio thread, each under ``timeout_s``.

    Cancellation: cancelling the caller abandons the worker thread; a transaction already sent may still be
    mined, which is why every role re-reads chain state before acting rather than trusting its own last call.
    """

    def __init__(self, *, timeout_s: float, limiter: trio.CapacityLimiter | None = None) -> None:
        self.timeout_s = timeout_s
        self._limiter = limiter or trio.CapacityLimiter(4)
        self.seconds = 0.0
        """Wall time spent waiting on the chain (the devnet benchmark's 'chain' column)."""
        self.calls: collections.Counter[str] = collections.Counter()
        """Calls made, by ``what`` up to its first parenthesis (``getJob(3)`` counts as ``getJob``): /metrics."""

    async def __call__(self, fn: Callable[[], T], *, what: str = "chain call") -> T:
        start = trio.current_time()
        self.calls[what.partition("(")[0]] += 1
        try:
            with trio.fail_after(self.timeout_s):
                return await trio.to_thread.run_sync(fn, abandon_on_cancel=True, limiter=self._limiter)
        except trio.TooSlowError as exc:
            raise ChainTimeout(f"{what}: the chain did not answer within {self.timeout_s:.0f} s") from exc
        finally:
            self.seconds += trio.current_time() - start
