"""Gossip messages: typed, versioned schemas carried in a signed envelope.

Wire form (canonical JSON, see :mod:`protocols.canonical`)::

    {"v": 1, "type": "presence", "payload": {...}, "signer": "0xAbC...", "ts": 1764000000000, "sig": "0x..."}

``sig`` is the signer's recoverable secp256k1 signature (:mod:`protocols.p2p.identity`) over the canonical JSON of
every other field, so the payload, type, signer and timestamp are all covered. :func:`decode` checks, in order:
size and JSON shape, envelope schema, message type, signature (the recovered address must be ``signer``),
timestamp window, then the payload's schema. Each failure raises a :class:`MessageRejected` subclass whose
``reason`` is a :class:`~protocols.types.RejectCode`, so callers can count rejections by cause.

The node gossips two message types: :class:`Presence` (discovery) and :class:`SignedVote` (a first-panel
validator's EIP-712 vote, on its job's topic, for whoever posts the panel's votes with ``settleUpdates``);
everything else about jobs and rounds is read from the chain. New message types: declare a frozen dataclass
deriving :class:`WireMessage` with a unique ``TYPE``, fields checked by :mod:`protocols.schema` (plain ``int``,
``str``, ``bool``, ``tuple[str, ...]``, ``tuple[int, ...]``, or ``Annotated`` with a check) and a trailing
``schema: int = 1``, then decorate it with :func:`register_message`.
Override :meth:`WireMessage.validate` for checks across fields.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from eth_utils.address import is_checksum_address

from protocols.canonical import canonical_json, parse_json_object
from protocols.errors import SchemaError
from protocols.p2p.identity import verify
from protocols.schema import decode_fields, field_checks
from protocols.types import NodeClass, RejectCode

ENVELOPE_VERSION = 1
MAX_ENVELOPE_BYTES = 64 * 1024
"""Gossip carries small notices; anything larger goes by stream or storage (GossipSub's RPC limit is 1 MiB)."""
ROLES = ("trainer", "validator", "leader", "customer", "bootstrap")


class MessageRejected(SchemaError):
    """A gossip message failed a check; ``reason`` says which."""

    reason: ClassVar[RejectCode] = RejectCode.BAD_SCHEMA


class BadSignature(MessageRejected):
    reason = RejectCode.BAD_SIGNATURE


class BadSchema(MessageRejected):
    reason = RejectCode.BAD_SCHEMA


class StaleMessage(MessageRejected):
    reason = RejectCode.STALE


class FutureMessage(MessageRejected):
    reason = RejectCode.FUTURE


class WrongType(MessageRejected):
    reason = RejectCode.WRONG_TYPE


class WireMessage:
    """Base of every gossip message. Subclasses are frozen dataclasses registered with :func:`register_message`."""

    TYPE: ClassVar[str]

    def validate(self) -> None:
        """Range and format checks beyond field types; raise :class:`BadSchema` with the field's name."""


M = TypeVar("M", bound=WireMessage)
_REGISTRY: dict[str, type[WireMessage]] = {}


def register_message(cls: type[M]) -> type[M]:
    """Register a message class so :func:`decode` knows its ``TYPE``. Usable as a decorator."""
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__name__} must be a frozen dataclass")
    type_name = getattr(cls, "TYPE", None)
    if not isinstance(type_name, str) or not type_name:
        raise TypeError(f"{cls.__name__} needs a non-empty TYPE class variable")
    if type_name in _REGISTRY and _REGISTRY[type_name] is not cls:
        raise ValueError(f"message type {type_name!r} is already registered by {_REGISTRY[type_name].__name__}")
    if "schema" not in field_checks(cls):  # field_checks also refuses a field it cannot check (TypeError)
        raise TypeError(f"{cls.__name__} needs a trailing `schema: int = 1` field")
    _REGISTRY[type_name] = cls
    return cls


def registered_types() -> dict[str, type[WireMessage]]:
    """A copy of the registry: message TYPE → class."""
    return dict(_REGISTRY)


def message_to_dict(msg: WireMessage) -> dict[str, Any]:
    """The payload object of ``msg`` (tuples as lists), ready for canonical JSON."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(msg):  # type: ignore[arg-type]
        value = getattr(msg, field.name)
        out[field.name] = list(value) if isinstance(value, tuple) else value
    return out


def message_from_dict(cls: type[M], payload: dict[str, Any]) -> M:
    """Build and validate a ``cls`` from a payload object; unknown or missing fields are errors."""
    if _REGISTRY.get(cls.TYPE) is not cls:
        raise TypeError(f"{cls.__name__} is not registered; decorate it with @register_message")
    try:
        values = decode_fields(cls, payload, what=cls.TYPE, prefix=f"{cls.TYPE}.")
    except SchemaError as exc:
        raise BadSchema(str(exc)) from None
    default_schema = next(f.default for f in dataclasses.fields(cls) if f.name == "schema")  # type: ignore[arg-type]
    if values["schema"] != default_schema:
        raise BadSchema(f"{cls.TYPE}: schema version {values['schema']} is not supported (this node speaks "
                        f"{default_schema}); upgrade dtnode")
    msg = cls(**values)
    msg.validate()
    return msg


# --- validation helpers for message classes ---------------------------------------------------------------


def require(condition: bool, message: str) -> None:
    """Raise :class:`BadSchema` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise BadSchema(message)


def is_address(value: str) -> bool:
    """An EIP-55 checksummed Ethereum address."""
    return isinstance(value, str) and _is_checksummed(value)


@functools.lru_cache(maxsize=4096)
def _is_checksummed(value: str) -> bool:
    # Checked for the signer and the addresses in every gossip message, which come from a few nodes.
    return bool(is_checksum_address(value))


# --- the message types -------------------------------------------------------------------------------------


@register_message
@dataclass(frozen=True)
class Presence(WireMessage):
    """A node's periodic announcement on the presence topic; the peer table is built from these."""

    TYPE: ClassVar[str] = "presence"
    peer_id: str
    addrs: tuple[str, ...]
    eth_address: str
    roles: tuple[str, ...]
    node_class: str
    jobs: tuple[int, ...]
    version: str
    schema: int = 1

    def validate(self) -> None:
        require(0 < len(self.peer_id) <= 128 and self.peer_id.isalnum(), "presence.peer_id: not a base58 peer id")
        require(all(a.startswith("/") for a in self.addrs), "presence.addrs: each must be a multiaddr")
        require(is_address(self.eth_address), "presence.eth_address: not a checksummed address")
        require(all(r in ROLES for r in self.roles), f"presence.roles: each must be one of {ROLES}")
        require(self.node_class in NodeClass.__members__, "presence.node_class: must be S, M or L")
        require(all(j >= 0 for j in self.jobs), "presence.jobs: job ids are non-negative")


@register_message
@dataclass(frozen=True)
class SignedVote(WireMessage):
    """A first-panel member's vote on an update, signed with EIP-712 for the contract (``Vote``: job, round, slot,
    the draw's anchor block, valid), published on :func:`protocols.topics.job_topic`. The envelope's signer is the
    gossiping node; ``signature`` is what ``settleUpdates`` checks (it must recover to the panel member)."""

    TYPE: ClassVar[str] = "signed-vote"
    job_id: int
    round: int
    slot: int
    anchor_block: int
    valid: bool
    signature: str
    """0x-prefixed hex of the 65-byte signature (r, s, v)."""
    schema: int = 1

    def validate(self) -> None:
        require(self.job_id > 0, "signed-vote.job_id: job ids start at 1")
        require(0 <= self.round < 2**32 and 0 <= self.slot < 64, "signed-vote.round/slot: out of range")
        require(0 < self.anchor_block < 2**48, "signed-vote.anchor_block: out of range")
        require(self.signature.startswith("0x") and len(self.signature) == 2 + 130
                and all(c in "0123456789abcdefABCDEF" for c in self.signature[2:]),
                "signed-vote.signature: 65 bytes as 0x-prefixed hex")


# --- the envelope ------------------------------------------------------------------------------------------


class Signer(typing.Protocol):
    """What :func:`encode` needs from an identity (``protocols.p2p.identity.NodeIdentity`` fits)."""

    @property
    def eth_address(self) -> str: ...

    def sign(self, data: bytes) -> bytes: ...


@dataclass(frozen=True)
class SignedEnvelope:
    """A message as signed: ``payload`` is the message's canonical JSON bytes."""

    type: str
    payload: bytes
    signer: str
    timestamp_ms: int
    signature: bytes


def _signed_part(type_name: str, payload: dict[str, Any], signer: str, timestamp_ms: int) -> bytes:
    return canonical_json(
        {"v": ENVELOPE_VERSION, "type": type_name, "payload": payload, "signer": signer, "ts": timestamp_ms}
    )


def encode(msg: WireMessage, identity: Signer, *, now: float) -> bytes:
    """Sign ``msg`` as ``identity`` at time ``now`` (unix seconds) and return the envelope's bytes."""
    if _REGISTRY.get(msg.TYPE) is not type(msg):
        raise TypeError(f"{type(msg).__name__} is not registered; decorate it with @register_message")
    msg.validate()
    payload = message_to_dict(msg)
    timestamp_ms = int(now * 1000)
    signature = identity.sign(_signed_part(msg.TYPE, payload, identity.eth_address, timestamp_ms))
    data = canonical_json(
        {"v": ENVELOPE_VERSION, "type": msg.TYPE, "payload": payload, "signer": identity.eth_address,
         "ts": timestamp_ms, "sig": "0x" + signature.hex()}
    )
    if len(data) > MAX_ENVELOPE_BYTES:
        raise BadSchema(f"{msg.TYPE}: {len(data)} bytes exceeds the gossip limit of {MAX_ENVELOPE_BYTES}; "
                        "send large data by stream or storage")
    return data


def decode_envelope(data: bytes) -> tuple[SignedEnvelope, dict[str, Any]]:
    """Parse the envelope without checking the signature; returns it and the raw payload object."""
    try:
        obj = parse_json_object(data, what="gossip envelope", max_bytes=MAX_ENVELOPE_BYTES)
    except SchemaError as exc:
        raise BadSchema(str(exc)) from exc
    expected = {"v", "type", "payload", "signer", "ts", "sig"}
    if set(obj) != expected:
        raise BadSchema(f"gossip envelope: fields must be {sorted(expected)}, got {sorted(obj)}")
    if obj["v"] != ENVELOPE_VERSION:
        raise BadSchema(f"gossip envelope: version {obj['v']!r} is not supported")
    type_name, payload, signer, ts, sig = obj["type"], obj["payload"], obj["signer"], obj["ts"], obj["sig"]
    if not isinstance(type_name, str) or not isinstance(payload, dict):
        raise BadSchema("gossip envelope: `type` must be a string and `payload` an object")
    if not isinstance(signer, str) or not is_address(signer):
        raise BadSchema("gossip envelope: `signer` must be a checksummed address")
    if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
        raise BadSchema("gossip envelope: `ts` must be a non-negative integer (unix milliseconds)")
    if not isinstance(sig, str) or not sig.startswith("0x") or len(sig) != 132:
        raise BadSignature("gossip envelope: `sig` must be 65 bytes of 0x-hex")
    try:
        signature = bytes.fromhex(sig[2:])
    except ValueError as exc:
        raise BadSignature("gossip envelope: `sig` is not hex") from exc
    try:
        payload_bytes = canonical_json(payload)
    except SchemaError as exc:
        raise BadSchema(f"gossip envelope payload: {exc}") from exc
    return SignedEnvelope(type_name, payload_bytes, signer, ts, signature), payload


VerifyFn = Callable[[bytes, bytes, str], bool]


def decode(
    data: bytes,
    *,
    now: float,
    max_skew: float,
    max_age: float | None = None,
    expected: tuple[type[WireMessage], ...] | None = None,
) -> tuple[WireMessage, str]:
    """Check and decode an envelope; returns ``(message, signer_address)``.

    ``now`` is unix seconds; a message older than ``max_age`` (default ``max_skew``) is :class:`StaleMessage`, one
    more than ``max_skew`` ahead is :class:`FutureMessage`. ``expected`` limits the accepted message classes.
    """
    envelope, payload = decode_envelope(data)
    cls = _REGISTRY.get(envelope.type)
    if cls is None or (expected is not None and cls not in expected):
        raise WrongType(f"message type {envelope.type!r} is not accepted here")
    signed = _signed_part(envelope.type, payload, envelope.signer, envelope.timestamp_ms)
    if not verify(signed, envelope.signature, envelope.signer):
        raise BadSignature(f"{envelope.type}: signature does not match signer {envelope.signer}")
    age = now - envelope.timestamp_ms / 1000
    if age > (max_skew if max_age is None else max_age):
        raise StaleMessage(f"{envelope.type}: {age:.1f} s old")
    if -age > max_skew:
        raise FutureMessage(f"{envelope.type}: {-age:.1f} s in the future; check the signer's clock")
    return message_from_dict(cls, payload), envelope.signer
