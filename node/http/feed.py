"""The dashboard's data service: refreshes the chain facts, measures new checkpoints, and tells watchers.

:class:`Feed` is a trio service (``await nursery.start(feed.run)``) in the node's nursery. Every
``refresh_s`` it reads what changed on the chain (one worker thread under the chain deadline, its own capacity
limiter, so the roles' chain calls never queue behind it), then measures committed checkpoints not yet measured.
Each change bumps :attr:`Feed.version`; server-sent-event streams wait on :meth:`Feed.wait_change`.
Cancellation: cancelling :meth:`run` abandons a chain read in flight (it only reads) and a measurement (cached
only once complete).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import trio

from node.chainio import AsyncChain
from node.http.gather import ChainFacts, ChainState
from node.http.measure import Measurer
from node.roles.context import NodeContext
from protocols.chain.errors import ChainError

REFRESH_S = 2.0
"""How often the chain is read for news: a round takes tens of seconds, a vote a block or two."""


@dataclass
class Feed:
    ctx: NodeContext
    refresh_s: float = REFRESH_S
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("dtnode.http"))
    state: ChainState = field(default_factory=ChainState)
    version: int = 0
    streams: int = 0
    """Event streams open now (:mod:`node.http.sse`)."""
    refresh_seconds: float = 0.0
    """Wall time spent reading the chain for the dashboard."""
    facts: ChainFacts = field(init=False)
    measurer: Measurer = field(init=False)
    _changed: trio.Event = field(default_factory=trio.Event)
    _chain: AsyncChain = field(init=False)

    def __post_init__(self) -> None:
        self.facts = ChainFacts(self.ctx.client)
        self.measurer = Measurer(self.ctx, log=self.log)
        self._chain = AsyncChain(timeout_s=self.ctx.config.chain_timeout_s, limiter=trio.CapacityLimiter(1))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                await self.step()
            except Exception:  # task boundary: a bug in what the dashboard shows must never stop the node
                self.log.exception("dashboard: refresh failed; retrying in %.0f s", self.refresh_s)
            await trio.sleep(self.refresh_s)

    async def step(self) -> None:
        """One refresh, then one measurement of each new checkpoint; a chain that is down is logged and retried."""
        start = trio.current_time()
        try:
            state = await self._chain(self.facts.refresh, what="dashboard refresh")
        except ChainError as exc:
            self.log.warning("dashboard: chain read failed (%s); retrying in %.0f s", exc, self.refresh_s)
            return
        finally:
            self.refresh_seconds += trio.current_time() - start
        if state is not self.state:
            self.state = state
            self._bump()
        commits = [(state.jobs[int(ev.args["jobId"])], str(ev.args["checkpointCid"]), str(ev.args["leader"]))
                   for ev in state.events if ev.name == "RoundCommitted" and ev.job_id in state.jobs]
        for job, cid, committer in self.measurer.pending(commits):
            if await self.measurer.measure(job, cid, committer) is not None:
                self._bump()

    def _bump(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_change(self, seen: int, timeout_s: float) -> int:
        """The version once it differs from ``seen``, or the same after ``timeout_s`` (SSE keep-alives)."""
        if self.version != seen:
            return self.version
        with trio.move_on_after(timeout_s):
            await self._changed.wait()
        return self.version
