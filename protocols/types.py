"""Typed ids and the vocabularies used across packages: node classes and reject codes, each defined once."""

from __future__ import annotations

import enum
from typing import NewType

from protocols.errors import SchemaError

JobId = NewType("JobId", int)
Round = NewType("Round", int)
Cid = NewType("Cid", str)
"""A CID in its canonical string form (CIDv1 base32, ``bafy...``)."""
Address = NewType("Address", str)
"""An EIP-55 checksummed Ethereum address."""
PeerIdStr = NewType("PeerIdStr", str)
"""A libp2p peer id in base58."""


class NodeClass(enum.IntEnum):
    """A trainer's declared compute class (S, M, L): on-chain the ``uint8`` value, on the wire and in config the name.

    The leader sizes a task by it (``node.training.tasks``); what each class promises lives there.
    """

    S = 0
    M = 1
    L = 2

    def __str__(self) -> str:
        return self.name

    @classmethod
    def from_code(cls, code: int) -> NodeClass:
        """The class of an on-chain code; raises :class:`SchemaError` for any other number."""
        try:
            return cls(code)
        except ValueError:
            raise SchemaError(f"unknown node class code {code}; expected 0 (S), 1 (M) or 2 (L)") from None

    @classmethod
    def from_name(cls, name: object) -> NodeClass:
        """The class named ``name`` ("S", "M" or "L"); raises :class:`SchemaError` for anything else."""
        if not isinstance(name, str) or name not in cls.__members__:
            raise SchemaError(f"node class {name!r} is not one of {', '.join(cls.__members__)}")
        return cls[name]


class RejectCode(enum.StrEnum):
    """Every reason dtnode refuses something: a task request, a ticket, an update (a validator's verdict) or a
    gossip message. One vocabulary on the wire, in verdicts and in logs (hivemind's explicit reject reasons)."""

    # A leader refusing a task request (``protocols.wire.TaskResponse``).
    NOT_LEADER = "NOT_LEADER"
    BAD_ROUND = "BAD_ROUND"
    ROUND_FULL = "ROUND_FULL"
    NOT_REGISTERED = "NOT_REGISTERED"
    ALREADY_SUBMITTED = "ALREADY_SUBMITTED"
    JOB_CLOSED = "JOB_CLOSED"
    PROTOCOL_VIOLATION = "PROTOCOL_VIOLATION"
    # A gossip message (``protocols.messages``); also the keys of the rejection counters.
    BAD_SIGNATURE = "BAD_SIGNATURE"
    BAD_SCHEMA = "BAD_SCHEMA"
    STALE = "STALE"
    FUTURE = "FUTURE"
    WRONG_TYPE = "WRONG_TYPE"
    WRONG_SIGNER = "WRONG_SIGNER"
    """Validly signed, but by an account that may not send this message (e.g. not the publishing peer)."""
    WRONG_JOB = "WRONG_JOB"
    """A message or ticket for another job."""
    REJECTED = "REJECTED"
    """The application's validator said no."""
    # A task ticket (``node.training.ticket_check``), checked by the trainer and by every validator.
    WRONG_TRAINER = "WRONG_TRAINER"
    WRONG_LEADER = "WRONG_LEADER"
    WRONG_BASE = "WRONG_BASE"
    WRONG_SHARD = "WRONG_SHARD"
    BAD_SAMPLE_RANGE = "BAD_SAMPLE_RANGE"
    WRONG_TASK_SIZE = "WRONG_TASK_SIZE"
    """Steps, batch size or weight differ from what the job's spec sizes for the ticket's node class."""
    WRONG_TASK_PARAMS = "WRONG_TASK_PARAMS"
    """The update's hyper-parameters (segment length) differ from the job's spec."""
    EXPIRED = "EXPIRED"
    WRONG_SLOT = "WRONG_SLOT"
    """The ticket's slot is not one of the job's ``tasks_per_round`` slots, or not the slot the chain admitted."""
    NOT_ADMITTED = "NOT_ADMITTED"
    """The manifest's ticket is not the one the chain admitted (its EIP-712 digest differs from ``ticketHash``)."""
    CONTENT_UNAVAILABLE = "CONTENT_UNAVAILABLE"
    """The update's manifest, delta or a challenged segment state could not be fetched (or a served segment did not
    match its committed hash) before the validator's ``content_deadline_s``; also the trainer's wire refusal of a
    segment it does not hold."""
    # A validator's verdict on an update (``node.training.replay``).
    BAD_TASK = "BAD_TASK"
    BAD_SEGMENT_COUNT = "BAD_SEGMENT_COUNT"
    BAD_SEGMENT_STATE = "BAD_SEGMENT_STATE"
    DELTA_MISMATCH = "DELTA_MISMATCH"
    LOSS_MISMATCH = "LOSS_MISMATCH"
    REPLAY_MISMATCH = "REPLAY_MISMATCH"
    LOSS_RISE = "LOSS_RISE"
    """The update's recomputed loss rose beyond the job spec's ``max_loss_rise_ppm``."""
    UNVERIFIABLE = "UNVERIFIABLE"
    """The update's content was fetched but is malformed or inconsistent."""
