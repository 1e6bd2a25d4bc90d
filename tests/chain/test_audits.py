"""Audits of committed rounds through the adapter, on both backends: only the audit panel voting now reports, once
each; a unanimous failed panel disputes the round (the leader's bond burns, the customer is free); a split or
silent panel escalates to a stake-weighted panel whose majority settles, and the losing side is slashed."""

from __future__ import annotations

import pytest

from protocols.chain.backends import increase_time, mine_blocks
from protocols.chain.client import JobManagerClient
from protocols.chain.errors import revert_class
from protocols.chain.models import AuditOutcome, JobStatus, Phase

from .helpers import DRAW_DELAY, LEASE, MIN_STAKE, SLASH, Chain, OneUpdate, cid_of, draw, one_update


def _committed(chain: Chain, manager: JobManagerClient) -> OneUpdate:
    """One accepted update in round 0, committed; four validators of equal stake."""
    setup = one_update(chain, manager, (4, 5, 6, 7))
    for address in draw(manager, setup.job_id, 0, 0):
        setup.validators[address].validate_update(setup.job_id, 0, 0, True)
    setup.leader.commit_round(setup.job_id, 0, cid_of(b"checkpoint 0"), 0b1)
    return setup


def _draw_audit(manager: JobManagerClient, job_id: int) -> tuple[str, ...]:
    mine_blocks(manager.w3, DRAW_DELAY + 1)
    return tuple(manager.draw_auditors(job_id, 0).event("AuditorsDrawn").args["auditors"])


def test_a_unanimous_failed_audit_disputes_the_round_and_frees_the_customer(chain: Chain,
                                                                           manager: JobManagerClient) -> None:
    customer, leader, trainer, validators, job_id = one_update(chain, manager, (4, 5, 6, 7))
    for address in draw(manager, job_id, 0, 0):
        validators[address].validate_update(job_id, 0, 0, True)
    first = next(iter(validators.values()))
    with pytest.raises(revert_class("JobManagerRoundNotCommitted")) as early:
        first.draw_auditors(job_id, 0)
    assert early.value.args_decoded == {"jobId": job_id, "round": 0}
    leader.commit_round(job_id, 0, cid_of(b"checkpoint 0"), 0b1)
    with pytest.raises(revert_class("JobManagerDrawNotReady")):
        first.draw_auditors(job_id, 0)
    with pytest.raises(revert_class("JobManagerAuditNotVoting")):
        first.audit_round(job_id, 0, False)
    mine_blocks(chain.w3, DRAW_DELAY + 1)
    drawn = first.draw_auditors(job_id, 0).event("AuditorsDrawn")
    auditors = tuple(drawn.args["auditors"])
    assert drawn.args["phase"] == Phase.VOTING
    # AUDIT_PANEL (7) capped by the pool: all four validators (the leader is no validator).
    assert len(set(auditors)) == 4 == len(validators) and manager.get_round(job_id, 0).auditors == auditors
    assert manager.get_round(job_id, 0).audit_panel == auditors

    one, *others = (validators[a] for a in auditors)
    audited = one.audit_round(job_id, 0, False).event("RoundAudited")
    assert dict(audited.args) == {"jobId": job_id, "round": 0, "auditor": one.sender, "ok": False}
    with pytest.raises(revert_class("JobManagerAlreadyAudited")) as twice:
        one.audit_round(job_id, 0, True)
    assert twice.value.args_decoded == {"jobId": job_id, "round": 0, "validator": one.sender}
    assert manager.get_round(job_id, 0).has_audited(one.sender)
    for v in others[:-1]:
        v.audit_round(job_id, 0, False)
    assert not manager.get_job(job_id).disputed  # not before the whole panel agreed
    reaching = others[-1].audit_round(job_id, 0, False)
    assert dict(reaching.event("RoundDisputed").args) == {"jobId": job_id, "round": 0, "failures": 4}
    assert reaching.event("LeaderBondForfeited").args["leader"] == leader.sender
    rnd = manager.get_round(job_id, 0)
    assert (rnd.audit, rnd.audit_ok, rnd.audit_failed, rnd.audit_panel) == (AuditOutcome.DISPUTED, 0, 4, ())
    job = manager.get_job(job_id)
    assert job.disputed and job.status == JobStatus.ACTIVE
    logged = manager.get_events(names=["RoundAudited", "RoundDisputed"], job_id=job_id)
    assert [e.name for e in logged] == ["RoundAudited"] * 4 + ["RoundDisputed"]

    # The lease still runs; the dispute alone lets the customer out, with everything not owed refunded.
    refund = customer.cancel_job(job_id).event("JobCancelled").args["refund"]
    assert refund == job.deposit - job.spent == manager.balance_of(customer.sender)
    assert manager.accounting().conserved


def test_a_split_audit_escalates_and_the_lying_auditor_is_slashed(chain: Chain, manager: JobManagerClient) -> None:
    setup = _committed(chain, manager)
    job_id, validators = setup.job_id, setup.validators
    first = _draw_audit(manager, job_id)
    liar, honest = validators[first[0]], validators[first[1]]
    liar.audit_round(job_id, 0, False)
    escalated = honest.audit_round(job_id, 0, True).event("AuditEscalated")
    assert escalated.args["anchorBlock"] > 0
    assert manager.get_round(job_id, 0).audit_phase == Phase.AWAITING_ESCALATION
    with pytest.raises(revert_class("JobManagerAuditNotVoting")):
        validators[first[2]].audit_round(job_id, 0, True)

    mine_blocks(chain.w3, DRAW_DELAY + 1)
    escalation = liar.draw_auditors(job_id, 0).event("AuditorsDrawn")
    assert escalation.args["phase"] == Phase.ESCALATED
    panel = tuple(escalation.args["auditors"])
    rnd = manager.get_round(job_id, 0)
    assert rnd.audit_escalation_panel == panel and rnd.audit_panel == panel and rnd.audit_esc_stake == 4 * MIN_STAKE
    liar.audit_round(job_id, 0, False)
    winners = [validators[a] for a in panel if a != liar.sender]
    winners[0].audit_round(job_id, 0, True)
    winners[1].audit_round(job_id, 0, True)
    settled = winners[2].audit_round(job_id, 0, True)  # 3 of 4 equal stakes: more than half
    assert dict(settled.event("RoundAuditPassed").args) == {"jobId": job_id, "round": 0, "okVotes": 3}
    slashed = [dict(e.args) for e in settled.events if e.name == "ValidatorSlashed"]
    assert slashed == [{"jobId": job_id, "validator": liar.sender, "amount": SLASH}] * 2  # both panels lost
    paid = {e.args["validator"]: e.args["amount"] for e in settled.events if e.name == "SlashRewardPaid"}
    assert paid == {w.sender: 2 * SLASH // 3 for w in winners}
    rnd = manager.get_round(job_id, 0)
    assert (rnd.audit, rnd.audit_esc_ok_stake, rnd.audit_esc_failed_stake) == (AuditOutcome.PASSED, 3 * MIN_STAKE,
                                                                              MIN_STAKE)
    assert manager.validators(liar.sender).stake == MIN_STAKE - 2 * SLASH
    assert not manager.get_job(job_id).disputed
    assert manager.accounting().conserved


def test_a_silent_audit_panel_is_escalated_after_its_window(chain: Chain, manager: JobManagerClient) -> None:
    setup = _committed(chain, manager)
    job_id, validators = setup.job_id, setup.validators
    first = _draw_audit(manager, job_id)
    for a in first[:-1]:
        validators[a].audit_round(job_id, 0, True)
    anyone = setup.customer
    rnd = manager.get_round(job_id, 0)
    assert rnd.audit_deadline > 0 and not rnd.audit_stalled(rnd.audit_deadline)
    with pytest.raises(revert_class("JobManagerAuditWindowOpen")):
        anyone.escalate_audit(job_id, 0)
    increase_time(chain.w3, LEASE // 2 + 5)
    assert anyone.escalate_audit(job_id, 0).event("AuditEscalated")
    assert manager.get_round(job_id, 0).audit_silent_mask == 1 << (len(first) - 1)
    mine_blocks(chain.w3, DRAW_DELAY + 1)
    panel = tuple(anyone.draw_auditors(job_id, 0).event("AuditorsDrawn").args["auditors"])
    voters = [validators[a] for a in panel if a != first[-1]]
    for v in voters[:-1]:
        v.audit_round(job_id, 0, True)
    settled = voters[-1].audit_round(job_id, 0, True)
    assert settled.event("RoundAuditPassed")
    assert settled.event("ValidatorSlashed").args["validator"] == first[-1]
    assert manager.accounting().conserved
