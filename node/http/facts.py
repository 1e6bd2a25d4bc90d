"""What the dashboard shows, as plain frozen data, and the pure functions that build it from chain facts.

Everything here is derived from the chain (views and event logs) and from content fetched by CID (the per-round
metric, measured by :mod:`node.http.measure` on the job's evaluation shard); nothing comes from a peer's word.
No I/O here: :mod:`node.http.gather` reads the chain and calls these functions, so tests build them from events.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from protocols.chain.events import ChainEvent
from protocols.chain.models import (
    AuditOutcome,
    JobInfo,
    RoundInfo,
    TrainerInfo,
    UpdateInfo,
    UpdateStatus,
    ValidatorInfo,
)

SLASH_EVENTS = ("TrainerSlashed", "ValidatorSlashed", "LeaderBondForfeited")


@dataclass(frozen=True)
class Measurement:
    """A checkpoint's metric and loss on the job's evaluation shard, measured by this node from verified bytes."""

    metric_name: str
    metric: float
    loss: float
    samples: int


@dataclass(frozen=True)
class Vote:
    validator: str
    phase: int
    """0: the first panel's vote (signed or on-chain), 1 and up: an escalation panel's."""
    valid: bool


@dataclass(frozen=True)
class UpdateFacts:
    round: int
    slot: int
    trainer: str
    update_cid: str
    work_units: int
    loss_reduction: int
    status: str
    """PENDING, ACCEPTED, REJECTED or EXPIRED (the contract's verdict)."""
    panel: tuple[str, ...]
    votes: tuple[Vote, ...]
    pay_wei: int
    paid: bool
    own_reason: str = ""
    """Why THIS node's validator found the update invalid (its replay's reject code); empty when it did not
    check it or found it valid. The chain records only valid or invalid, so no other node's reason is known."""


@dataclass(frozen=True)
class RoundFacts:
    round: int
    leader: str
    checkpoint_cid: str
    accepted_slots: tuple[int, ...]
    audit: str
    """OPEN, PASSED, DISPUTED or LAPSED."""
    measurement: Measurement | None


@dataclass(frozen=True)
class Term:
    term: int
    leader: str
    lease_expiry: int


@dataclass(frozen=True)
class Penalty:
    """A slash or a forfeited bond, or a disputed round (``kind`` DISPUTED, ``account`` empty)."""

    kind: str
    account: str
    amount_wei: int
    round: int | None
    block: int


@dataclass(frozen=True)
class JobSummary:
    job_id: int
    status: str
    customer: str
    deposit_wei: int
    spent_wei: int
    refunded_wei: int
    rounds_done: int
    rounds_total: int
    leader: str
    lease_expiry: int
    term: int
    spec_cid: str
    final_cid: str


@dataclass(frozen=True)
class JobDetail:
    summary: JobSummary
    rounds: tuple[RoundFacts, ...]
    updates: tuple[UpdateFacts, ...]
    terms: tuple[Term, ...]
    penalties: tuple[Penalty, ...]
    fetch_command: str


@dataclass(frozen=True)
class NodeFacts:
    address: str
    roles: tuple[str, ...]
    node_class: str
    stake_wei: int
    accepted: int
    rejected: int
    earned_wei: int
    last_seen_s: float | None
    """Seconds since this node last heard the peer's presence (None: not in the peer table)."""


def job_summary(job: JobInfo) -> JobSummary:
    return JobSummary(
        job_id=int(job.job_id), status=job.status.name, customer=job.customer, deposit_wei=job.deposit,
        spent_wei=job.spent, refunded_wei=job.refunded, rounds_done=job.committed_rounds,
        rounds_total=job.params.rounds, leader=job.leader or "", lease_expiry=job.lease_expiry, term=job.term,
        spec_cid=job.params.spec_cid, final_cid=job.last_checkpoint_cid or "")


def fetch_command(job: JobInfo, *, rpc: str, contract: str, bootstrap: str) -> str:
    """The command that fetches (and verifies) the job's final weights."""
    parts = [f"dtnode job fetch {job.job_id} -o job-{job.job_id}.safetensors", f"--rpc {rpc}",
             f"--contract {contract}"]
    if bootstrap:
        parts.append(f"--bootstrap {bootstrap}")
    return " ".join(parts)


VERDICT_EVENTS = frozenset({"UpdateAccepted", "UpdateRejected"})


def votes_of(events: Sequence[ChainEvent],
             signed: Mapping[tuple[int, int], tuple[Vote, ...]]) -> dict[tuple[int, int], tuple[Vote, ...]]:
    """(round, slot) → the votes the chain records: each ``UpdateVoted`` in chain order, and for an update whose
    unanimous first panel settled on the fast path (``settleUpdates`` stores no vote) its members' signed votes,
    ``signed``, decoded from that transaction's calldata (:mod:`node.http.signed`)."""
    out: dict[tuple[int, int], list[Vote]] = defaultdict(list)
    for ev in events:
        if ev.name == "UpdateVoted":
            a = ev.args
            out[(int(a["round"]), int(a["slot"]))].append(Vote(str(a["validator"]), int(a["phase"]),
                                                               bool(a["isValid"])))
    return {**signed, **{k: tuple(v) for k, v in out.items()}}


def job_detail(job: JobInfo, events: Sequence[ChainEvent], updates: Mapping[tuple[int, int], UpdateInfo],
               rounds: Mapping[int, RoundInfo], measured: Mapping[str, Measurement], *, fetch: str,
               signed: Mapping[tuple[int, int], tuple[Vote, ...]] | None = None,
               own_reasons: Mapping[tuple[int, int], str] | None = None) -> JobDetail:
    """One job as the chain records it: ``events`` are the job's logs in chain order, ``updates`` and ``rounds``
    the views read for its slots and committed rounds, ``measured`` the checkpoints measured so far by CID,
    ``signed`` the fast-path votes by (round, slot) (see :func:`votes_of`); ``own_reasons`` this node's reject
    reasons by (round, slot), labelled as its own (:attr:`UpdateFacts.own_reason`)."""
    votes = votes_of(events, signed or {})
    own = own_reasons or {}
    round_facts, update_facts, terms, penalties = [], [], [], []
    for ev in events:
        a = ev.args
        if ev.name == "RoundCommitted":
            r, cid = int(a["round"]), str(a["checkpointCid"])
            info = rounds.get(r)
            audit = info.audit.name if info is not None else AuditOutcome.OPEN.name
            round_facts.append(RoundFacts(r, str(a["leader"]), cid, _slots(int(a["acceptedMask"])), audit,
                                          measured.get(cid)))
        elif ev.name == "UpdateSubmitted":
            r, slot = int(a["round"]), int(a["slot"])
            u = updates.get((r, slot))
            update_facts.append(UpdateFacts(
                round=r, slot=slot, trainer=str(a["trainer"]), update_cid=str(a["updateCid"]),
                work_units=int(a["workUnits"]), loss_reduction=int(a["lossReduction"]),
                status=(u.status if u is not None else UpdateStatus.PENDING).name,
                panel=tuple(u.validators) if u is not None else (), votes=votes.get((r, slot), ()),
                pay_wei=u.amount if u is not None else 0, paid=bool(u and u.paid), own_reason=own.get((r, slot), "")))
        elif ev.name == "LeaderElected":
            terms.append(Term(int(a["term"]), str(a["leader"]), int(a["leaseExpiry"])))
        elif ev.name in SLASH_EVENTS:
            who = a.get("trainer") or a.get("validator") or a.get("leader")
            penalties.append(Penalty(ev.name, str(who), int(a["amount"]), None, ev.block_number))
        elif ev.name == "RoundDisputed":
            penalties.append(Penalty("RoundDisputed", "", 0, int(a["round"]), ev.block_number))
    return JobDetail(summary=job_summary(job), rounds=tuple(round_facts), updates=tuple(update_facts),
                     terms=tuple(terms), penalties=tuple(penalties), fetch_command=fetch)


def node_rows(trainers: Mapping[str, TrainerInfo], validators: Mapping[str, ValidatorInfo],
              events: Sequence[ChainEvent], last_seen: Mapping[str, float]) -> list[NodeFacts]:
    """Every registered trainer and validator with what the chain records of its work and pay; ``events`` are
    the deployment's logs, ``last_seen`` seconds since presence by lower-case address."""
    accepted: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    earned: Counter[str] = Counter()
    for ev in events:
        a = ev.args
        if ev.name == "UpdateAccepted":
            accepted[str(a["trainer"]).lower()] += 1
        elif ev.name == "UpdateRejected":
            rejected[str(a["trainer"]).lower()] += 1
        elif ev.name in ("PaidOut", "FeePaid", "SlashRewardPaid"):
            who = a.get("trainer") or a.get("account") or a.get("validator")
            earned[str(who).lower()] += int(a["amount"])
    rows = []
    for addr in sorted({*trainers, *validators}, key=str.lower):
        t, v = trainers.get(addr), validators.get(addr)
        roles = tuple(r for r, info in (("trainer", t), ("validator", v)) if info is not None and info.registered)
        key = addr.lower()
        rows.append(NodeFacts(
            address=addr, roles=roles, node_class=t.node_class.name if t is not None and t.registered else "",
            stake_wei=(t.stake if t is not None else 0) + (v.stake if v is not None else 0),
            accepted=accepted[key], rejected=rejected[key], earned_wei=earned[key], last_seen_s=last_seen.get(key)))
    return rows


def _slots(mask: int) -> tuple[int, ...]:
    return tuple(i for i in range(64) if mask >> i & 1)


def to_json(value: Any) -> Any:
    """``value`` (facts, nested) as JSON-ready data; wei amounts (fields ending ``_wei``) as decimal strings, which
    JavaScript numbers could not hold exactly."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: str(getattr(value, f.name)) if f.name.endswith("_wei") else to_json(getattr(value, f.name))
                for f in fields(value)}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return value
