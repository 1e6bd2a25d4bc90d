"""A whole job through the adapter, on both backends: register, create, elect with bonds, submit under EIP-712
tickets, draw panels, vote, commit the accepted set, fail over by a drawn successor, finish, pay out, refund,
withdraw — with the reverts on the way decoded into named exceptions."""

from __future__ import annotations

import pytest

from protocols.chain.backends import increase_time, mine_blocks
from protocols.chain.client import JobManagerClient
from protocols.chain.errors import ContractRevert, revert_class
from protocols.chain.models import (
    MAX_LOSS_REDUCTION,
    Candidate,
    JobParams,
    JobStatus,
    NodeClass,
    Phase,
    RoundCommit,
    UpdateStatus,
)
from protocols.chain.ticket import sign_ticket

from .helpers import (
    DRAW_DELAY,
    LEADER_BOND,
    LEASE,
    MIN_STAKE,
    PARAMS,
    SETTINGS,
    Chain,
    cid_of,
    draw,
    one_update,
    submit,
    ticket_for,
)


def _vote_round(
    manager: JobManagerClient,
    leader: JobManagerClient,
    job_id: int,
    rnd: int,
    trainers: list[JobManagerClient],
    validators: dict[str, JobManagerClient],
    losses: list[int | None],
) -> None:
    """Every trainer submits into its slot; its drawn panel votes unanimously (None: they reject it)."""
    for slot, trainer in enumerate(trainers):
        claimed = losses[slot] or 7
        submitted = submit(manager, leader.account, trainer, job_id, rnd, slot, claimed).event("UpdateSubmitted")
        assert (submitted.args["slot"], submitted.args["lossReduction"]) == (slot, claimed)
        info = manager.get_update(job_id, rnd, slot)
        assert (info.trainer, info.status, info.phase) == (trainer.sender, UpdateStatus.PENDING, Phase.AWAITING_PANEL)
        assert info.draw_due() and manager.trainers(trainer.sender).locked == manager.update_bond(job_id)
        with pytest.raises(revert_class("JobManagerDrawNotReady")) as early:
            manager.draw_validators(job_id, rnd, slot)
        assert early.value.args_decoded["readyAt"] == info.anchor_block + DRAW_DELAY + 1

        panel = draw(manager, job_id, rnd, slot)
        assert len(set(panel)) == PARAMS.quorum and trainer.sender not in panel
        assert manager.get_update(job_id, rnd, slot).voting_panel == panel
        seed = manager.challenge_seed(job_id, rnd, slot)
        assert len(seed) == 32 and validators[panel[0]].challenge_seed(job_id, rnd, slot) == seed

        good = losses[slot] is not None
        first = validators[panel[0]]
        first.validate_update(job_id, rnd, slot, good)
        assert manager.get_update(job_id, rnd, slot).has_voted(first.sender)
        with pytest.raises(revert_class("JobManagerAlreadyVoted")) as voted_twice:
            first.validate_update(job_id, rnd, slot, good)
        assert voted_twice.value.args_decoded["validator"] == first.sender
        outsider = next(v for addr, v in validators.items() if addr not in panel)
        with pytest.raises(revert_class("JobManagerNotDrawnValidator")) as not_drawn:
            outsider.validate_update(job_id, rnd, slot, True)
        assert not_drawn.value.args_decoded == {"jobId": job_id, "round": rnd, "slot": slot,
                                                "account": outsider.sender}
        validators[panel[1]].validate_update(job_id, rnd, slot, good)
        deciding = validators[panel[2]].validate_update(job_id, rnd, slot, good)
        assert deciding.event("UpdateAccepted" if good else "UpdateRejected").args["trainer"] == trainer.sender
        if not good:
            assert deciding.event("TrainerSlashed").args["amount"] == manager.update_bond(job_id)
        with pytest.raises(revert_class("JobManagerUpdateNotVoting")):
            first.validate_update(job_id, rnd, slot, good)


def test_whole_job_with_leader_failover(chain: Chain, manager: JobManagerClient) -> None:
    acc = chain.accounts
    customer = manager.with_account(acc[1])
    leader_a, leader_b = manager.with_account(acc[2]), manager.with_account(acc[3])
    trainers = [manager.with_account(acc[i]) for i in (4, 5, 6)]
    validators: dict[str, JobManagerClient] = {acc[i].address: manager.with_account(acc[i]) for i in (7, 8, 9, 10)}

    # --- register
    for cls, trainer in zip(NodeClass, trainers, strict=True):
        assert trainer.register_trainer(cls, MIN_STAKE).event("TrainerRegistered").args["nodeClass"] == cls
    trainers[2].add_trainer_stake(MIN_STAKE)  # rejected once: it stays above the minimum after its slash
    assert manager.trainers(trainers[2].sender).stake == 2 * MIN_STAKE
    for node in (leader_a, leader_b):
        node.register_trainer(NodeClass.L, MIN_STAKE)
    for v in validators.values():
        v.register_validator(MIN_STAKE)
    assert manager.validator_count() == 4 and set(manager.get_validators()) == set(validators.keys())
    assert manager.pool_weight() == 4 * MIN_STAKE and manager.pool_weight_of(acc[7].address) == MIN_STAKE
    assert manager.trainers(trainers[1].sender).node_class == NodeClass.M

    # --- create (with 1 wei too little first)
    required = manager.required_deposit(PARAMS)
    assert required == PARAMS.required_deposit()
    with pytest.raises(revert_class("JobManagerInsufficientDeposit")) as low:
        customer.create_job(PARAMS, deposit_wei=required - 1)
    assert low.value.args_decoded == {"required": required, "provided": required - 1}
    extra = 12_345
    job_id, created = customer.create_job(PARAMS, deposit_wei=required + extra)
    assert created.event("JobCreated").args["specCid"] == PARAMS.spec_cid
    job = manager.get_job(job_id)
    assert (job.status, job.params, job.customer, job.leader, job.deposit) == (
        JobStatus.ACTIVE, PARAMS, customer.sender, None, required + extra)
    assert manager.update_bond(job_id) == max(10**14, 3 * PARAMS.max_update_pay())

    # --- elect: the first candidate leads; bonds are locked
    with pytest.raises(revert_class("JobManagerInsufficientBond")):
        leader_a.stand_for_leader(job_id, LEADER_BOND - 1)
    elected = leader_a.stand_for_leader(job_id, LEADER_BOND).event("LeaderElected")
    assert (elected.args["leader"], elected.args["term"]) == (leader_a.sender, 1)
    leader_b.stand_for_leader(job_id, 2 * LEADER_BOND)
    assert manager.get_candidates(job_id) == (Candidate(leader_a.sender, LEADER_BOND),
                                              Candidate(leader_b.sender, 2 * LEADER_BOND))
    assert manager.successor(job_id) is None
    with pytest.raises(revert_class("JobManagerNotLeader")):
        leader_b.commit_round(job_id, 0, cid_of(b"ckpt 0"), 0b11)

    # --- round 0: two accepted (loss reductions 300 and 100), one rejected and slashed
    _vote_round(manager, leader_a, job_id, 0, trainers, validators, [300, 100, None])
    with pytest.raises(revert_class("JobManagerWrongRound")) as wrong:
        leader_a.commit_round(job_id, 1, cid_of(b"ckpt 1"), 0b11)
    assert wrong.value.args_decoded == {"jobId": job_id, "expected": 0, "given": 1}
    assert manager.get_round(job_id, 0).accepted_slots == (0, 1)
    with pytest.raises(revert_class("JobManagerWrongAcceptedSet")) as wrong_set:
        leader_a.commit_round(job_id, 0, cid_of(b"ckpt 0"), 0b111)
    assert (wrong_set.value.args_decoded["expected"], wrong_set.value.args_decoded["given"]) == (0b11, 0b111)
    ckpt0 = cid_of(b"ckpt 0")
    committed = leader_a.commit_round(job_id, 0, ckpt0, 0b11).event("RoundCommitted")
    assert (committed.args["round"], committed.args["checkpointCid"], committed.args["acceptedMask"]) == (
        0, ckpt0, 0b11)
    assert manager.get_round(job_id, 0).checkpoint_cid == ckpt0
    assert manager.get_job(job_id).last_checkpoint_cid == ckpt0
    pool = PARAMS.bonus_rate * 4  # bonus pool: bonusRate per accepted work unit, split by claimed reductions
    assert manager.get_update(job_id, 0, 0).amount == 2 * PARAMS.base_rate + pool * 300 // 400
    assert manager.get_update(job_id, 0, 1).amount == 2 * PARAMS.base_rate + pool * 100 // 400
    assert manager.get_update(job_id, 0, 2).status == UpdateStatus.REJECTED
    assert manager.trainers(trainers[2].sender).stake == 2 * MIN_STAKE - manager.update_bond(job_id)
    assert [s.slot for s in manager.submissions(job_id, 0)] == [0, 1, 2]

    # --- leader A stops; after its lease the successor is drawn and claims
    with pytest.raises(revert_class("JobManagerLeaseNotExpired")):
        leader_b.draw_successor(job_id)
    increase_time(chain.w3, LEASE + 5)
    with pytest.raises(revert_class("JobManagerLeaseExpired")):
        leader_a.commit_round(job_id, 1, cid_of(b"late"), 1)
    with pytest.raises(revert_class("JobManagerNotSuccessor")):
        leader_b.claim_leadership(job_id)  # nobody drawn yet
    anchor = leader_b.draw_successor(job_id).event("SuccessorDrawRequested").args["anchorBlock"]
    assert manager.get_job(job_id).successor_anchor == anchor
    mine_blocks(chain.w3, DRAW_DELAY + 1)
    assert manager.successor(job_id) == leader_b.sender  # the lapsed leader is not drawn
    with pytest.raises(revert_class("JobManagerNotCandidate")):
        trainers[0].claim_leadership(job_id)
    claimed = leader_b.claim_leadership(job_id)
    assert (claimed.event("LeaderElected").args["leader"], claimed.event("LeaderElected").args["term"]) == (
        leader_b.sender, 2)
    assert claimed.event("LeaderBondForfeited").args["amount"] == LEADER_BOND // 2
    with pytest.raises(revert_class("JobManagerNotLeader")):
        leader_a.commit_round(job_id, 1, cid_of(b"ckpt 1"), 1)

    # --- a ticket of the old term, or signed by the old leader, is refused
    old = ticket_for(manager, job_id, 1, trainers[0].sender, 0, term=1)
    with pytest.raises(revert_class("JobManagerWrongTerm")):
        trainers[0].submit_update(old, cid_of(b"x"), 1, sign_ticket(old, manager.ticket_domain(), leader_b.account))
    current = ticket_for(manager, job_id, 1, trainers[0].sender, 0)
    with pytest.raises(revert_class("JobManagerBadTicketSignature")):
        trainers[0].submit_update(current, cid_of(b"x"), 1,
                                  sign_ticket(current, manager.ticket_domain(), leader_a.account))

    # --- round 1 under B: all accepted; the last commit finishes the job and refunds the rest
    _vote_round(manager, leader_b, job_id, 1, trainers, validators, [50, 50, 100])
    final = cid_of(b"final")
    finished = leader_b.commit_round(job_id, 1, final, 0b111).event("JobFinished")
    job = manager.get_job(job_id)
    assert job.status == JobStatus.FINISHED and job.committed_rounds == 2 and job.last_checkpoint_cid == final
    assert finished.args["finalCheckpointCid"] == final
    assert manager.round_commits(job_id) == [RoundCommit(0, leader_a.sender.lower(), ckpt0, 0b11),
                                             RoundCommit(1, leader_b.sender.lower(), final, 0b111)]
    refund = finished.args["refund"]
    assert refund == job.deposit - job.spent == job.refunded > extra
    with pytest.raises(revert_class("JobManagerJobNotActive")) as closed:
        trainers[0].submit_update(ticket_for(manager, job_id, 2, trainers[0].sender, 0), cid_of(b"late"), 1, b"")
    assert closed.value.args_decoded["status"] == JobStatus.FINISHED

    # --- payouts: anyone triggers them, one call per round, each update is paid once
    owed = {trainer.sender.lower(): sum(u.amount for u in (manager.get_update(job_id, r, slot) for r in (0, 1))
                                        if u.status == UpdateStatus.ACCEPTED)
            for slot, trainer in enumerate(trainers)}
    paid: dict[str, int] = {}
    for rnd in (0, 1):
        for ev in customer.payout(job_id, rnd).events:
            if ev.name == "PaidOut":
                key = str(ev.args["trainer"]).lower()
                paid[key] = paid.get(key, 0) + int(ev.args["amount"])
        with pytest.raises(revert_class("JobManagerNothingToPay")):
            customer.payout(job_id, rnd)
    assert paid == owed
    assert all(manager.get_update(job_id, 1, slot).paid for slot in range(len(trainers)))
    totals = manager.accounting()
    assert totals.conserved and totals.escrow_held == 0 and totals == manager.totals()

    # --- fees: three agreeing first-panel votes on each of 6 updates; each leader committed one round
    assert sum(manager.balance_of(v) for v in validators) == 6 * 3 * PARAMS.validator_fee
    # the lapsed leader keeps the half of its bond that was not forfeited (dropped as candidate: credited)
    assert manager.balance_of(leader_a.sender) == PARAMS.leader_fee + LEADER_BOND - LEADER_BOND // 2
    assert manager.balance_of(leader_b.sender) >= PARAMS.leader_fee

    # --- withdrawals: the ether arrives, minus the withdrawer's own gas
    voters = [v for v in validators.values() if manager.balance_of(v.sender) > 0]
    for who in (trainers[0], leader_a, customer, *voters):
        owed = manager.balance_of(who.sender)
        if who is customer:
            assert owed == refund
        before = chain.w3.eth.get_balance(who.account.address)
        result = who.withdraw()
        assert result.event("Withdrawn").args["amount"] == owed > 0
        assert chain.w3.eth.get_balance(who.account.address) == before + owed - result.fee_wei
        with pytest.raises(revert_class("JobManagerNothingToWithdraw")):
            who.withdraw()
    assert manager.accounting().conserved


def test_disagreement_escalates_and_the_losers_are_slashed(chain: Chain, manager: JobManagerClient) -> None:
    customer, leader, trainer, validators, job_id = one_update(chain, manager, range(7, 12))
    panel = draw(manager, job_id, 0, 0)
    validators[panel[0]].validate_update(job_id, 0, 0, False)  # the liar
    escalated = validators[panel[1]].validate_update(job_id, 0, 0, True).event("UpdateEscalated")  # at once
    with pytest.raises(revert_class("JobManagerUpdateNotVoting")):
        validators[panel[2]].validate_update(job_id, 0, 0, True)
    assert manager.get_update(job_id, 0, 0).phase == Phase.AWAITING_ESCALATION
    assert escalated.args["anchorBlock"] == manager.get_update(job_id, 0, 0).anchor_block
    second = draw(manager, job_id, 0, 0)
    assert set(second) == set(validators)  # a pool smaller than the escalation panel: all of it
    liar = panel[0]
    for addr in second:
        if addr != liar:
            result = validators[addr].validate_update(job_id, 0, 0, True)
            if result.emitted("UpdateAccepted"):
                break
    update = manager.get_update(job_id, 0, 0)
    assert update.status == UpdateStatus.ACCEPTED
    slashed = manager.get_events(names=["ValidatorSlashed"], job_id=job_id)
    assert [e.args["validator"] for e in slashed] == [liar]
    assert manager.validators(liar).stake == MIN_STAKE - manager.validator_slash()
    assert manager.accounting().conserved


def test_cancel_refunds_a_job_nobody_serves(chain: Chain, manager: JobManagerClient) -> None:
    customer, other = manager.with_account(chain.accounts[1]), manager.with_account(chain.accounts[2])
    job_id, _ = customer.create_job(PARAMS)
    with pytest.raises(revert_class("JobManagerNotCustomer")):
        other.cancel_job(job_id)
    cancelled = customer.cancel_job(job_id).event("JobCancelled")
    assert cancelled.args["refund"] == PARAMS.required_deposit() == manager.balance_of(customer.sender)
    assert manager.get_job(job_id).status == JobStatus.CANCELLED
    with pytest.raises(revert_class("JobManagerJobNotActive")):
        customer.cancel_job(job_id)

    served_id, _ = customer.create_job(PARAMS)
    other.register_validator(MIN_STAKE)
    other.stand_for_leader(served_id, LEADER_BOND)
    with pytest.raises(revert_class("JobManagerJobStillServed")) as served:
        customer.cancel_job(served_id)
    assert served.value.args_decoded["leader"] == other.sender
    assert manager.accounting().conserved


def test_candidacy_is_withdrawn_with_its_bond(chain: Chain, manager: JobManagerClient) -> None:
    customer, first, second = (manager.with_account(chain.accounts[i]) for i in (1, 2, 3))
    for node in (first, second):
        node.register_validator(MIN_STAKE)
    job_id, _ = customer.create_job(PARAMS)
    first.stand_for_leader(job_id, LEADER_BOND)
    second.stand_for_leader(job_id, LEADER_BOND)
    with pytest.raises(revert_class("JobManagerCandidateIsLeader")):
        first.withdraw_candidacy(job_id)
    ended = second.withdraw_candidacy(job_id).event("CandidacyEnded")
    assert ended.args["bondReturned"] == LEADER_BOND == manager.balance_of(second.sender)
    assert [c.address for c in manager.get_candidates(job_id)] == [first.sender]


def test_deregistration_returns_stake_after_the_delay(chain: Chain, manager: JobManagerClient) -> None:
    node = manager.with_account(chain.accounts[5])
    with pytest.raises(revert_class("JobManagerNotRegistered")):
        node.request_deregistration()
    node.register_validator(2 * MIN_STAKE)
    available_at = node.request_deregistration().event("DeregistrationRequested").args["availableAt"]
    assert manager.exit_available_at(node.sender) == available_at
    assert manager.validator_count() == 0  # no longer drawn
    with pytest.raises(revert_class("JobManagerDeregistrationNotReady")) as early:
        node.complete_deregistration()
    assert early.value.args_decoded == {"account": node.sender, "availableAt": available_at}
    increase_time(chain.w3, manager.deregistration_delay() + 1)
    assert node.complete_deregistration().event("Deregistered").args["stakeReturned"] == 2 * MIN_STAKE
    assert manager.balance_of(node.sender) == 2 * MIN_STAKE
    node.withdraw()


def test_reverts_from_views_and_sends_are_named(chain: Chain, manager: JobManagerClient) -> None:
    node = manager.with_account(chain.accounts[3])
    with pytest.raises(revert_class("JobManagerUnknownJob")) as from_view:
        manager.get_job(99)
    assert from_view.value.args_decoded == {"jobId": 99}
    assert isinstance(from_view.value, ContractRevert) and from_view.value.error_name == "JobManagerUnknownJob"
    with pytest.raises(ContractRevert) as from_send:
        node.stand_for_leader(99, LEADER_BOND)
    assert type(from_send.value) is revert_class("JobManagerUnknownJob")
    with pytest.raises(revert_class("JobManagerInsufficientStake")) as stake:
        node.register_validator(MIN_STAKE - 1)
    assert stake.value.args_decoded == {"required": MIN_STAKE, "provided": MIN_STAKE - 1}
    bad = JobParams(**{**PARAMS.__dict__, "quorum": 0})
    with pytest.raises(revert_class("JobManagerInvalidJobParam")) as param:
        node.create_job(bad)
    assert param.value.args_decoded == {"param": "quorum"}
    job_id, _ = node.create_job(PARAMS)
    with pytest.raises(revert_class("JobManagerDrawNotReady")):
        manager.challenge_seed(job_id, 0, 0)


def test_settings_are_the_deploy_arguments_and_constants(chain: Chain, manager: JobManagerClient) -> None:
    s = manager.settings()
    assert (s.min_trainer_stake, s.min_validator_stake, s.min_update_bond, s.validator_slash, s.min_leader_bond,
            s.deregistration_delay) == (SETTINGS.min_trainer_stake, SETTINGS.min_validator_stake,
                                        SETTINGS.min_update_bond, SETTINGS.validator_slash,
                                        SETTINGS.min_leader_bond, SETTINGS.deregistration_delay)
    assert (s.draw_delay, s.slash_multiple, s.lapse_forfeit_bps) == (DRAW_DELAY, 3, 5_000)
    assert s.max_tasks_per_round == 64 and s.escalation_panel == 63 and s.max_validators >= 64
    assert (s.max_work_units, s.max_loss_reduction) == (2**16 - 1, MAX_LOSS_REDUCTION)
    assert manager.extension() != manager.address and manager.total_held() == 0 == manager.stake_held()
    assert manager.total_deposits() == manager.total_stakes() == manager.total_paid() == 0
    assert manager.total_refunded() == manager.total_slashed() == manager.total_withdrawn() == 0
    assert manager.escrow_held() == 0 and manager.job_count() == 0 and manager.block_number() > 0


def test_a_silent_panel_member_is_escalated_past_the_vote_window_and_slashed(chain: Chain,
                                                                             manager: JobManagerClient) -> None:
    customer, leader, trainer, validators, job_id = one_update(chain, manager, range(7, 12))
    panel = draw(manager, job_id, 0, 0)
    for addr in panel[:2]:
        validators[addr].validate_update(job_id, 0, 0, True)
    update = manager.get_update(job_id, 0, 0)
    assert update.vote_deadline > 0 and not update.escalation_due(update.vote_deadline)
    with pytest.raises(revert_class("JobManagerVoteWindowOpen")):
        customer.escalate_update(job_id, 0, 0)
    increase_time(chain.w3, update.vote_deadline - int(chain.w3.eth.get_block("latest")["timestamp"]) + 1)
    assert manager.get_update(job_id, 0, 0).escalation_due(update.vote_deadline + 1)
    customer.escalate_update(job_id, 0, 0).event("UpdateEscalated")  # anyone may
    assert manager.get_update(job_id, 0, 0).silent_mask == 0b100
    second = draw(manager, job_id, 0, 0)
    silent = panel[2]
    for addr in second:
        if addr != silent and validators[addr].validate_update(job_id, 0, 0, True).emitted("UpdateAccepted"):
            break
    assert manager.get_update(job_id, 0, 0).status == UpdateStatus.ACCEPTED
    assert [e.args["validator"] for e in manager.get_events(names=["ValidatorSlashed"], job_id=job_id)] == [silent]
    assert manager.accounting().conserved
