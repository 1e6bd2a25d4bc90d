"""Versioned specs that live on IPFS: the customer's JobSpec, the leader's signed TaskTicket, the trainer's
UpdateManifest, and the leader's RoundRecord.

Each is a frozen dataclass with a ``schema`` string, strict validation in ``from_dict`` (unknown keys, wrong types and
out-of-range values are errors naming the field), and canonical JSON bytes (``to_bytes``) so the same spec always has
the same CID. Real numbers (learning rates, tolerances) are decimal strings and losses are integer micro-units,
because floats have no canonical text. This module never imports ``node``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields, replace
from decimal import Decimal, InvalidOperation
from typing import Any, Self

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from protocols.canonical import canonical_json, parse_json_object
from protocols.errors import SchemaError
from protocols.types import NodeClass

JOB_SPEC_SCHEMA = "dtnode/jobspec/1"
TASK_TICKET_SCHEMA = "dtnode/ticket/1"
UPDATE_MANIFEST_SCHEMA = "dtnode/update/1"
ROUND_RECORD_SCHEMA = "dtnode/round/1"

STRATEGIES = ("mean", "median", "trimmed_mean", "krum", "centered_clip")
OUTER_OPTIMIZERS = ("none", "nesterov")
DELTA_ENCODINGS = ("f32", "int8")
INNER_OPTIMIZERS = ("adamw", "sgd")

_CID_RE = re.compile(r"^(b[a-z2-7]{20,}|Qm[1-9A-HJ-NP-Za-km-z]{44})$")
_ADDR_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")
_HEX_RE = re.compile(r"^[0-9a-f]{64}$")


def _check_cid(name: str, value: Any) -> str:
    if not isinstance(value, str) or not _CID_RE.match(value):
        raise SchemaError(f"field {name!r}: {value!r} is not a CID (expected CIDv1 base32 'bafy...')")
    return value


def _check_addr(name: str, value: Any) -> str:
    if not isinstance(value, str) or not _ADDR_RE.match(value):
        raise SchemaError(f"field {name!r}: {value!r} is not a 0x Ethereum address")
    return value


def _check_int(name: str, value: Any, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise SchemaError(f"field {name!r}: expected an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise SchemaError(f"field {name!r}: {value} is outside [{lo}, {hi}]")
    return value


def _check_decimal(name: str, value: Any, lo: Decimal, hi: Decimal) -> str:
    if not isinstance(value, str):
        raise SchemaError(f"field {name!r}: expected a decimal string like \"0.001\", got {type(value).__name__}")
    try:
        number = Decimal(value)
    except InvalidOperation as exc:
        raise SchemaError(f"field {name!r}: {value!r} is not a decimal number") from exc
    if not number.is_finite() or not lo <= number <= hi:
        raise SchemaError(f"field {name!r}: {value} is outside [{lo}, {hi}]")
    return value


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise SchemaError(f"field {name!r}: {value!r} is not one of {', '.join(choices)}")
    return str(value)


def _node_class(name: str, value: Any) -> NodeClass:
    try:
        return NodeClass.from_name(value)
    except SchemaError as exc:
        raise SchemaError(f"field {name!r}: {exc}") from None


def _check_str(name: str, value: Any, max_len: int = 200) -> str:
    if not isinstance(value, str) or len(value) > max_len:
        raise SchemaError(f"field {name!r}: expected a string of at most {max_len} characters")
    return value


def _exact_keys(what: str, data: dict[str, Any], cls: type) -> None:
    expected = {f.name for f in fields(cls)}
    missing = expected - data.keys()
    unknown = data.keys() - expected
    if missing:
        raise SchemaError(f"{what}: missing field(s) {', '.join(sorted(missing))}")
    if unknown:
        raise SchemaError(f"{what}: unknown field(s) {', '.join(sorted(unknown))}")


class _Spec:
    """Shared encode/decode for the frozen spec dataclasses below."""

    SCHEMA = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload, no-any-return]

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        return cls.from_dict(parse_json_object(data, what=cls.SCHEMA))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class AggregationSpec(_Spec):
    """How the leader combines accepted deltas: a robust reducer, then an optional outer optimizer (DiLoCo)."""

    strategy: str = "mean"
    trim_ratio: str = "0.2"
    krum_f: int = 1
    clip_tau: str = "1.0"
    outer: str = "nesterov"
    outer_lr: str = "0.7"
    outer_momentum: str = "0.9"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        _exact_keys("aggregation", data, cls)
        return cls(
            strategy=_check_choice("aggregation.strategy", data["strategy"], STRATEGIES),
            trim_ratio=_check_decimal("aggregation.trim_ratio", data["trim_ratio"], Decimal(0), Decimal("0.49")),
            krum_f=_check_int("aggregation.krum_f", data["krum_f"], 0, 64),
            clip_tau=_check_decimal("aggregation.clip_tau", data["clip_tau"], Decimal(0), Decimal(10**6)),
            outer=_check_choice("aggregation.outer", data["outer"], OUTER_OPTIMIZERS),
            outer_lr=_check_decimal("aggregation.outer_lr", data["outer_lr"], Decimal(0), Decimal(10)),
            outer_momentum=_check_decimal("aggregation.outer_momentum", data["outer_momentum"], Decimal(0),
                                          Decimal("0.999")),
        )


@dataclass(frozen=True, kw_only=True)
class PaymentSpec(_Spec):
    """Rates in wei; the contract's copy (set by createJob) is the one that pays."""

    base_rate_wei: int = 10**15
    bonus_rate_wei: int = 5 * 10**14
    validator_fee_wei: int = 2 * 10**14
    leader_fee_wei: int = 10**15
    quorum: int = 3
    lease_seconds: int = 120

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        _exact_keys("payment", data, cls)
        big = 10**30
        return cls(
            base_rate_wei=_check_int("payment.base_rate_wei", data["base_rate_wei"], 0, big),
            bonus_rate_wei=_check_int("payment.bonus_rate_wei", data["bonus_rate_wei"], 0, big),
            validator_fee_wei=_check_int("payment.validator_fee_wei", data["validator_fee_wei"], 0, big),
            leader_fee_wei=_check_int("payment.leader_fee_wei", data["leader_fee_wei"], 0, big),
            quorum=_check_int("payment.quorum", data["quorum"], 1, 15),
            lease_seconds=_check_int("payment.lease_seconds", data["lease_seconds"], 5, 7 * 86400),
        )


@dataclass(frozen=True, kw_only=True)
class JobSpec(_Spec):
    """What the customer asks for. Published to IPFS; its CID goes on-chain with the deposit."""

    SCHEMA = JOB_SPEC_SCHEMA

    schema: str = JOB_SPEC_SCHEMA
    name: str = "fashion-mnist"
    model: str = "fmnist-cnn-v1"
    dataset_cid: str = ""
    eval_cid: str = ""
    """CID of the held-out evaluation shard (the leader reports accuracy on it)."""
    initial_checkpoint_cid: str = ""
    rounds: int = 12
    tasks_per_round: int = 4
    local_steps: int = 50
    """K for a class-M node; the task factory scales it for S and L."""
    batch_size: int = 32
    inner_optimizer: str = "adamw"
    inner_lr: str = "0.001"
    segment_every: int = 10
    spot_check_segments: int = 2
    """How many segments a validator replays (0 = all)."""
    replay_tolerance: str = "0.00001"
    delta_encoding: str = "f32"
    max_dag_bytes: int = 64 * 1024 * 1024
    seed: int = 0
    aggregation: AggregationSpec = field(default_factory=AggregationSpec)
    payment: PaymentSpec = field(default_factory=PaymentSpec)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        _exact_keys("job spec", data, cls)
        if data["schema"] != JOB_SPEC_SCHEMA:
            raise SchemaError(f"job spec: schema {data['schema']!r} is not {JOB_SPEC_SCHEMA!r}")
        agg = data["aggregation"]
        pay = data["payment"]
        if not isinstance(agg, dict) or not isinstance(pay, dict):
            raise SchemaError("job spec: 'aggregation' and 'payment' must be objects")
        return cls(
            schema=JOB_SPEC_SCHEMA,
            name=_check_str("name", data["name"]),
            model=_check_str("model", data["model"], 64),
            dataset_cid=_check_cid("dataset_cid", data["dataset_cid"]),
            eval_cid=_check_cid("eval_cid", data["eval_cid"]),
            initial_checkpoint_cid=_check_cid("initial_checkpoint_cid", data["initial_checkpoint_cid"]),
            rounds=_check_int("rounds", data["rounds"], 1, 10_000),
            tasks_per_round=_check_int("tasks_per_round", data["tasks_per_round"], 1, 64),
            local_steps=_check_int("local_steps", data["local_steps"], 1, 100_000),
            batch_size=_check_int("batch_size", data["batch_size"], 1, 4096),
            inner_optimizer=_check_choice("inner_optimizer", data["inner_optimizer"], INNER_OPTIMIZERS),
            inner_lr=_check_decimal("inner_lr", data["inner_lr"], Decimal(0), Decimal(10)),
            segment_every=_check_int("segment_every", data["segment_every"], 1, 10),
            spot_check_segments=_check_int("spot_check_segments", data["spot_check_segments"], 0, 10_000),
            replay_tolerance=_check_decimal("replay_tolerance", data["replay_tolerance"], Decimal(0), Decimal(1)),
            delta_encoding=_check_choice("delta_encoding", data["delta_encoding"], DELTA_ENCODINGS),
            max_dag_bytes=_check_int("max_dag_bytes", data["max_dag_bytes"], 1024, 1 << 34),
            seed=_check_int("seed", data["seed"], 0, 2**63 - 1),
            aggregation=AggregationSpec.from_dict(agg),
            payment=PaymentSpec.from_dict(pay),
        )

    def with_content(self, *, dataset_cid: str, eval_cid: str, initial_checkpoint_cid: str) -> JobSpec:
        return replace(self, dataset_cid=dataset_cid, eval_cid=eval_cid, initial_checkpoint_cid=initial_checkpoint_cid)


@dataclass(frozen=True, kw_only=True)
class TaskTicket(_Spec):
    """A micro-task the leader hands a trainer, signed by the leader (EIP-191 over the canonical bytes)."""

    SCHEMA = TASK_TICKET_SCHEMA

    schema: str = TASK_TICKET_SCHEMA
    job_id: int
    round: int
    term: int
    base_cid: str
    shard_cid: str
    sample_start: int
    sample_count: int
    steps: int
    batch_size: int
    seed: int
    node_class: NodeClass
    """On the wire by name ("S", "M", "L")."""
    weight: int
    """Work units this task represents (its delta's weight in aggregation)."""
    trainer: str
    leader: str
    expires_at: int
    signature: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        _exact_keys("task ticket", data, cls)
        if data["schema"] != TASK_TICKET_SCHEMA:
            raise SchemaError(f"task ticket: schema {data['schema']!r} is not {TASK_TICKET_SCHEMA!r}")
        sig = data["signature"]
        if not isinstance(sig, str) or (sig and not re.fullmatch(r"0x[0-9a-f]{130}", sig)):
            raise SchemaError("field 'signature': expected 0x + 65 bytes of hex")
        return cls(
            job_id=_check_int("job_id", data["job_id"], 1, 2**64),
            round=_check_int("round", data["round"], 0, 2**32),
            term=_check_int("term", data["term"], 0, 2**64),
            base_cid=_check_cid("base_cid", data["base_cid"]),
            shard_cid=_check_cid("shard_cid", data["shard_cid"]),
            sample_start=_check_int("sample_start", data["sample_start"], 0, 2**40),
            sample_count=_check_int("sample_count", data["sample_count"], 1, 2**40),
            steps=_check_int("steps", data["steps"], 1, 1_000_000),
            batch_size=_check_int("batch_size", data["batch_size"], 1, 4096),
            seed=_check_int("seed", data["seed"], 0, 2**63 - 1),
            node_class=_node_class("node_class", data["node_class"]),
            weight=_check_int("weight", data["weight"], 1, 2**32),
            trainer=_check_addr("trainer", data["trainer"]),
            leader=_check_addr("leader", data["leader"]),
            expires_at=_check_int("expires_at", data["expires_at"], 0, 2**40),
            signature=sig,
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "node_class": self.node_class.name}

    def signing_bytes(self) -> bytes:
        body = self.to_dict()
        body.pop("signature")
        return canonical_json(body)

    def signed_by(self, account: LocalAccount) -> TaskTicket:
        if account.address.lower() != self.leader.lower():
            raise SchemaError(f"ticket names leader {self.leader} but is being signed by {account.address}")
        sig = account.sign_message(encode_defunct(self.signing_bytes())).signature
        return replace(self, signature="0x" + bytes(sig).hex())

    def recover_signer(self) -> str:
        """The address that signed this ticket; raises SchemaError if unsigned or malformed."""
        if not self.signature:
            raise SchemaError("task ticket is not signed")
        try:
            signer: str = Account.recover_message(encode_defunct(self.signing_bytes()), signature=self.signature)
        except Exception as exc:  # eth-keys raises several types for a bad signature
            raise SchemaError(f"task ticket signature is invalid: {exc}") from exc
        return signer

    def verify_leader(self) -> None:
        """Check the signature is the named leader's (whether that address leads the job is a chain question)."""
        if self.recover_signer().lower() != self.leader.lower():
            raise SchemaError("task ticket: signature does not match the leader it names")


@dataclass(frozen=True, kw_only=True)
class UpdateManifest(_Spec):
    """What a trainer publishes for one task; its CID is what ``submitUpdate`` records on-chain."""

    SCHEMA = UPDATE_MANIFEST_SCHEMA

    schema: str = UPDATE_MANIFEST_SCHEMA
    ticket: TaskTicket
    """The signed ticket the update answers (in the JSON: the ticket's own object, signature included)."""
    trainer: str
    delta_cid: str
    delta_encoding: str
    loss_before_micro: int
    loss_after_micro: int
    segment_every: int
    segment_hashes: list[str]
    """sha256 of the encoded weights after each ``segment_every`` steps (the last one is the final weights)."""
    segment_cids: list[str]
    """CIDs of those segment checkpoints, so a validator can start a replay at any segment."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        _exact_keys("update manifest", data, cls)
        if data["schema"] != UPDATE_MANIFEST_SCHEMA:
            raise SchemaError(f"update manifest: schema {data['schema']!r} is not {UPDATE_MANIFEST_SCHEMA!r}")
        if not isinstance(data["ticket"], dict):
            raise SchemaError("field 'ticket': expected an object")
        ticket = TaskTicket.from_dict(data["ticket"])
        hashes, cids = data["segment_hashes"], data["segment_cids"]
        if not isinstance(hashes, list) or not isinstance(cids, list) or len(hashes) != len(cids) or not hashes:
            raise SchemaError("fields 'segment_hashes'/'segment_cids': two non-empty lists of equal length")
        if len(hashes) > 100_000:
            raise SchemaError("fields 'segment_hashes': too many segments")
        for i, h in enumerate(hashes):
            if not isinstance(h, str) or not _HEX_RE.match(h):
                raise SchemaError(f"field 'segment_hashes[{i}]': expected 64 lowercase hex digits")
        for i, c in enumerate(cids):
            _check_cid(f"segment_cids[{i}]", c)
        return cls(
            ticket=ticket,
            trainer=_check_addr("trainer", data["trainer"]),
            delta_cid=_check_cid("delta_cid", data["delta_cid"]),
            delta_encoding=_check_choice("delta_encoding", data["delta_encoding"], DELTA_ENCODINGS),
            loss_before_micro=_check_int("loss_before_micro", data["loss_before_micro"], 0, 2**63),
            loss_after_micro=_check_int("loss_after_micro", data["loss_after_micro"], 0, 2**63),
            segment_every=_check_int("segment_every", data["segment_every"], 1, 10),
            segment_hashes=list(hashes),
            segment_cids=list(cids),
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ticket": self.ticket.to_dict()}


@dataclass(frozen=True, kw_only=True)
class RoundRecord(_Spec):
    """The leader's account of a committed round, published to IPFS beside the checkpoint (informational:
    the chain's checkpoint CID is what counts, and anyone can recompute it from the accepted manifests)."""

    SCHEMA = ROUND_RECORD_SCHEMA

    schema: str = ROUND_RECORD_SCHEMA
    job_id: int
    round: int
    base_cid: str
    checkpoint_cid: str
    accepted: list[str]
    """Manifest CIDs of the accepted updates that were aggregated, sorted."""
    eval_accuracy_ppm: int
    eval_loss_micro: int

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        _exact_keys("round record", data, cls)
        if data["schema"] != ROUND_RECORD_SCHEMA:
            raise SchemaError(f"round record: schema {data['schema']!r} is not {ROUND_RECORD_SCHEMA!r}")
        accepted = data["accepted"]
        if not isinstance(accepted, list):
            raise SchemaError("field 'accepted': expected a list of CIDs")
        return cls(
            job_id=_check_int("job_id", data["job_id"], 1, 2**64),
            round=_check_int("round", data["round"], 0, 2**32),
            base_cid=_check_cid("base_cid", data["base_cid"]),
            checkpoint_cid=_check_cid("checkpoint_cid", data["checkpoint_cid"]),
            accepted=[_check_cid(f"accepted[{i}]", c) for i, c in enumerate(accepted)],
            eval_accuracy_ppm=_check_int("eval_accuracy_ppm", data["eval_accuracy_ppm"], 0, 10**6),
            eval_loss_micro=_check_int("eval_loss_micro", data["eval_loss_micro"], 0, 2**63),
        )


def to_micro(value: float) -> int:
    """A non-negative real as integer micro-units (for losses in hashed JSON)."""
    return max(0, round(value * 1_000_000))


def from_micro(value: int) -> float:
    return value / 1_000_000
