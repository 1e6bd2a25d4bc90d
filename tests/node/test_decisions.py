"""The roles' decisions (node/roles/decisions.py and the spec check of node/roles/chain_view.py), from hand-built
chain state: no network, no chain, no clock."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.roles.chain_view import SpecMismatch, check_spec, spec_mismatches
from node.roles.customer import job_params
from node.roles.decisions import (
    CloseReason,
    LeaderStep,
    RoundState,
    TrainerStep,
    asked_to_audit,
    audits_finished,
    ineligibility,
    jobs_to_start,
    leader_step,
    pay_left_unpaid,
    refuse_before_reading,
    refuse_slot,
    round_close,
    rounds_to_audit,
    segments_to_fetch,
    skip_check,
    trainer_step,
    wait_out_round,
)
from protocols.chain.models import JobInfo, JobStatus, TrainerInfo, UpdateInfo, UpdateStatus
from protocols.specs import JobSpec, PaymentSpec, TaskTicket
from protocols.types import Address, JobId, NodeClass, RejectCode

ME = "0x00000000000000000000000000000000000000aA"
OTHER = "0x00000000000000000000000000000000000000bB"
CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
SPEC = JobSpec(rounds=3, tasks_per_round=2, local_steps=20).with_content(
    dataset_cid=CID, eval_cid=CID, initial_checkpoint_cid=CID)
NOW = 1_000_000


def job(**kw: Any) -> JobInfo:
    fields: dict[str, Any] = dict(
        job_id=JobId(1), customer=Address(OTHER), params=job_params(SPEC, CID), deposit=10, spent=0,
        status=JobStatus.ACTIVE, committed_rounds=0, leader=Address(ME), lease_expiry=NOW + 60, term=1,
        last_checkpoint_cid=None, successor=None, refunded=0, progress_at=NOW)
    fields.update(kw)
    return JobInfo(**fields)


def update(*, status: UpdateStatus = UpdateStatus.PENDING, validators: tuple[str, ...] = (ME,),
           paid: bool = False) -> UpdateInfo:
    return UpdateInfo(cid=CID, status=status, validators=tuple(Address(v) for v in validators), votes_for=0,  # type: ignore[arg-type]
                      votes_against=0, loss_reduction=0, paid=paid, amount=0)


def ticket(trainer: str, expires_at: int = NOW + 60) -> TaskTicket:
    return TaskTicket(job_id=1, round=0, term=1, base_cid=CID, shard_cid=CID, sample_start=0, sample_count=10,
                      steps=20, batch_size=32, seed=1, node_class=NodeClass.M, weight=640, trainer=trainer,
                      leader=ME, expires_at=expires_at)


def round_state(**kw: Any) -> RoundState:
    return RoundState(**{**dict(round=0, base_cid=CID, term=1, deadline=100.0, hard_deadline=200.0), **kw})


# -- every role ----------------------------------------------------------------------------------------------------

def test_roles_start_only_the_jobs_they_do_not_serve_yet() -> None:
    assert jobs_to_start([1, 2, 3, 4], {2, 4}) == [1, 3]
    assert jobs_to_start([], set()) == []


def test_a_spec_that_agrees_with_the_chain_passes_and_any_difference_is_named() -> None:
    assert check_spec(SPEC, job()) is SPEC
    lying = replace(SPEC, rounds=30, payment=replace(PaymentSpec(), quorum=1, lease_seconds=600))
    assert [p.split(":")[0] for p in spec_mismatches(lying, job())] == ["rounds", "quorum", "lease_seconds"]
    with pytest.raises(SpecMismatch, match=r"rounds: spec 30, chain 3.*quorum: spec 1, chain 3"):
        check_spec(lying, job())
    for change in (dict(tasks_per_round=3), dict(local_steps=21),
                   dict(payment=replace(PaymentSpec(), base_rate_wei=1)),
                   dict(payment=replace(PaymentSpec(), bonus_rate_wei=1)),
                   dict(payment=replace(PaymentSpec(), validator_fee_wei=1)),
                   dict(payment=replace(PaymentSpec(), leader_fee_wei=1))):
        assert len(spec_mismatches(replace(SPEC, **change), job())) == 1, change  # type: ignore[arg-type]


# -- leader --------------------------------------------------------------------------------------------------------

def test_a_candidate_leads_claims_waits_or_stops() -> None:
    assert leader_step(job(), ME.lower(), NOW) == LeaderStep.LEAD
    assert leader_step(job(status=JobStatus.FINISHED), ME, NOW) == LeaderStep.STOP
    assert leader_step(job(status=JobStatus.CANCELLED, leader=None), ME, NOW) == LeaderStep.STOP
    assert leader_step(job(leader=None), ME, NOW) == LeaderStep.CLAIM
    assert leader_step(job(leader=Address(OTHER)), ME, NOW) == LeaderStep.WAIT
    assert leader_step(job(leader=Address(OTHER)), ME, NOW + 61) == LeaderStep.CLAIM
    # At the expiry second claimLeadership would revert (it needs block time strictly past it); our lease is over.
    assert leader_step(job(leader=Address(OTHER)), ME, NOW + 60) == LeaderStep.WAIT
    assert leader_step(job(), ME, NOW + 60) == LeaderStep.WAIT
    assert leader_step(job(), ME, NOW + 61) == LeaderStep.CLAIM


def test_a_leader_refuses_without_reading_when_not_leading_or_asked_for_another_round() -> None:
    assert refuse_before_reading(None, 0).reject == RejectCode.NOT_LEADER  # type: ignore[union-attr]
    assert refuse_before_reading(round_state(round=2), 1).reject == RejectCode.BAD_ROUND  # type: ignore[union-attr]
    assert refuse_before_reading(round_state(round=2), 2) is None


def test_trainers_the_contract_would_refuse_get_no_ticket() -> None:
    assert "register" in ineligibility(TrainerInfo(registered=False, node_class=NodeClass.M, stake=10**18), 1)
    assert "below the minimum" in ineligibility(TrainerInfo(registered=True, node_class=NodeClass.M, stake=9), 10)
    assert ineligibility(TrainerInfo(registered=True, node_class=NodeClass.M, stake=10), 10) == ""


def test_slots_are_counted_from_submissions_and_live_tickets() -> None:
    st = round_state(tickets={"a": ticket("a"), "b": ticket("b", expires_at=NOW - 1)})
    assert st.live_ticket("A", NOW) == ticket("a") and st.live_ticket("b", NOW) is None
    # One live ticket of two slots: a third trainer gets the other slot (b's ticket expired).
    assert refuse_slot(st, "c", 2, NOW) is None
    st.tickets["c"] = ticket("c")
    assert refuse_slot(st, "d", 2, NOW).reject == RejectCode.ROUND_FULL  # type: ignore[union-attr]
    st.submitted = {"a"}  # a submitted: its slot is used, not outstanding
    assert refuse_slot(st, "a", 2, NOW).reject == RejectCode.ALREADY_SUBMITTED  # type: ignore[union-attr]
    assert refuse_slot(st, "d", 2, NOW).reject == RejectCode.ROUND_FULL  # type: ignore[union-attr]
    assert refuse_slot(st, "d", 2, NOW + 61) is None  # c's ticket ran out


ACCEPTED, REJECTED = UpdateStatus.ACCEPTED, UpdateStatus.REJECTED


def test_a_round_closes_when_every_slot_is_decided() -> None:
    st = round_state(tickets={"a": ticket("a"), "b": ticket("b")}, submitted={"a", "b"},
                     decided={"a": (ACCEPTED, "m1"), "b": (REJECTED, "m2")})
    close = round_close(st, ["A", "B"], 2, now=NOW, mono=0.0)
    assert close is not None and close.reason == CloseReason.ALL_DECIDED and close.accepted == [("A", "m1")]


def test_a_round_closes_early_when_nothing_is_outstanding_and_some_work_was_accepted() -> None:
    st = round_state(tickets={"a": ticket("a"), "b": ticket("b", expires_at=NOW - 1)}, submitted={"a"},
                     decided={"a": (ACCEPTED, "m1")})
    close = round_close(st, ["a"], 3, now=NOW, mono=0.0)
    assert close is not None and close.reason == CloseReason.NOTHING_OUTSTANDING and close.accepted == [("a", "m1")]
    assert round_close(replace(st, decided={"a": (REJECTED, "m1")}), ["a"], 3, now=NOW, mono=0.0) is None
    st.tickets["b"] = ticket("b")  # b may still submit
    assert round_close(st, ["a"], 3, now=NOW, mono=0.0) is None
    assert round_close(round_state(), [], 3, now=NOW, mono=0.0) is None  # nobody asked yet


def test_a_round_closes_at_its_deadline_with_accepted_work_or_at_the_hard_deadline_without() -> None:
    st = round_state(tickets={"a": ticket("a"), "b": ticket("b")}, submitted={"a", "b"},
                     decided={"a": (ACCEPTED, "m1")})
    assert round_close(st, ["a", "b"], 3, now=NOW, mono=99.0) is None  # b's verdict is still out
    close = round_close(st, ["a", "b"], 3, now=NOW, mono=100.0)
    assert close is not None and close.reason == CloseReason.DEADLINE and close.accepted == [("a", "m1")]
    nothing = replace(st, decided={"a": (REJECTED, "m1")})
    assert round_close(nothing, ["a", "b"], 3, now=NOW, mono=150.0) is None
    close = round_close(nothing, ["a", "b"], 3, now=NOW, mono=200.0)
    assert close is not None and close.reason == CloseReason.LEASE_ENDING and close.accepted == []


@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.sampled_from([None, ACCEPTED, REJECTED])), max_size=6),
       st.integers(1, 6), st.floats(0, 300))
def test_a_closed_round_carries_exactly_its_accepted_updates(updates, slots, mono) -> None:  # type: ignore[no-untyped-def]
    trainers = list(dict.fromkeys(t for t, _ in updates))
    status = dict(updates)
    st_ = round_state(submitted=set(trainers), decided={t: (s, "m-" + t) for t, s in status.items() if s})
    close = round_close(st_, trainers, slots, now=NOW, mono=mono)
    accepted = [(t, "m-" + t) for t in trainers if status[t] == ACCEPTED]
    if close is not None:
        assert close.accepted == ([] if close.reason == CloseReason.LEASE_ENDING else accepted)
        assert close.reason != CloseReason.LEASE_ENDING or (mono >= 200.0 and not accepted)
    elif mono >= 200.0:
        raise AssertionError("a round never outlives its hard deadline")


# -- trainer -------------------------------------------------------------------------------------------------------

def test_a_trainer_works_only_for_an_open_job_with_a_leader() -> None:
    assert trainer_step(job()) == TrainerStep.WORK
    assert trainer_step(job(leader=None)) == TrainerStep.WAIT
    assert trainer_step(job(status=JobStatus.FINISHED)) == TrainerStep.STOP


def test_a_trainer_waits_out_only_a_full_round_or_its_own_submission() -> None:
    assert wait_out_round(RejectCode.ROUND_FULL) and wait_out_round(RejectCode.ALREADY_SUBMITTED)
    for code in (RejectCode.NOT_LEADER, RejectCode.BAD_ROUND, RejectCode.NOT_REGISTERED, None):
        assert not wait_out_round(code)


def test_a_trainer_collects_only_accepted_unpaid_work() -> None:
    assert pay_left_unpaid(update(status=ACCEPTED))
    assert not pay_left_unpaid(update(status=ACCEPTED, paid=True))
    for status in (UpdateStatus.NONE, UpdateStatus.PENDING, REJECTED, UpdateStatus.EXPIRED):
        assert not pay_left_unpaid(update(status=status))


# -- validator -----------------------------------------------------------------------------------------------------

def test_a_validator_checks_only_pending_updates_it_was_drawn_for() -> None:
    assert skip_check(update(validators=(OTHER,)), ME) == "not-drawn"
    assert skip_check(update(validators=(OTHER, ME), status=ACCEPTED), ME.lower()) == "decided-without-us"
    assert skip_check(update(validators=(OTHER, ME)), ME.upper().replace("0X", "0x")) is None


def test_a_replay_fetches_each_chosen_segments_ends_and_the_final_state() -> None:
    assert segments_to_fetch([0], 5) == [0, 4]
    assert segments_to_fetch([2, 3], 5) == [1, 2, 3, 4]
    assert segments_to_fetch([], 1) == [0]


# -- auditor -------------------------------------------------------------------------------------------------------

def test_an_auditor_audits_rounds_it_was_drawn_in_or_every_round_when_asked_to() -> None:
    drawn, other = update(validators=(OTHER, ME)), update(validators=(OTHER,))
    assert asked_to_audit(ME.lower(), [other, drawn], audit_all=False)
    assert not asked_to_audit(ME, [other], audit_all=False)
    assert asked_to_audit(ME, [], audit_all=True)


def test_an_auditor_is_finished_with_a_closed_job_once_every_committed_round_is_handled() -> None:
    assert rounds_to_audit(4, {0, 2}) == [1, 3]
    assert audits_finished(job(status=JobStatus.FINISHED, committed_rounds=2), {0, 1})
    assert not audits_finished(job(status=JobStatus.FINISHED, committed_rounds=2), {0})
    assert not audits_finished(job(committed_rounds=2), {0, 1})
