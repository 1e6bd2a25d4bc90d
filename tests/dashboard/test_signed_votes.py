"""Fast-path votes on the job page, from the ``settleUpdates`` transaction's calldata (node/http/signed.py), on an
in-process py-evm chain: a panel of three signs, one ``settleUpdates`` settles the update, and the dashboard's
chain reader shows each member's vote, in draw order, recovered from the signatures the contract checked; a job
that pays no validator fee (so the transaction emits no ``FeePaid`` to name the panel) shows them just the same."""

from __future__ import annotations

import dataclasses

import pytest
import trio

from node.http.facts import Vote, job_detail
from node.http.gather import ChainFacts
from node.http.signed import decode_settle_call, read_settle_call
from protocols.chain.backends import dev_accounts, in_process_chain, mine_blocks
from protocols.chain.client import JobManagerClient, deploy
from protocols.chain.models import NodeClass, UpdateStatus
from protocols.chain.ticket import ChainVote, VoteSet, sign_vote
from tests.chain.helpers import DRAW_DELAY, LEADER_BOND, MIN_STAKE, PARAMS, SETTINGS, Chain, submit


def settle_fast(chain: Chain, manager: JobManagerClient, *, valid: bool, fee: int) -> tuple[int, tuple[str, ...], str]:
    """A job (quorum 3, ``fee`` per validator vote) with one update in round 0, slot 0, settled unanimously
    (``valid``) by its would-be first panel's signed votes; returns the job, the panel in draw order and the
    settling transaction's hash."""
    acc = chain.accounts
    customer, leader, trainer = (manager.with_account(acc[i]) for i in (1, 2, 3))
    trainer.register_trainer(NodeClass.M, MIN_STAKE)
    leader.register_trainer(NodeClass.L, MIN_STAKE)
    for i in range(10, 14):
        manager.with_account(acc[i]).register_validator(MIN_STAKE)
    job_id, _ = customer.create_job(dataclasses.replace(PARAMS, validator_fee=fee))
    leader.stand_for_leader(job_id, LEADER_BOND)
    submit(manager, leader.account, trainer, job_id, 0, 0, 10)
    mine_blocks(manager.w3, DRAW_DELAY + 1)
    panel, anchor = manager.vote_panel(job_id, 0, 0)
    keys = {str(a.address): a for a in acc}
    sigs = tuple(sign_vote(ChainVote(job_id, 0, 0, anchor, valid), manager.ticket_domain(), keys[str(m)])
                 for m in panel)
    mask = (1 << len(panel)) - 1 if valid else 0
    result = customer.settle_updates(job_id, 0, [VoteSet(slot=0, valid_mask=mask, signatures=sigs)])
    assert result.emitted("UpdateAccepted" if valid else "UpdateRejected") and not result.emitted("UpdateVoted")
    assert result.emitted("FeePaid") == (fee > 0)
    return job_id, tuple(panel), result.tx_hash


@pytest.mark.parametrize(("valid", "fee"), [(True, 0), (False, PARAMS.validator_fee)])
async def test_each_members_fast_path_vote_comes_from_the_calldata(valid: bool, fee: int) -> None:
    chain = Chain("pyevm", in_process_chain(), dev_accounts(20))
    manager = deploy(chain.w3, chain.accounts[0], SETTINGS)
    job_id, panel, tx_hash = await trio.to_thread.run_sync(
        lambda: settle_fast(chain, manager, valid=valid, fee=fee))
    assert len(panel) == PARAMS.quorum

    facts = ChainFacts(manager)
    state = facts.refresh()
    expected = tuple(Vote(m, 0, valid) for m in panel)
    assert state.signed_votes == {(job_id, 0, 0): expected}
    assert state.updates[(job_id, 0, 0)].status == (UpdateStatus.ACCEPTED if valid else UpdateStatus.REJECTED)
    assert state.updates[(job_id, 0, 0)].panel == (), "the contract stored no panel: only the calldata names it"
    detail = job_detail(state.jobs[job_id], state.job_events(job_id), state.job_updates(job_id),
                        state.job_rounds(job_id), {}, fetch="", signed=state.job_signed_votes(job_id))
    assert [u.votes for u in detail.updates] == [expected]

    calls = facts.calls
    assert facts.refresh() is state and facts.calls == calls + 1, "a settled transaction is read once"
    call = read_settle_call(manager, tx_hash)
    assert call is not None and (call.job_id, call.round, [s.slot for s in call.sets]) == (job_id, 0, [0])
    assert decode_settle_call(bytes.fromhex("12345678")) is None


async def test_a_transaction_of_another_function_has_no_signed_votes() -> None:
    chain = Chain("pyevm", in_process_chain(), dev_accounts(3))
    manager = deploy(chain.w3, chain.accounts[0], SETTINGS)
    registered = manager.with_account(chain.accounts[1]).register_validator(MIN_STAKE)
    assert read_settle_call(manager, registered.tx_hash) is None
