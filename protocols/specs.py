"""Versioned specs that live on IPFS: the customer's JobSpec, the leader's signed TaskTicket, the trainer's
UpdateManifest, and the leader's RoundRecord.

Each is a frozen dataclass with a ``schema`` string whose fields declare their checks (:mod:`protocols.schema`):
``from_dict`` rejects unknown keys, wrong types and out-of-range values with an error naming the field, and
``to_bytes`` gives canonical JSON so the same spec always has the same CID. Real numbers (learning rates,
tolerances) are decimal strings and losses are integer micro-units, because floats have no canonical text. This
module never imports ``node``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Annotated, Any

from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from protocols.canonical import canonical_json
from protocols.chain.ticket import ChainTicket, TicketDomain, sign_ticket, ticket_signer
from protocols.errors import SchemaError
from protocols.schema import (
    ADDRESS,
    CID,
    SHA256_HEX,
    Bool,
    Choice,
    Const,
    DecimalStr,
    EnumName,
    Int,
    ListOf,
    Nested,
    Pattern,
    Record,
    Str,
)
from protocols.types import NodeClass

JOB_SPEC_SCHEMA = "dtnode/jobspec/2"
"""2: ``loss_samples`` (version 1 measured the loss claims on a fixed 1,024 samples; a node of either version refuses
the other's specs instead of recomputing losses another way and voting honest work down)."""
TASK_TICKET_SCHEMA = "dtnode/ticket/2"
UPDATE_MANIFEST_SCHEMA = "dtnode/update/2"
ROUND_RECORD_SCHEMA = "dtnode/round/1"
MODEL_CONFIG_SCHEMA = "dtnode/model/1"

LOSS_SAMPLES = 512
"""The default ``JobSpec.loss_samples``: see there, and docs/protocol.md ("Loss claims")."""

STRATEGIES = ("mean", "median", "trimmed_mean", "krum", "centered_clip")
OUTER_OPTIMIZERS = ("none", "nesterov")
DELTA_ENCODINGS = ("f32", "int8")
INNER_OPTIMIZERS = ("adamw", "sgd")
DEVICE_KINDS = ("cpu", "cuda")
"""The hardware a trainer trained an update on (``UpdateManifest.device``; ``node.training.device`` defines them)."""
TASK_TYPES = ("classification", "causal_lm")
"""What a job trains for: its loss and its headline metric (:mod:`node.training.objective`)."""

_SIGNATURE = Pattern(r"(0x[0-9a-f]{130})?", "0x + 65 bytes of hex (or empty, unsigned)")
_WEI = Int(0, 10**30)


_OPTIONAL_CID = Pattern(r"(b[a-z2-7]{20,}|Qm[1-9A-HJ-NP-Za-km-z]{44})?", "a CID (CIDv1 base32 'bafy...') or empty")


@dataclass(frozen=True, kw_only=True)
class ModelConfig(Record):
    """The model section: the sizes of an architecture built from a config, or the graph file of the customer's own.

    Which fields a model uses is the registry's (:mod:`node.training.models`); 0 / "" means "not used" or the
    family's default, and a field the named model does not use must stay at 0 / "". The bounds refuse absurd sizes
    before anything is allocated.
    """

    WHAT = "model config"
    PREFIX = "model_config."

    schema: Annotated[str, Const(MODEL_CONFIG_SCHEMA)] = MODEL_CONFIG_SCHEMA
    layers: Annotated[int, Int(0, 96)] = 0
    """Transformer blocks (causal LMs)."""
    width: Annotated[int, Int(0, 8192)] = 0
    """Embedding width (causal LMs)."""
    heads: Annotated[int, Int(0, 128)] = 0
    """Attention heads; must divide ``width`` (causal LMs)."""
    context: Annotated[int, Int(0, 32768)] = 0
    """Longest token sequence (causal LMs)."""
    vocab: Annotated[int, Int(0, 1 << 20)] = 0
    """Vocabulary size (causal LMs): the tokenizer's."""
    classes: Annotated[int, Int(0, 100_000)] = 0
    """Output classes (image classifiers; 0: the model's default)."""
    channels: Annotated[int, Int(0, 64)] = 0
    """Input image channels (image classifiers; 0: the model's default)."""
    onnx_cid: Annotated[str, _OPTIONAL_CID] = ""
    """CID of the customer's ONNX graph file (model ``onnx-v1``): trainers and validators build the model from it."""


@dataclass(frozen=True, kw_only=True)
class AggregationSpec(Record):
    """How the leader combines accepted deltas: a robust reducer, then an optional outer optimizer (DiLoCo)."""

    WHAT = "aggregation"
    PREFIX = "aggregation."

    strategy: Annotated[str, Choice(STRATEGIES)] = "mean"
    trim_ratio: Annotated[str, DecimalStr(Decimal(0), Decimal("0.49"))] = "0.2"
    krum_f: Annotated[int, Int(0, 64)] = 1
    clip_tau: Annotated[str, DecimalStr(Decimal(0), Decimal(10**6))] = "1.0"
    outer: Annotated[str, Choice(OUTER_OPTIMIZERS)] = "nesterov"
    outer_lr: Annotated[str, DecimalStr(Decimal(0), Decimal(10))] = "0.7"
    outer_momentum: Annotated[str, DecimalStr(Decimal(0), Decimal("0.999"))] = "0.9"


@dataclass(frozen=True, kw_only=True)
class PaymentSpec(Record):
    """Rates in wei; the contract's copy (set by createJob) is the one that pays."""

    WHAT = "payment"
    PREFIX = "payment."

    base_rate_wei: Annotated[int, _WEI] = 10**15
    bonus_rate_wei: Annotated[int, _WEI] = 5 * 10**14
    validator_fee_wei: Annotated[int, _WEI] = 2 * 10**14
    leader_fee_wei: Annotated[int, _WEI] = 10**15
    quorum: Annotated[int, Int(1, 15)] = 3
    lease_seconds: Annotated[int, Int(5, 7 * 86400)] = 120


@dataclass(frozen=True, kw_only=True)
class JobSpec(Record):
    """What the customer asks for. Published to IPFS; its CID goes on-chain with the deposit."""

    WHAT = "job spec"
    OMIT_AT_DEFAULT = frozenset({"hardware_mismatch", "max_loss_rise_ppm", "model_config", "task"})

    schema: Annotated[str, Const(JOB_SPEC_SCHEMA)] = JOB_SPEC_SCHEMA
    name: Annotated[str, Str(200)] = "fashion-mnist"
    model: Annotated[str, Str(64)] = "fmnist-cnn-v1"
    """A registered architecture's versioned name (:mod:`node.training.models`)."""
    model_config: Annotated[ModelConfig, Nested(ModelConfig.from_dict)] = ModelConfig()
    """The named model's sizes or graph file, for the models that take them (omitted when unused)."""
    dataset_cid: Annotated[str, CID] = ""
    eval_cid: Annotated[str, CID] = ""
    """CID of the held-out evaluation shard (the leader reports the task's metric on it)."""
    task: Annotated[str, Choice(TASK_TYPES)] = "classification"
    """``classification`` (cross-entropy; accuracy) or ``causal_lm`` (next-token cross-entropy; perplexity); must
    be the model's task. Omitted at its default, so classification specs keep their bytes."""
    initial_checkpoint_cid: Annotated[str, CID] = ""
    rounds: Annotated[int, Int(1, 10_000)] = 12
    tasks_per_round: Annotated[int, Int(1, 64)] = 4
    local_steps: Annotated[int, Int(1, 100_000)] = 50
    """K for a class-M node; the task factory scales it for S and L."""
    batch_size: Annotated[int, Int(1, 4096)] = 32
    inner_optimizer: Annotated[str, Choice(INNER_OPTIMIZERS)] = "adamw"
    inner_lr: Annotated[str, DecimalStr(Decimal(0), Decimal(10))] = "0.001"
    segment_every: Annotated[int, Int(1, 10)] = 2
    """S: a trainer commits its state every S steps, so a class-M task has n = ⌈K / S⌉ segments (25 at the defaults)."""
    spot_check_segments: Annotated[int, Int(0, 10_000)] = 3
    """How many segments a validator replays (0 = all), the last one always. With n ≥ 20 and 3 challenged, a quorum
    of 3 replays ≤ 45 % of the trainer's steps and a trainer faking half its steps is caught with ≥ 99.9 % over 5
    updates (:func:`node.training.challenge.plan_challenge`, docs/protocol.md)."""
    replay_tolerance: Annotated[str, DecimalStr(Decimal(0), Decimal(1))] = "0.00001"
    """Used only when ``hardware_mismatch`` is declared: the largest per-tensor relative difference a replayed
    segment may show (the mean over the challenged segments must stay under half of it); see
    :mod:`node.training.replay`. Otherwise a replay must reproduce the published state bit for bit."""
    hardware_mismatch: Annotated[bool, Bool()] = False
    """Declared by the customer when trainers and validators may run on different hardware (thread counts, CPU
    instruction sets): only then is ``replay_tolerance`` granted."""
    max_loss_rise_ppm: Annotated[int, Int(0, 10**9)] = 200_000
    """An update whose recomputed loss on its own data ends more than this (parts per million of the loss
    before) above where it started is rejected as ``LOSS_RISE``."""
    loss_samples: Annotated[int, Int(1, 65_536)] = LOSS_SAMPLES
    """A task's losses (the ``lossReduction`` claim that splits the bonus, and the ``LOSS_RISE`` bound) are its mean
    loss on the first this-many samples of its range, before and after its steps; the trainer and every replay
    compute both. Fewer is cheaper (two forward passes of this many samples per task and per replay) and a noisier
    bonus split; it changes nothing a trainer controls."""
    delta_encoding: Annotated[str, Choice(DELTA_ENCODINGS)] = "f32"
    max_dag_bytes: Annotated[int, Int(1024, 1 << 34)] = 64 * 1024 * 1024
    seed: Annotated[int, Int(0, 2**63 - 1)] = 0
    aggregation: Annotated[AggregationSpec, Nested(AggregationSpec.from_dict)] = field(
        default_factory=AggregationSpec)
    payment: Annotated[PaymentSpec, Nested(PaymentSpec.from_dict)] = field(default_factory=PaymentSpec)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        if data.get("schema") == "dtnode/jobspec/1":  # before its missing field is named: say what to change
            raise SchemaError(f"job spec: schema 'dtnode/jobspec/1' is not {JOB_SPEC_SCHEMA!r}: version 2 added "
                              "'loss_samples' (version 1 measured the loss claims on 1,024 samples); set "
                              f"\"schema\": \"{JOB_SPEC_SCHEMA}\" and \"loss_samples\": 1024 to keep version 1's "
                              f"figures, or {LOSS_SAMPLES} (the default)")
        return super().from_dict(data)

    def with_content(self, *, dataset_cid: str, eval_cid: str, initial_checkpoint_cid: str) -> JobSpec:
        return replace(self, dataset_cid=dataset_cid, eval_cid=eval_cid, initial_checkpoint_cid=initial_checkpoint_cid)


@dataclass(frozen=True, kw_only=True)
class TaskTicket(Record):
    """A micro-task the leader hands a trainer, signed by the leader with EIP-712 for the job's contract.

    The signature is over :meth:`chain_ticket`, the on-chain ``Ticket`` struct that ``submitUpdate`` verifies
    (job, round, term, trainer, slot, work units, expiry) whose ``taskHash`` is :meth:`task_hash`: keccak256 of this
    ticket's canonical bytes without the signature (every field: base, shard, sample range, steps, batch, seed, class,
    weight, leader, and the on-chain fields again). So the chain admits exactly this task, and a validator that
    recomputes the hash from the manifest's ticket and finds the ``ticketHash`` of ``UpdateSubmitted`` knows the
    trainer worked on the ticket the chain admitted. Whether a ticket is one its job's leader may hand out is
    :func:`node.training.ticket_check.check_ticket`'s question; this class checks its shape and its signature.
    """

    WHAT = "task ticket"

    schema: Annotated[str, Const(TASK_TICKET_SCHEMA)] = TASK_TICKET_SCHEMA
    job_id: Annotated[int, Int(1, 2**64)]
    round: Annotated[int, Int(0, 2**32)]
    term: Annotated[int, Int(0, 2**32)]
    slot: Annotated[int, Int(0, 63)]
    """The round's slot this ticket fills (one update per slot)."""
    base_cid: Annotated[str, CID]
    shard_cid: Annotated[str, CID]
    sample_start: Annotated[int, Int(0, 2**40)]
    sample_count: Annotated[int, Int(1, 2**40)]
    steps: Annotated[int, Int(1, 1_000_000)]
    batch_size: Annotated[int, Int(1, 4096)]
    seed: Annotated[int, Int(0, 2**63 - 1)]
    node_class: Annotated[NodeClass, EnumName(NodeClass)]
    """On the wire by name ("S", "M", "L")."""
    weight: Annotated[int, Int(1, 2**32)]
    """The delta's weight in aggregation (samples seen)."""
    work_units: Annotated[int, Int(1, 2**32 - 1)]
    """What the chain pays for (``workUnits``): the task's size in units of the smallest class's task."""
    trainer: Annotated[str, ADDRESS]
    leader: Annotated[str, ADDRESS]
    expires_at: Annotated[int, Int(0, 2**40)]
    signature: Annotated[str, _SIGNATURE] = ""

    def signing_bytes(self) -> bytes:
        body = self.to_dict()
        body.pop("signature")
        return canonical_json(body)

    def task_hash(self) -> bytes:
        """The on-chain ``taskHash``: keccak256 of :meth:`signing_bytes`."""
        return keccak(self.signing_bytes())

    def chain_ticket(self) -> ChainTicket:
        """The on-chain ``Ticket`` this ticket stands for (what the leader's signature covers)."""
        return ChainTicket(job_id=self.job_id, round=self.round, term=self.term, trainer=self.trainer, slot=self.slot,
                           work_units=self.work_units, expiry=self.expires_at, task_hash=self.task_hash())

    def signed_by(self, account: LocalAccount, domain: TicketDomain) -> TaskTicket:
        """This ticket with ``account``'s EIP-712 signature for ``domain`` (the job's contract on its chain)."""
        if account.address.lower() != self.leader.lower():
            raise SchemaError(f"ticket names leader {self.leader} but is being signed by {account.address}")
        sig = sign_ticket(self.chain_ticket(), domain, account)
        return replace(self, signature="0x" + sig.hex())

    def recover_signer(self, domain: TicketDomain) -> str:
        """The address that signed this ticket for ``domain``; raises SchemaError if unsigned or malformed."""
        if not self.signature:
            raise SchemaError("task ticket is not signed")
        return ticket_signer(self.chain_ticket(), domain, bytes.fromhex(self.signature[2:]))

    def verify_leader(self, domain: TicketDomain) -> None:
        """Check the signature is the named leader's (whether that address leads the job is a chain question)."""
        if self.recover_signer(domain).lower() != self.leader.lower():
            raise SchemaError("task ticket: signature does not match the leader it names")


@dataclass(frozen=True, kw_only=True)
class UpdateManifest(Record):
    """What a trainer publishes for one task; its CID is what ``submitUpdate`` records on-chain."""

    WHAT = "update manifest"
    OMIT_AT_DEFAULT = frozenset({"device"})

    schema: Annotated[str, Const(UPDATE_MANIFEST_SCHEMA)] = UPDATE_MANIFEST_SCHEMA
    ticket: Annotated[TaskTicket, Nested(TaskTicket.from_dict)]
    """The signed ticket the update answers (in the JSON: the ticket's own object, signature included)."""
    trainer: Annotated[str, ADDRESS]
    delta_cid: Annotated[str, CID]
    delta_encoding: Annotated[str, Choice(DELTA_ENCODINGS)]
    loss_before_micro: Annotated[int, Int(0, 2**63)]
    loss_after_micro: Annotated[int, Int(0, 2**63)]
    segment_every: Annotated[int, Int(1, 10)]
    segment_hashes: Annotated[list[str], ListOf(SHA256_HEX, max_items=16_000, min_items=1, as_tuple=False)]
    """sha256 of the whole encoded trainer state (weights, optimizer moments and step counters) after each
    ``segment_every`` steps; the last one holds the final weights. The commitment: the manifest's CID goes
    on-chain at submission, before the block whose hash seeds the challenge exists, so every segment state is
    fixed before anyone knows which are challenged. The states themselves stay with the trainer and are served
    on request (``/dtnode/segment/1.0.0``)."""
    device: Annotated[str, Choice(DEVICE_KINDS)] = "cpu"
    """The device kind the trainer trained on; it decides whether a validator's replay must be bitwise (see
    ``node.training.device.replay_rule``). Omitted at its default, so CPU manifests keep their bytes."""


@dataclass(frozen=True, kw_only=True)
class RoundRecord(Record):
    """The leader's account of a committed round, published to IPFS beside the checkpoint (informational:
    the chain's checkpoint CID is what counts, and anyone can recompute it from the accepted manifests)."""

    WHAT = "round record"

    schema: Annotated[str, Const(ROUND_RECORD_SCHEMA)] = ROUND_RECORD_SCHEMA
    job_id: Annotated[int, Int(1, 2**64)]
    round: Annotated[int, Int(0, 2**32)]
    base_cid: Annotated[str, CID]
    checkpoint_cid: Annotated[str, CID]
    accepted: Annotated[list[str], ListOf(CID, max_items=100_000, as_tuple=False)]
    """Manifest CIDs of the accepted updates that were aggregated, sorted."""
    eval_accuracy_ppm: Annotated[int, Int(0, 10**6)]
    eval_loss_micro: Annotated[int, Int(0, 2**63)]


def to_micro(value: float) -> int:
    """A non-negative real as integer micro-units (for losses in hashed JSON)."""
    return max(0, round(value * 1_000_000))


def from_micro(value: int) -> float:
    return value / 1_000_000
