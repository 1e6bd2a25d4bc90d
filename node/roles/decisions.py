"""What each role decides, as pure functions over plain data: no network, no chain, no clock of their own.

The role modules read the chain and the network, call these, and act on the answer, so every decision a node makes
can be unit-tested with hand-built values (tests/node/test_decisions.py). Times are passed in: ``now`` is a Unix
time (ticket expiries, leases), ``mono`` a ``time.monotonic()`` reading (a round's deadlines).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from protocols.chain.models import (
    MAX_LOSS_REDUCTION,
    JobInfo,
    JobStatus,
    Phase,
    RoundInfo,
    TrainerInfo,
    UpdateInfo,
    UpdateStatus,
    slots_mask,
)
from protocols.chain.ticket import VoteSet
from protocols.specs import TaskTicket, UpdateManifest
from protocols.types import RejectCode
from protocols.wire import TaskResponse

# -- every role ----------------------------------------------------------------------------------------------------


def jobs_to_start(job_ids: Iterable[int], serving: Collection[int]) -> list[int]:
    """The jobs a role is not serving yet, in order."""
    return [job_id for job_id in job_ids if job_id not in serving]


MAX_SKIPPED_POLLS = 9
"""An idle role scans in full at least every tenth poll, whatever the chain logged: a safety net. What moves by time
alone (a signing or vote window closing, content retried until its deadline) belongs to a pending update, and a role
with one is busy and scans every poll."""


def rescan_due(*, first: bool, busy: bool, logged: bool, skipped: int) -> bool:
    """Whether a polling role reads the chain in full now (``first``: it never did; ``busy``: its last scan found
    work that moves with every block, such as an update waiting for its draw; ``logged``: the contract emitted an
    event since its last scan; ``skipped``: polls skipped since then). Every change of the contract's state that a role
    acts on emits an event, so an idle role needs nothing but the contract's logs since its last scan (one
    ``eth_getLogs`` a poll for the whole node, :class:`~node.roles.chain_view.ChainWatch`) on most polls."""
    return first or busy or logged or skipped >= MAX_SKIPPED_POLLS


def draw_ready(anchor_block: int, latest_block: int, draw_delay: int) -> bool:
    """Whether a draw anchored at ``anchor_block`` can be sent now: the contract draws from
    ``blockhash(anchor + DRAW_DELAY)``, which exists once a later block is mined, and a node estimates (and its
    transaction may be mined) at the latest block's number, so the latest block must be past that one."""
    return latest_block >= anchor_block + draw_delay + 1


# -- signed votes (the fast path of a verdict) ---------------------------------------------------------------------

FAST_PATH_LEASE_SHARE = 16
"""The shortest signing window: a first panel has at least a sixteenth of a lease after its anchor block to sign and
have its votes posted (``settleUpdates``); after its window anyone draws it on-chain (``drawValidators``) and it votes
there (a validator that signed votes its signed verdict at once)."""
FAST_PATH_MAX_LEASE_SHARE = 8
"""The longest signing window, an eighth of a lease: a silent member is only caught on-chain (its vote window of half
a lease starts at the on-chain draw), so every second of the window delays such a round, and window + vote window
must leave the escalation panel and the commit room inside the lease."""


def signing_window_s(lease_s: int, check_s: float) -> int:
    """Seconds after its anchor block a first panel has to sign before it may be drawn on-chain: long enough for
    its members' checks (``check_s``, :func:`node.roles.context.expected_check_s`: a window shorter than the replay
    sends every verdict on-chain), never shorter than ``lease / FAST_PATH_LEASE_SHARE`` nor longer than
    ``lease / FAST_PATH_MAX_LEASE_SHARE`` (what a silent panel member may delay a round by)."""
    floor, cap = lease_s // FAST_PATH_LEASE_SHARE, lease_s // FAST_PATH_MAX_LEASE_SHARE
    return max(floor, min(cap, math.ceil(check_s)))


def fast_path_open(update: UpdateInfo) -> bool:
    """Whether ``settleUpdates`` can still settle ``update``: pending, first panel not drawn on-chain."""
    return update.status == UpdateStatus.PENDING and update.phase == Phase.AWAITING_PANEL


def first_draw_due(update: UpdateInfo, anchor_time: int, now: int, window_s: int) -> bool:
    """Whether a due draw may be sent now: an escalation panel at once; the first panel only once its signed votes
    had their signing window (``window_s``, :func:`signing_window_s`) since the anchor block (drawing it on-chain
    closes the fast path, so nobody does while the panel may still be signing)."""
    if not update.draw_due():
        return False
    if update.phase != Phase.AWAITING_PANEL:
        return True
    return now > anchor_time + window_s


@dataclass
class VoteBook:
    """Signed first-panel votes heard on one job's topic, each already checked to be signed by its sender:
    (round, slot, anchor block) → member (lower-case) → (valid, 65-byte signature)."""

    votes: dict[tuple[int, int, int], dict[str, tuple[bool, bytes]]] = field(default_factory=dict)

    def add(self, r: int, slot: int, anchor: int, member: str, valid: bool, signature: bytes) -> None:
        self.votes.setdefault((r, slot, anchor), {})[member.lower()] = (valid, signature)

    def vote_set(self, r: int, slot: int, anchor: int, panel: Collection[str]) -> VoteSet | None:
        """The VoteSet of ``panel`` (draw order) for the draw at ``anchor``, or None while a member's vote is
        missing (a split set is returned too: posting it escalates, as the on-chain votes would)."""
        heard = self.votes.get((r, slot, anchor), {})
        members = [m.lower() for m in panel]
        if not members or any(m not in heard for m in members):
            return None
        mask = sum(1 << i for i, m in enumerate(members) if heard[m][0])
        return VoteSet(slot=slot, valid_mask=mask, signatures=tuple(heard[m][1] for m in members))

    def heard(self, r: int, slot: int, anchor: int) -> int:
        """How many members' votes on the draw at ``anchor`` were heard."""
        return len(self.votes.get((r, slot, anchor), {}))

    def heard_any(self, r: int, slot: int) -> bool:
        """Whether any vote on round ``r``'s update in ``slot`` was heard, on any draw."""
        return any(key[0] == r and key[1] == slot for key in self.votes)

    def forget_round(self, r: int) -> None:
        """Drop the votes of round ``r`` and earlier (settled or closed by the commit)."""
        for key in [k for k in self.votes if k[0] <= r]:
            del self.votes[key]


def trainer_settles(complete_since: float | None, mono: float, wait_s: float) -> bool:
    """Whether a trainer posts its own update's complete, still unposted panel of signed votes: the leader had
    ``wait_s`` (monotonic seconds) since the set was complete and did not (a leader that omits a settlement only
    delays it; the trainer has the motive to post)."""
    return complete_since is not None and mono - complete_since >= wait_s


# -- leader --------------------------------------------------------------------------------------------------------


class LeaderStep(enum.Enum):
    STOP = "stop"
    """The job is closed."""
    LEAD = "lead"
    """This node holds an unexpired lease: run the next round."""
    DRAW_SUCCESSOR = "draw-successor"
    """The lease ran out and no successor draw is pending: ``drawSuccessor`` fixes the block that draws it."""
    CLAIM = "claim"
    """This node was drawn successor (or the grace window is over, or nobody leads): ``claimLeadership``."""
    WAIT = "wait"
    """Another node leads, or another candidate was drawn successor and its grace window runs."""
    STAND = "stand"
    """The lease is up for grabs and this node is no candidate (any more): ``standForLeader`` first. A leader whose
    lease lapsed loses its candidacy when another claims; without standing again a job whose other candidates died
    would stall."""


def lease_open(job: JobInfo, now: int) -> bool:
    """Whether nobody holds the job's lease at chain time ``now`` (no leader, or its lease ran out)."""
    return job.leader is None or now > job.lease_expiry


def leader_step(job: JobInfo, me: str, now: int, successor: str | None, *, standing: bool = True) -> LeaderStep:
    """What a leader candidate does next, given the job as the chain has it, the chain's time ``now``, the drawn
    successor (``successor(jobId)``: None until the successor draw's block is mined) and whether this node stands
    as a candidate now (only read while :func:`lease_open`)."""
    if job.status != JobStatus.ACTIVE:
        return LeaderStep.STOP
    if job.leader is not None and job.leader.lower() == me.lower() and now < job.lease_expiry:
        return LeaderStep.LEAD
    if not standing and lease_open(job, now):
        return LeaderStep.STAND
    if job.leader is None:
        return LeaderStep.CLAIM
    # drawSuccessor and claimLeadership need block time strictly past the expiry; at the expiry second they revert.
    if now <= job.lease_expiry:
        return LeaderStep.WAIT
    if now > job.lease_expiry + job.params.lease_seconds:  # grace window over: any candidate may claim
        return LeaderStep.CLAIM
    if job.successor_anchor == 0:
        return LeaderStep.DRAW_SUCCESSOR
    if successor is not None and successor.lower() == me.lower():
        return LeaderStep.CLAIM
    return LeaderStep.WAIT


def candidate_idle_s(step: LeaderStep, job: JobInfo, me: str, now: int, poll_s: float) -> float:
    """For how many seconds from ``now`` (chain time) a leader candidate may skip its full reads of the job unless
    the contract logs something (:class:`~node.roles.chain_view.ScanGate`): while another node holds a lease that
    runs past the next few polls. Everything else a candidate acts on emits an event (a claim, a successor draw, a
    lost candidacy, the job's end) except the lease running out, which is time: the candidate reads in full again
    ``2 * poll_s`` before the expiry (and every poll while a grace window or its own work runs). 0: read every poll."""
    if step != LeaderStep.WAIT or job.leader is None or job.leader.lower() == me.lower() or now >= job.lease_expiry:
        return 0.0
    return max(0.0, job.lease_expiry - now - 2 * poll_s)


CANDIDATE_IDLE_POLLS = 4
"""How many chain polls an idle leader candidate lets pass between its looks at the contract's logs."""


def candidate_poll_s(poll_s: float, idle_left_s: float) -> float:
    """How long an idle candidate sleeps before it next looks at the contract's logs: :data:`CANDIDATE_IDLE_POLLS`
    polls while another node's lease runs on past them (``idle_left_s``, from :func:`candidate_idle_s`), never
    past that point, and never less than one poll. What it waits for is a lease's end (read every poll from two
    polls before it) or a leadership event, which a few seconds' delay does not hurt: a successor's grace window is a
    whole lease. (Measured on the devnet: 0.26 → 0.23 CPU-s a round, docs/BENCHMARKS.md.)"""
    return max(poll_s, min(CANDIDATE_IDLE_POLLS * poll_s, idle_left_s))


@dataclass
class TicketLifetime:
    """How long a leader's tickets last: long enough for the job's tasks on its trainers, short enough that a slot
    held by a silent trainer is handed out again.

    A node's ``task_timeout_s`` cannot know the job: a 10M-parameter model's task on a CPU trainer outlasts it, and
    a ticket that expires before its update is submitted makes ``submitUpdate`` revert (``TicketExpired``) and the
    same work start over, round after round. So the lifetime starts at ``base_s`` and learns from the job: a ticket
    that lapsed with its slot unfilled doubles it, and an update submitted ``d`` seconds after its ticket raises it
    to ``2 d``. It never shrinks during the leader's term, and a ticket never outlives the round's own limit (the
    lease), past which it is useless; nor is it ever shorter than ``base_s``, the node's setting.
    """

    base_s: float
    current_s: float = 0.0

    def __post_init__(self) -> None:
        self.current_s = max(self.current_s, self.base_s)

    def expiry(self, now: float, round_left_s: float) -> int:
        """The ``expires_at`` (chain time) of a ticket issued at ``now`` with ``round_left_s`` left in the round."""
        return int(now + max(self.base_s, min(self.current_s, round_left_s)))

    def lapsed(self, count: int, cap_s: float) -> None:
        """``count`` tickets expired with their slots unfilled: double the lifetime per ticket, up to ``cap_s``."""
        for _ in range(count):
            self.current_s = max(self.current_s, min(2 * self.current_s, cap_s))

    def filled(self, seconds: float) -> None:
        """An update was submitted ``seconds`` after its ticket was issued."""
        self.current_s = max(self.current_s, 2 * seconds)


@dataclass
class RoundState:
    """What a leader knows about the round it is running. Updates are per slot (0..tasks_per_round-1)."""

    round: int
    base_cid: str
    term: int
    deadline: float
    """Monotonic time after which the round closes with what was accepted so far."""
    hard_deadline: float
    """Past ``deadline`` a round with no accepted update keeps waiting, until this (just before the lease ends)."""
    tickets: dict[str, TaskTicket] = field(default_factory=dict)
    """trainer address (lower-case) → the ticket it holds this round (the latest one)."""
    eligible: set[str] = field(default_factory=set)
    """Trainers (lower-case) the chain showed registered with enough free stake this round."""
    submitted: dict[int, str] = field(default_factory=dict)
    """slot → trainer (lower-case) of each update on-chain this round, as last read by the collector."""
    decided: dict[int, tuple[UpdateStatus, str, str]] = field(default_factory=dict)
    """slot → (final status, trainer, manifest CID): decided updates never change, so they are read once."""
    issued_at: dict[str, float] = field(default_factory=dict)
    """trainer address (lower-case) → when its ticket was issued (chain time), for :class:`TicketLifetime`."""
    lapsed: set[tuple[str, int]] = field(default_factory=set)
    """(trainer, expires_at) of each ticket already counted as lapsed unfilled."""

    def newly_lapsed(self, now: float) -> int:
        """How many tickets expired with their slot unfilled since the last call (each is counted once)."""
        fresh = {(trainer, t.expires_at) for trainer, t in self.tickets.items()
                 if t.expires_at <= now and t.slot not in self.submitted} - self.lapsed
        self.lapsed |= fresh
        return len(fresh)

    def live_ticket(self, trainer: str, now: float) -> TaskTicket | None:
        """The unexpired ticket ``trainer`` already holds this round (asked again: same answer)."""
        ticket = self.tickets.get(trainer.lower())
        return ticket if ticket is not None and ticket.expires_at > now else None

    def outstanding(self, now: float) -> list[TaskTicket]:
        """Unexpired tickets whose slots nobody filled yet: slots still in play."""
        return [t for t in self.tickets.values() if t.slot not in self.submitted and t.expires_at > now]

    def free_slot(self, tasks_per_round: int, now: float) -> int | None:
        """The lowest slot neither filled on-chain nor held by an unexpired ticket (an expired ticket's slot is
        handed out again: the contract accepts whichever valid ticket for it comes first)."""
        held = {t.slot for t in self.outstanding(now)}
        return next((s for s in range(tasks_per_round) if s not in self.submitted and s not in held), None)

    def accepted(self) -> list[tuple[int, str, str]]:
        """(slot, trainer, manifest CID) of every update decided ACCEPTED, by slot."""
        return [(slot, trainer, cid) for slot, (status, trainer, cid) in sorted(self.decided.items())
                if status == UpdateStatus.ACCEPTED]


def refuse_before_reading(st: RoundState | None, request_round: int) -> TaskResponse | None:
    """The refusal a leader sends without reading anything (not leading a round, or asked for another round)."""
    if st is None:
        return TaskResponse(reject=RejectCode.NOT_LEADER, detail="not leading a round right now")
    if request_round != st.round:
        return TaskResponse(reject=RejectCode.BAD_ROUND, detail=f"the current round is {st.round}")
    return None


def ineligibility(info: TrainerInfo, min_stake: int, update_bond: int) -> str:
    """Why the contract would refuse an update from a trainer in this state (empty when it would not).

    Such a trainer's ticket would only hold a slot until it expires: a trainer slashed for fabricated work keeps
    asking (measured: it held a slot of every later round for the whole ticket lifetime).
    """
    if not info.registered:
        return "register as a trainer on-chain first"
    if info.stake < min_stake:
        return f"stake {info.stake} wei is below the minimum {min_stake} wei (slashed?): top it up"
    if info.free_stake < update_bond:
        return (f"free stake {info.free_stake} wei is below the job's update bond {update_bond} wei: add stake "
                "(addTrainerStake) or wait for pending updates to settle")
    return ""


def refuse_slot(st: RoundState, trainer: str, tasks_per_round: int, now: float) -> TaskResponse | None:
    """The refusal of an eligible trainer without a live ticket: it already submitted, or every slot is taken."""
    if trainer.lower() in st.submitted.values():
        return TaskResponse(reject=RejectCode.ALREADY_SUBMITTED, detail="one update per trainer per round")
    if st.free_slot(tasks_per_round, now) is None:
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
    accepted: list[tuple[int, str, str]]
    """(slot, trainer, manifest CID) of every update accepted in the round; empty for LEASE_ENDING."""

    @property
    def mask(self) -> int:
        """The ``acceptedMask`` to commit with."""
        return slots_mask(slot for slot, _, _ in self.accepted)


def round_close(st: RoundState, tasks_per_round: int, *, now: float, mono: float) -> RoundClose | None:
    """Whether the round can close, and with which updates; None to keep waiting for verdicts.

    ``st.submitted`` and ``st.decided`` must hold what the chain showed last. A round closes when every slot is
    decided, or when no ticket is outstanding and every update is decided (and some accepted), or at the deadline
    with accepted work once every submitted update is decided (tickets still out are given up), or at the hard
    deadline (with the accepted work, if any: updates still pending then expire at the commit): a trainer or
    validator that never answers cannot stall it.

    A submitted update's verdict is awaited until the hard deadline, not just the soft one: an update pending at the
    commit expires with its bond unlocked, so a trainer that makes its own check slow (withheld segments, content
    served at a crawl) would otherwise get a fabricated update off unslashed, and an honest one unpaid.
    """
    accepted = st.accepted()
    decided = len(st.decided)
    if decided >= tasks_per_round:
        return RoundClose(CloseReason.ALL_DECIDED, accepted)
    all_submitted_decided = decided == len(st.submitted)
    if st.tickets and not st.outstanding(now) and all_submitted_decided and accepted:
        return RoundClose(CloseReason.NOTHING_OUTSTANDING, accepted)
    if mono >= st.deadline and accepted and all_submitted_decided:
        return RoundClose(CloseReason.DEADLINE, accepted)
    if mono >= st.hard_deadline:
        return RoundClose(CloseReason.DEADLINE, accepted) if accepted else RoundClose(CloseReason.LEASE_ENDING, [])
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
    """An accepted update of a priced round nobody paid: its trainer (or anyone) can call ``payout``."""
    return update.status == UpdateStatus.ACCEPTED and not update.paid


def withdrawal_due(owed: int, at_least: int) -> bool:
    """Whether a node withdraws its credited balance ``owed`` now: once it reaches ``at_least`` (the node's
    ``withdraw_min_wei`` while it works, 1 when a job it served closed); never an empty withdrawal."""
    return owed > 0 and owed >= at_least


def stake_shortfall(info: TrainerInfo, update_bond: int) -> int:
    """Wei a trainer must add (``addTrainerStake``) so that its free stake covers one more update's bond."""
    return max(0, update_bond - info.free_stake)


def claimed_loss_reduction(manifest: UpdateManifest) -> int:
    """The loss reduction a trainer states in ``submitUpdate`` (micro-units): what its manifest's losses say,
    clipped to 0 .. ``MAX_LOSS_REDUCTION`` (the contract stores 32 bits). The validators vote on exactly this claim;
    the replay checks the manifest's losses."""
    return min(MAX_LOSS_REDUCTION, max(0, manifest.loss_before_micro - manifest.loss_after_micro))


# -- validator -----------------------------------------------------------------------------------------------------


def skip_check(update: UpdateInfo, me: str) -> str | None:
    """Why this validator does not vote on ``update`` in its current phase, or None when it must."""
    if update.status != UpdateStatus.PENDING:
        return "decided"
    if me.lower() not in (v.lower() for v in update.voting_panel):
        return "not-drawn"
    if update.has_voted(me):
        return "voted"
    return None


def content_given_up(first_failure: float | None, mono: float, deadline_s: float) -> bool:
    """Whether content that failed to arrive since ``first_failure`` (monotonic) is overdue: past the validator's
    ``content_deadline_s`` an update whose manifest or challenged segments stay unavailable is voted invalid
    (a trainer that withholds its content loses its bond instead of stalling the round)."""
    return first_failure is not None and mono - first_failure >= deadline_s


# -- auditor -------------------------------------------------------------------------------------------------------


def asked_to_audit(me: str, info: RoundInfo) -> bool:
    """Whether this node reports on a committed round now: only the audit panel voting in the current phase may
    (the first panel, or the escalation panel), once each."""
    return me.lower() in (a.lower() for a in info.audit_panel) and not info.has_audited(me)


def rounds_to_audit(committed: int, handled: Collection[int]) -> list[int]:
    return [r for r in range(committed) if r not in handled]


def audits_finished(job: JobInfo, handled: Collection[int]) -> bool:
    """A closed job whose every committed round was handled: the auditor never reads it again."""
    return job.status != JobStatus.ACTIVE and len(handled) >= job.committed_rounds
