"""JobManager's EIP-712 typed data: the task ticket a leader signs (``submitUpdate`` verifies it) and the vote a
first-panel validator signs (``settleUpdates`` verifies a whole panel's).

One domain for both, ``{name: "dtnode JobManager", version: "2", chainId, verifyingContract}`` (the contract's
``eip712Domain``), so a ticket or a vote signed for another chain or another deployment recovers to a different
signer and is refused (``JobManagerBadTicketSignature``, ``JobManagerBadVoteSignature``). The digests computed here
equal the contract's ``ticketDigest``/``voteDigest`` views and the ``ticketHash`` of ``UpdateSubmitted``
(tests/chain/test_ticket.py checks them on each backend).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from protocols.errors import SchemaError

DOMAIN_NAME = "dtnode JobManager"
DOMAIN_VERSION = "2"

TICKET_TYPES: dict[str, list[dict[str, str]]] = {
    "Ticket": [
        {"name": "jobId", "type": "uint256"},
        {"name": "round", "type": "uint32"},
        {"name": "term", "type": "uint32"},
        {"name": "trainer", "type": "address"},
        {"name": "slot", "type": "uint32"},
        {"name": "workUnits", "type": "uint32"},
        {"name": "expiry", "type": "uint64"},
        {"name": "taskHash", "type": "bytes32"},
    ],
}


VOTE_TYPES: dict[str, list[dict[str, str]]] = {
    "Vote": [
        {"name": "jobId", "type": "uint256"},
        {"name": "round", "type": "uint32"},
        {"name": "slot", "type": "uint32"},
        {"name": "anchorBlock", "type": "uint48"},
        {"name": "valid", "type": "bool"},
    ],
}

SIGNATURE_BYTES = 65


@dataclass(frozen=True)
class TicketDomain:
    """Where a ticket or a vote is valid: one deployment on one chain (the contract's EIP-712 domain)."""

    chain_id: int
    contract: str


@dataclass(frozen=True)
class ChainTicket:
    """The ``Ticket`` struct of the contract. ``task_hash``: keccak256 of the off-chain ticket's canonical bytes
    (:meth:`protocols.specs.TaskTicket.task_hash`)."""

    job_id: int
    round: int
    term: int
    trainer: str
    slot: int
    work_units: int
    expiry: int
    task_hash: bytes

    def __post_init__(self) -> None:
        if len(self.task_hash) != 32:
            raise SchemaError(f"ticket task_hash must be 32 bytes, got {len(self.task_hash)}")

    def message(self) -> dict[str, Any]:
        return {
            "jobId": self.job_id,
            "round": self.round,
            "term": self.term,
            "trainer": to_checksum_address(self.trainer),
            "slot": self.slot,
            "workUnits": self.work_units,
            "expiry": self.expiry,
            "taskHash": self.task_hash,
        }

    def to_abi(self) -> tuple[Any, ...]:
        """The struct as web3.py encodes it (field order of IJobManager.Ticket)."""
        m = self.message()
        return tuple(m[f["name"]] for f in TICKET_TYPES["Ticket"])


def _domain(domain: TicketDomain) -> dict[str, Any]:
    return {
        "name": DOMAIN_NAME,
        "version": DOMAIN_VERSION,
        "chainId": domain.chain_id,
        "verifyingContract": to_checksum_address(domain.contract),
    }


def _signable(types: dict[str, Any], message: dict[str, Any], domain: TicketDomain) -> Any:
    return encode_typed_data(domain_data=_domain(domain), message_types=types, message_data=message)


def _digest(types: dict[str, Any], message: dict[str, Any], domain: TicketDomain) -> bytes:
    """``keccak256(0x1901 ‖ domainSeparator ‖ structHash)`` of one typed struct: tickets and votes alike."""
    signable = _signable(types, message, domain)
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def _signer(types: dict[str, Any], message: dict[str, Any], domain: TicketDomain, signature: bytes,
            what: str) -> str:
    try:
        signer: str = Account.recover_message(_signable(types, message, domain), signature=signature)
    except Exception as exc:  # eth-keys raises several types for a bad signature
        raise SchemaError(f"{what} signature is invalid: {exc}") from exc
    return signer


def ticket_digest(ticket: ChainTicket, domain: TicketDomain) -> bytes:
    """The EIP-712 digest (``keccak256(0x1901 ‖ domainSeparator ‖ structHash)``), as ``ticketDigest`` returns it."""
    return _digest(TICKET_TYPES, ticket.message(), domain)


def sign_ticket(ticket: ChainTicket, domain: TicketDomain, leader: LocalAccount) -> bytes:
    """The leader's 65-byte signature over the ticket's digest."""
    return bytes(leader.sign_message(_signable(TICKET_TYPES, ticket.message(), domain)).signature)


def ticket_signer(ticket: ChainTicket, domain: TicketDomain, signature: bytes) -> str:
    """The address that signed ``ticket`` for ``domain``; SchemaError for a malformed signature."""
    return _signer(TICKET_TYPES, ticket.message(), domain, signature, "ticket")


@dataclass(frozen=True)
class ChainVote:
    """The ``Vote`` struct of the contract: a first-panel member's verdict on an update, bound to the draw's anchor
    block (a re-anchored draw, hence a new panel, cannot reuse it)."""

    job_id: int
    round: int
    slot: int
    anchor_block: int
    valid: bool

    def message(self) -> dict[str, Any]:
        return {"jobId": self.job_id, "round": self.round, "slot": self.slot, "anchorBlock": self.anchor_block,
                "valid": self.valid}

    def to_abi(self) -> tuple[Any, ...]:
        """The struct as web3.py encodes it (field order of IJobManager.Vote)."""
        m = self.message()
        return tuple(m[f["name"]] for f in VOTE_TYPES["Vote"])


def vote_digest(vote: ChainVote, domain: TicketDomain) -> bytes:
    """The EIP-712 digest of a vote, as ``voteDigest`` returns it."""
    return _digest(VOTE_TYPES, vote.message(), domain)


def sign_vote(vote: ChainVote, domain: TicketDomain, validator: LocalAccount) -> bytes:
    """The validator's 65-byte signature (r, s, v) over the vote's digest."""
    return bytes(validator.sign_message(_signable(VOTE_TYPES, vote.message(), domain)).signature)


def vote_signer(vote: ChainVote, domain: TicketDomain, signature: bytes) -> str:
    """The address that signed ``vote`` for ``domain``; SchemaError for a malformed signature."""
    return _signer(VOTE_TYPES, vote.message(), domain, signature, "vote")


@dataclass(frozen=True)
class VoteSet:
    """A whole first panel's signed votes on one update, for ``settleUpdates``: ``signatures[i]`` is panel member
    i's (in draw order, as ``votePanel`` returns the panel) and bit i of ``valid_mask`` its vote."""

    slot: int
    valid_mask: int
    signatures: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if any(len(sig) != SIGNATURE_BYTES for sig in self.signatures):
            raise SchemaError(f"a vote signature must be {SIGNATURE_BYTES} bytes")
        if self.valid_mask >> len(self.signatures):
            raise SchemaError(f"valid_mask {self.valid_mask:#x} has bits past the panel of {len(self.signatures)}")

    @property
    def unanimous(self) -> bool:
        return self.valid_mask in (0, (1 << len(self.signatures)) - 1)

    def to_abi(self) -> tuple[Any, ...]:
        """The struct as web3.py encodes it (IJobManager.VoteSet: slot, validMask, concatenated signatures)."""
        return (self.slot, self.valid_mask, b"".join(self.signatures))
