"""The roles' decisions (node/roles/decisions.py and the spec check of node/roles/chain_view.py), from hand-built
chain state: no network, no chain, no clock."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.devnet.plan import demo_spec
from node.roles.chain_view import SpecMismatch, check_spec, spec_mismatches
from node.roles.context import expected_check_s
from node.roles.customer import job_params
from node.roles.decisions import (
    MAX_SKIPPED_POLLS,
    CloseReason,
    LeaderStep,
    RoundState,
    TicketLifetime,
    TrainerStep,
    VoteBook,
    asked_to_audit,
    audits_finished,
    candidate_idle_s,
    candidate_poll_s,
    claimed_loss_reduction,
    content_given_up,
    draw_ready,
    fast_path_open,
    first_draw_due,
    ineligibility,
    jobs_to_start,
    leader_step,
    lease_open,
    pay_left_unpaid,
    refuse_before_reading,
    refuse_slot,
    rescan_due,
    round_close,
    rounds_to_audit,
    signing_window_s,
    skip_check,
    stake_shortfall,
    trainer_settles,
    trainer_step,
    wait_out_round,
    withdrawal_due,
)
from protocols.chain.models import (
    MAX_LOSS_REDUCTION,
    AuditOutcome,
    JobInfo,
    JobStatus,
    Phase,
    RoundInfo,
    TrainerInfo,
    UpdateInfo,
    UpdateStatus,
)
from protocols.specs import JobSpec, PaymentSpec, TaskTicket, UpdateManifest
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
        last_checkpoint_cid=None, successor_anchor=0, refunded=0, progress_at=NOW, disputed=False)
    fields.update(kw)
    return JobInfo(**fields)


def update(*, status: UpdateStatus = UpdateStatus.PENDING, validators: tuple[str, ...] = (ME,),
           paid: bool = False, phase: Phase = Phase.VOTING, voted_mask: int = 0) -> UpdateInfo:
    return UpdateInfo(trainer=Address(OTHER), status=status, phase=phase, work_units=2, anchor_block=10,
                      loss_reduction=0, amount=0, paid=paid, voted_mask=voted_mask, valid_mask=0, esc_voted_mask=0,
                      esc_valid_mask=0, panel=tuple(Address(v) for v in validators), escalation_panel=())


def ticket(trainer: str, expires_at: int = NOW + 60, slot: int = 0) -> TaskTicket:
    return TaskTicket(job_id=1, round=0, term=1, slot=slot, base_cid=CID, shard_cid=CID, sample_start=0,
                      sample_count=10, steps=20, batch_size=32, seed=1, node_class=NodeClass.M, weight=640,
                      work_units=2, trainer=trainer, leader=ME, expires_at=expires_at)


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

def test_a_candidate_leads_draws_a_successor_claims_waits_or_stops() -> None:
    assert leader_step(job(), ME.lower(), NOW, None) == LeaderStep.LEAD
    assert leader_step(job(status=JobStatus.FINISHED), ME, NOW, None) == LeaderStep.STOP
    assert leader_step(job(status=JobStatus.CANCELLED, leader=None), ME, NOW, None) == LeaderStep.STOP
    assert leader_step(job(leader=None), ME, NOW, None) == LeaderStep.CLAIM
    other = job(leader=Address(OTHER))
    assert leader_step(other, ME, NOW, None) == LeaderStep.WAIT
    # At the expiry second drawSuccessor/claimLeadership would revert (block time must be past it).
    assert leader_step(other, ME, NOW + 60, None) == LeaderStep.WAIT
    assert leader_step(job(), ME, NOW + 60, None) == LeaderStep.WAIT
    # Lapsed: draw the successor first; the drawn one claims, the others wait out the grace window.
    assert leader_step(other, ME, NOW + 61, None) == LeaderStep.DRAW_SUCCESSOR
    drawing = replace(other, successor_anchor=77)
    assert leader_step(drawing, ME, NOW + 61, None) == LeaderStep.WAIT  # the draw's block is not mined yet
    assert leader_step(drawing, ME, NOW + 61, ME.upper().replace("0X", "0x")) == LeaderStep.CLAIM
    assert leader_step(drawing, ME, NOW + 61, OTHER) == LeaderStep.WAIT
    grace_over = NOW + 60 + SPEC.payment.lease_seconds + 1
    assert leader_step(drawing, ME, grace_over, OTHER) == LeaderStep.CLAIM  # any candidate after the grace window
    assert leader_step(job(), ME, NOW + 61, None) == LeaderStep.DRAW_SUCCESSOR  # our own lease lapsed


def test_an_idle_candidate_skips_full_reads_only_while_another_lease_runs_past_the_next_polls() -> None:
    other = job(leader=Address(OTHER))  # leads until NOW + 60
    assert candidate_idle_s(LeaderStep.WAIT, other, ME, NOW, 1.0) == 58.0  # reads in full 2 polls before expiry
    assert candidate_idle_s(LeaderStep.WAIT, other, ME, NOW + 59, 1.0) == 0.0
    assert candidate_idle_s(LeaderStep.WAIT, other, ME, NOW + 60, 1.0) == 0.0
    # A grace window (lapsed lease, another drawn successor) moves with time alone: read every poll.
    assert candidate_idle_s(LeaderStep.WAIT, replace(other, successor_anchor=77), ME, NOW + 61, 1.0) == 0.0
    for step in (LeaderStep.LEAD, LeaderStep.CLAIM, LeaderStep.STAND, LeaderStep.DRAW_SUCCESSOR, LeaderStep.STOP):
        assert candidate_idle_s(step, other, ME, NOW, 1.0) == 0.0
    assert candidate_idle_s(LeaderStep.WAIT, job(), ME.lower(), NOW + 60, 1.0) == 0.0  # its own lease
    assert candidate_idle_s(LeaderStep.WAIT, job(leader=None), ME, NOW, 1.0) == 0.0


def test_an_idle_candidate_looks_at_the_logs_every_few_polls_but_not_past_its_idle_time() -> None:
    assert candidate_poll_s(1.0, 58.0) == 4.0  # another lease runs on: every fourth poll
    assert candidate_poll_s(1.0, 2.5) == 2.5  # never sleeps past the point where it reads every poll again
    assert candidate_poll_s(1.0, 0.2) == 1.0  # at least one poll
    assert candidate_poll_s(0.5, -3.0) == 0.5  # past its idle time (the gate reads in full then anyway)


def test_a_node_that_lost_its_candidacy_stands_again_once_the_lease_is_open() -> None:
    """A lapsed leader's candidacy ends when another claims; if that one dies too, nobody could ever claim unless
    the survivor stands again (the stall the leader-replacement devnet hit)."""
    other = job(leader=Address(OTHER))
    drawing = replace(other, successor_anchor=77)
    grace_over = NOW + 60 + SPEC.payment.lease_seconds + 1
    for lapsed in (other, drawing):
        for now in (NOW + 61, grace_over):
            assert leader_step(lapsed, ME, now, OTHER, standing=False) == LeaderStep.STAND
    assert leader_step(job(leader=None), ME, NOW, None, standing=False) == LeaderStep.STAND
    # While a lease runs there is nothing to stand for; a finished job is left alone.
    assert leader_step(other, ME, NOW + 60, None, standing=False) == LeaderStep.WAIT
    assert leader_step(replace(other, status=JobStatus.FINISHED), ME, grace_over, None,
                       standing=False) == LeaderStep.STOP
    assert not lease_open(other, NOW + 60) and lease_open(other, NOW + 61) and lease_open(job(leader=None), NOW)


def test_a_leader_refuses_without_reading_when_not_leading_or_asked_for_another_round() -> None:
    assert refuse_before_reading(None, 0).reject == RejectCode.NOT_LEADER  # type: ignore[union-attr]
    assert refuse_before_reading(round_state(round=2), 1).reject == RejectCode.BAD_ROUND  # type: ignore[union-attr]
    assert refuse_before_reading(round_state(round=2), 2) is None


def trainer(stake: int, *, registered: bool = True, locked: int = 0) -> TrainerInfo:
    return TrainerInfo(registered=registered, node_class=NodeClass.M, pending=0, stake=stake, locked=locked)


def test_trainers_the_contract_would_refuse_get_no_ticket() -> None:
    assert "register" in ineligibility(trainer(10**18, registered=False), 1, 1)
    assert "below the minimum" in ineligibility(trainer(9), 10, 1)
    assert "update bond" in ineligibility(trainer(20, locked=15), 10, 6)  # free 5 < bond 6
    assert ineligibility(trainer(20, locked=14), 10, 6) == ""


def test_a_trainer_tops_up_exactly_what_its_free_stake_lacks() -> None:
    assert stake_shortfall(trainer(20, locked=15), 6) == 1
    assert stake_shortfall(trainer(20, locked=14), 6) == 0


def test_slots_are_counted_from_submissions_and_live_tickets() -> None:
    st = round_state(tickets={"a": ticket("a", slot=0), "b": ticket("b", expires_at=NOW - 1, slot=1)})
    assert st.live_ticket("A", NOW) == ticket("a") and st.live_ticket("b", NOW) is None
    # One live ticket of two slots: a third trainer gets the other slot (b's ticket expired).
    assert refuse_slot(st, "c", 2, NOW) is None and st.free_slot(2, NOW) == 1
    st.tickets["c"] = ticket("c", slot=1)
    assert refuse_slot(st, "d", 2, NOW).reject == RejectCode.ROUND_FULL  # type: ignore[union-attr]
    st.submitted = {0: "a"}  # a submitted: its slot is used, not outstanding
    assert refuse_slot(st, "a", 2, NOW).reject == RejectCode.ALREADY_SUBMITTED  # type: ignore[union-attr]
    assert refuse_slot(st, "d", 2, NOW).reject == RejectCode.ROUND_FULL  # type: ignore[union-attr]
    assert refuse_slot(st, "d", 2, NOW + 61) is None and st.free_slot(2, NOW + 61) == 1  # c's ticket ran out


def test_a_ticket_lasts_as_long_as_the_jobs_tasks_take_within_the_round() -> None:
    """A 10M-parameter task on CPU trainers outlasts the node's task_timeout_s: tickets that lapse unfilled double
    the lifetime, and a submission d seconds after its ticket raises it to 2 d; never below the node's setting nor
    past the round's limit."""
    life = TicketLifetime(base_s=120.0)
    assert life.expiry(NOW, round_left_s=1_000.0) == NOW + 120
    assert life.expiry(NOW, round_left_s=30.0) == NOW + 120  # never shorter than the node's setting
    st = round_state(tickets={"a": ticket("a", expires_at=NOW + 120, slot=0),
                              "b": ticket("b", expires_at=NOW + 120, slot=1)})
    assert st.newly_lapsed(NOW + 119) == 0
    st.submitted = {1: "b"}  # b filled its slot in time: its ticket is no lapse
    assert st.newly_lapsed(NOW + 120) == 1 and st.newly_lapsed(NOW + 500) == 0  # a's counted once
    life.lapsed(1, cap_s=300.0)
    assert life.expiry(NOW, round_left_s=1_000.0) == NOW + 240
    life.lapsed(2, cap_s=300.0)
    assert life.current_s == 300.0  # capped at the lease
    st.tickets["a"] = ticket("a", expires_at=NOW + 700, slot=0)  # a new ticket for a: a later lapse counts again
    assert st.newly_lapsed(NOW + 700) == 1
    life.filled(400.0)
    assert life.current_s == 800.0
    assert life.expiry(NOW, round_left_s=500.0) == NOW + 500  # a ticket outliving the round would be useless
    life.filled(10.0)
    assert life.current_s == 800.0  # it never shrinks during a term


ACCEPTED, REJECTED = UpdateStatus.ACCEPTED, UpdateStatus.REJECTED


def test_a_round_closes_when_every_slot_is_decided() -> None:
    st = round_state(tickets={"a": ticket("a", slot=0), "b": ticket("b", slot=1)}, submitted={0: "a", 1: "b"},
                     decided={0: (ACCEPTED, "A", "m1"), 1: (REJECTED, "B", "m2")})
    close = round_close(st, 2, now=NOW, mono=0.0)
    assert close is not None and close.reason == CloseReason.ALL_DECIDED and close.accepted == [(0, "A", "m1")]
    assert close.mask == 0b1


def test_a_round_closes_early_when_nothing_is_outstanding_and_some_work_was_accepted() -> None:
    st = round_state(tickets={"a": ticket("a"), "b": ticket("b", expires_at=NOW - 1, slot=1)}, submitted={0: "a"},
                     decided={0: (ACCEPTED, "a", "m1")})
    close = round_close(st, 3, now=NOW, mono=0.0)
    assert close is not None and close.reason == CloseReason.NOTHING_OUTSTANDING
    assert close.accepted == [(0, "a", "m1")]
    assert round_close(replace(st, decided={0: (REJECTED, "a", "m1")}), 3, now=NOW, mono=0.0) is None
    st.tickets["b"] = ticket("b", slot=1)  # b may still submit
    assert round_close(st, 3, now=NOW, mono=0.0) is None
    assert round_close(round_state(), 3, now=NOW, mono=0.0) is None  # nobody asked yet


def test_a_round_closes_at_its_deadline_with_accepted_work_or_at_the_hard_deadline_without() -> None:
    st = round_state(tickets={"a": ticket("a"), "b": ticket("b", slot=2), "c": ticket("c", slot=1)},
                     submitted={0: "a", 2: "b"}, decided={0: (ACCEPTED, "a", "m1")})
    assert round_close(st, 3, now=NOW, mono=99.0) is None  # b's verdict is still out
    # Past the soft deadline b's verdict is still awaited: committing now would expire b's update, bond unlocked,
    # so a trainer that slows its own check down would escape its slash.
    assert round_close(st, 3, now=NOW, mono=150.0) is None
    decided = replace(st, decided={0: (ACCEPTED, "a", "m1"), 2: (REJECTED, "b", "m2")})
    close = round_close(decided, 3, now=NOW, mono=100.0)  # c's live ticket is given up at the soft deadline
    assert close is not None and close.reason == CloseReason.DEADLINE and close.accepted == [(0, "a", "m1")]
    close = round_close(st, 3, now=NOW, mono=200.0)
    assert close is not None and close.reason == CloseReason.DEADLINE and close.accepted == [(0, "a", "m1")]
    assert close.mask == 0b1  # at the hard deadline b's pending update is not committed (the commit expires it)
    nothing = replace(st, decided={0: (REJECTED, "a", "m1")})
    assert round_close(nothing, 3, now=NOW, mono=150.0) is None
    close = round_close(nothing, 3, now=NOW, mono=200.0)
    assert close is not None and close.reason == CloseReason.LEASE_ENDING and close.accepted == []


@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from([None, ACCEPTED, REJECTED])), max_size=6),
       st.integers(1, 6), st.floats(0, 300))
def test_a_closed_round_carries_exactly_its_accepted_updates(updates, slots, mono) -> None:  # type: ignore[no-untyped-def]
    status = dict(updates)
    st_ = round_state(submitted={s: f"t{s}" for s in status},
                      decided={s: (v, f"t{s}", f"m{s}") for s, v in status.items() if v})
    close = round_close(st_, slots, now=NOW, mono=mono)
    accepted = [(s, f"t{s}", f"m{s}") for s in sorted(status) if status[s] == ACCEPTED]
    if close is not None:
        assert close.accepted == ([] if close.reason == CloseReason.LEASE_ENDING else accepted)
        assert close.mask == sum(1 << s for s, _, _ in close.accepted)
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
    assert skip_check(update(validators=(OTHER, ME), status=ACCEPTED), ME.lower()) == "decided"
    assert skip_check(update(validators=(OTHER, ME)), ME.upper().replace("0X", "0x")) is None
    assert skip_check(update(validators=(OTHER, ME), voted_mask=0b10), ME) == "voted"
    assert skip_check(update(validators=(OTHER, ME), voted_mask=0b01), ME) is None  # the other one voted
    # Escalated: the first panel no longer votes; awaiting a draw: nobody does.
    assert skip_check(update(validators=(ME,), phase=Phase.ESCALATED), ME) == "not-drawn"
    assert skip_check(update(validators=(ME,), phase=Phase.AWAITING_PANEL), ME) == "not-drawn"


def test_a_draw_waits_for_the_block_after_its_anchor_plus_the_delay() -> None:
    assert not draw_ready(10, 12, 2) and draw_ready(10, 13, 2)
    assert update(phase=Phase.AWAITING_PANEL).draw_due() and update(phase=Phase.AWAITING_ESCALATION).draw_due()
    assert not update(phase=Phase.VOTING).draw_due()
    assert not update(phase=Phase.AWAITING_PANEL, status=ACCEPTED).draw_due()


def test_withheld_content_is_given_up_after_the_deadline() -> None:
    assert not content_given_up(None, 1_000.0, 60.0)
    assert not content_given_up(100.0, 159.0, 60.0) and content_given_up(100.0, 160.0, 60.0)


def test_the_claimed_loss_reduction_is_the_manifests() -> None:
    def manifest(before: int, after: int) -> UpdateManifest:
        return UpdateManifest(ticket=ticket(OTHER), trainer=OTHER, delta_cid=CID, delta_encoding="f32",
                              loss_before_micro=before, loss_after_micro=after, segment_every=10,
                              segment_hashes=["ab" * 32])
    assert claimed_loss_reduction(manifest(2_000_000, 1_500_000)) == 500_000
    assert claimed_loss_reduction(manifest(1_000_000, 1_500_000)) == 0
    # The contract stores 32 bits: a larger reduction is claimed (and checked) as the bound.
    assert claimed_loss_reduction(manifest(MAX_LOSS_REDUCTION + 7, 0)) == MAX_LOSS_REDUCTION == 2**32 - 1


# -- auditor -------------------------------------------------------------------------------------------------------

def test_an_auditor_audits_only_rounds_whose_audit_panel_drew_it() -> None:
    def round_info(*auditors: str, phase: Phase = Phase.VOTING, voted: int = 0, escalation: tuple[str, ...] = (),
                   esc_voted: int = 0, audit: AuditOutcome = AuditOutcome.OPEN) -> RoundInfo:
        return RoundInfo(submitted_mask=1, accepted_mask=1, priced=True, committer=Address(OTHER), audit_anchor=5,
                         audit=audit, audit_ok=0, audit_failed=0,
                         auditors=tuple(Address(a) for a in auditors), checkpoint_cid=None, audit_phase=phase,
                         audit_voted_mask=voted, audit_escalation_panel=tuple(Address(a) for a in escalation),
                         audit_esc_voted_mask=esc_voted)
    assert asked_to_audit(ME.lower(), round_info(OTHER, ME))
    assert not asked_to_audit(ME, round_info(OTHER))
    assert not asked_to_audit(ME, round_info(phase=Phase.AWAITING_PANEL))  # not drawn yet
    assert not asked_to_audit(ME, round_info(OTHER, ME, voted=0b10))  # reported already
    assert not asked_to_audit(ME, round_info(OTHER, ME, voted=0b01, phase=Phase.AWAITING_ESCALATION))
    # Escalated: the escalation panel reports, also a first-panel member drawn again.
    assert asked_to_audit(ME, round_info(OTHER, ME, voted=0b11, phase=Phase.ESCALATED, escalation=(ME, OTHER)))
    assert not asked_to_audit(ME, round_info(ME, phase=Phase.ESCALATED, escalation=(OTHER,)))
    assert not asked_to_audit(ME, round_info(OTHER, phase=Phase.ESCALATED, escalation=(ME,), esc_voted=1))
    assert not asked_to_audit(ME, round_info(OTHER, ME, audit=AuditOutcome.LAPSED))


def test_an_auditor_is_finished_with_a_closed_job_once_every_committed_round_is_handled() -> None:
    assert rounds_to_audit(4, {0, 2}) == [1, 3]
    assert audits_finished(job(status=JobStatus.FINISHED, committed_rounds=2), {0, 1})
    assert not audits_finished(job(status=JobStatus.FINISHED, committed_rounds=2), {0})
    assert not audits_finished(job(committed_rounds=2), {0, 1})


# -- signed votes (fast path) --------------------------------------------------------------------------------------

SIG = bytes(range(65))


def test_an_idle_role_skips_its_full_scan_until_the_contract_logs_or_time_may_have_moved_something() -> None:
    assert rescan_due(first=True, busy=False, logged=False, skipped=0)  # nothing read yet
    assert not rescan_due(first=False, busy=False, logged=False, skipped=0)  # idle: head and logs only
    assert rescan_due(first=False, busy=False, logged=True, skipped=0)  # e.g. UpdateSubmitted: scan now
    assert rescan_due(first=False, busy=True, logged=False, skipped=0)  # a pending update moves with every block
    assert not rescan_due(first=False, busy=False, logged=False, skipped=MAX_SKIPPED_POLLS - 1)
    assert rescan_due(first=False, busy=False, logged=False, skipped=MAX_SKIPPED_POLLS)  # leases run out by time


def test_the_fast_path_is_open_only_before_an_on_chain_draw() -> None:
    assert fast_path_open(update(phase=Phase.AWAITING_PANEL, validators=()))
    assert not fast_path_open(update(phase=Phase.VOTING))
    assert not fast_path_open(update(phase=Phase.AWAITING_ESCALATION, validators=()))
    assert not fast_path_open(update(status=UpdateStatus.ACCEPTED, phase=Phase.AWAITING_PANEL, validators=()))


def test_a_first_panel_is_drawn_on_chain_only_after_its_signing_window_an_escalation_at_once() -> None:
    first = update(phase=Phase.AWAITING_PANEL, validators=())
    window = signing_window_s(600, check_s=0.0)
    assert not first_draw_due(first, anchor_time=1000, now=1037, window_s=window)
    assert first_draw_due(first, anchor_time=1000, now=1038, window_s=window)
    escalation = update(phase=Phase.AWAITING_ESCALATION, validators=())
    assert first_draw_due(escalation, anchor_time=1000, now=1000, window_s=window)
    assert not first_draw_due(update(phase=Phase.VOTING), anchor_time=0, now=10**9, window_s=window)


def test_the_signing_window_fits_the_check_between_a_sixteenth_and_an_eighth_of_the_lease() -> None:
    assert signing_window_s(600, check_s=5.0) == 37  # a quick check: the floor, lease / 16
    assert signing_window_s(600, check_s=50.2) == 51  # the panel's checks fit, rounded up
    assert signing_window_s(600, check_s=400.0) == 75  # a silent member delays a round by lease / 8 at most
    first = update(phase=Phase.AWAITING_PANEL, validators=())
    assert not first_draw_due(first, anchor_time=1000, now=1051, window_s=signing_window_s(600, check_s=50.2))
    assert first_draw_due(first, anchor_time=1000, now=1052, window_s=signing_window_s(600, check_s=50.2))


def test_a_checks_expected_time_grows_with_the_model_the_challenge_and_the_round() -> None:
    demo = demo_spec(model="fmnist-cnn-v1", trainers=4)
    # The devnet's demo: ~1.7 s a check (1.2 MB delta and three 2.3 MB states at 8 MiB/s, 480 replayed samples and
    # two 512-sample loss passes at 2,000 samples/s), four updates a round: under lease / 16.
    assert 6.0 < expected_check_s(demo) < 8.0
    assert expected_check_s(replace(demo, loss_samples=1024)) == pytest.approx(expected_check_s(demo) + 4 * 1024 / 2000)
    assert expected_check_s(replace(demo, tasks_per_round=8)) == pytest.approx(2 * expected_check_s(demo))
    assert expected_check_s(replace(demo, spot_check_segments=6)) > expected_check_s(demo)
    assert signing_window_s(demo.payment.lease_seconds, expected_check_s(demo)) == 300 // 16
    # 11 M parameters: each state is 134 MB, so the window grows to its cap.
    big = demo_spec(model="resnet18-small-v1", trainers=4)
    assert expected_check_s(big) > 200
    assert signing_window_s(big.payment.lease_seconds, expected_check_s(big)) == 300 // 8


def test_a_vote_set_needs_every_panel_member_in_draw_order_and_keeps_a_split() -> None:
    book = VoteBook()
    panel = ("0xAa", "0xBb", "0xCc")
    book.add(0, 1, 50, "0xaa", True, SIG)
    book.add(0, 1, 50, "0xCC", True, SIG[::-1])
    assert book.vote_set(0, 1, 50, panel) is None  # 0xBb is missing
    assert (book.heard(0, 1, 50), book.heard(0, 1, 49), book.heard(0, 2, 50)) == (2, 0, 0)
    book.add(0, 1, 49, "0xbb", True, SIG)  # a vote for another anchor does not count
    assert book.vote_set(0, 1, 50, panel) is None
    book.add(0, 1, 50, "0xBB", False, SIG)
    votes = book.vote_set(0, 1, 50, panel)
    assert votes is not None and (votes.slot, votes.valid_mask) == (1, 0b101) and not votes.unanimous
    assert votes.signatures == (SIG, SIG, SIG[::-1])
    book.add(0, 1, 50, "0xbb", True, SIG)  # a later vote of the same member replaces its earlier one
    again = book.vote_set(0, 1, 50, panel)
    assert again is not None and again.valid_mask == 0b111 and again.unanimous
    assert book.vote_set(0, 1, 50, ()) is None
    book.forget_round(0)
    assert book.vote_set(0, 1, 50, panel) is None


def test_a_trainer_posts_its_own_votes_only_after_the_leader_had_its_chance() -> None:
    assert not trainer_settles(None, 100.0, 4.0)
    assert not trainer_settles(97.0, 100.0, 4.0)
    assert trainer_settles(96.0, 100.0, 4.0)


def test_a_node_withdraws_at_its_threshold_and_never_an_empty_balance() -> None:
    """Each withdrawal is a transaction: a working node waits for ``withdraw_min_wei``; a closing one takes all."""
    assert not withdrawal_due(0, 1) and not withdrawal_due(0, 0)
    assert withdrawal_due(1, 1)  # closing (at_least 1): any credit
    assert not withdrawal_due(10**16 - 1, 10**16) and withdrawal_due(10**16, 10**16)
