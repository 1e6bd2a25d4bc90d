"""Adversarial dtnodes for the end-to-end tests: real nodes that cheat or fail in one specific way.

Embedded devnets take the role classes through ``DevnetPlan.trainer_cls``/``validator_cls``; the process devnet runs
``python -m tests.node.adversaries fabricate|silent --config node.toml``. Fakes only for adversaries: the honest
code path is the production one, and these subclasses change a single behaviour.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import trio

from node import commands
from node.config import load_config
from node.logs import setup_logging
from node.roles.context import NodeContext
from node.roles.leader import LeaderRole
from node.roles.trainer import TrainerRole
from node.roles.validator import ValidatorRole
from node.runtime import DtNode
from node.training.codec import State
from node.training.data import ArraySet
from node.training.local import LocalResult
from protocols.specs import JobSpec, TaskTicket


class FabricatingTrainer(TrainerRole):
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
