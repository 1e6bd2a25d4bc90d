"""What each role decides, as pure functions over plain data: no network, no chain, no clock of their own.

The role modules read the chain and the network, call these, and act on the answer, so every decision a node makes
can be unit-tested with hand-built values (tests/node/test_decisions.py). Times are passed in: ``now`` is a Unix
time (ticket expiries, leases), ``mono`` a ``time.monotonic()`` reading (a round's deadlines).
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

from protocols.chain.models import JobInfo, JobStatus, TrainerInfo, UpdateInfo, UpdateStatus
from protocols.specs import TaskTicket
from protocols.types import RejectCode
from protocols.wire import TaskResponse

# -- every role ----------------------------------------------------------------------------------------------------


def jobs_to_start(job_ids: Iterable[int], serving: Collection[int]) -> list[int]:
    """The jobs a role is not serving yet, in order."""
    return [job_id for job_id in job_ids if job_id not in serving]


# -- leader --------------------------------------------------------------------------------------------------------


class LeaderStep(enum.Enum):
    STOP = "stop"
    """The job is closed."""
    LEAD = "lead"
    """This node holds an unexpired lease: run the next round."""
    CLAIM = "claim"
    """Nobody leads, or the lease has run out: try ``claimLeadership``."""
    WAIT = "wait"
    """Another node leads (or its lease ends this very second)."""


def leader_step(job: JobInfo, me: str, now: int) -> LeaderStep:
    """What a leader candidate does next, given the job as the chain has it and the chain's time ``now``."""
    if job.status != JobStatus.ACTIVE:
        return LeaderStep.STOP
    if job.leader is not None and job.leader.lower() == me.lower() and now < job.lease_expiry:
        return LeaderStep.LEAD
    # claimLeadership needs block time strictly past the expiry; at the expiry second it reverts.
    if job.leader is None or now > job.lease_expiry:
        return LeaderStep.CLAIM
    return LeaderStep.WAIT


@dataclass
class RoundState:
    """What a leader knows about the round it is running."""

    round: int
    base_cid: str
    term: int
    deadline: float
    """Monotonic time after which the round closes with what was accepted so far."""
    hard_deadline: float
    """Past ``deadline`` a round with no accepted update keeps waiting, until this (just before the lease ends)."""
    tickets: dict[str, TaskTicket] = field(default_factory=dict)
    """trainer address (lower-case) → the ticket it holds this round."""
    slots_used: int = 0
    eligible: set[str] = field(default_factory=set)
    """Trainers (lower-case) the chain showed registered with enough stake this round (read once per round)."""
    submitted: set[str] = field(default_factory=set)
    """Trainers (lower-case) with an update on-chain this round, as last read by the collector."""
    decided: dict[str, tuple[UpdateStatus, str]] = field(default_factory=dict)
    """Trainer → (final status, manifest CID): decided updates never change, so they are read once."""

    def live_ticket(self, trainer: str, now: float) -> TaskTicket | None:
        """The unexpired ticket ``trainer`` already holds this round (asked again: same answer)."""
        ticket = self.tickets.get(trainer.lower())
        return ticket if ticket is not None and ticket.expires_at > now else None

    def outstanding(self, now: float) -> list[TaskTicket]:
        """Unexpired tickets whose trainers have not submitted yet: slots still in play."""
        return [t for k, t in self.tickets.items() if k not in self.submitted and t.expires_at > now]

    def accepted(self, trainers: Sequence[str]) -> list[tuple[str, str]]:
        """The (trainer, manifest CID) pairs of ``trainers`` (in their on-chain order) decided ACCEPTED."""
        return [(t, self.decided[t.lower()][1]) for t in trainers
                if self.decided.get(t.lower(), (None, ""))[0] == UpdateStatus.ACCEPTED]


def refuse_before_reading(st: RoundState | None, request_round: int) -> TaskResponse | None:
    """The refusal a leader sends without reading anything (not leading a round, or asked for another round)."""
    if st is None:
        return TaskResponse(reject=RejectCode.NOT_LEADER, detail="not leading a round right now")
    if request_round != st.round:
        return TaskResponse(reject=RejectCode.BAD_ROUND, detail=f"the current round is {st.round}")
    return None


def ineligibility(info: TrainerInfo, min_stake: int) -> str:
    """Why the contract would refuse an update from a trainer in this state (empty when it would not).

    Such a trainer's ticket would only hold a slot until it expires: a trainer slashed for fabricated work keeps
    asking (measured: it held a slot of every later round for the whole ticket lifetime).
    """
    if not info.registered:
        return "register as a trainer on-chain first"
    if info.stake < min_stake:
        return f"stake {info.stake} wei is below the minimum {min_stake} wei (slashed?): top it up"
    return ""


def refuse_slot(st: RoundState, trainer: str, tasks_per_round: int, now: float) -> TaskResponse | None:
    """The refusal of an eligible trainer without a live ticket: it already submitted, or every slot is taken."""
    if trainer.lower() in st.submitted:
        return TaskResponse(reject=RejectCode.ALREADY_SUBMITTED, detail="one update per trainer per round")
    if len(st.submitted) + len(st.outstanding(now)) >= tasks_per_round:
        return TaskResponse(reject=RejectCode.ROUND_FULL, detail="every slot of this round is taken")
    return None


class CloseReason(enum.Enum):
    ALL_DECIDED = "every slot decided"
    NOTHING_OUTSTANDING = "every ticket used or expired and every update decided"
    DEADLINE = "deadline reached with accepted updates"
    LEASE_ENDING = "no accepted update before the lease ends"
    """Closes with nothing: the contract commits only rounds with accepted work, so the leader lets the lease
    run out rather than commit; a successor (or this node, re-elected) starts the round again."""


@dataclass(frozen=True)
class RoundClose:
    reason: CloseReason
    accepted: list[tuple[str, str]]
    """(trainer, manifest CID) of every update accepted in the round; empty for LEASE_ENDING."""


def round_close(st: RoundState, trainers: Sequence[str], tasks_per_round: int, *, now: float,
                mono: float) -> RoundClose | None:
    """Whether the round can close, and with which updates; None to keep waiting for verdicts.

    ``trainers``: the round's updates on-chain; ``st.decided`` must hold the verdicts read so far. A round closes
    when every slot is decided, or when no ticket is outstanding and every update is decided (and some accepted), or
    at the deadline with accepted work, or at the hard deadline without: a trainer or validator that never answers
    cannot stall it.
    """
    accepted = st.accepted(trainers)
    decided = len(st.decided)
    if decided >= tasks_per_round:
        return RoundClose(CloseReason.ALL_DECIDED, accepted)
    if st.tickets and not st.outstanding(now) and decided == len(trainers) and accepted:
        return RoundClose(CloseReason.NOTHING_OUTSTANDING, accepted)
    if mono >= st.deadline:
        if accepted:
            return RoundClose(CloseReason.DEADLINE, accepted)
        if mono >= st.hard_deadline:
            return RoundClose(CloseReason.LEASE_ENDING, [])
    return None


# -- trainer -------------------------------------------------------------------------------------------------------


class TrainerStep(enum.Enum):
    STOP = "stop"
    """The job is closed: collect any pay left unpaid, then stop serving it."""
    WAIT = "wait"
    """No leader yet."""
    WORK = "work"
    """Ask the leader for a task in the job's current round (unless this node already submitted in it)."""


def trainer_step(job: JobInfo) -> TrainerStep:
    if job.status != JobStatus.ACTIVE:
        return TrainerStep.STOP
    if job.leader is None:
        return TrainerStep.WAIT
    return TrainerStep.WORK


def wait_out_round(reject: RejectCode | None) -> bool:
    """Whether a refused trainer waits for the next round rather than asking again shortly.

    Only a full round (or our own update already in it) is worth waiting out; any other refusal (the leader still
    committing the previous round, not leading yet) is retried shortly.
    """
    return reject in (RejectCode.ROUND_FULL, RejectCode.ALREADY_SUBMITTED)


def pay_left_unpaid(update: UpdateInfo) -> bool:
    """An accepted update nobody paid: its trainer (or anyone) can call ``payout``."""
    return update.status == UpdateStatus.ACCEPTED and not update.paid


# -- validator -----------------------------------------------------------------------------------------------------


def skip_check(update: UpdateInfo, me: str) -> str | None:
    """Why this validator need not check ``update`` (final: never re-read), or None when it must (after making
    sure it did not vote before a restart)."""
    if me.lower() not in (v.lower() for v in update.validators):
        return "not-drawn"
    if update.status != UpdateStatus.PENDING:
        return "decided-without-us"
    return None


def segments_to_fetch(chosen: Iterable[int], n_segments: int) -> list[int]:
    """The segment states a replay of segments ``chosen`` needs: each one's start (the previous segment's end)
    and end, and the last (the claimed final state)."""
    return sorted({n_segments - 1} | {i for s in chosen for i in (s - 1, s) if 0 <= i < n_segments})


# -- auditor -------------------------------------------------------------------------------------------------------


def asked_to_audit(me: str, updates: Iterable[UpdateInfo], *, audit_all: bool) -> bool:
    """Whether this node audits a round (not its own commit): it was drawn to vote on one of its updates (it
    already holds those), or it audits every round."""
    return audit_all or any(me.lower() in (v.lower() for v in u.validators) for u in updates)


def rounds_to_audit(committed: int, handled: Collection[int]) -> list[int]:
    return [r for r in range(committed) if r not in handled]


def audits_finished(job: JobInfo, handled: Collection[int]) -> bool:
    """A closed job whose every committed round was handled: the auditor never reads it again."""
    return job.status != JobStatus.ACTIVE and len(handled) >= job.committed_rounds
