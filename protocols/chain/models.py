"""Typed views of JobManager's state: frozen dataclasses built from the raw tuples ``eth_call`` returns.

CIDs arrive as raw bytes and leave as CID strings; the zero address becomes ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from eth_utils import to_checksum_address

from protocols.chain.cids import cid_from_bytes, cid_to_bytes, optional_cid_from_bytes
from protocols.types import Address, Cid, JobId

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


class NodeClass(IntEnum):
    """A trainer's declared compute class; the leader sizes tasks by it."""

    S = 0
    M = 1
    L = 2


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
    def from_abi(cls, raw: tuple[Any, ...]) -> JobParams:
        return cls(cid_from_bytes(bytes(raw[0])), *(int(v) for v in raw[1:]))

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

    @property
    def current_round(self) -> int:
        return self.committed_rounds

    @classmethod
    def from_abi(cls, job_id: int, raw: tuple[Any, ...]) -> JobInfo:
        return cls(
            job_id=JobId(job_id),
            customer=address(raw[0]),
            params=JobParams.from_abi(raw[1]),
            deposit=int(raw[2]),
            spent=int(raw[3]),
            status=JobStatus(raw[4]),
            committed_rounds=int(raw[5]),
            leader=optional_address(raw[6]),
            lease_expiry=int(raw[7]),
            term=int(raw[8]),
            last_checkpoint_cid=optional_cid_from_bytes(bytes(raw[9])),
            successor=optional_address(raw[10]),
            refunded=int(raw[11]),
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
    def from_abi(cls, raw: tuple[Any, ...]) -> UpdateInfo:
        return cls(
            cid=optional_cid_from_bytes(bytes(raw[0])),
            status=UpdateStatus(raw[1]),
            validators=tuple(address(v) for v in raw[2]),
            votes_for=int(raw[3]),
            votes_against=int(raw[4]),
            loss_reduction=int(raw[5]),
            paid=bool(raw[6]),
            amount=int(raw[7]),
        )


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
