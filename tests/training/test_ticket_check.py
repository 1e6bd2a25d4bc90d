"""The one ticket check (trainer and validator): every field against the spec and what the chain says, no network."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from eth_account import Account

from node.training.errors import TicketRejected
from node.training.task import Task, task_size, work_units
from node.training.ticket_check import (
    TicketExpectations,
    check_ticket,
    check_update_ticket,
    ticket_seed,
    ticket_shard,
)
from protocols.chain.ticket import TicketDomain, ticket_digest
from protocols.specs import JobSpec, TaskTicket, UpdateManifest
from protocols.types import NodeClass, RejectCode

BASE = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
SHARD = "bafkreiaxo6h3gr4zkdmuzt3vuxbbmtyyc4rvdrsl5mbqzbxr2ihrzzh7ye"
OTHER_CID = "bafkreidlq2zhh7zu7tqz224aj37vup2xi6w2kpmyaflbwfqtxxenucbzmi"
# Hardhat's public test mnemonic: dev keys only.
Account.enable_unaudited_hdwallet_features()
MNEMONIC = "test test test test test test test test test test test junk"
LEADER = Account.from_mnemonic(MNEMONIC, account_path="m/44'/60'/0'/0/1")
TRAINER = Account.from_mnemonic(MNEMONIC, account_path="m/44'/60'/0'/0/2")
STRANGER = Account.from_mnemonic(MNEMONIC, account_path="m/44'/60'/0'/0/3")
SPEC = JobSpec(local_steps=50, batch_size=32, segment_every=10).with_content(
    dataset_cid=BASE, eval_cid=BASE, initial_checkpoint_cid=BASE)
NOW = 1_000_000
DOMAIN = TicketDomain(chain_id=31337, contract="0x5FbDB2315678afecb367f032d93F642f64180aa3")


def expectations(**kw: Any) -> TicketExpectations:
    base: dict[str, Any] = dict(spec=SPEC, domain=DOMAIN, job_id=1, round=3, trainer=TRAINER.address,
                                leaders=(LEADER.address,), base_cid=BASE, shard_samples={SHARD: 6000, OTHER_CID: 100},
                                node_class=NodeClass.S, now=NOW)
    base.update(kw)
    return TicketExpectations(**base)


def ticket(*, signer: Any = LEADER, domain: TicketDomain = DOMAIN, **kw: Any) -> TaskTicket:
    node_class = kw.pop("node_class", NodeClass.S)
    size = task_size(SPEC, node_class)
    fields: dict[str, Any] = dict(
        job_id=1, round=3, term=1, slot=2, base_cid=BASE, shard_cid=SHARD, sample_start=0, sample_count=6000,
        steps=size.steps, batch_size=size.batch_size, seed=ticket_seed(SPEC, kw.get("job_id", 1),
                                                                       kw.get("round", 3), kw.get("slot", 2)),
        node_class=node_class, weight=size.weight,
        work_units=work_units(SPEC, node_class), trainer=TRAINER.address, leader=signer.address, expires_at=NOW + 60)
    fields.update(kw)
    return TaskTicket(**fields).signed_by(signer, domain)


def refusal(t: TaskTicket, expect: TicketExpectations | None = None) -> RejectCode:
    with pytest.raises(TicketRejected) as info:
        check_ticket(t, expect or expectations())
    return info.value.code


def test_the_leaders_ticket_passes_for_every_class() -> None:
    for node_class in NodeClass:
        check_ticket(ticket(node_class=node_class), expectations(node_class=node_class))
    # A validator knows no class and ignores expiry: any class the spec sizes correctly passes.
    check_ticket(ticket(node_class=NodeClass.L, expires_at=1), expectations(node_class=None, now=None))


def test_size_follows_the_spec() -> None:
    s, m, big = (task_size(SPEC, c) for c in NodeClass)
    assert (m.steps, m.batch_size) == (SPEC.local_steps, SPEC.batch_size)  # class M is the spec's reference
    assert s.steps * 2 == m.steps == big.steps // 2 and s.batch_size == big.batch_size == SPEC.batch_size
    assert all(x.weight == x.steps * x.batch_size for x in (s, m, big))
    t = ticket()
    task = Task.from_ticket(SPEC, t)
    assert (task.steps, task.batch_size, task.seed, task.sample_range) == (t.steps, t.batch_size, t.seed, (0, 6000))
    assert (task.model_name, task.segment_every, task.optimizer) == (SPEC.model, 10, SPEC.inner_optimizer)


def test_signature_must_be_the_named_leaders() -> None:
    forged = replace(ticket(signer=STRANGER), leader=LEADER.address)
    assert refusal(forged) is RejectCode.BAD_SIGNATURE
    assert refusal(replace(ticket(), signature="")) is RejectCode.BAD_SIGNATURE
    assert refusal(replace(ticket(), seed=8)) is RejectCode.BAD_SIGNATURE  # any edit breaks the signature
    # signed for another chain or another deployment: recovers to someone else
    assert refusal(ticket(domain=TicketDomain(chain_id=1, contract=DOMAIN.contract))) is RejectCode.BAD_SIGNATURE
    other = TicketDomain(chain_id=DOMAIN.chain_id, contract="0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512")
    assert refusal(ticket(domain=other)) is RejectCode.BAD_SIGNATURE


def test_leader_must_be_acceptable() -> None:
    assert refusal(ticket(signer=STRANGER)) is RejectCode.WRONG_LEADER
    check_ticket(ticket(signer=STRANGER), expectations(leaders=(LEADER.address, STRANGER.address.lower())))


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"job_id": 2}, RejectCode.WRONG_JOB),
        ({"round": 2}, RejectCode.BAD_ROUND),
        ({"trainer": STRANGER.address}, RejectCode.WRONG_TRAINER),
        ({"base_cid": OTHER_CID}, RejectCode.WRONG_BASE),
        ({"shard_cid": BASE}, RejectCode.WRONG_SHARD),
        ({"sample_start": 1}, RejectCode.BAD_SAMPLE_RANGE),
        ({"shard_cid": OTHER_CID, "sample_count": 101}, RejectCode.BAD_SAMPLE_RANGE),
        ({"steps": 1}, RejectCode.WRONG_TASK_SIZE),
        ({"batch_size": 64}, RejectCode.WRONG_TASK_SIZE),
        ({"weight": 2**32}, RejectCode.WRONG_TASK_SIZE),
        ({"node_class": NodeClass.L}, RejectCode.WRONG_TASK_SIZE),
        ({"work_units": 3}, RejectCode.WRONG_TASK_SIZE),
        ({"slot": SPEC.tasks_per_round}, RejectCode.WRONG_SLOT),
        ({"expires_at": NOW}, RejectCode.EXPIRED),
        # A shrunk task (a 1-sample range is paid like the whole shard), another slot's shard or seed (two slots
        # doing one piece of work): nothing a leader could hand an accomplice.
        ({"sample_count": 1}, RejectCode.BAD_SAMPLE_RANGE),
        ({"sample_start": 3000, "sample_count": 3000}, RejectCode.BAD_SAMPLE_RANGE),
        ({"shard_cid": OTHER_CID, "sample_count": 100}, RejectCode.WRONG_SHARD),
        ({"seed": 7}, RejectCode.WRONG_TASK_PARAMS),
        ({"seed": ticket_seed(SPEC, 1, 3, 1)}, RejectCode.WRONG_TASK_PARAMS),
    ],
)
def test_each_field_is_checked(change: dict[str, Any], code: RejectCode) -> None:
    assert refusal(ticket(**change)) is code


def test_a_class_m_ticket_sized_as_s_is_refused() -> None:
    small = task_size(SPEC, NodeClass.S)
    t = ticket(node_class=NodeClass.M, steps=small.steps, batch_size=small.batch_size, weight=small.weight,
               work_units=work_units(SPEC, NodeClass.S))
    assert refusal(t, expectations(node_class=None)) is RejectCode.WRONG_TASK_SIZE


def test_update_manifest_must_match_its_ticket() -> None:
    t = ticket()
    manifest = UpdateManifest(ticket=t, trainer=TRAINER.address, delta_cid=BASE, delta_encoding="f32",
                              loss_before_micro=2_000_000, loss_after_micro=1_000_000, segment_every=10,
                              segment_hashes=["ab" * 32] * 3)
    check_update_ticket(manifest, expectations(now=None))
    with pytest.raises(TicketRejected) as info:
        check_update_ticket(replace(manifest, trainer=STRANGER.address), expectations(now=None))
    assert info.value.code is RejectCode.WRONG_TRAINER
    with pytest.raises(TicketRejected) as info:
        check_update_ticket(replace(manifest, segment_every=5), expectations(now=None))
    assert info.value.code is RejectCode.WRONG_TASK_PARAMS
    with pytest.raises(TicketRejected) as info:  # another trainer's ticket in my manifest (a copied update)
        check_update_ticket(replace(manifest, trainer=STRANGER.address),
                            expectations(trainer=STRANGER.address, now=None))
    assert info.value.code is RejectCode.WRONG_TRAINER


def test_a_validator_accepts_only_the_ticket_the_chain_admitted() -> None:
    t = ticket()
    digest = ticket_digest(t.chain_ticket(), DOMAIN)
    check_ticket(t, expectations(now=None, admitted=(t.slot, digest)))
    assert refusal(t, expectations(now=None, admitted=(t.slot + 1, digest))) is RejectCode.WRONG_SLOT
    assert refusal(t, expectations(now=None, admitted=(t.slot, b"\x00" * 32))) is RejectCode.NOT_ADMITTED
    assert t.chain_ticket().task_hash == t.task_hash() and len(t.task_hash()) == 32


def test_work_units_scale_with_the_class() -> None:
    assert [work_units(SPEC, c) for c in NodeClass] == [1, 2, 4]


def test_each_slot_has_its_own_shard_and_seed() -> None:
    shards = [f"shard-{i}" for i in range(8)]
    cells = {(ticket_shard(shards, SPEC, r, slot), ticket_seed(SPEC, 1, r, slot))
             for r in range(3) for slot in range(SPEC.tasks_per_round)}
    assert len(cells) == 3 * SPEC.tasks_per_round  # no two slots of the job train the same thing
    assert {ticket_shard(shards, SPEC, 0, slot) for slot in range(4)} == set(shards[:4])
    assert ticket_seed(SPEC, 2, 0, 0) != ticket_seed(SPEC, 1, 0, 0)


def test_a_tampered_or_replayed_manifest_ticket_is_refused() -> None:
    """What a validator sees when a trainer edits the ticket in its manifest (weight 2^32, fewer steps), or puts an
    old round's or another job's update behind the ticket the chain admitted for this slot."""
    admitted = ticket()
    expect = expectations(now=None, admitted=(admitted.slot, ticket_digest(admitted.chain_ticket(), DOMAIN)))

    def code(t: TaskTicket) -> RejectCode:
        manifest = UpdateManifest(ticket=t, trainer=TRAINER.address, delta_cid=BASE, delta_encoding="f32",
                                  loss_before_micro=2_000_000, loss_after_micro=1_000_000, segment_every=10,
                                  segment_hashes=["ab" * 32] * 3)
        with pytest.raises(TicketRejected) as info:
            check_update_ticket(manifest, expect)
        return info.value.code

    assert code(replace(admitted, weight=2**32)) is RejectCode.BAD_SIGNATURE  # the trainer cannot re-sign
    assert code(replace(admitted, steps=1)) is RejectCode.BAD_SIGNATURE
    # ...and an accomplice leader's inflated or shrunk ticket fails against the spec, signed or not.
    assert code(ticket(weight=2**32)) is RejectCode.WRONG_TASK_SIZE
    assert code(ticket(steps=1, work_units=1)) is RejectCode.WRONG_TASK_SIZE
    assert code(ticket(sample_count=1)) is RejectCode.BAD_SAMPLE_RANGE
    # An old update (the same trainer's round-2 work), another job's: the round and job bind it.
    assert code(ticket(round=2)) is RejectCode.BAD_ROUND
    assert code(ticket(job_id=2)) is RejectCode.WRONG_JOB
    # This round's ticket for the same slot, but not the one the chain admitted (an expired one handed out before).
    assert code(ticket(expires_at=NOW + 1)) is RejectCode.NOT_ADMITTED
