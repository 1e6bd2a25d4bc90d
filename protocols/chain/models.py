"""Typed views of JobManager's state: frozen dataclasses built from the structs ``eth_call`` returns.

CIDs arrive as raw bytes and leave as CID strings; the zero address becomes ``None``.
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


def optional_address(value: str) -> Address | None:
    """A checksummed address, or ``None`` for the zero address (an unset slot)."""
    return None if int(value, 16) == 0 else Address(to_checksum_address(value))


def address(value: str) -> Address:
    return Address(to_checksum_address(value))


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


@dataclass(frozen=True)
class JobParams:
    """What a customer chooses when creating a job (rates in wei)."""

    spec_cid: Cid
    rounds: int
    tasks_per_round: int
    local_steps: int
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
            quorum=int(f["quorum"]),
            base_rate=int(f["baseRate"]),
            bonus_rate=int(f["bonusRate"]),
            validator_fee=int(f["validatorFee"]),
            leader_fee=int(f["leaderFee"]),
            lease_seconds=int(f["leaseSeconds"]),
        )

    def required_deposit(self) -> int:
        """The deposit ``createJob`` demands: the most the job can ever pay out (mirrors the contract)."""
        per_update = self.base_rate + self.bonus_rate + self.quorum * self.validator_fee
        return self.rounds * (self.tasks_per_round * per_update + self.leader_fee)


@dataclass(frozen=True)
class JobInfo:
    """A job's parameters and state (``getJob``). ``current_round`` is the number of committed rounds."""

    job_id: JobId
    customer: Address
    params: JobParams
    deposit: int
    spent: int
    status: JobStatus
    committed_rounds: int
    leader: Address | None
    lease_expiry: int
    term: int
    last_checkpoint_cid: Cid | None
    successor: Address | None
    refunded: int
    progress_at: int
    """Time of the first election or the last commit; a job stalled for STALL_LEASES leases can be cancelled."""
    disputed: bool = False
    """Some round's failed audits reached the quorum: the customer may cancel the job at once."""

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
            status=JobStatus(f["status"]),
            committed_rounds=int(f["committedRounds"]),
            leader=optional_address(f["leader"]),
            lease_expiry=int(f["leaseExpiry"]),
            term=int(f["term"]),
            last_checkpoint_cid=optional_cid_from_bytes(bytes(f["lastCheckpointCid"])),
            successor=optional_address(f["successor"]),
            refunded=int(f["refunded"]),
            progress_at=int(f.get("progressAt", 0)),
            disputed=bool(f.get("disputed", False)),
        )


@dataclass(frozen=True)
class UpdateInfo:
    """One trainer's update in one round (``getUpdate``); ``status`` NONE when never submitted."""

    cid: Cid | None
    status: UpdateStatus
    validators: tuple[Address, ...]
    votes_for: int
    votes_against: int
    loss_reduction: int
    paid: bool
    amount: int

    @classmethod
    def from_fields(cls, f: Mapping[str, Any]) -> UpdateInfo:
        return cls(
            cid=optional_cid_from_bytes(bytes(f["cid"])),
            status=UpdateStatus(f["status"]),
            validators=tuple(address(v) for v in f["validators"]),
            votes_for=int(f["votesFor"]),
            votes_against=int(f["votesAgainst"]),
            loss_reduction=int(f["lossReduction"]),
            paid=bool(f["paid"]),
            amount=int(f["amount"]),
        )


@dataclass(frozen=True)
class RoundCommit:
    """One ``RoundCommitted`` event: which round, who committed it (lower-case), and its checkpoint's CID."""

    round: int
    leader: str
    checkpoint_cid: str


@dataclass(frozen=True)
class RoundAudits:
    """How a committed round's audits went (``getRoundAudits``): validators that reproduced the committed
    checkpoint's CID, and those that did not."""

    ok: int
    failed: int


@dataclass(frozen=True)
class TrainerInfo:
    registered: bool
    node_class: NodeClass
    stake: int


@dataclass(frozen=True)
class ValidatorInfo:
    registered: bool
    stake: int


@dataclass(frozen=True)
class Totals:
    """The contract's money counters; ``conserved`` is the invariant the contract promises at every block."""

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
    slash_amount: int
    deregistration_delay: int
    max_tasks_per_round: int
    max_quorum: int
    max_rounds: int
    max_candidates: int
    max_cid_length: int
    max_lease_seconds: int
    stall_leases: int


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
