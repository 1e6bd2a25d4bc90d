"""A whole job through the adapter, on both backends: register, create, elect, submit, validate, commit, fail over,
finish, pay out, refund, withdraw — with the reverts on the way decoded into named exceptions."""

from __future__ import annotations

import pytest

from protocols.chain.backends import increase_time
from protocols.chain.client import JobManagerClient
from protocols.chain.errors import ContractRevert, revert_class
from protocols.chain.models import JobParams, JobStatus, NodeClass, RoundCommit, UpdateStatus

from .helpers import LEASE, MIN_STAKE, PARAMS, SLASH, Chain, cid_of


def _vote_round(
    manager: JobManagerClient,
    job_id: int,
    rnd: int,
    trainers: list[JobManagerClient],
    validators: dict[str, JobManagerClient],
    losses: list[int | None],
) -> None:
    """Every trainer submits; its drawn validators vote until the majority decides (None: they reject it)."""
    for idx, trainer in enumerate(trainers):
        update_cid = cid_of(f"update {rnd} {idx}".encode())
        submitted = trainer.submit_update(job_id, rnd, update_cid).event("UpdateSubmitted")
        assert submitted.args["updateCid"] == update_cid
        drawn = list(submitted.args["validators"])
        assert len(set(drawn)) == PARAMS.quorum and trainer.sender not in drawn
        info = manager.get_update(job_id, rnd, trainer.sender)
        assert (info.cid, info.status, info.validators) == (update_cid, UpdateStatus.PENDING, tuple(drawn))

        good, loss = losses[idx] is not None, losses[idx] or 0
        first = validators[drawn[0]]
        first.validate_update(job_id, rnd, trainer.sender, good, loss)
        assert manager.has_voted(job_id, rnd, trainer.sender, first.sender)
        with pytest.raises(revert_class("AlreadyVoted")) as voted_twice:
            first.validate_update(job_id, rnd, trainer.sender, good, loss)
        assert voted_twice.value.args_decoded["validator"] == first.sender

        outsider = next(v for addr, v in validators.items() if addr not in drawn)
        with pytest.raises(revert_class("NotDrawnValidator")) as not_drawn:
            outsider.validate_update(job_id, rnd, trainer.sender, True, 1)
        assert not_drawn.value.args_decoded == {
            "jobId": job_id,
            "round": rnd,
            "trainer": trainer.sender,
            "account": outsider.sender,
        }

        deciding = validators[drawn[1]].validate_update(job_id, rnd, trainer.sender, good, loss)
        assert deciding.event("UpdateAccepted" if good else "UpdateRejected").args["trainer"] == trainer.sender
        if not good:
            assert deciding.event("TrainerSlashed").args["amount"] == SLASH
        with pytest.raises(revert_class("UpdateNotPending")):
            validators[drawn[2]].validate_update(job_id, rnd, trainer.sender, good, loss)


def test_whole_job_with_leader_failover(chain: Chain, manager: JobManagerClient) -> None:
    acc = chain.accounts
    customer = manager.with_account(acc[1])
    leader_a, leader_b = manager.with_account(acc[2]), manager.with_account(acc[3])
    trainers = [manager.with_account(acc[i]) for i in (4, 5, 6)]
    validators: dict[str, JobManagerClient] = {acc[i].address: manager.with_account(acc[i]) for i in (7, 8, 9, 10)}

    # --- register
    # trainer 2 gets rejected once: it stakes double so it stays above the minimum after its slash
    stakes = [MIN_STAKE, MIN_STAKE, 2 * MIN_STAKE]
    for cls, trainer, stake in zip(NodeClass, trainers, stakes, strict=True):
        assert trainer.register_trainer(cls, stake).event("TrainerRegistered").args["nodeClass"] == cls
    for node in (leader_a, leader_b):
        node.register_trainer(NodeClass.L, MIN_STAKE)
    for v in validators.values():
        v.register_validator(MIN_STAKE)
    assert manager.validator_count() == 4 and set(manager.get_validators()) == set(validators.keys())
    assert manager.trainers(trainers[1].sender).node_class == NodeClass.M

    # --- create (with 1 wei too little first)
    required = manager.required_deposit(PARAMS)
    assert required == PARAMS.required_deposit()
    with pytest.raises(revert_class("InsufficientDeposit")) as low:
        customer.create_job(PARAMS, deposit_wei=required - 1)
    assert low.value.args_decoded == {"required": required, "provided": required - 1}
    extra = 12_345
    job_id, created = customer.create_job(PARAMS, deposit_wei=required + extra)
    assert created.event("JobCreated").args["specCid"] == PARAMS.spec_cid
    job = manager.get_job(job_id)
    assert (job.status, job.params, job.customer, job.leader, job.deposit) == (
        JobStatus.ACTIVE,
        PARAMS,
        customer.sender,
        None,
        required + extra,
    )

    # --- elect: the first candidate leads, the second is its successor
    elected = leader_a.stand_for_leader(job_id).event("LeaderElected")
    assert (elected.args["leader"], elected.args["term"]) == (leader_a.sender, 1)
    leader_b.stand_for_leader(job_id)
    assert manager.get_candidates(job_id) == (leader_a.sender, leader_b.sender)
    assert manager.successor(job_id) == leader_b.sender
    with pytest.raises(revert_class("NotLeader")):
        leader_b.commit_round(job_id, 0, cid_of(b"ckpt 0"))

    # --- round 0: two accepted (loss reductions 300 and 100), one rejected and slashed
    _vote_round(manager, job_id, 0, trainers, validators, [300, 100, None])
    with pytest.raises(revert_class("WrongRound")) as wrong:
        leader_a.commit_round(job_id, 1, cid_of(b"ckpt 1"))
    assert wrong.value.args_decoded == {"jobId": job_id, "expected": 0, "given": 1}
    ckpt0 = cid_of(b"ckpt 0")
    committed = leader_a.commit_round(job_id, 0, ckpt0).event("RoundCommitted")
    assert (committed.args["round"], committed.args["checkpointCid"]) == (0, ckpt0)
    assert manager.get_round_checkpoint(job_id, 0) == ckpt0
    assert manager.get_job(job_id).last_checkpoint_cid == ckpt0
    pool = PARAMS.bonus_rate * 2  # bonus rule: pool split by measured loss reduction
    assert manager.get_update(job_id, 0, trainers[0].sender).amount == PARAMS.base_rate + pool * 300 // 400
    assert manager.get_update(job_id, 0, trainers[1].sender).amount == PARAMS.base_rate + pool * 100 // 400
    assert manager.get_update(job_id, 0, trainers[2].sender).status == UpdateStatus.REJECTED
    assert manager.trainers(trainers[2].sender).stake == 2 * MIN_STAKE - SLASH

    # --- leader A stops; after its lease the drawn successor B takes over
    with pytest.raises(revert_class("LeaseNotExpired")):
        leader_b.claim_leadership(job_id)
    increase_time(chain.w3, LEASE + 5)
    with pytest.raises(revert_class("LeaseExpired")):
        leader_a.commit_round(job_id, 1, cid_of(b"late"))
    with pytest.raises(revert_class("NotCandidate")):
        trainers[0].claim_leadership(job_id)
    assert manager.successor(job_id) == leader_b.sender
    claimed = leader_b.claim_leadership(job_id).event("LeaderElected")
    assert (claimed.args["leader"], claimed.args["term"]) == (leader_b.sender, 2)
    with pytest.raises(revert_class("NotLeader")):
        leader_a.commit_round(job_id, 1, cid_of(b"ckpt 1"))

    # --- round 1 under B: all accepted; the last commit finishes the job and refunds the rest
    _vote_round(manager, job_id, 1, trainers, validators, [50, 50, 100])
    final = cid_of(b"final")
    finished = leader_b.commit_round(job_id, 1, final).event("JobFinished")
    job = manager.get_job(job_id)
    assert job.status == JobStatus.FINISHED and job.committed_rounds == 2 and job.last_checkpoint_cid == final
    assert finished.args["finalCheckpointCid"] == final
    assert manager.round_commits(job_id) == [RoundCommit(0, leader_a.sender.lower(), ckpt0),
                                             RoundCommit(1, leader_b.sender.lower(), final)]
    refund = finished.args["refund"]
    assert refund == job.deposit - job.spent == job.refunded > extra
    with pytest.raises(revert_class("JobNotActive")) as closed:
        trainers[0].submit_update(job_id, 2, cid_of(b"too late"))
    assert closed.value.args_decoded["status"] == JobStatus.FINISHED

    # --- payouts: anyone triggers them, each update is paid once
    for trainer in trainers:
        owed = sum(
            u.amount
            for u in (manager.get_update(job_id, r, trainer.sender) for r in (0, 1))
            if u.status == UpdateStatus.ACCEPTED
        )
        paid = customer.payout(job_id, trainer.sender).event("PaidOut")
        assert paid.args["amount"] == owed
        with pytest.raises(revert_class("NothingToPay")):
            customer.payout(job_id, trainer.sender)
        assert manager.get_update(job_id, 1, trainer.sender).paid

    totals = manager.totals()
    assert totals.conserved and totals.escrow_held == 0

    # --- fees: two agreeing votes decided each of the 6 updates; each leader committed one round
    assert sum(manager.balance_of(v) for v in validators) == 6 * 2 * PARAMS.validator_fee
    assert manager.balance_of(leader_a.sender) == manager.balance_of(leader_b.sender) == PARAMS.leader_fee

    # --- withdrawals: the ether arrives, minus the withdrawer's own gas (validators the draw never picked to
    # decide hold nothing)
    voters = [v for v in validators.values() if manager.balance_of(v.sender) > 0]
    for who in (trainers[0], leader_a, leader_b, customer, *voters):
        owed = manager.balance_of(who.sender)
        if who is customer:
            assert owed == refund
        before = chain.w3.eth.get_balance(who.account.address)
        result = who.withdraw()
        assert result.event("Withdrawn").args["amount"] == owed > 0
        assert chain.w3.eth.get_balance(who.account.address) == before + owed - result.fee_wei
        with pytest.raises(revert_class("NothingToWithdraw")):
            who.withdraw()
    assert manager.totals().conserved


def test_cancel_refunds_a_job_nobody_serves(chain: Chain, manager: JobManagerClient) -> None:
    customer, other = manager.with_account(chain.accounts[1]), manager.with_account(chain.accounts[2])
    job_id, _ = customer.create_job(PARAMS)
    with pytest.raises(revert_class("NotCustomer")):
        other.cancel_job(job_id)
    cancelled = customer.cancel_job(job_id).event("JobCancelled")
    assert cancelled.args["refund"] == PARAMS.required_deposit() == manager.balance_of(customer.sender)
    assert manager.get_job(job_id).status == JobStatus.CANCELLED
    with pytest.raises(revert_class("JobNotActive")):
        customer.cancel_job(job_id)

    served_id, _ = customer.create_job(PARAMS)
    other.register_validator(MIN_STAKE)
    other.stand_for_leader(served_id)
    with pytest.raises(revert_class("JobStillServed")) as served:
        customer.cancel_job(served_id)
    assert served.value.args_decoded["leader"] == other.sender
    assert manager.totals().conserved


def test_deregistration_returns_stake_after_the_delay(chain: Chain, manager: JobManagerClient) -> None:
    node = manager.with_account(chain.accounts[5])
    with pytest.raises(revert_class("NotRegistered")):
        node.request_deregistration()
    node.register_validator(2 * MIN_STAKE)
    available_at = node.request_deregistration().event("DeregistrationRequested").args["availableAt"]
    assert manager.exit_available_at(node.sender) == available_at
    assert manager.validator_count() == 0  # no longer drawn
    with pytest.raises(revert_class("DeregistrationNotReady")) as early:
        node.complete_deregistration()
    assert early.value.args_decoded == {"account": node.sender, "availableAt": available_at}
    increase_time(chain.w3, manager.deregistration_delay() + 1)
    assert node.complete_deregistration().event("Deregistered").args["stakeReturned"] == 2 * MIN_STAKE
    assert manager.balance_of(node.sender) == 2 * MIN_STAKE
    node.withdraw()


def test_reverts_from_views_and_sends_are_named(chain: Chain, manager: JobManagerClient) -> None:
    node = manager.with_account(chain.accounts[3])
    with pytest.raises(revert_class("UnknownJob")) as from_view:
        manager.get_job(99)
    assert from_view.value.args_decoded == {"jobId": 99}
    assert isinstance(from_view.value, ContractRevert) and from_view.value.error_name == "UnknownJob"
    with pytest.raises(ContractRevert) as from_send:
        node.stand_for_leader(99)
    assert type(from_send.value) is revert_class("UnknownJob")
    with pytest.raises(revert_class("InsufficientStake")) as stake:
        node.register_validator(MIN_STAKE - 1)
    assert stake.value.args_decoded == {"required": MIN_STAKE, "provided": MIN_STAKE - 1}
    bad = JobParams(**{**PARAMS.__dict__, "quorum": 0})
    with pytest.raises(revert_class("InvalidJobParam")) as param:
        node.create_job(bad)
    assert param.value.args_decoded == {"param": "quorum"}
    job_id, _ = node.create_job(PARAMS)
    with pytest.raises(revert_class("RoundNotCommitted")):
        manager.get_round_checkpoint(job_id, 0)
