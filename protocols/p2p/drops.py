"""Every connection or stream this node drops on purpose is counted and logged, at a bounded rate.

A flood makes thousands of drops a second; one log line each would cost more CPU than the drops save. So each reason
is counted in ``P2PMetrics.dropped`` at once, the first drop of a reason is logged with its detail, and the drops
that follow within ``interval_s`` are summed into one summary line (count and the last detail) written by
:meth:`DropLog.run` when the interval ends. Nothing is dropped silently.

Cancellation: :meth:`DropLog.run` runs in the node's nursery; cancelling it flushes nothing further.
"""

from __future__ import annotations

import logging

import trio

from protocols.p2p.metrics import P2PMetrics

logger = logging.getLogger(__name__)


class DropLog:
    """Counts drops by reason in ``metrics.dropped`` and logs them rate-limited (see the module doc)."""

    def __init__(self, metrics: P2PMetrics, *, interval_s: float) -> None:
        self._metrics = metrics
        self._interval_s = interval_s
        self._quiet_until: dict[str, float] = {}
        self._unlogged: dict[str, tuple[int, str]] = {}

    def drop(self, reason: str, detail: str) -> None:
        """Record one drop: ``reason`` is a short stable label (a metrics key), ``detail`` says who and why."""
        self._metrics.dropped[reason] += 1
        now = trio.current_time()
        if now < self._quiet_until.get(reason, -1.0):
            count, _ = self._unlogged.get(reason, (0, ""))
            self._unlogged[reason] = (count + 1, detail)
            return
        self._quiet_until[reason] = now + self._interval_s
        logger.warning("dropped %s: %s", reason, detail)

    def flush(self) -> None:
        """Log one summary line per reason with drops not yet logged."""
        for reason, (count, detail) in sorted(self._unlogged.items()):
            logger.warning("dropped %s: %d more in the last %.0f s (the last: %s)", reason, count, self._interval_s,
                           detail)
        self._unlogged.clear()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write the summaries every ``interval_s`` until cancelled."""
        task_status.started()
        while True:
            await trio.sleep(self._interval_s)
            self.flush()
