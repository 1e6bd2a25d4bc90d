"""Whole jobs on an in-process network: real libp2p hosts on 127.0.0.1, a real py-evm chain, real CIDs.

The fast variants of the end-to-end scenarios (the Hardhat + processes ones are in test_devnet_processes.py):
a job from creation to final weights with the money adding up, a trainer that fabricates its delta, a validator
that never votes, and the leader dying mid-round.
"""

from __future__ import annotations

import math

import pytest
import trio

from node.devnet import Devnet, DevnetPlan, DevnetResult, demo_spec, run_devnet
from node.roles.trainer import TrainerRole
from node.roles.validator import ValidatorRole
from node.training.local import LocalResult
from protocols.chain.models import UpdateStatus

pytestmark = pytest.mark.slow


def small_plan(**kw: object) -> DevnetPlan:
    spec = demo_spec(rounds=2, trainers=3, model="fmnist-mlp-v1", local_steps=20, lease_seconds=40)
    base: dict[str, object] = dict(
        trainers=3, validators=3, embedded=True, spec=spec, shards=8, eval_samples=500, final_eval_samples=2000,
        timeout_s=240.0, out=lambda _line: None,
    )
    base.update(kw)
    return DevnetPlan(**base)  # type: ignore[arg-type]


def earned(result: DevnetResult, label: str) -> int:
    addr = next(a for a, lab in result.labels.items() if lab == label)
    return result.earnings.get(addr, 0)


async def test_job_end_to_end_money_adds_up() -> None:
    result = await run_devnet(small_plan())
    assert len(result.rounds) == 2
    assert result.final_accuracy > 0.6, result.final_accuracy
    assert result.totals_conserved
    for n in (1, 2, 3):
        assert earned(result, f"trainer-{n}") > 0
    assert earned(result, "leader-1") + earned(result, "leader-2") > 0
    assert sum(earned(result, f"validator-{n}") for n in (1, 2, 3)) > 0
    # Every wei of the deposit is either paid to a node or refunded to the customer.
    assert sum(result.earnings.values()) + result.refund == result.deposit


class FabricatingTrainer(TrainerRole):
    """An adversary: trains honestly, then publishes a scaled delta (a classic model-poisoning boost)."""

    async def _train_and_publish(self, spec, ticket):  # type: ignore[no-untyped-def]
        import node.roles.trainer as trainer_module

        real = trainer_module.train_local

        def boosted(*args, **kwargs):  # type: ignore[no-untyped-def]
            result: LocalResult = real(*args, **kwargs)
            scaled = {k: v * 10.0 for k, v in result.delta.items()}
            return LocalResult(scaled, result.final_state, result.loss_before, result.loss_after,
                               result.segment_hashes, result.segment_states)

        trainer_module.train_local = boosted
        try:
            return await super()._train_and_publish(spec, ticket)
        finally:
            trainer_module.train_local = real


async def test_fabricated_delta_is_rejected_unpaid_and_slashed() -> None:
    net_holder: list[Devnet] = []

    async def keep(net: Devnet, job_id: int) -> None:
        net_holder.append(net)

    plan = small_plan(trainer_cls={"trainer-3": FabricatingTrainer})
    result = await run_devnet(plan, on_ready=keep)
    net = net_holder[0]
    cheat = net.nodes["trainer-3"]
    assert cheat.ctx is not None
    client = cheat.ctx.client
    cheat_addr = cheat.account.address
    statuses = [client.get_update(result.job_id, r, cheat_addr).status for r in range(2)]
    assert UpdateStatus.REJECTED in statuses and UpdateStatus.ACCEPTED not in statuses
    assert earned(result, "trainer-3") == 0
    assert client.trainers(cheat_addr).stake < client.min_trainer_stake()  # slashed
    assert earned(result, "trainer-1") > 0 and earned(result, "trainer-2") > 0
    assert result.totals_conserved


class SilentValidator(ValidatorRole):
    """Registered and drawn like any validator, but never votes."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()


async def test_validator_that_never_votes_does_not_stall_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    import node.runtime as runtime

    made: list[int] = []

    def factory(ctx, **kw):  # type: ignore[no-untyped-def]
        made.append(1)
        return SilentValidator(ctx, **kw) if len(made) == 1 else ValidatorRole(ctx, **kw)

    monkeypatch.setattr(runtime, "ValidatorRole", factory)
    result = await run_devnet(small_plan(validators=4))
    assert len(result.rounds) == 2
    assert result.totals_conserved
    assert sum(earned(result, f"trainer-{n}") for n in (1, 2, 3)) > 0


async def test_leader_dies_mid_round_and_the_other_candidate_finishes() -> None:
    spec = demo_spec(rounds=3, trainers=3, model="fmnist-mlp-v1", local_steps=20, lease_seconds=20)

    async def kill_leader_in_round_two(net: Devnet, job_id: int) -> None:
        first = net.nodes["leader-1"]
        assert first.ctx is not None
        client = first.ctx.client
        while client.get_job(job_id).committed_rounds < 1:  # noqa: ASYNC110 (polling the chain, not an event)
            await trio.sleep(0.2)
        job = client.get_job(job_id)
        victim = next(lab for lab, n in net.nodes.items() if n.account.address == job.leader)
        net.nodes[victim].stop()

    result = await run_devnet(small_plan(spec=spec, timeout_s=300.0), on_ready=kill_leader_in_round_two)
    assert len(result.rounds) == 3
    assert len({line.leader for line in result.rounds}) == 2, [line.leader for line in result.rounds]
    assert result.totals_conserved
    assert sum(result.earnings.values()) + result.refund == result.deposit
    assert not math.isnan(result.final_accuracy)


async def test_trainer_killed_mid_task_does_not_stall_the_round() -> None:
    plan = small_plan(node_settings={
        "chain_poll_interval_s": 0.3, "task_timeout_s": 15.0, "round_timeout_s": 120.0, "fetch_timeout_s": 30.0,
        "request_timeout_s": 15.0, "chain_timeout_s": 30.0,
    })

    async def kill_trainer_holding_a_ticket(net: Devnet, job_id: int) -> None:
        victim = net.nodes["trainer-3"]
        while True:  # the moment the serving leader has handed trainer-3 a ticket, trainer-3 dies
            for leader in (net.nodes["leader-1"], net.nodes["leader-2"]):
                role = leader.leaders.get(job_id)
                if role and role.current and victim.account.address.lower() in role.current.tickets:
                    victim.stop()
                    return
            await trio.sleep(0.05)

    result = await run_devnet(plan, on_ready=kill_trainer_holding_a_ticket)
    assert len(result.rounds) == 2
    assert earned(result, "trainer-1") > 0 and earned(result, "trainer-2") > 0
    assert earned(result, "trainer-3") == 0
    assert result.totals_conserved
