"""Request/response bodies for dtnode's point-to-point streams (``/dtnode/task/1.0.0``, ``/dtnode/peers/1.0.0``,
``/dtnode/segment/1.0.0``).

The stream itself is authenticated by Noise: the remote peer id carries its secp256k1 public key, which maps to the
Ethereum address that acts on-chain, so these bodies carry no signature of their own. A refusal is a typed answer
with an explicit reason (hivemind's style, a :class:`~protocols.types.RejectCode`), never a dropped stream. Each body
is a :class:`~protocols.schema.Record`: declared fields, strict decoding, canonical JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from protocols.errors import SchemaError
from protocols.schema import SHA256_HEX, Const, EnumName, EnumValue, Int, ListOf, Nested, Nullable, Record, Str
from protocols.specs import TaskTicket
from protocols.types import NodeClass, RejectCode

TASK_REQUEST_SCHEMA = "dtnode/task-request/1"
TASK_RESPONSE_SCHEMA = "dtnode/task-response/1"
PEERS_REQUEST_SCHEMA = "dtnode/peers-request/1"
PEERS_RESPONSE_SCHEMA = "dtnode/peers-response/1"
SEGMENT_REQUEST_SCHEMA = "dtnode/segment-request/1"
MAX_BODY_BYTES = 64 * 1024
MAX_PEERS_PER_EXCHANGE = 256
MAX_PEERS_BODY_BYTES = 1 << 20
"""A peer-exchange reply: at most 256 presence envelopes of at most a few KiB each."""


@dataclass(frozen=True, kw_only=True)
class TaskRequest(Record):
    """Trainer → leader: 'give me a task for this round of this job'."""

    WHAT = "task request"
    MAX_BYTES = MAX_BODY_BYTES

    schema: Annotated[str, Const(TASK_REQUEST_SCHEMA)] = TASK_REQUEST_SCHEMA
    job_id: Annotated[int, Int(1, 2**64)]
    round: Annotated[int, Int(0, 2**32)]
    node_class: Annotated[NodeClass, EnumName(NodeClass)]


@dataclass(frozen=True, kw_only=True)
class TaskResponse(Record):
    """Leader → trainer: a signed ticket, or a refusal with a reason."""

    WHAT = "task response"
    MAX_BYTES = MAX_BODY_BYTES

    schema: Annotated[str, Const(TASK_RESPONSE_SCHEMA)] = TASK_RESPONSE_SCHEMA
    ticket: Annotated[TaskTicket | None, Nullable(Nested(TaskTicket.from_dict))] = None
    reject: Annotated[RejectCode | None, Nullable(EnumValue(RejectCode))] = None
    detail: Annotated[str, Str(500)] = ""

    def _check(self) -> None:
        if (self.ticket is None) == (self.reject is None):
            raise SchemaError("task response: exactly one of 'ticket' and 'reject' must be set")


@dataclass(frozen=True, kw_only=True)
class PeersRequest(Record):
    """Newcomer → known peer (``/dtnode/peers/1.0.0``): 'send me the presence of up to ``max_peers`` live peers'."""

    WHAT = "peers request"
    MAX_BYTES = MAX_BODY_BYTES

    schema: Annotated[str, Const(PEERS_REQUEST_SCHEMA)] = PEERS_REQUEST_SCHEMA
    max_peers: Annotated[int, Int(1, MAX_PEERS_PER_EXCHANGE)]


@dataclass(frozen=True, kw_only=True)
class PeersResponse(Record):
    """The answer: each peer's own signed presence envelope (``protocols.messages`` wire form), as text.

    The envelopes are passed on unchanged, so the receiver re-verifies every signature: the answering peer can
    withhold peers but cannot forge anyone's addresses.
    """

    WHAT = "peers response"
    MAX_BYTES = MAX_PEERS_BODY_BYTES

    schema: Annotated[str, Const(PEERS_RESPONSE_SCHEMA)] = PEERS_RESPONSE_SCHEMA
    presences: Annotated[tuple[str, ...], ListOf(Str(MAX_BODY_BYTES), max_items=MAX_PEERS_PER_EXCHANGE)]


@dataclass(frozen=True, kw_only=True)
class SegmentRequest(Record):
    """Validator → trainer (``/dtnode/segment/1.0.0``): 'send the state after segment ``index`` of your update in
    this round, whose hash your manifest commits to, from byte ``offset``'. The answer is the state's total size
    (8 bytes, big-endian) followed by at most ``node.segments.SEGMENT_CHUNK_BYTES`` of its bytes from ``offset`` (no
    JSON: states are large, and fetched chunk by chunk); a refusal is a typed error (``CONTENT_UNAVAILABLE``)."""

    WHAT = "segment request"
    MAX_BYTES = MAX_BODY_BYTES
    OMIT_AT_DEFAULT = frozenset({"offset"})

    schema: Annotated[str, Const(SEGMENT_REQUEST_SCHEMA)] = SEGMENT_REQUEST_SCHEMA
    job_id: Annotated[int, Int(1, 2**64)]
    round: Annotated[int, Int(0, 2**32)]
    index: Annotated[int, Int(0, 16_000)]
    state_hash: Annotated[str, SHA256_HEX]
    offset: Annotated[int, Int(0, 2**40)] = 0
