"""What a devnet runs: the demo job's spec, the plan (how many nodes of each role, their settings, overrides for
tests) and the account plan (which Hardhat dev account each node acts as), and each node's config.

Pure data: nothing here starts a process, touches the chain or writes a file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.config import NodeConfig
from node.roles.leader import LeaderRole
from node.roles.trainer import TrainerRole
from node.roles.validator import ValidatorRole
from protocols.errors import DtnodeError
from protocols.specs import AggregationSpec, JobSpec, PaymentSpec

ETH = 10**18
MIN_STAKE = ETH // 10
DEV_ACCOUNTS = 20
"""Hardhat's public dev accounts; account 0 deploys the contract and is the customer."""


def demo_spec(*, rounds: int = 14, trainers: int = 4, model: str = "fmnist-cnn-v1", local_steps: int = 100,
              lease_seconds: int = 300, quorum: int = 3) -> JobSpec:
    """The embedded defaults: CNN, DiLoCo (AdamW inner, Nesterov outer 0.7/0.9), K=100, one task per trainer.

    Measured (bench/bench_training.py, simulate): this algorithm reaches 88% test accuracy at round 11.
    """
    return JobSpec(
        name="fashion-mnist-demo", model=model, rounds=rounds, tasks_per_round=trainers, local_steps=local_steps,
        batch_size=32, inner_optimizer="adamw", inner_lr="0.001", segment_every=5, spot_check_segments=3,
        delta_encoding="f32", aggregation=AggregationSpec(strategy="mean", outer="nesterov"),
        payment=PaymentSpec(base_rate_wei=10**15, bonus_rate_wei=5 * 10**14, validator_fee_wei=2 * 10**14,
                            leader_fee_wei=10**15, quorum=quorum, lease_seconds=lease_seconds),
    )


@dataclass(frozen=True, kw_only=True)
class DevnetPlan:
    trainers: int = 4
    validators: int = 3
    leaders: int = 2
    spec: JobSpec = field(default_factory=demo_spec)
    demo: str = "fmnist"
    """Which demo's data (and customer checkpoint) the job trains on: :data:`node.devnet.demos.DEMOS`."""
    classes: tuple[str, ...] = ("M",)
    shards: int = 16
    eval_samples: int = 2000
    final_eval_samples: int | None = None
    """Test samples for the final accuracy (None: all 10,000)."""
    embedded: bool = False
    workdir: Path | None = None
    log_format: str = "text"
    node_settings: dict[str, Any] = field(default_factory=lambda: {
        "chain_poll_interval_s": 1.0, "task_timeout_s": 120.0, "round_timeout_s": 180.0, "fetch_timeout_s": 60.0,
        "request_timeout_s": 15.0, "chain_timeout_s": 30.0,
    })
    p2p_settings: dict[str, Any] = field(default_factory=lambda: {"presence_interval_s": 3.0, "peer_ttl_s": 15.0})
    timeout_s: float = 1800.0
    http: str = ""
    """``HOST:PORT`` where the customer's node serves the dashboard (node/http/); empty: none."""
    trainer_cls: dict[str, type[TrainerRole]] = field(default_factory=dict)
    """label → TrainerRole subclass (embedded runs only; tests use it for adversaries)."""
    validator_cls: dict[str, type[ValidatorRole]] = field(default_factory=dict)
    """label → ValidatorRole subclass (embedded runs only; tests use it for adversaries)."""
    leader_cls: dict[str, type[LeaderRole]] = field(default_factory=dict)
    """label → LeaderRole subclass (embedded runs only; tests use it for adversaries)."""
    commands: dict[str, list[str]] = field(default_factory=dict)
    """label → the command that runs that node's process, before ``--config FILE`` (default ``python -m node.cli``);
    tests use it to run adversaries."""
    member_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    """label → that node's settings over ``node_settings`` (tests: each node's listen address and reachability in
    its own network namespace)."""
    launch_prefix: dict[str, list[str]] = field(default_factory=dict)
    """label → what runs that node's command (tests: ``ip netns exec NS`` starts it in a network namespace)."""
    chain_host: str = "127.0.0.1"
    """The address the Hardhat node listens on and every node reaches it at."""
    out: Callable[[str], None] = print


@dataclass(frozen=True)
class Member:
    label: str
    role: str
    account_index: int
    node_class: str = "M"


def members(plan: DevnetPlan) -> list[Member]:
    """Dev account 0 deploys and is the customer; then leaders, trainers, validators (Hardhat has 20)."""
    out: list[Member] = []
    i = 1
    for n in range(plan.leaders):
        out.append(Member(f"leader-{n + 1}", "leader", i))
        i += 1
    for n in range(plan.trainers):
        out.append(Member(f"trainer-{n + 1}", "trainer", i, plan.classes[n % len(plan.classes)]))
        i += 1
    for n in range(plan.validators):
        out.append(Member(f"validator-{n + 1}", "validator", i))
        i += 1
    if i > DEV_ACCOUNTS:
        raise DtnodeError(f"devnet: {i} accounts needed but Hardhat has {DEV_ACCOUNTS} dev accounts; "
                          "use fewer nodes")
    return out


def node_config(plan: DevnetPlan, m: Member, *, job_id: int, data_dir: Path, bootstrap: str, rpc: str = "",
                contract: str = "") -> NodeConfig:
    settings = {**plan.node_settings, **plan.member_settings.get(m.label, {})}
    return NodeConfig(
        roles=(m.role,), jobs=(job_id,) if m.role == "leader" else (), node_class=m.node_class,
        measure_class=False,  # the plan sets classes; nodes sharing one machine would measure each other's load
        bootstrap=(bootstrap,), data_dir=str(data_dir), dev_account=m.account_index,
        chain_rpc_url=rpc or "http://127.0.0.1:8545", contract_address=contract, log_format=plan.log_format,
        # Hardhat serves WebSocket JSON-RPC on its HTTP port: the nodes hear each block as it is mined.
        chain_ws_url="ws://" + rpc.removeprefix("http://") if rpc.startswith("http://") else "",
        # Validators stake twice the minimum: one slash (a tenth of it, DEVNET_SETTINGS) keeps them in the pool.
        trainer_stake_wei=MIN_STAKE, validator_stake_wei=2 * MIN_STAKE, **settings,
    ).validate()
