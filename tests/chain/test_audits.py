"""Audits of committed rounds through the adapter, on both backends: only the drawn audit panel reports, once each,
and a strict majority of failures disputes the round, burns the leader's bond and frees the customer."""

from __future__ import annotations

import pytest

from protocols.chain.backends import mine_blocks
from protocols.chain.client import JobManagerClient
from protocols.chain.errors import revert_class
from protocols.chain.models import AuditOutcome, JobStatus

from .helpers import DRAW_DELAY, PARAMS, Chain, cid_of, draw, one_update


def test_audits_dispute_a_round_and_free_the_customer(chain: Chain, manager: JobManagerClient) -> None:
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
    mine_blocks(chain.w3, DRAW_DELAY + 1)
    auditors = tuple(first.draw_auditors(job_id, 0).event("AuditorsDrawn").args["auditors"])
    assert len(set(auditors)) == PARAMS.quorum and manager.get_round(job_id, 0).auditors == auditors
    outsider = next(v for a, v in validators.items() if a not in auditors)
    with pytest.raises(revert_class("JobManagerNotAuditor")):
        outsider.audit_round(job_id, 0, False)

    one, two, three = (validators[a] for a in auditors)
    audited = one.audit_round(job_id, 0, True).event("RoundAudited")
    assert dict(audited.args) == {"jobId": job_id, "round": 0, "auditor": one.sender, "ok": True}
    with pytest.raises(revert_class("JobManagerAlreadyAudited")) as twice:
        one.audit_round(job_id, 0, False)
    assert twice.value.args_decoded == {"jobId": job_id, "round": 0, "validator": one.sender}
    two.audit_round(job_id, 0, False)
    assert not manager.get_job(job_id).disputed
    reaching = three.audit_round(job_id, 0, False)
    assert dict(reaching.event("RoundDisputed").args) == {"jobId": job_id, "round": 0, "failures": 2}
    assert reaching.event("LeaderBondForfeited").args["leader"] == leader.sender
    rnd = manager.get_round(job_id, 0)
    assert (rnd.audit, rnd.audit_ok, rnd.audit_failed) == (AuditOutcome.DISPUTED, 1, 2)
    job = manager.get_job(job_id)
    assert job.disputed and job.status == JobStatus.ACTIVE
    logged = manager.get_events(names=["RoundAudited", "RoundDisputed"], job_id=job_id)
    assert [e.name for e in logged] == ["RoundAudited"] * 3 + ["RoundDisputed"]

    # The lease still runs; the dispute alone lets the customer out, with everything not owed refunded.
    refund = customer.cancel_job(job_id).event("JobCancelled").args["refund"]
    assert refund == job.deposit - job.spent == manager.balance_of(customer.sender)
    assert manager.accounting().conserved
