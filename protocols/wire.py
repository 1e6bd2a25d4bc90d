"""Request/response bodies for dtnode's point-to-point streams (``/dtnode/task/1.0.0``, ``/dtnode/peers/1.0.0``).

The stream itself is authenticated by Noise: the remote peer id carries its secp256k1 public key, which maps to the
Ethereum address that acts on-chain, so these bodies carry no signature of their own. A refusal is a typed answer
with an explicit reason (hivemind's style), never a dropped stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

from protocols.canonical import canonical_json, parse_json_object
from protocols.errors import SchemaError
from protocols.specs import TaskTicket
from protocols.types import NodeClass, RejectCode

TASK_REQUEST_SCHEMA = "dtnode/task-request/1"
TASK_RESPONSE_SCHEMA = "dtnode/task-response/1"
PEERS_REQUEST_SCHEMA = "dtnode/peers-request/1"
PEERS_RESPONSE_SCHEMA = "dtnode/peers-response/1"
MAX_BODY_BYTES = 64 * 1024
MAX_PEERS_PER_EXCHANGE = 256
MAX_PEERS_BODY_BYTES = 1 << 20
"""A peer-exchange reply: at most 256 presence envelopes of at most a few KiB each."""


def _int(data: dict[str, Any], key: str, lo: int = 0, hi: int = 2**64) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise SchemaError(f"field {key!r}: expected an integer in [{lo}, {hi}]")
    return value


def _str(data: dict[str, Any], key: str, max_len: int = 200) -> str:
    value = data.get(key)
    if not isinstance(value, str) or len(value) > max_len:
        raise SchemaError(f"field {key!r}: expected a string")
    return value


def _schema(data: dict[str, Any], expected: str, keys: set[str]) -> None:
    if data.get("schema") != expected:
        raise SchemaError(f"schema {data.get('schema')!r} is not {expected!r}")
    unknown = data.keys() - keys - {"schema"}
    if unknown:
        raise SchemaError(f"{expected}: unknown field(s) {', '.join(sorted(unknown))}")


@dataclass(frozen=True, kw_only=True)
class TaskRequest:
    """Trainer → leader: 'give me a task for this round of this job'."""

    job_id: int
    round: int
    node_class: NodeClass

    def to_bytes(self) -> bytes:
        return canonical_json({"schema": TASK_REQUEST_SCHEMA, "job_id": self.job_id, "round": self.round,
                               "node_class": self.node_class.name})

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        d = parse_json_object(data, what="task request", max_bytes=MAX_BODY_BYTES)
        _schema(d, TASK_REQUEST_SCHEMA, {"job_id", "round", "node_class"})
        return cls(job_id=_int(d, "job_id", 1), round=_int(d, "round", 0, 2**32),
                   node_class=NodeClass.from_name(d.get("node_class")))


@dataclass(frozen=True, kw_only=True)
class TaskResponse:
    """Leader → trainer: a signed ticket, or a refusal with a reason."""

    ticket: TaskTicket | None = None
    reject: RejectCode | None = None
    detail: str = ""

    def to_bytes(self) -> bytes:
        return canonical_json({
            "schema": TASK_RESPONSE_SCHEMA,
            "ticket": self.ticket.to_dict() if self.ticket else None,
            "reject": self.reject.value if self.reject else None,
            "detail": self.detail,
        })

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        d = parse_json_object(data, what="task response", max_bytes=MAX_BODY_BYTES)
        _schema(d, TASK_RESPONSE_SCHEMA, {"ticket", "reject", "detail"})
        ticket = d.get("ticket")
        reject = d.get("reject")
        if (ticket is None) == (reject is None):
            raise SchemaError("task response: exactly one of 'ticket' and 'reject' must be set")
        if reject is not None:
            try:
                code = RejectCode(reject)
            except ValueError as exc:
                raise SchemaError(f"task response: unknown reject code {reject!r}") from exc
            return cls(reject=code, detail=_str(d, "detail", 500))
        if not isinstance(ticket, dict):
            raise SchemaError("task response: 'ticket' must be an object")
        return cls(ticket=TaskTicket.from_dict(ticket), detail=_str(d, "detail", 500))


@dataclass(frozen=True, kw_only=True)
class PeersRequest:
    """Newcomer → known peer (``/dtnode/peers/1.0.0``): 'send me the presence of up to ``max_peers`` live peers'."""

    max_peers: int

    def to_bytes(self) -> bytes:
        return canonical_json({"schema": PEERS_REQUEST_SCHEMA, "max_peers": self.max_peers})

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        d = parse_json_object(data, what="peers request", max_bytes=MAX_BODY_BYTES)
        _schema(d, PEERS_REQUEST_SCHEMA, {"max_peers"})
        return cls(max_peers=_int(d, "max_peers", 1, MAX_PEERS_PER_EXCHANGE))


@dataclass(frozen=True, kw_only=True)
class PeersResponse:
    """The answer: each peer's own signed presence envelope (``protocols.messages`` wire form), as text.

    The envelopes are passed on unchanged, so the receiver re-verifies every signature: the answering peer can
    withhold peers but cannot forge anyone's addresses.
    """

    presences: tuple[str, ...]

    def to_bytes(self) -> bytes:
        return canonical_json({"schema": PEERS_RESPONSE_SCHEMA, "presences": list(self.presences)})

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        d = parse_json_object(data, what="peers response", max_bytes=MAX_PEERS_BODY_BYTES)
        _schema(d, PEERS_RESPONSE_SCHEMA, {"presences"})
        presences = d.get("presences")
        if not isinstance(presences, list) or len(presences) > MAX_PEERS_PER_EXCHANGE:
            raise SchemaError(f"field 'presences': expected a list of at most {MAX_PEERS_PER_EXCHANGE} strings")
        if not all(isinstance(p, str) and len(p) <= MAX_BODY_BYTES for p in presences):
            raise SchemaError("field 'presences': each must be a string of at most 64 KiB")
        return cls(presences=tuple(presences))
