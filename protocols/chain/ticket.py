"""The on-chain task ticket: the EIP-712 typed data a leader signs and ``submitUpdate`` verifies.

Domain ``{name: "dtnode JobManager", version: "2", chainId, verifyingContract}`` (the contract's ``eip712Domain``),
so a ticket signed for another chain or another deployment recovers to a different signer and is refused
(``JobManagerBadTicketSignature``). The digest computed here equals the contract's ``ticketDigest`` view and the
``ticketHash`` of ``UpdateSubmitted`` (tests/chain/test_ticket.py checks both on each backend).
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


@dataclass(frozen=True)
class TicketDomain:
    """Where a ticket is valid: one deployment on one chain."""

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


def _signable(ticket: ChainTicket, domain: TicketDomain) -> Any:
    return encode_typed_data(domain_data=_domain(domain), message_types=TICKET_TYPES, message_data=ticket.message())


def ticket_digest(ticket: ChainTicket, domain: TicketDomain) -> bytes:
    """The EIP-712 digest (``keccak256(0x1901 ‖ domainSeparator ‖ structHash)``), as ``ticketDigest`` returns it."""
    signable = _signable(ticket, domain)
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def sign_ticket(ticket: ChainTicket, domain: TicketDomain, leader: LocalAccount) -> bytes:
    """The leader's 65-byte signature over the ticket's digest."""
    return bytes(leader.sign_message(_signable(ticket, domain)).signature)


def ticket_signer(ticket: ChainTicket, domain: TicketDomain, signature: bytes) -> str:
    """The address that signed ``ticket`` for ``domain``; SchemaError for a malformed signature."""
    try:
        signer: str = Account.recover_message(_signable(ticket, domain), signature=signature)
    except Exception as exc:  # eth-keys raises several types for a bad signature
        raise SchemaError(f"ticket signature is invalid: {exc}") from exc
    return signer
