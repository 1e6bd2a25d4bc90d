"""Adversarial dtnodes for the end-to-end tests: real nodes that cheat or fail in one specific way.

Embedded devnets take the role classes through ``DevnetPlan.trainer_cls``/``validator_cls``; the process devnet runs
``python -m tests.node.adversaries fabricate|silent --config node.toml``. Fakes only for adversaries: the honest
code path is the production one, and these subclasses change a single behaviour. The cheats of issue 14 (the
verification adversary suite, tests/node/test_adversaries_devnet.py) are the trainers from
:class:`OptimizerTamperingTrainer` on.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable
from typing import Any

import trio

from node import commands
from node.config import load_config
from node.logs import setup_logging
from node.roles.context import NodeContext
from node.roles.leader import LeaderRole
from node.roles.trainer import TrainerRole
from node.roles.validator import ValidatorRole
from node.runtime import DtNode
from node.segments import SegmentSpill
from node.training.codec import State, state_hash, state_sub
from node.training.data import ArraySet
from node.training.local import (
    LocalResult,
    deterministic_torch,
    initial_trainer_state,
    model_part,
    run_segment,
    task_loss,
    task_view,
)
from node.training.task import Task
from protocols.p2p.errors import RemoteError
from protocols.specs import JobSpec, TaskTicket
from protocols.types import RejectCode


class CheatingTrainer(TrainerRole):
    """Submits whatever it made: an honest trainer withholds an update its own losses show validators would reject
    (``TrainerRole.withholds_rejected_work``), but a cheater's losses are part of its cheat, and a test needs its
    update on-chain to see what the validators do with it."""

    withholds_rejected_work = False


class FabricatingTrainer(CheatingTrainer):
    """Trains honestly, then publishes a delta scaled ×10 (model-poisoning boost) with the honest segment hashes."""

    def train(self, spec: JobSpec, ticket: TaskTicket, base_model: State, shard: ArraySet) -> LocalResult:
        honest = super().train(spec, ticket, base_model, shard)
        return dataclasses.replace(honest, delta={k: v * 10.0 for k, v in honest.delta.items()})


class SilentValidator(ValidatorRole):
    """Registered and drawn like any validator, but never votes."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()


class NonPayingLeader(LeaderRole):
    """Commits rounds like any leader, but never calls ``payout``: as if it died right after each commit."""

    async def pay(self, r: int) -> None:
        return None


class TicketHoldingTrainer(TrainerRole):
    """Takes its ticket, then hangs before training: a node about to die while it holds a task.

    ``holding`` is set once it holds the ticket, so a test can kill the node at exactly that moment.
    """

    def __init__(self, ctx: NodeContext, *, jobs: tuple[int, ...] = ()) -> None:
        super().__init__(ctx, jobs=jobs)
        self.holding = trio.Event()

    async def _train_and_publish(self, spec: JobSpec, ticket: TaskTicket) -> tuple[str, int]:
        self.holding.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")


def forged_run(spec: JobSpec, ticket: TaskTicket, base_model: State, shard: ArraySet,
               edit: Callable[[int, State], State]) -> LocalResult:
    """The ticket's run with ``edit(i, state)`` applied to each segment's end state before it is committed and
    trained on from: a publication whose hashes, delta and losses all agree with the (edited) states, so that only
    the validators' checks of those states can tell."""
    task = Task.from_ticket(spec, ticket)
    data = task_view(shard, task.sample_range)
    base = {k: v.detach().clone() for k, v in sorted(base_model.items())}
    states: list[State] = []
    with deterministic_torch():
        state = initial_trainer_state(base)
        for i in range(task.n_segments):
            state = edit(i, run_segment(task, state, data, i))
            states.append(state)
        final = model_part(state)
        before, after = task_loss(task, base, data), task_loss(task, final, data)
    return LocalResult(state_sub(final, base), final, before, after, [state_hash(s) for s in states], states)


class OptimizerTamperingTrainer(CheatingTrainer):
    """Rewrites the AdamW second moments it commits after segment 0 (×1e-6) and trains on from them honestly: every
    later segment replays bitwise from the tampered state, and the delta is whatever the tampering steers (the
    attack that passed before issue 14 and took a round's accuracy to ~11%)."""

    def train(self, spec: JobSpec, ticket: TaskTicket, base_model: State, shard: ArraySet) -> LocalResult:
        def tamper(i: int, state: State) -> State:
            return {k: v * 1e-6 if i == 0 and k.endswith("exp_avg_sq") else v for k, v in state.items()}

        return forged_run(spec, ticket, base_model, shard, tamper)


class ToleranceSpendingTrainer(CheatingTrainer):
    """Pushes every segment's weights by 0.9 × the spec's replay tolerance of each tensor's scale, always the same
    way: each segment alone is within the tolerance a declared hardware mismatch grants (bitwise replay catches any
    push at all)."""

    def train(self, spec: JobSpec, ticket: TaskTicket, base_model: State, shard: ArraySet) -> LocalResult:
        eps = 0.9 * float(spec.replay_tolerance)

        def push(i: int, state: State) -> State:
            return {k: v + eps * v.abs().max() if k.startswith("model/") else v for k, v in state.items()}

        return forged_run(spec, ticket, base_model, shard, push)


class LossInflatingTrainer(CheatingTrainer):
    """Trains honestly but claims a loss after 0.05 lower than it is (a bigger loss reduction: a bigger bonus)."""

    def train(self, spec: JobSpec, ticket: TaskTicket, base_model: State, shard: ArraySet) -> LocalResult:
        honest = super().train(spec, ticket, base_model, shard)
        return dataclasses.replace(honest, loss_after=honest.loss_after - 0.05)


class _NothingServed(SegmentSpill):
    async def handle(self, request: bytes, peer: Any) -> bytes:
        raise RemoteError(RejectCode.CONTENT_UNAVAILABLE, "not serving segment states")


class WithholdingTrainer(FabricatingTrainer):
    """Publishes a fabricated (×10) delta and then serves none of its committed segment states: a challenge can
    never be answered (the one that would expose the delta is always drawn)."""

    def __init__(self, ctx: NodeContext, *, jobs: tuple[int, ...] = ()) -> None:
        super().__init__(ctx, jobs=jobs)
        self.segments = _NothingServed(self.segments.root)


class CopyingTrainer(TrainerRole):
    """Takes its own ticket, trains nothing, and submits the first update another trainer put on-chain this round
    (that trainer's manifest, republished from its own store) under its own ticket."""

    async def _train_and_publish(self, spec: JobSpec, ticket: TaskTicket) -> tuple[str, int]:
        ctx = self.ctx
        with trio.fail_after(ctx.config.task_timeout_s):
            while True:
                others = [s for s in await ctx.jobs.submissions(ticket.job_id, ticket.round)
                          if s.trainer.lower() != ctx.address.lower()]
                if others:
                    break
                await trio.sleep(ctx.config.chain_poll_interval_s)
        victim = others[0]
        raw = await ctx.fetch(victim.update_cid, max_bytes=1 << 20, providers=[victim.trainer])
        cid = await ctx.store.put(raw)
        await ctx.store.pin(cid)
        return cid, victim.loss_reduction


class OldUpdateReplayingTrainer(CheatingTrainer):
    """Honest in its first round; in every later round it submits its first update again under the new ticket."""

    def __init__(self, ctx: NodeContext, *, jobs: tuple[int, ...] = ()) -> None:
        super().__init__(ctx, jobs=jobs)
        self.first: tuple[str, int] | None = None

    async def _train_and_publish(self, spec: JobSpec, ticket: TaskTicket) -> tuple[str, int]:
        if self.first is None:
            self.first = await super()._train_and_publish(spec, ticket)
            return self.first
        return self.first


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["fabricate", "silent"])
    ap.add_argument("--config", required=True)
    args = ap.parse_args()
    cfg = load_config(toml_path=args.config, env=os.environ)
    setup_logging(fmt=cfg.log_format, level=cfg.log_level, name=os.environ.get("DTNODE_NODE_NAME", ""))
    from protocols.p2p.hardening import install_hardening

    install_hardening()  # what node/cli.py's main does once per process before any host is built
    account = commands.load_account(cfg)
    node = DtNode(config=cfg, account=account, client=commands._client(cfg, account))
    if args.kind == "fabricate":
        node.trainer_cls = FabricatingTrainer
    else:
        node.validator_cls = SilentValidator
    trio.run(commands._serve_until_signal, node)
    return 0


if __name__ == "__main__":
    sys.exit(main())
