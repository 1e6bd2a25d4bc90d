"""Typed views of JobManager's state: frozen dataclasses built from the structs ``eth_call`` returns.

CIDs arrive as raw bytes and leave as CID strings; the zero address becomes ``None``. Updates are addressed by
(job, round, slot); masks have bit ``slot`` set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from eth_utils.address import to_checksum_address

from protocols.chain.cids import cid_from_bytes, cid_to_bytes, optional_cid_from_bytes
from protocols.types import Address, Cid, JobId
from protocols.types import NodeClass as NodeClass  # re-exported: the chain stores it as uint8

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
# JobManager.MAX_LOSS_REDUCTION: a claimed loss reduction (micro-units) is stored in 32 bits; a trainer claims at most
# this much (4294.967295 loss units) and validators check the same clipped claim.
MAX_LOSS_REDUCTION = 2**32 - 1


def optional_address(value: str) -> Address | None:
    """A checksummed address, or ``None`` for the zero address (an unset slot)."""
    return None if int(value, 16) == 0 else Address(to_checksum_address(value))


def address(value: str) -> Address:
    return Address(to_checksum_address(value))


def mask_slots(mask: int) -> tuple[int, ...]:
    """The slots whose bit is set in ``mask``, ascending."""
    return tuple(i for i in range(64) if mask >> i & 1)


def slots_mask(slots: Any) -> int:
    """The mask with bit ``slot`` set for each of ``slots``."""
    mask = 0
    for s in slots:
        mask |= 1 << int(s)
    return mask


class JobStatus(IntEnum):
    NONE = 0
    ACTIVE = 1
    FINISHED = 2
    CANCELLED = 3


class UpdateStatus(IntEnum):
    NONE = 0
    PENDING = 1
    ACCEPTED = 2
    REJECTED = 3
    EXPIRED = 4


class Phase(IntEnum):
    """Where a pending update's verdict stands (``drawValidators`` is due in the two AWAITING phases)."""

    AWAITING_PANEL = 0
    VOTING = 1
    AWAITING_ESCALATION = 2
    ESCALATED = 3


class AuditOutcome(IntEnum):
    """A round's audit: settled PASSED or DISPUTED (a unanimous first panel, or an escalation panel's stake
    majority), or LAPSED (an escalation without a majority in its window: nothing disputed, nobody slashed)."""

    OPEN = 0
    PASSED = 1
    DISPUTED = 2
    LAPSED = 3


@dataclass(frozen=True)
class JobParams:
    """What a customer chooses when creating a job (rates in wei; base and bonus per work unit)."""

    spec_cid: Cid
    rounds: int
    tasks_per_round: int
    local_steps: int
    max_work_units: int
    quorum: int
    base_rate: int
    bonus_rate: int
    validator_fee: int
    leader_fee: int
    lease_seconds: int

    def to_abi(self) -> tuple[Any, ...]:
        """The ``JobParams`` struct as web3.py encodes it."""
        return (
            cid_to_bytes(self.spec_cid),
            self.rounds,
            self.tasks_per_round,
            self.local_steps,
            self.max_work_units,
            self.quorum,
            self.base_rate,
            self.bonus_rate,
            self.validator_fee,
            self.leader_fee,
            self.lease_seconds,
        )

    @classmethod
    def from_fields(cls, f: Mapping[str, Any]) -> JobParams:
        return cls(
            spec_cid=cid_from_bytes(bytes(f["specCid"])),
            rounds=int(f["rounds"]),
            tasks_per_round=int(f["tasksPerRound"]),
            local_steps=int(f["localSteps"]),
            max_work_units=int(f["maxWorkUnits"]),
            quorum=int(f["quorum"]),
            base_rate=int(f["baseRate"]),
            bonus_rate=int(f["bonusRate"]),
            validator_fee=int(f["validatorFee"]),
            leader_fee=int(f["leaderFee"]),
            lease_seconds=int(f["leaseSeconds"]),
        )

    def required_deposit(self) -> int:
        """The deposit ``createJob`` demands: the most the job can ever pay out (mirrors the contract)."""
        per_update = self.max_work_units * (self.base_rate + self.bonus_rate) + self.quorum * self.validator_fee
        return self.rounds * (self.tasks_per_round * per_update + self.leader_fee)

    def max_update_pay(self) -> int:
        """The most one update can earn: its base plus the whole bonus pool of its round (mirrors the contract)."""
        return self.max_work_units * (self.base_rate + self.bonus_rate * self.tasks_per_round)


@dataclass(frozen=True)
class JobInfo:
    """A job's parameters and state (``getJob``). ``current_round`` is the number of committed rounds."""

    job_id: JobId
    customer: Address
    params: JobParams
    deposit: int
    spent: int
    refunded: int
    status: JobStatus
    committed_rounds: int
    term: int
    leader: Address | None
    lease_expiry: int
    progress_at: int
    """Time of the first election or the last commit; a job stalled for STALL_LEASES leases can be cancelled."""
    successor_anchor: int
    """Block fixed by ``drawSuccessor`` (0: no successor draw pending)."""
    disputed: bool
    last_checkpoint_cid: Cid | None

    @property
    def current_round(self) -> int:
        return self.committed_rounds

    @classmethod
    def from_fields(cls, job_id: int, f: Mapping[str, Any]) -> JobInfo:
        return cls(
            job_id=JobId(job_id),
            customer=address(f["customer"]),
            params=JobParams.from_fields(f["params"]),
            deposit=int(f["deposit"]),
            spent=int(f["spent"]),
            refunded=int(f["refunded"]),
            status=JobStatus(f["status"]),
            committed_rounds=int(f["committedRounds"]),
            term=int(f["term"]),
            leader=optional_address(f["leader"]),
            lease_expiry=int(f["leaseExpiry"]),
            progress_at=int(f["progressAt"]),
            successor_anchor=int(f["successorAnchor"]),
            disputed=bool(f["disputed"]),
            last_checkpoint_cid=optional_cid_from_bytes(bytes(f["lastCheckpointCid"])),
        )


@dataclass(frozen=True)
class RoundInfo:
    """One round (``getRound``): which slots were submitted and accepted, its commit and its audit."""

    submitted_mask: int
    accepted_mask: int
    priced: bool
    committer: Address | None
    audit_anchor: int
    audit: AuditOutcome
    audit_ok: int
    audit_failed: int
    auditors: tuple[Address, ...]
    checkpoint_cid: Cid | None
    audit_phase: Phase = Phase.AWAITING_PANEL
    """Where the audit stands: ``drawAuditors`` is due in the AWAITING phases; ``auditors`` vote in VOTING, the
    ``audit_escalation_panel`` in ESCALATED."""
    audit_deadline: int = 0
    """End of the voting panel's window (chain time; 0 while none votes): past it anyone may ``escalateAudit``
    (first panel) or ``lapseAudit`` (escalation panel)."""
    audit_silent_mask: int = 0
    audit_voted_mask: int = 0
    audit_escalation_panel: tuple[Address, ...] = ()
    audit_esc_voted_mask: int = 0
    audit_esc_stake: int = 0
    audit_esc_ok_stake: int = 0
    audit_esc_failed_stake: int = 0

    @property
    def audit_panel(self) -> tuple[Address, ...]:
        """The audit panel that votes in the current phase (empty while a draw is due or the audit is closed)."""
        if self.audit != AuditOutcome.OPEN:
            return ()
        if self.audit_phase == Phase.VOTING:
            return self.auditors
        if self.audit_phase == Phase.ESCALATED:
            return self.audit_escalation_panel
        return ()

    def audit_draw_due(self) -> bool:
        """An audit panel is to be drawn (``drawAuditors``)."""
        return self.audit == AuditOutcome.OPEN and self.audit_phase in (Phase.AWAITING_PANEL,
                                                                        Phase.AWAITING_ESCALATION)

    def audit_stalled(self, now: int) -> bool:
        """The voting audit panel's window is over without a verdict: ``escalateAudit`` (first panel) or
        ``lapseAudit`` (escalation panel) may be called."""
        return bool(self.audit_panel) and self.audit_deadline != 0 and now > self.audit_deadline

    def has_audited(self, validator: str) -> bool:
        """Whether ``validator`` reported in the audit's current voting phase."""
        me = validator.lower()
        mask = self.audit_esc_voted_mask if self.audit_phase == Phase.ESCALATED else self.audit_voted_mask
        return any(v.lower() == me and mask >> i & 1 for i, v in enumerate(self.audit_panel))

    @property
    def accepted_slots(self) -> tuple[int, ...]:
        return mask_slots(self.accepted_mask)

    @property
    def submitted_slots(self) -> tuple[int, ...]:
        return mask_slots(self.submitted_mask)

    @classmethod
    def from_fields(cls, f: Mapping[str, Any]) -> RoundInfo:
        return cls(
            submitted_mask=int(f["submittedMask"]),
            accepted_mask=int(f["acceptedMask"]),
            priced=bool(f["priced"]),
            committer=optional_address(f["committer"]),
            audit_anchor=int(f["auditAnchor"]),
            audit=AuditOutcome(f["audit"]),
            audit_ok=int(f["auditOk"]),
            audit_failed=int(f["auditFailed"]),
            auditors=tuple(address(a) for a in f["auditors"]),
            checkpoint_cid=optional_cid_from_bytes(bytes(f["checkpointCid"])),
            audit_phase=Phase(f["auditPhase"]),
            audit_deadline=int(f["auditDeadline"]),
            audit_silent_mask=int(f["auditSilentMask"]),
            audit_voted_mask=int(f["auditVotedMask"]),
            audit_escalation_panel=tuple(address(a) for a in f["auditEscalationPanel"]),
            audit_esc_voted_mask=int(f["auditEscVotedMask"]),
            audit_esc_stake=int(f["auditEscStake"]),
            audit_esc_ok_stake=int(f["auditEscOkStake"]),
            audit_esc_failed_stake=int(f["auditEscFailedStake"]),
        )


@dataclass(frozen=True)
class UpdateInfo:
    """One slot's update (``getUpdate``); ``status`` NONE for a slot nobody filled. The update's CID is not stored
    on-chain: it is in the ``UpdateSubmitted`` event (:class:`Submission`)."""

    trainer: Address | None
    status: UpdateStatus
    phase: Phase
    work_units: int
    anchor_block: int
    loss_reduction: int
    amount: int
    paid: bool
    voted_mask: int
    valid_mask: int
    esc_voted_mask: int
    esc_valid_mask: int
    panel: tuple[Address, ...]
    escalation_panel: tuple[Address, ...]
    vote_deadline: int = 0
    """End of the first panel's vote window (chain time; 0 before the draw): past it anyone may ``escalateUpdate``."""
    silent_mask: int = 0
    """First-panel members (bits index ``panel``) that had not voted when the window was closed: slashed at
    settlement."""

    def escalation_due(self, now: int) -> bool:
        """The first panel's vote window is over without a verdict: ``escalateUpdate`` may be called."""
        return (self.status == UpdateStatus.PENDING and self.phase == Phase.VOTING and self.vote_deadline != 0
                and now > self.vote_deadline)

    @property
    def voting_panel(self) -> tuple[Address, ...]:
        """The panel that votes in the current phase (empty while a draw is due)."""
        if self.phase == Phase.VOTING:
            return self.panel
        if self.phase == Phase.ESCALATED:
            return self.escalation_panel
        return ()

    @property
    def validators(self) -> tuple[Address, ...]:
        """Everyone drawn for this update, both phases (they fetched its content)."""
        return self.panel + tuple(a for a in self.escalation_panel if a not in self.panel)

    def draw_due(self) -> bool:
        """A panel is to be drawn (``drawValidators``) for this pending update."""
        return self.status == UpdateStatus.PENDING and self.phase in (Phase.AWAITING_PANEL,
                                                                      Phase.AWAITING_ESCALATION)

    def has_voted(self, validator: str) -> bool:
        """Whether ``validator`` voted in the update's current voting phase."""
        me = validator.lower()
        if self.phase == Phase.ESCALATED:
            panel, mask = self.escalation_panel, self.esc_voted_mask
        else:
            panel, mask = self.panel, self.voted_mask
        return any(v.lower() == me and mask >> i & 1 for i, v in enumerate(panel))

    @classmethod
    def from_fields(cls, f: Mapping[str, Any]) -> UpdateInfo:
        return cls(
            trainer=optional_address(f["trainer"]),
            status=UpdateStatus(f["status"]),
            phase=Phase(f["phase"]),
            work_units=int(f["workUnits"]),
            anchor_block=int(f["anchorBlock"]),
            loss_reduction=int(f["lossReduction"]),
            amount=int(f["amount"]),
            paid=bool(f["paid"]),
            voted_mask=int(f["votedMask"]),
            valid_mask=int(f["validMask"]),
            esc_voted_mask=int(f["escVotedMask"]),
            esc_valid_mask=int(f["escValidMask"]),
            panel=tuple(address(a) for a in f["panel"]),
            escalation_panel=tuple(address(a) for a in f["escalationPanel"]),
            vote_deadline=int(f["voteDeadline"]),
            silent_mask=int(f["silentMask"]),
        )


@dataclass(frozen=True)
class Submission:
    """One ``UpdateSubmitted`` event: what the chain admitted into a slot (the CID lives only here)."""

    round: int
    slot: int
    trainer: Address
    work_units: int
    loss_reduction: int
    update_cid: Cid
    ticket_hash: bytes


@dataclass(frozen=True)
class RoundCommit:
    """One ``RoundCommitted`` event: which round, who committed it (lower-case), its checkpoint's CID and exactly
    the set of slots it aggregates."""

    round: int
    leader: str
    checkpoint_cid: str
    accepted_mask: int


@dataclass(frozen=True)
class TrainerInfo:
    registered: bool
    node_class: NodeClass
    pending: int
    stake: int
    locked: int
    """Update bonds of its pending updates (part of ``stake``)."""

    @property
    def free_stake(self) -> int:
        return self.stake - self.locked


@dataclass(frozen=True)
class ValidatorInfo:
    registered: bool
    open_votes: int
    stake: int


@dataclass(frozen=True)
class Candidate:
    address: Address
    bond: int


@dataclass(frozen=True)
class Totals:
    """The contract's money counters (``accounting()``, one call so they are consistent); ``conserved`` is the
    invariant the contract promises at every block."""

    deposits: int
    stakes: int
    paid: int
    refunded: int
    slashed: int
    withdrawn: int
    escrow_held: int
    stake_held: int

    @property
    def held(self) -> int:
        return self.escrow_held + self.stake_held

    @property
    def conserved(self) -> bool:
        return self.held + self.paid + self.refunded + self.slashed == self.deposits + self.stakes


@dataclass(frozen=True)
class ContractSettings:
    """Constructor settings and constants of a deployment."""

    min_trainer_stake: int
    min_validator_stake: int
    min_update_bond: int
    validator_slash: int
    min_leader_bond: int
    deregistration_delay: int
    min_quorum: int
    draw_delay: int
    slash_multiple: int
    escalation_panel: int
    lapse_forfeit_bps: int
    max_tasks_per_round: int
    max_quorum: int
    max_work_units: int
    max_loss_reduction: int
    max_rounds: int
    max_candidates: int
    max_validators: int
    max_cid_length: int
    max_lease_seconds: int
    stall_leases: int


@dataclass(frozen=True)
class Eip712Domain:
    """``eip712Domain()`` (EIP-5267): what a ticket signature is bound to."""

    name: str
    version: str
    chain_id: int
    verifying_contract: Address


def to_named(param: Mapping[str, Any], value: Any) -> Any:
    """A struct returned by ``eth_call`` (a tuple) as a dict keyed by the ABI's field names, recursively.

    Reading structs by name, not position, keeps the adapter working when the contract adds a field.
    """
    typ = str(param["type"])
    if typ == "tuple":
        return {str(c["name"]): to_named(c, v) for c, v in zip(param["components"], value, strict=True)}
    if typ.startswith("tuple["):
        return [to_named({**param, "type": "tuple"}, v) for v in value]
    return value
