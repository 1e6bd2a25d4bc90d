"""``dtnode devnet --embedded``: whole networks inside one process on an in-process py-evm chain.

The in-process variants of the end-to-end scenarios of test_devnet_processes.py, and the bulk of the suite's
end-to-end coverage. Kept small on purpose: every node shares one Python interpreter (and the pure-Python EVM behind
one lock), so networks have at most eight nodes and the deadlines are generous. Each scenario asserts on the
on-chain ledger read at the end: statuses, paid flags, amounts, payouts, stakes, commits.

- a job from creation to final weights and refund (smoke);
- the serving leader stopped abruptly mid-round (its node's scope cancelled: the host closes, no hand-over): the
  other candidate takes over after the lease and finishes; then ``dtnode job status`` from a fresh node;
- adversaries: a trainer publishing a fabricated delta (rejected, unpaid, its bond burnt), a validator that never
  votes (its panels' vote windows close, ``escalateUpdate``, the escalation panel decides, it is slashed), and a
  trainer that dies holding a ticket: none of them stalls a round; a leader that never pays: trainers collect their
  pay themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from node.commands import job_status
from node.config import NodeConfig
from node.devnet import Devnet, DevnetPlan, demo_spec, run_devnet
from protocols.chain.models import UpdateStatus
from protocols.errors import ConfigError
from tests.node.adversaries import FabricatingTrainer, NonPayingLeader, SilentValidator, TicketHoldingTrainer
from tests.node.ledger_checks import address_of, check_job_status, check_ledger, earned, node_address

pytestmark = pytest.mark.slow

# One interpreter runs every node: poll the chain at the embedded minimum, and give every wait room.
NODE_SETTINGS: dict[str, Any] = {
    "chain_poll_interval_s": 1.0, "task_timeout_s": 15.0, "round_timeout_s": 60.0, "fetch_timeout_s": 30.0,
    "request_timeout_s": 15.0, "chain_timeout_s": 30.0,
}
HOOK_TIMEOUT_S = 240.0


def small_plan(tmp_path: Path, *, rounds: int, trainers: int, validators: int, leaders: int, lease_seconds: int,
               quorum: int, timeout_s: float = 300.0, **extra: Any) -> DevnetPlan:
    spec = demo_spec(rounds=rounds, trainers=trainers, model="fmnist-mlp-v1", local_steps=20,
                     lease_seconds=lease_seconds, quorum=quorum)
    return DevnetPlan(trainers=trainers, validators=validators, leaders=leaders, embedded=True, spec=spec, shards=8,
                      eval_samples=500, final_eval_samples=2000, workdir=tmp_path, timeout_s=timeout_s,
                      node_settings=dict(NODE_SETTINGS), out=lambda _line: None, **extra)


async def test_embedded_devnet_runs_a_job_end_to_end(tmp_path: Path) -> None:
    """One leader, two trainers and one validator (quorum 1): a 2-round job from creation to weights and refund."""
    plan = small_plan(tmp_path, rounds=2, trainers=2, validators=1, leaders=1, lease_seconds=120, quorum=1)
    result = await run_devnet(plan)
    assert len(result.rounds) == 2
    assert result.final_accuracy > 0.6
    check_ledger(result, 2)
    assert all(result.earnings.get(a, 0) > 0 for a, label in result.labels.items() if label.startswith("trainer"))


async def test_leader_stopped_mid_round_is_replaced_after_its_lease(tmp_path: Path) -> None:
    """Two candidates, two trainers, one validator; quorum 1 (leader candidates register as trainers, outside the
    validator pool, so the stopped leader sits on no panel; panels and escalation are the adversary test's subject,
    and three replaying validators in this one interpreter made round 0 outlast the lease under load). The serving
    leader stops while it collects round 2 with an update of that round on-chain; the other candidate draws the
    successor and claims.

    Once the job is finished, ``dtnode job status`` runs from a fresh node that knows only the bootstrap address:
    it names each round's leader and measures each round's accuracy from the checkpoints it fetches by CID."""
    # A 60 s lease: round 0 (first fetches, a draw DRAW_DELAY blocks after each submission at one block a second,
    # a replay per update on two shared cores) took longer than a 30 s lease under load, so the first leader
    # lapsed before the round this test stops it in.
    plan = small_plan(tmp_path, rounds=3, trainers=2, validators=1, leaders=2, lease_seconds=60, quorum=1,
                      timeout_s=480.0)
    seen: dict[str, str] = {}
    status: dict[str, dict[str, Any]] = {}
    progress: list[str] = []

    async def stop_leader_mid_round(net: Devnet, job_id: int) -> None:
        with trio.fail_after(HOOK_TIMEOUT_S):
            while True:
                for label, node in list(net.nodes.items()):
                    leader = node.leaders.get(job_id)
                    round_state = leader.current if leader is not None else None
                    # Checked and stopped in one trio step: the leader cannot commit in between.
                    if round_state is not None and round_state.round == 1 and round_state.submitted:
                        seen["victim"] = node_address(net, label)
                        net.kill(label)
                        return
                await trio.sleep(0.05)

    async def job_status_from_a_fresh_node(net: Devnet, job_id: int) -> None:
        assert net.client is not None
        cfg = NodeConfig(data_dir=str(tmp_path / "status"), bootstrap=(net.bootstrap,), **NODE_SETTINGS).validate()
        status["chain only"] = await job_status(cfg, net.client, job_id, evaluate=False, progress=progress.append)
        assert not progress
        status["measured"] = await job_status(cfg, net.client, job_id, progress=progress.append)
        offline = NodeConfig(data_dir=str(tmp_path / "offline"), **NODE_SETTINGS).validate()
        with pytest.raises(ConfigError, match="setting 'bootstrap'"):
            await job_status(offline, net.client, job_id, progress=progress.append)

    result = await run_devnet(plan, on_ready=stop_leader_mid_round, on_finished=job_status_from_a_fresh_node)
    assert len(result.rounds) == 3
    committers = [leader for _round, leader, _mask in result.ledger.commits]
    assert seen["victim"] == committers[0], "the first leader served round 1"
    assert seen["victim"] not in committers[1:], committers
    assert len(set(committers)) == 2
    check_ledger(result, 3)
    assert result.final_accuracy > 0.6

    check_job_status(status["measured"], result, samples=plan.eval_samples)
    assert sum("accuracy" in line for line in progress) == 3, progress
    quick = status["chain only"]
    assert [h["accuracy"] for h in quick["history"]] == [None] * 3 and quick["accuracy_measured_on"] is None
    assert [h["checkpoint"] for h in quick["history"]] == [h["checkpoint"] for h in status["measured"]["history"]]


async def test_adversaries_are_caught_and_do_not_stall_rounds(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """One leader, which never calls ``payout``; trainer-1 honest, trainer-2 fabricates, trainer-3 dies holding its
    ticket; validator-2 never votes. Quorum 3 draws every validator, so every first panel holds the silent one: its
    vote window (half a lease) closes, the update escalates to the whole pool, whose honest majority decides, and the
    silent validator is slashed. The honest trainer collects its own pay once the job closes.

    A 240 s lease: such a round waits out the signing window (a sixteenth of a lease) and the on-chain vote window
    (half a lease), and the leader gives a round up a fifth of a lease before its end, which leaves 24 % of the lease
    (57 s) for training, draws, replays and the escalation; with 120 s (28 s) rounds outlasted the lease under load
    and the job stalled between failed rounds, with 180 s (43 s) the first round closed 5 s before giving up."""
    plan = small_plan(
        tmp_path, rounds=2, trainers=3, validators=3, leaders=1, lease_seconds=240, quorum=3, timeout_s=720.0,
        trainer_cls={"trainer-2": FabricatingTrainer, "trainer-3": TicketHoldingTrainer},
        validator_cls={"validator-2": SilentValidator}, leader_cls={"leader-1": NonPayingLeader},
    )
    held: dict[str, bool] = {}

    async def kill_trainer_holding_a_ticket(net: Devnet, job_id: int) -> None:
        holder = net.nodes["trainer-3"].trainer
        assert isinstance(holder, TicketHoldingTrainer)
        with trio.fail_after(HOOK_TIMEOUT_S):
            await holder.holding.wait()
        leader = net.nodes["leader-1"].leaders[job_id].current
        held["ticket"] = leader is not None and node_address(net, "trainer-3") in leader.tickets
        net.kill("trainer-3")

    result = await run_devnet(plan, on_ready=kill_trainer_holding_a_ticket)
    assert held["ticket"], "trainer-3 was killed without holding a ticket of the serving leader"
    assert len(result.rounds) == 2
    cheat = address_of(result.labels, "trainer-2")
    statuses = [u.status for u in result.ledger.updates if u.trainer == cheat]
    assert statuses == [UpdateStatus.REJECTED], statuses  # slashed below the minimum stake: no second update
    assert [t for t, _amount in result.ledger.trainer_slashes] == [cheat]
    assert earned(result, "trainer-2") == 0
    assert result.ledger.trainer_stakes[cheat] < result.min_trainer_stake, "the fabricating trainer was not slashed"
    assert earned(result, "trainer-3") == 0
    assert not [u for u in result.ledger.updates if u.trainer == address_of(result.labels, "trainer-3")]
    assert earned(result, "trainer-1") > 0
    assert "paying out as the customer" not in caplog.text, "the trainer did not collect its own pay"
    assert earned(result, "validator-2") == 0
    silent = address_of(result.labels, "validator-2")
    assert result.ledger.validator_slashes and {v for v, _ in result.ledger.validator_slashes} == {silent}
    assert earned(result, "validator-1") > 0 or earned(result, "validator-3") > 0
    check_ledger(result, 2)
