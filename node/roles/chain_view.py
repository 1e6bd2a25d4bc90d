"""The roles' view of the job contract: every read and transaction a role makes, awaited under the chain deadline.

Roles never call :class:`~protocols.chain.client.JobManagerClient` directly: each method here runs one client call
in a worker thread through :class:`~node.chainio.AsyncChain` (so a hung chain raises ``ChainTimeout`` instead of
hanging a node) with a ``what=`` label naming the contract function for the logs. The few facts several roles derive
from the chain are defined once here: which jobs to scan (:class:`JobScanner`), the checkpoint a round starts from
(:meth:`ChainView.base_checkpoint`) and whether a job's spec agrees with the job's on-chain parameters
(:func:`check_spec`: the contract pays and counts by its own copy, so a role must never act on a spec that differs).

:class:`ChainView` never caches chain state that can change (a job, an update): every call reads the chain again.
Three exceptions, each because the value cannot change or because its change is logged: a committed round's
checkpoint (:meth:`ChainView.base_checkpoint`), the head for :data:`HEAD_TTL_S`, and the job count, read again once
``JobCreated`` was logged (:class:`JobScanner` with a :class:`ChainWatch`). Above it, a value whose every change the
contract logs is kept in a :class:`GatedRead` until one of its events (or the gate's tenth call): a scanned job
(:data:`JOB_STATE_EVENTS`, :class:`JobScanner`), a round's audit state (:data:`AUDIT_EVENTS`, the auditor), a
round's submissions and updates (:class:`RoundReads`, the validator and the leader) and a trainer's own update
(:data:`UPDATE_STATE_EVENTS`). The validator reads an update no more once decided (final: a slot is submitted once a
round).
"""

from __future__ import annotations

import functools
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Generic, TypeVar

from node.chainio import AsyncChain
from node.roles.customer import job_params
from node.roles.decisions import draw_ready, first_draw_due, rescan_due, withdrawal_due
from node.roles.wakeup import Wakeup
from protocols.chain.client import JobManagerClient, TxResult
from protocols.chain.errors import ChainError, ContractRevert
from protocols.chain.events import LogKey, keys_overlap
from protocols.chain.feed import HeadNotice, LogNotice
from protocols.chain.models import (
    Candidate,
    JobInfo,
    JobStatus,
    Phase,
    RoundCommit,
    RoundInfo,
    Submission,
    TrainerInfo,
    UpdateInfo,
    ValidatorInfo,
)
from protocols.chain.ticket import TicketDomain, VoteSet
from protocols.errors import SchemaError
from protocols.specs import JobSpec, TaskTicket
from protocols.types import NodeClass


class SpecMismatch(SchemaError):
    """A job's spec (fetched by the CID on-chain) disagrees with the parameters the contract holds for the job."""


def spec_mismatches(spec: JobSpec, info: JobInfo) -> list[str]:
    """Each on-chain parameter of ``info`` that ``spec`` states differently, as ``name: spec X, chain Y``."""
    expected = job_params(spec, info.params.spec_cid)
    return [f"{f.name}: spec {getattr(expected, f.name)}, chain {getattr(info.params, f.name)}"
            for f in fields(expected) if getattr(expected, f.name) != getattr(info.params, f.name)]


def check_spec(spec: JobSpec, info: JobInfo) -> JobSpec:
    """``spec`` if it agrees with ``info``'s on-chain parameters; raises :class:`SpecMismatch` naming each
    difference otherwise (the job was created with other numbers than its published spec states)."""
    problems = spec_mismatches(spec, info)
    if problems:
        raise SpecMismatch(f"job {info.job_id}: its spec {info.params.spec_cid} disagrees with the job's on-chain "
                           f"parameters ({'; '.join(problems)}); not serving a job whose spec the contract does not "
                           "enforce")
    return spec


HEAD_TTL_S = 0.5
"""How long :class:`ChainView` answers ``block_number`` and ``chain_time`` from one read of the latest block."""
PUSHED_HEAD_TTL_S = 12.0
"""While the chain feed is live the head is heard, not read, until it is this old (a chain that mines no block for
that long, or a feed that stalls without closing: it is read again)."""


@dataclass
class ChainView:
    """The job contract as the roles use it, as ``address``. Every method raises ``ChainError`` subclasses: a
    ``ContractRevert`` for a refused transaction, ``ChainUnavailable``/``ChainTimeout`` when the chain is down.

    Updates are addressed by (job, round, slot); their CIDs come from ``UpdateSubmitted`` logs (:meth:`submissions`).
    Constants of the deployment (``DRAW_DELAY``, the EIP-712 domain), block times and leases are read once; the head
    (latest block number and time) is shared for :data:`HEAD_TTL_S`; nothing else is cached.
    """

    client: JobManagerClient
    chain: AsyncChain
    address: str
    signing_window: Callable[[int], Awaitable[int]]
    """A job's first-panel signing window in seconds (``NodeContext.signing_window_s``: it needs the job's spec)."""
    _draw_delay: int | None = None
    _domain: TicketDomain | None = None
    _block_times: dict[int, int] = field(default_factory=dict)
    _leases: dict[int, int] = field(default_factory=dict)
    _head: tuple[float, int, int] | None = None
    """(monotonic time read, number, timestamp) of the latest block as last read or heard."""
    head_pushed: bool = False
    """The chain feed is live (:class:`ChainWatch`): every new head is heard as it is mined, and :attr:`_head` is
    the latest block without reading it (for up to :data:`PUSHED_HEAD_TTL_S`)."""
    _committed: dict[tuple[int, int], str] = field(default_factory=dict)
    """(job, round) → the round's committed checkpoint CID: set once by ``commitRound``, never changed (a disputed
    audit marks the job, not the checkpoint)."""

    # -- jobs, rounds, updates ------------------------------------------------------------------------------------

    async def job(self, job_id: int) -> JobInfo:
        return await self.chain(lambda: self.client.get_job(job_id), what=f"getJob({job_id})")

    async def job_count(self) -> int:
        return await self.chain(self.client.job_count, what="jobCount")

    async def round_info(self, job_id: int, r: int) -> RoundInfo:
        return await self.chain(lambda: self.client.get_round(job_id, r), what="getRound")

    async def submissions(self, job_id: int, r: int) -> list[Submission]:
        """The updates admitted in round ``r`` (slot, trainer, CID, ticket hash), in chain order."""
        return await self.chain(lambda: self.client.submissions(job_id, r), what="UpdateSubmitted logs")

    async def update(self, job_id: int, r: int, slot: int) -> UpdateInfo:
        return await self.chain(lambda: self.client.get_update(job_id, r, slot), what="getUpdate")

    async def updates(self, job_id: int, r: int) -> list[tuple[Submission, UpdateInfo]]:
        """Every admitted update of round ``r`` with its state now."""
        return [(s, await self.update(job_id, r, s.slot)) for s in await self.submissions(job_id, r)]

    async def base_checkpoint(self, spec: JobSpec, job_id: int, r: int) -> str:
        """The checkpoint round ``r`` starts from: the job's initial one, then the one committed in round r-1."""
        if r == 0:
            return spec.initial_checkpoint_cid
        if (job_id, r - 1) not in self._committed:
            info = await self.round_info(job_id, r - 1)
            if info.checkpoint_cid is None:
                raise ChainError(f"job {job_id}: round {r - 1} has no committed checkpoint yet")
            self._committed[(job_id, r - 1)] = info.checkpoint_cid
        return self._committed[(job_id, r - 1)]

    async def round_commits(self, job_id: int) -> list[RoundCommit]:
        return await self.chain(lambda: self.client.round_commits(job_id), what="RoundCommitted logs")

    async def leader_history(self, job_id: int) -> set[str]:
        """Every address ever elected leader of ``job_id`` (from LeaderElected logs), lower-case."""
        client = self.client

        def read() -> set[str]:
            return {str(e.args["leader"]).lower() for e in client.get_events(names=["LeaderElected"], job_id=job_id)}

        return await self.chain(read, what="LeaderElected logs")

    async def chain_time(self) -> int:
        """What the chain will call "now" for our next transaction.

        Leases are measured in block time, but a chain that mines only on transactions (Hardhat's automine, a quiet
        testnet) leaves the latest block's timestamp behind while nobody sends anything; a stalled leader sends
        nothing. The next block's timestamp is at least this machine's clock, so we take the later of the two: a
        candidate that read only the stale block time would wait forever for a lease that has long expired.
        """
        _, block_time = await self._latest()
        return max(block_time, int(time.time()))

    async def block_number(self) -> int:
        number, _ = await self._latest()
        return number

    async def _latest(self) -> tuple[int, int]:
        """The latest block's (number, timestamp), read at most once per :data:`HEAD_TTL_S`: a role checks each
        pending update's draw and windows against the head every poll (two reads an update), and the roles of a node
        poll together; on chains with 1 s blocks or slower a head half a second old is the same decision."""
        now = time.monotonic()
        ttl = PUSHED_HEAD_TTL_S if self.head_pushed else HEAD_TTL_S
        if self._head is None or now - self._head[0] >= ttl:
            w3 = self.client.w3
            block = await self.chain(lambda: w3.eth.get_block("latest"), what="latest block")
            self.heard_head(int(block["number"]), int(block["timestamp"]))
        assert self._head is not None
        return self._head[1], self._head[2]

    def heard_head(self, number: int, timestamp: int) -> None:
        """A new head pushed by the chain feed (an older one, heard late, is ignored)."""
        if self._head is None or number >= self._head[1]:
            self._head = (time.monotonic(), number, timestamp)

    async def logged_events(self, first_block: int) -> list[tuple[int, str, LogKey]]:
        """(block, event name, (jobId, round, slot)) of each event the contract emitted from ``first_block`` to the
        latest block."""
        return await self.chain(lambda: self.client.logged_events(first_block), what="eth_getLogs")

    async def draw_delay(self) -> int:
        if self._draw_delay is None:
            self._draw_delay = await self.chain(self.client.draw_delay, what="DRAW_DELAY")
        return self._draw_delay

    async def ticket_domain(self) -> TicketDomain:
        """The EIP-712 domain of this deployment (chain id and contract): what ticket signatures are bound to."""
        if self._domain is None:
            self._domain = await self.chain(self.client.ticket_domain, what="eth_chainId")
        return self._domain

    async def draw_ready(self, anchor_block: int) -> bool:
        """Whether a draw anchored at ``anchor_block`` can be made now (see :func:`decisions.draw_ready`)."""
        return draw_ready(anchor_block, await self.block_number(), await self.draw_delay())

    async def challenge_seed(self, job_id: int, r: int, slot: int) -> bytes:
        return await self.chain(lambda: self.client.challenge_seed(job_id, r, slot), what="challengeSeed")

    async def vote_panel(self, job_id: int, r: int, slot: int) -> tuple[tuple[str, ...], int]:
        """The first panel the fast path draws now and the anchor its votes name (see ``JobManagerReader``)."""
        return await self.chain(lambda: self.client.vote_panel(job_id, r, slot), what="votePanel")

    async def block_time(self, block: int) -> int:
        """A mined block's timestamp (immutable: cached)."""
        if block not in self._block_times:
            w3 = self.client.w3
            self._block_times[block] = await self.chain(lambda: int(w3.eth.get_block(block)["timestamp"]),
                                                        what=f"block({block})")
        return self._block_times[block]

    async def lease_seconds(self, job_id: int) -> int:
        if job_id not in self._leases:
            self._leases[job_id] = (await self.job(job_id)).params.lease_seconds
        return self._leases[job_id]

    # -- participants ---------------------------------------------------------------------------------------------

    async def candidates(self, job_id: int) -> tuple[Candidate, ...]:
        return await self.chain(lambda: self.client.get_candidates(job_id), what="getCandidates")

    async def successor(self, job_id: int) -> str | None:
        return await self.chain(lambda: self.client.successor(job_id), what="successor")

    async def trainer_info(self, trainer: str) -> TrainerInfo:
        return await self.chain(lambda: self.client.trainers(trainer), what="trainers")

    async def validator_info(self, validator: str) -> ValidatorInfo:
        return await self.chain(lambda: self.client.validators(validator), what="validators")

    async def min_trainer_stake(self) -> int:
        return await self.chain(self.client.min_trainer_stake, what="minTrainerStake")

    async def min_leader_bond(self) -> int:
        return await self.chain(self.client.min_leader_bond, what="minLeaderBond")

    async def update_bond(self, job_id: int) -> int:
        return await self.chain(lambda: self.client.update_bond(job_id), what="updateBond")

    async def balance(self) -> int:
        """Wei the contract owes this node (its pull-payment balance)."""
        return await self.chain(lambda: self.client.balance_of(self.address), what="balanceOf")

    # -- transactions ---------------------------------------------------------------------------------------------

    async def register_trainer(self, node_class: NodeClass, stake_wei: int) -> TxResult:
        return await self.chain(lambda: self.client.register_trainer(node_class, stake_wei), what="registerTrainer")

    async def add_trainer_stake(self, amount_wei: int) -> TxResult:
        return await self.chain(lambda: self.client.add_trainer_stake(amount_wei), what="addTrainerStake")

    async def register_validator(self, stake_wei: int) -> TxResult:
        return await self.chain(lambda: self.client.register_validator(stake_wei), what="registerValidator")

    async def stand_for_leader(self, job_id: int, bond_wei: int) -> TxResult:
        return await self.chain(lambda: self.client.stand_for_leader(job_id, bond_wei), what="standForLeader")

    async def draw_successor(self, job_id: int) -> TxResult:
        return await self.chain(lambda: self.client.draw_successor(job_id), what="drawSuccessor")

    async def claim_leadership(self, job_id: int) -> TxResult:
        return await self.chain(lambda: self.client.claim_leadership(job_id), what="claimLeadership")

    async def submit_update(self, ticket: TaskTicket, manifest_cid: str, loss_reduction: int) -> TxResult:
        """``submitUpdate`` with the leader's EIP-712 signature the off-chain ticket carries."""
        signature = bytes.fromhex(ticket.signature[2:])
        return await self.chain(lambda: self.client.submit_update(ticket.chain_ticket(), manifest_cid,
                                                                  loss_reduction, signature), what="submitUpdate")

    async def draw_validators(self, job_id: int, r: int, slot: int) -> TxResult:
        return await self.chain(lambda: self.client.draw_validators(job_id, r, slot), what="drawValidators")

    async def draw_if_due(self, job_id: int, r: int, slot: int, update: UpdateInfo) -> bool:
        """Draw the update's panel when one is due and its block is mined (anyone may; every role that waits on a
        verdict does). False when nothing was drawn now (not due, not ready yet, or drawn by someone else first)."""
        if not update.draw_due() or not await self.draw_ready(update.anchor_block):
            return False
        # A first panel is drawn on-chain only once its signed votes had their time (see first_draw_due).
        anchor_time = await self.block_time(update.anchor_block)
        if not first_draw_due(update, anchor_time, await self.chain_time(), await self.signing_window(job_id)):
            return False
        try:
            await self.draw_validators(job_id, r, slot)
        except ContractRevert:  # drawn by another node meanwhile (NothingToDraw), or the chain is behind
            return False
        return True

    async def escalate_if_due(self, job_id: int, r: int, slot: int, update: UpdateInfo) -> bool:
        """Close a first panel's vote window that ran out without a verdict (``escalateUpdate``; anyone may, and
        every role that waits on the verdict does): a silent panel member cannot freeze an update."""
        if not update.escalation_due(await self.chain_time()):
            return False
        try:
            await self.chain(lambda: self.client.escalate_update(job_id, r, slot), what="escalateUpdate")
        except ContractRevert:  # escalated by another node meanwhile, or block time not past the window yet
            return False
        return True

    async def settle_updates(self, job_id: int, r: int, vote_sets: list[VoteSet]) -> TxResult:
        return await self.chain(lambda: self.client.settle_updates(job_id, r, vote_sets), what="settleUpdates")

    async def validate_update(self, job_id: int, r: int, slot: int, ok: bool) -> TxResult:
        return await self.chain(lambda: self.client.validate_update(job_id, r, slot, ok), what="validateUpdate")

    async def commit_round(self, job_id: int, r: int, checkpoint_cid: str, accepted_mask: int) -> TxResult:
        return await self.chain(lambda: self.client.commit_round(job_id, r, checkpoint_cid, accepted_mask),
                                what="commitRound")

    async def draw_auditors(self, job_id: int, r: int) -> TxResult:
        return await self.chain(lambda: self.client.draw_auditors(job_id, r), what="drawAuditors")

    async def audit_round(self, job_id: int, r: int, ok: bool) -> TxResult:
        return await self.chain(lambda: self.client.audit_round(job_id, r, ok), what="auditRound")

    async def move_stalled_audit(self, job_id: int, r: int, info: RoundInfo) -> bool:
        """Close an audit panel's window that ran out without a verdict (anyone may; the auditor does): a silent
        first panel escalates (``escalateAudit``), an escalation without a stake majority lapses (``lapseAudit``).
        False when nothing was due or another node moved it first."""
        if not info.audit_stalled(await self.chain_time()):
            return False
        escalate = info.audit_phase == Phase.VOTING
        send = self.client.escalate_audit if escalate else self.client.lapse_audit
        try:
            await self.chain(lambda: send(job_id, r), what="escalateAudit" if escalate else "lapseAudit")
        except ContractRevert:  # moved by another node meanwhile, or block time not past the window yet
            return False
        return True

    async def payout(self, job_id: int, r: int) -> TxResult:
        """``payout(jobId, round)``: credits every accepted, unpaid update of a priced round to its trainer."""
        return await self.chain(lambda: self.client.payout(job_id, r), what="payout")

    async def withdraw_if_owed(self, at_least: int) -> int:
        """``withdraw`` this node's credited balance once it is at least ``at_least`` wei
        (:func:`~node.roles.decisions.withdrawal_due`); returns what was withdrawn (0: nothing)."""
        owed = await self.balance()
        if not withdrawal_due(owed, at_least):
            return 0
        await self.chain(self.client.withdraw, what="withdraw")
        return owed


@dataclass
class JobScanner:
    """The jobs a role looks at: ``only`` when given, else every job on-chain, less the jobs it has finished with.

    One place for the loop the trainer, the validator and the auditor each run over the chain's jobs.
    """

    jobs: ChainView
    only: tuple[int, ...] = ()
    watch: ChainWatch | None = None
    """With a watch, the job count is read again only once it logged ``JobCreated`` (a :class:`ScanGate` on
    :data:`JOB_COUNT_EVENTS`, with its every-tenth-call safety net); without one, every call."""
    finished: set[int] = field(default_factory=set)
    """Jobs the role needs no more (closed and fully handled): never read again."""
    _count_gate: ScanGate | None = field(init=False, default=None)
    _count: int = field(init=False, default=0)
    """The job count as last read through :attr:`_count_gate`."""

    def __post_init__(self) -> None:
        if self.watch is not None:
            self._count_gate = ScanGate(self.watch, events=JOB_COUNT_EVENTS)

    async def job_ids(self) -> list[int]:
        """The ids to look at, without reading each job."""
        ids = list(self.only) if self.only else list(range(1, await self._job_count() + 1))
        return [job_id for job_id in ids if job_id not in self.finished]

    async def _job_count(self) -> int:
        if self._count_gate is None:
            return await self.jobs.job_count()
        stamp = await self._count_gate.due(busy=False)
        if stamp is not None:
            self._count = await self.jobs.job_count()
            self._count_gate.scanned(stamp)
        return self._count

    async def scan(self) -> list[JobInfo]:
        """Each job to look at, as the chain has it now: with a watch, a job is read again only once a
        :data:`JOB_STATE_EVENTS` event was logged since its last read (every field ``getJob`` returns changes only
        with one), or at the gate's tenth call; a busy validator polls every second and reads each job only when
        the round moves."""
        jobs = []
        for job_id in await self.job_ids():
            if self.watch is None:
                jobs.append(await self.jobs.job(job_id))
                continue
            jobs.append(await self.watch.job_read(job_id).get(functools.partial(self.jobs.job, job_id)))
        return jobs

    async def open_jobs(self) -> list[JobInfo]:
        """The active jobs among :meth:`scan`'s; a closed one is marked finished and not read again."""
        out = []
        for job in await self.scan():
            if job.status == JobStatus.ACTIVE:
                out.append(job)
            else:
                self.finished.add(job.job_id)
        return out


JOB_COUNT_EVENTS = frozenset({"JobCreated"})
"""The only event after which ``jobCount`` differs."""
LEADERSHIP_EVENTS = frozenset({"LeaderElected", "SuccessorDrawRequested", "CandidacyEnded", "LeaderBondForfeited",
                               "RoundDisputed", "JobFinished", "JobCancelled"})
"""The events that change what a candidate waiting out another node's lease acts on (a claim, a successor draw, a
lost candidacy, the job's end). A commit renews the lease (``RoundCommitted``) but needs no read: the candidate reads
again before the expiry it knew, and finds the new one (:func:`~node.roles.decisions.candidate_idle_s`)."""
ROUND_CHANGE_EVENTS = frozenset({"RoundCommitted", "RoundDisputed", "JobFinished", "JobCancelled"})
"""The events after which a job may have left its round (``committedRounds`` or ``status`` changed): what a trainer
waiting for the next round reads the job for (:class:`ScanGate` with ``events``)."""
AUDIT_EVENTS = frozenset({"RoundCommitted", "AuditorsDrawn", "DrawRescheduled", "RoundAudited", "AuditEscalated",
                          "RoundAuditPassed", "RoundDisputed", "RoundAuditLapsed"})
"""The events that change a committed round's audit (``getRound``'s audit fields: its anchor, phase, panels, tallies
and outcome). What moves by time alone (a panel's block mined, a window run out) an auditor computes from the round
it read and the head: it reads the round again only after one of these (:class:`ScanGate` with ``events``)."""
JOB_STATE_EVENTS = frozenset({"CandidateStood", "SuccessorDrawRequested", "LeaderElected", "FeePaid", "RoundCommitted",
                              "RoundDisputed", "JobFinished", "JobCancelled"})
"""The events of every transaction that writes a field ``getJob`` returns: a candidacy (``progressAt``), a successor
draw (``successorAnchor``), an election (``leader``, ``term``, ``leaseExpiry``), a fee (``spent``), a commit
(``committedRounds``, ``spent``, ``leaseExpiry``, the last checkpoint), a dispute, the end (``status``,
``refunded``). ``tests/chain/conftest.py`` checks the contract against it, transaction by transaction."""
UPDATE_STATE_EVENTS = frozenset({"UpdateSubmitted", "ValidatorsDrawn", "DrawRescheduled", "UpdateVoted",
                                 "UpdateEscalated", "UpdateAccepted", "UpdateRejected", "UpdateExpired",
                                 "RoundCommitted", "PaidOut", "JobCancelled"})
"""The events of every transaction that writes a field ``getUpdate`` returns: the submission, a draw or re-anchor
(phase, anchor), a vote, an escalation, the verdict (status), the pricing of its round at a commit or a cancel
(amount) and its payout (paid). ``tests/chain/conftest.py`` checks the contract against it."""
MAX_KEYS_PER_EVENT = 1024
"""How many (jobId, round, slot) keys :class:`ChainWatch` remembers per event name (the oldest are dropped)."""
HEAD_EVERY_REFRESHES = 10
"""How often :class:`ChainWatch` reads the head block to move its log cursor while the contract is quiet (the
``eth_getLogs`` range then spans at most this many polls of blocks)."""


FEED_RESCAN_BLOCKS = 2
"""When the chain feed is lost, the watch searches again from this many blocks before the last head it heard: a
block's logs may be notified after its head."""


@dataclass
class ChainWatch:
    """Whether the contract emitted anything lately, for every role of a node: :attr:`stamp` counts the refreshes
    and notifications that found an event, so a role that noted it before its last full scan knows whether anything
    was logged since (:class:`ScanGate`).

    Two ways to hear of them. Polled: one ``eth_getLogs`` a poll for the whole node (:meth:`refresh`). Pushed: while
    the chain feed is :attr:`live` (node/roles/chain_feed.py: ``eth_subscribe`` to new heads and the contract's logs),
    each is noted as it is mined and :meth:`refresh` reads nothing; the feed goes live only after a search has caught
    up with its first notifications, and a lost feed hands back to polling from before its last head. Either way
    every new head or log fires :attr:`wakeup`, which ends the roles' waits (node/roles/wakeup.py)."""

    jobs: ChainView
    poll_s: float
    wakeup: Wakeup = field(default_factory=Wakeup)
    stamp: int = 0
    seen: dict[str, int] = field(default_factory=dict)
    """Event name → the last :attr:`stamp` at which a refresh found one."""
    seen_keys: dict[str, OrderedDict[LogKey, int]] = field(default_factory=dict)
    """Event name → each (jobId, round, slot) it was logged for → the last :attr:`stamp` it was, oldest first; at most
    :data:`MAX_KEYS_PER_EVENT` a name (the dropped ones are remembered as :attr:`_dropped`)."""
    _dropped: dict[str, int] = field(default_factory=dict)
    """Event name → the newest stamp among the keys dropped from :attr:`seen_keys` (a gate older than it rescans)."""
    _cursor: int | None = None
    """The first block not searched for logs yet."""
    _refreshed_at: float = -math.inf
    _refreshes: int = 0
    _live: bool = False
    _job_reads: dict[int, GatedRead[JobInfo]] = field(default_factory=dict)

    def job_read(self, job_id: int) -> GatedRead[JobInfo]:
        """The node's one kept read of a job, read again after a :data:`JOB_STATE_EVENTS` event for it: shared by
        its roles' :class:`JobScanner` (a validator and its auditor would each read the job after every such
        event)."""
        if job_id not in self._job_reads:
            self._job_reads[job_id] = GatedRead(ScanGate(self, events=JOB_STATE_EVENTS, key=(job_id, None, None)))
        return self._job_reads[job_id]

    @property
    def live(self) -> bool:
        """Whether the chain feed is connected and caught up: every log is noted as it is mined."""
        return self._live

    def set_live(self, live: bool) -> None:
        """The chain feed caught up (True) or was lost (False: the next :meth:`refresh` searches again, from
        :data:`FEED_RESCAN_BLOCKS` before the last head heard)."""
        if self._live and not live and self._cursor is not None:
            self._cursor = max(self._cursor - FEED_RESCAN_BLOCKS, 0)
            self._refreshed_at = -math.inf
        self._live = live
        self.jobs.head_pushed = live

    def heard_head(self, head: HeadNotice) -> None:
        """A new block, pushed by the chain feed."""
        self.jobs.heard_head(head.number, head.timestamp)
        if self._cursor is not None:
            self._cursor = max(self._cursor, head.number + 1)
        self.wakeup.fire()

    def heard_logs(self, logs: Sequence[LogNotice]) -> None:
        """The contract's logs of a block, pushed by the chain feed (a log taken back by a reorganisation is news
        too: what it changed is undone)."""
        if not logs:
            return
        self.stamp += 1
        for log in logs:
            self._note(log.name, log.key)
        if self._cursor is not None:
            self._cursor = max(self._cursor, max(log.block for log in logs) + 1)
        self.wakeup.fire()

    async def catch_up(self) -> int:
        """Search the chain now, whatever the last search's age (the feed's start: what was mined before it)."""
        self._refreshed_at = -math.inf
        return await self.refresh()

    async def refresh(self) -> int:
        """:attr:`stamp` after searching the blocks mined since the last search (at most once per half poll, shared
        by the roles; none while the feed is :attr:`live`)."""
        now = time.monotonic()
        if self._live or now - self._refreshed_at < self.poll_s / 2:
            return self.stamp
        self._refreshed_at = now  # before the first await: the roles polling at once share this refresh
        head = None
        if self._cursor is None or self._refreshes % HEAD_EVERY_REFRESHES == 0:
            head = await self.jobs.block_number()  # read before the logs: no block between the two is skipped
        # Nothing before the node started is news: its roles' first scans read it.
        cursor = self._cursor if self._cursor is not None else (head or 0) + 1
        # From the block before the cursor, which is mined: a range starting past the latest block is an error on
        # some chains (geth: "invalid block range"), and most polls come before the next block. Its events were seen.
        logged = [(b, name, key) for b, name, key in await self.jobs.logged_events(max(cursor - 1, 0))
                  if b >= cursor]
        if logged:
            self.stamp += 1
            for _, name, key in logged:
                self._note(name, key)
            cursor = max(b for b, _, _ in logged) + 1
            self.wakeup.fire()
        self._cursor = max(cursor, head + 1) if head is not None else cursor
        self._refreshes += 1
        return self.stamp

    def _note(self, name: str, key: LogKey) -> None:
        self.seen[name] = self.stamp
        keys = self.seen_keys.setdefault(name, OrderedDict())
        keys[key] = self.stamp
        keys.move_to_end(key)
        while len(keys) > MAX_KEYS_PER_EVENT:
            _, dropped = keys.popitem(last=False)
            self._dropped[name] = max(self._dropped.get(name, 0), dropped)

    def logged_since(self, stamp: int | None, events: frozenset[str], key: LogKey | None = None) -> bool:
        """Whether a refresh after ``stamp`` found one of ``events`` (any event when ``events`` is empty); with
        ``key``, only one logged for a (jobId, round, slot) that may be ``key``'s
        (:func:`~protocols.chain.events.keys_overlap`: an event that does not index a part matches any)."""
        if stamp is None:
            return True
        if not events:
            return self.stamp != stamp
        for name in events:
            if self.seen.get(name, 0) <= stamp:
                continue
            if key is None or self._dropped.get(name, 0) > stamp:
                return True
            for logged, at in reversed(self.seen_keys[name].items()):  # newest first
                if at <= stamp:
                    break
                if keys_overlap(logged, key):
                    return True
        return False


@dataclass
class ScanGate:
    """One role's answer to "scan the chain in full this poll?" (:func:`~node.roles.decisions.rescan_due`): an idle
    role asks the node's :class:`ChainWatch` whether the contract logged anything since its last full scan, instead of
    reading every job, submission and update it watches."""

    watch: ChainWatch
    events: frozenset[str] = frozenset()
    """Only these events call for a scan (empty: any event of the contract)."""
    key: LogKey | None = None
    """Only events logged for this (jobId, round, slot) (None parts: any), when given."""
    scanned_stamp: int | None = None
    """The watch's stamp read before the last full scan (events mined during a scan raise it for the next poll)."""
    skipped: int = 0
    """Polls skipped since the last scan: calls about a poll apart count (a role woken by news calls more often than
    once a poll, and its safety net stays a number of polls' time)."""
    _counted_at: float = -math.inf

    async def due(self, *, busy: bool) -> int | None:
        """The stamp to record with :meth:`scanned` after a full scan now, or None to skip this poll."""
        stamp = await self.watch.refresh()
        first = self.scanned_stamp is None
        logged = self.watch.logged_since(self.scanned_stamp, self.events, self.key)
        if rescan_due(first=first, busy=busy, logged=logged, skipped=self.skipped):
            return stamp
        now = time.monotonic()
        if now - self._counted_at >= 0.9 * self.watch.poll_s:
            self.skipped, self._counted_at = self.skipped + 1, now
        return None

    def scanned(self, stamp: int) -> None:
        self.scanned_stamp, self.skipped, self._counted_at = stamp, 0, time.monotonic()


T = TypeVar("T")


@dataclass
class GatedRead(Generic[T]):
    """One chain value, read again only after its gate's events were logged since the last read (or at the gate's
    tenth call, or when asked ``fresh``). Exact for a value whose every change the contract logs with one of them:
    the stamp is taken before the read, so an event mined during it makes the next call read again."""

    gate: ScanGate
    value: T | None = None

    async def get(self, read: Callable[[], Awaitable[T]], *, fresh: bool = False) -> T:
        stamp = await self.gate.due(busy=False)
        if self.value is None or fresh or stamp is not None:
            stamp = self.gate.watch.stamp if stamp is None else stamp
            self.value = await read()
            self.gate.scanned(stamp)
        return self.value


ELECTION_EVENTS = frozenset({"LeaderElected"})
"""The event that adds to a job's leader history (:meth:`ChainView.leader_history` reads its logs)."""
SUBMISSION_EVENTS = frozenset({"UpdateSubmitted"})
"""The event that adds to a round's submissions (they are its logs)."""


@dataclass
class RoundReads:
    """One role's reads of one round of a job, each kept in a :class:`GatedRead`: the round's submissions (read
    again after ``UpdateSubmitted``) and each admitted update (after an :data:`UPDATE_STATE_EVENTS` event). What a
    validator and a leader read every poll while a round's verdicts are pending; a new round starts a new one."""

    jobs: ChainView
    watch: ChainWatch
    job_id: int
    round: int
    _submissions: GatedRead[list[Submission]] | None = field(init=False, default=None)
    _updates: dict[int, GatedRead[UpdateInfo]] = field(init=False, default_factory=dict)

    async def submissions(self) -> list[Submission]:
        if self._submissions is None:
            self._submissions = GatedRead(ScanGate(self.watch, events=SUBMISSION_EVENTS,
                                                   key=(self.job_id, self.round, None)))
        return await self._submissions.get(functools.partial(self.jobs.submissions, self.job_id, self.round))

    def known(self, slot: int) -> bool:
        """Whether :meth:`update` was asked for ``slot`` before (whether or not the read succeeded)."""
        return slot in self._updates

    def last(self, slot: int) -> UpdateInfo | None:
        """``slot``'s update as last read (None: never read)."""
        read = self._updates.get(slot)
        return None if read is None else read.value

    async def update(self, slot: int, *, fresh: bool = False) -> UpdateInfo:
        read = self._updates.get(slot)
        if read is None:
            read = self._updates[slot] = GatedRead(ScanGate(self.watch, events=UPDATE_STATE_EVENTS,
                                                            key=(self.job_id, self.round, slot)))
        return await read.get(functools.partial(self.jobs.update, self.job_id, self.round, slot), fresh=fresh)
