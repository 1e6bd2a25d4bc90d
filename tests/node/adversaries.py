"""Adversarial dtnode processes for the end-to-end tests: real nodes that cheat in one specific way.

Run as ``python -m tests.node.adversaries fabricate|silent --config node.toml``. Fakes only for adversaries: the
honest code path is the production one, and these subclasses change a single behaviour.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import trio

from node import commands
from node.config import load_config
from node.logs import setup_logging
from node.roles.trainer import TrainerRole
from node.roles.validator import ValidatorRole
from node.runtime import DtNode
from node.training import local as local_training
from node.training.local import LocalResult


class FabricatingTrainer(TrainerRole):
    """Trains honestly, then publishes a delta scaled ×10 (model-poisoning boost) with the honest segment hashes."""

    async def _train_and_publish(self, spec: Any, ticket: Any) -> str:
        import node.roles.trainer as trainer_module

        real = local_training.train_local

        def boosted(*args: Any, **kwargs: Any) -> LocalResult:
            result = real(*args, **kwargs)
            scaled = {k: v * 10.0 for k, v in result.delta.items()}
            return LocalResult(scaled, result.final_state, result.loss_before, result.loss_after,
                               result.segment_hashes, result.segment_states)

        trainer_module.train_local = boosted  # type: ignore[assignment]
        try:
            return await super()._train_and_publish(spec, ticket)
        finally:
            trainer_module.train_local = real


class SilentValidator(ValidatorRole):
    """Registered and drawn like any validator, but never votes."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["fabricate", "silent"])
    ap.add_argument("--config", required=True)
    args = ap.parse_args()
    cfg = load_config(toml_path=args.config, env=os.environ)
    setup_logging(fmt=cfg.log_format, level=cfg.log_level, name=os.environ.get("DTNODE_NODE_NAME", ""))
    account = commands.load_account(cfg)
    node = DtNode(config=cfg, account=account, client=commands._client(cfg, account))
    if args.kind == "fabricate":
        node.trainer_cls = FabricatingTrainer
    else:
        import node.runtime as runtime

        runtime.ValidatorRole = SilentValidator  # type: ignore[misc]
    trio.run(commands._serve_until_signal, node)
    return 0


if __name__ == "__main__":
    sys.exit(main())
