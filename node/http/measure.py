"""Each committed checkpoint's metric and loss, measured by this node on the job's evaluation shard.

A leader's own accuracy figure is nowhere on-chain, so the dashboard measures instead: the spec (checked against
the job's on-chain parameters), the evaluation shard and each checkpoint are fetched by CID (re-hashed by the store)
and evaluated in a worker thread, one checkpoint at a time, so the protocol's own work keeps the other core.
Measurements are cached by checkpoint CID (content-addressed, so they never go stale).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import trio

from node.http.facts import Measurement
from node.limits import content_limits
from node.roles.context import NodeContext
from node.roles.customer import evaluate_checkpoint
from node.training.objective import headline
from protocols.chain.models import JobInfo
from protocols.errors import DtnodeError

MAX_TRIES = 3
"""A checkpoint that failed this often (content unreachable, a spec the chain disagrees with) is not retried."""


@dataclass
class Measurer:
    ctx: NodeContext
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("dtnode.http"))
    done: dict[str, Measurement] = field(default_factory=dict)
    """checkpoint CID → its measurement."""
    failures: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    """Wall time spent measuring (fetch + evaluation)."""

    def pending(self, commits: list[tuple[JobInfo, str, str]]) -> list[tuple[JobInfo, str, str]]:
        """The (job, checkpoint CID, committer) among ``commits`` still to measure."""
        return [c for c in commits if c[1] not in self.done and self.failures.get(c[1], 0) < MAX_TRIES]

    async def measure(self, job: JobInfo, cid: str, committer: str) -> Measurement | None:
        """Measure one checkpoint (None when it failed; logged, retried on a later call up to :data:`MAX_TRIES`)."""
        start = trio.current_time()
        try:
            spec = await self.ctx.spec(job.job_id)
            eval_set = await self.ctx.shard(spec.eval_cid, spec.max_dag_bytes, providers=[job.customer])
            data = await self.ctx.fetch(cid, max_bytes=content_limits(spec).checkpoint_bytes,
                                        what="checkpoint (dashboard)",
                                        providers=[committer, job.customer])
            accuracy, loss = await evaluate_checkpoint(data, spec, eval_set)
        except DtnodeError as exc:
            self.failures[cid] = self.failures.get(cid, 0) + 1
            self.log.warning("dashboard: checkpoint %s of job %d not measured (%s: %s)", cid, job.job_id,
                             type(exc).__name__, exc)
            return None
        finally:
            self.seconds += trio.current_time() - start
        name, value = headline(spec.task, accuracy, loss)
        self.done[cid] = Measurement(name, value, loss, len(eval_set))
        return self.done[cid]
