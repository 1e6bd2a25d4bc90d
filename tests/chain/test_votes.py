"""Signed first-panel votes through the Python adapter, on each backend: the Python vote digest is the contract's
``voteDigest``; a whole panel's signatures settle an update in one ``settleUpdates``; a split panel escalates; a
signature for another anchor is refused; ``minQuorum`` bounds ``createJob``."""

from __future__ import annotations

import dataclasses

import pytest
from eth_account.signers.local import LocalAccount

from protocols.chain.backends import mine_blocks
from protocols.chain.client import JobManagerClient, deploy
from protocols.chain.errors import revert_class
from protocols.chain.models import Phase, UpdateStatus
from protocols.chain.ticket import ChainVote, TicketDomain, VoteSet, sign_vote, vote_digest, vote_signer

from .helpers import DRAW_DELAY, PARAMS, SETTINGS, Chain, OneUpdate, one_update


def signed(manager: JobManagerClient, chain: Chain, u: OneUpdate, valid_mask: int, *,
           anchor: int | None = None) -> VoteSet:
    """The would-be first panel of round 0, slot 0 signs bit i of ``valid_mask`` each."""
    panel, at = manager.vote_panel(u.job_id, 0, 0)
    keys: dict[str, LocalAccount] = {a.address: a for a in chain.accounts}
    sigs = tuple(sign_vote(ChainVote(u.job_id, 0, 0, at if anchor is None else anchor, bool(valid_mask >> i & 1)),
                           manager.ticket_domain(), keys[m]) for i, m in enumerate(panel))
    return VoteSet(slot=0, valid_mask=valid_mask, signatures=sigs)


def test_python_vote_digest_equals_the_contracts(chain: Chain, manager: JobManagerClient) -> None:
    vote = ChainVote(job_id=7, round=3, slot=2, anchor_block=1234, valid=True)
    digest = vote_digest(vote, manager.ticket_domain())
    assert digest == manager.vote_digest(vote)
    signature = sign_vote(vote, manager.ticket_domain(), chain.accounts[5])
    assert vote_signer(vote, manager.ticket_domain(), signature) == chain.accounts[5].address
    assert vote_digest(vote, TicketDomain(chain_id=1, contract=manager.address)) != digest
    assert vote_digest(dataclasses.replace(vote, valid=False), manager.ticket_domain()) != digest


def test_a_unanimous_panel_settles_in_one_transaction(chain: Chain, manager: JobManagerClient) -> None:
    u = one_update(chain, manager, range(10, 15))
    mine_blocks(manager.w3, DRAW_DELAY + 1)
    panel, _ = manager.vote_panel(u.job_id, 0, 0)
    assert len(panel) == PARAMS.quorum and set(panel) <= set(u.validators)
    with pytest.raises(revert_class("JobManagerBadVoteSignature")):
        u.customer.settle_updates(u.job_id, 0, [signed(manager, chain, u, 0b111, anchor=1)])
    votes = signed(manager, chain, u, 0b111)
    settled = u.trainer.settle_updates(u.job_id, 0, [votes])
    assert settled.emitted("UpdateAccepted") and not settled.emitted("UpdateVoted")
    assert {str(e.args["account"]).lower() for e in settled.events if e.name == "FeePaid"} == {
        m.lower() for m in panel}
    info = manager.get_update(u.job_id, 0, 0)
    assert info.status == UpdateStatus.ACCEPTED and info.panel == ()
    assert manager.vote_panel(u.job_id, 0, 0)[0] == ()
    with pytest.raises(revert_class("JobManagerFastPathClosed")):  # replayed
        u.customer.settle_updates(u.job_id, 0, [votes])
    assert manager.accounting().conserved


def test_a_split_panel_escalates(chain: Chain, manager: JobManagerClient) -> None:
    u = one_update(chain, manager, range(10, 15))
    mine_blocks(manager.w3, DRAW_DELAY + 1)
    votes = signed(manager, chain, u, 0b101)
    assert not votes.unanimous
    result = u.leader.settle_updates(u.job_id, 0, [votes])
    assert result.emitted("UpdateEscalated") and not result.emitted("UpdateAccepted")
    info = manager.get_update(u.job_id, 0, 0)
    assert (info.phase, info.voted_mask, info.valid_mask) == (Phase.AWAITING_ESCALATION, 0b111, 0b101)


def test_min_quorum_bounds_create_job(chain: Chain) -> None:
    strict = deploy(chain.w3, chain.accounts[0], dataclasses.replace(SETTINGS, min_quorum=5))
    assert strict.min_quorum() == 5 and strict.settings().min_quorum == 5
    customer = strict.with_account(chain.accounts[1])
    with pytest.raises(revert_class("JobManagerQuorumBelowMinimum")) as low:
        customer.create_job(PARAMS)
    assert (low.value.args_decoded["quorum"], low.value.args_decoded["minQuorum"]) == (3, 5)
    customer.create_job(dataclasses.replace(PARAMS, quorum=5))
