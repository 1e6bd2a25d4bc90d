"""The one check of a task ticket, used by the trainer that receives it and by every validator of its update.

Pure (no network, no chain): the caller gathers what it knows independently of the ticket (the job's spec, the
round, the leaders whose signature counts, the checkpoint the round must start from, the dataset's shards) into a
:class:`TicketExpectations` and :func:`check_ticket` compares field by field. Every refusal is one
:class:`TicketRejected` whose ``code`` (a :class:`RejectCode`) goes into the trainer's log or the validator's verdict.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from node.training.errors import TicketRejected
from node.training.task import task_size, work_units
from protocols.chain.ticket import TicketDomain, ticket_digest
from protocols.errors import SchemaError
from protocols.specs import JobSpec, TaskTicket, UpdateManifest
from protocols.types import NodeClass, RejectCode


@dataclass(frozen=True, kw_only=True)
class TicketExpectations:
    """What the checker knows about the ticket it should hold, from the chain and the job's spec."""

    spec: JobSpec
    domain: TicketDomain
    """The job's contract and chain: the EIP-712 domain the leader's signature must be for."""
    job_id: int
    round: int
    trainer: str
    """The account the task is for (the trainer itself, or the account that submitted the update)."""
    leaders: Collection[str]
    """Addresses whose signature is acceptable: the job's leader now (trainer), or everyone who ever led it
    (validator: the update may have been handed out by a leader since replaced)."""
    base_cid: str
    """The checkpoint the round starts from: the spec's initial one in round 0, then the last committed one."""
    shard_samples: Mapping[str, int]
    """The job's dataset: shard CID → its number of samples, in the dataset manifest's order (which
    :func:`ticket_shard` indexes)."""
    node_class: NodeClass | None = None
    """The class the trainer declared, when the checker knows it (the trainer does)."""
    now: float | None = None
    """Seconds since the epoch, to refuse an expired ticket; ``None`` where expiry no longer matters (a validator
    checks an update the chain already accepted within the round)."""
    admitted: tuple[int, bytes] | None = None
    """(slot, ``ticketHash``) of the update the chain admitted, when the checker is a validator: the manifest's
    ticket must be that very ticket."""


def ticket_seed(spec: JobSpec, job_id: int, round_: int, slot: int) -> int:
    """The batch-order seed of the task in ``slot`` of round ``round_``: fixed by the job, the round and the slot,
    so no leader can hand two slots the same work (one trained, both paid, the aggregate counting it twice) or let a
    trainer pick a seed."""
    digest = hashlib.sha256(f"{job_id}:{round_}:{slot}:{spec.seed}".encode()).digest()
    return int.from_bytes(digest[:7], "big")


def ticket_shard(shard_cids: Sequence[str], spec: JobSpec, round_: int, slot: int) -> str:
    """The shard the task in ``slot`` of round ``round_`` trains on (the whole shard: sample range ``[0, size)``):
    the round's slots walk the dataset, so each shard is trained in turn and no two slots of a round share one
    while the dataset has at least ``tasks_per_round`` shards."""
    return shard_cids[(round_ * spec.tasks_per_round + slot) % len(shard_cids)]


def _refuse(code: RejectCode, detail: str) -> TicketRejected:
    return TicketRejected(code, detail)


def check_ticket(ticket: TaskTicket, expect: TicketExpectations) -> None:
    """Raise :class:`TicketRejected` unless ``ticket`` is exactly a ticket the job's leader could have signed for
    ``expect.trainer`` in ``expect.round``: signed by an acceptable leader, for this job, round and trainer, on the
    right base checkpoint, in one of the round's slots, on that slot's whole shard with that slot's seed, with the
    size and work units the spec gives its node class (and, for a validator, the very ticket the chain admitted).
    Every field is fixed by the spec, the chain and the slot: a leader has no choice to hand an accomplice."""
    try:
        signer = ticket.recover_signer(expect.domain)
    except SchemaError as exc:
        raise _refuse(RejectCode.BAD_SIGNATURE, str(exc)) from None
    if signer.lower() != ticket.leader.lower():
        raise _refuse(RejectCode.BAD_SIGNATURE, f"signed by {signer}, but names {ticket.leader} as its leader")
    if ticket.leader.lower() not in {a.lower() for a in expect.leaders}:
        raise _refuse(RejectCode.WRONG_LEADER, f"signed by {ticket.leader}, who does not lead job {expect.job_id}")
    if ticket.job_id != expect.job_id:
        raise _refuse(RejectCode.WRONG_JOB, f"ticket is for job {ticket.job_id}, not {expect.job_id}")
    if ticket.round != expect.round:
        raise _refuse(RejectCode.BAD_ROUND, f"ticket is for round {ticket.round}, not {expect.round}")
    if ticket.trainer.lower() != expect.trainer.lower():
        raise _refuse(RejectCode.WRONG_TRAINER, f"ticket is for {ticket.trainer}, not {expect.trainer}")
    if ticket.base_cid != expect.base_cid:
        raise _refuse(RejectCode.WRONG_BASE,
                      f"base {ticket.base_cid} is not the checkpoint committed before round {expect.round}")
    samples = expect.shard_samples.get(ticket.shard_cid)
    if samples is None:
        raise _refuse(RejectCode.WRONG_SHARD, f"shard {ticket.shard_cid} is not part of the job's dataset")
    if ticket.sample_start + ticket.sample_count > samples:
        raise _refuse(RejectCode.BAD_SAMPLE_RANGE, f"samples {ticket.sample_start}+{ticket.sample_count} run past "
                                                   f"the shard's {samples}")
    if (ticket.sample_start, ticket.sample_count) != (0, samples):
        raise _refuse(RejectCode.BAD_SAMPLE_RANGE, f"samples {ticket.sample_start}+{ticket.sample_count} are not the "
                                                   f"whole shard's 0+{samples} (a shrunk task)")
    if expect.node_class is not None and ticket.node_class != expect.node_class:
        raise _refuse(RejectCode.WRONG_TASK_SIZE,
                      f"ticket is sized for class {ticket.node_class}, the trainer is class {expect.node_class}")
    size = task_size(expect.spec, ticket.node_class)
    claimed, sized = (ticket.steps, ticket.batch_size, ticket.weight), (size.steps, size.batch_size, size.weight)
    if claimed != sized:
        raise _refuse(RejectCode.WRONG_TASK_SIZE, f"(steps, batch, weight) {claimed} differ from the spec's {sized} "
                                                  f"for class {ticket.node_class}")
    if ticket.work_units != work_units(expect.spec, ticket.node_class):
        raise _refuse(RejectCode.WRONG_TASK_SIZE, f"work units {ticket.work_units} differ from the spec's "
                                                  f"{work_units(expect.spec, ticket.node_class)}")
    if ticket.slot >= expect.spec.tasks_per_round:
        raise _refuse(RejectCode.WRONG_SLOT, f"slot {ticket.slot} is not below tasks_per_round "
                                             f"{expect.spec.tasks_per_round}")
    shard = ticket_shard(list(expect.shard_samples), expect.spec, ticket.round, ticket.slot)
    if ticket.shard_cid != shard:
        raise _refuse(RejectCode.WRONG_SHARD, f"slot {ticket.slot} of round {ticket.round} trains shard {shard}, "
                                              f"not {ticket.shard_cid}")
    seed = ticket_seed(expect.spec, ticket.job_id, ticket.round, ticket.slot)
    if ticket.seed != seed:
        raise _refuse(RejectCode.WRONG_TASK_PARAMS, f"seed {ticket.seed} is not slot {ticket.slot}'s {seed}")
    if expect.admitted is not None:
        slot, digest = expect.admitted
        if ticket.slot != slot:
            raise _refuse(RejectCode.WRONG_SLOT, f"ticket is for slot {ticket.slot}, the update fills slot {slot}")
        if ticket_digest(ticket.chain_ticket(), expect.domain) != digest:
            raise _refuse(RejectCode.NOT_ADMITTED, "the manifest's ticket is not the ticket the chain admitted")
    if expect.now is not None and ticket.expires_at <= expect.now:
        raise _refuse(RejectCode.EXPIRED, f"ticket expired at {ticket.expires_at}")


def check_update_ticket(manifest: UpdateManifest, expect: TicketExpectations) -> None:
    """:func:`check_ticket` on the manifest's ticket, plus what the manifest itself must agree on: the trainer that
    published it and the spec's segment length (which replay uses)."""
    check_ticket(manifest.ticket, expect)
    if manifest.trainer.lower() != expect.trainer.lower():
        raise _refuse(RejectCode.WRONG_TRAINER, f"manifest names {manifest.trainer}, the update is {expect.trainer}'s"
                                                " (a copied update?)")
    if manifest.segment_every != expect.spec.segment_every:
        raise _refuse(RejectCode.WRONG_TASK_PARAMS,
                      f"segment_every {manifest.segment_every} differs from the spec's {expect.spec.segment_every}")
