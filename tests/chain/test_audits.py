"""Audits of committed rounds through the adapter, on both backends: verdicts recorded once per validator, the
dispute at the job's quorum of failures, and the customer's immediate cancel of a disputed job."""

from __future__ import annotations

import pytest

from protocols.chain.client import JobManagerClient
from protocols.chain.errors import revert_class
from protocols.chain.models import JobStatus, NodeClass, RoundAudits

from .helpers import MIN_STAKE, PARAMS, Chain, cid_of


def test_audits_dispute_a_round_and_free_the_customer(chain: Chain, manager: JobManagerClient) -> None:
    acc = chain.accounts
    customer, leader, trainer = (manager.with_account(acc[i]) for i in (1, 2, 3))
    validators = [manager.with_account(acc[i]) for i in (4, 5, 6, 7)]
    trainer.register_trainer(NodeClass.M, MIN_STAKE)
    leader.register_trainer(NodeClass.L, MIN_STAKE)
    for v in validators:
        v.register_validator(MIN_STAKE)
    job_id, _ = customer.create_job(PARAMS)
    leader.stand_for_leader(job_id)
    drawn = trainer.submit_update(job_id, 0, cid_of(b"update")).event("UpdateSubmitted").args["validators"]
    by_address = {v.sender: v for v in validators}
    for address in drawn[:2]:
        by_address[address].validate_update(job_id, 0, trainer.sender, True, 10)
    first = validators[0]
    with pytest.raises(revert_class("RoundNotCommitted")) as early:
        first.audit_round(job_id, 0, True)
    assert early.value.args_decoded == {"jobId": job_id, "round": 0}
    leader.commit_round(job_id, 0, cid_of(b"checkpoint 0"))

    audited = first.audit_round(job_id, 0, True).event("RoundAudited")
    assert dict(audited.args) == {"jobId": job_id, "round": 0, "auditor": first.sender, "ok": True}
    assert manager.has_audited(job_id, 0, first.sender) and not manager.has_audited(job_id, 0, leader.sender)
    with pytest.raises(revert_class("AlreadyAudited")) as twice:
        first.audit_round(job_id, 0, False)
    assert twice.value.args_decoded == {"jobId": job_id, "round": 0, "validator": first.sender}
    with pytest.raises(revert_class("NotRegistered")):
        trainer.audit_round(job_id, 0, False)

    validators[1].audit_round(job_id, 0, False)
    validators[2].audit_round(job_id, 0, False)
    assert not manager.get_job(job_id).disputed
    reaching = validators[3].audit_round(job_id, 0, False)
    assert [e.name for e in reaching.events] == ["RoundAudited", "RoundDisputed"]
    assert dict(reaching.event("RoundDisputed").args) == {"jobId": job_id, "round": 0, "failures": PARAMS.quorum}
    assert manager.get_round_audits(job_id, 0) == RoundAudits(ok=1, failed=3)
    assert manager.get_round_audits(job_id, 1) == RoundAudits(ok=0, failed=0)
    job = manager.get_job(job_id)
    assert job.disputed and job.status == JobStatus.ACTIVE
    logged = manager.get_events(names=["RoundAudited", "RoundDisputed"], job_id=job_id)
    assert [e.name for e in logged] == ["RoundAudited"] * 4 + ["RoundDisputed"]

    # The lease still runs; the dispute alone lets the customer out, with everything not owed refunded.
    refund = customer.cancel_job(job_id).event("JobCancelled").args["refund"]
    assert refund == job.deposit - job.spent == manager.balance_of(customer.sender)
    assert manager.totals().conserved
