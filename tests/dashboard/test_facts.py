"""The dashboard's facts, built from chain events and views without a network (node/http/facts.py), and the
``--http`` setting's parsing (node/http/address.py)."""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any

import pytest

from node.http.address import parse_http_address
from node.http.facts import Measurement, Vote, job_detail, node_rows, to_json, votes_of
from protocols.chain.events import ChainEvent
from protocols.chain.models import (
    AuditOutcome,
    JobInfo,
    JobParams,
    JobStatus,
    NodeClass,
    Phase,
    RoundInfo,
    TrainerInfo,
    UpdateInfo,
    UpdateStatus,
    ValidatorInfo,
)
from protocols.errors import ConfigError
from protocols.types import Address, Cid, JobId

CUSTOMER, LEADER = "0x" + "c" * 40, "0x" + "1" * 40
HONEST, CHEAT, VALIDATOR = "0x" + "a" * 40, "0x" + "b" * 40, "0x" + "d" * 40
CKPT = "bafkreickpt"
ETH = 10**18


def ev(name: str, block: int, **args: Any) -> ChainEvent:
    return ChainEvent(name=name, args=MappingProxyType({"jobId": 1, **args} if name not in (
        "TrainerRegistered", "ValidatorRegistered") else args), block_number=block, log_index=0, tx_hash="0x",
        address="0x" + "e" * 40)


def job(rounds_done: int) -> JobInfo:
    params = JobParams(spec_cid=Cid("bafkreispec"), rounds=3, tasks_per_round=2, local_steps=20, max_work_units=100,
                       quorum=1, base_rate=10**15, bonus_rate=0, validator_fee=0, leader_fee=0, lease_seconds=120)
    return JobInfo(job_id=JobId(1), customer=Address(CUSTOMER), params=params, deposit=5 * ETH, spent=ETH,
                   refunded=0, status=JobStatus.ACTIVE, committed_rounds=rounds_done, term=1,
                   leader=Address(LEADER), lease_expiry=1000, progress_at=0, successor_anchor=0, disputed=False,
                   last_checkpoint_cid=Cid(CKPT))


def update(trainer: str, status: UpdateStatus, amount: int) -> UpdateInfo:
    return UpdateInfo(trainer=Address(trainer), status=status, phase=Phase.VOTING, work_units=100, anchor_block=3,
                      loss_reduction=5, amount=amount, paid=amount > 0, voted_mask=1, valid_mask=0,
                      esc_voted_mask=0, esc_valid_mask=0, panel=(Address(VALIDATOR),), escalation_panel=())


EVENTS = [
    ev("TrainerRegistered", 1, trainer=HONEST, nodeClass=1, stake=ETH),
    ev("TrainerRegistered", 1, trainer=CHEAT, nodeClass=1, stake=ETH),
    ev("ValidatorRegistered", 1, validator=VALIDATOR, stake=2 * ETH),
    ev("LeaderElected", 2, leader=LEADER, term=1, leaseExpiry=500),
    ev("UpdateSubmitted", 3, round=0, trainer=HONEST, slot=0, workUnits=100, lossReduction=5, updateCid="bafkreiu0",
       ticketHash=b"\0" * 32),
    ev("UpdateSubmitted", 3, round=0, trainer=CHEAT, slot=1, workUnits=100, lossReduction=5, updateCid="bafkreiu1",
       ticketHash=b"\1" * 32),
    ev("UpdateVoted", 4, round=0, slot=0, validator=VALIDATOR, phase=1, isValid=True),
    ev("UpdateVoted", 4, round=0, slot=1, validator=VALIDATOR, phase=1, isValid=False),
    ev("UpdateAccepted", 4, round=0, slot=0, trainer=HONEST),
    ev("UpdateRejected", 4, round=0, slot=1, trainer=CHEAT),
    ev("TrainerSlashed", 4, trainer=CHEAT, amount=ETH // 10),
    ev("RoundCommitted", 5, round=0, leader=LEADER, checkpointCid=CKPT, acceptedMask=1, leaseExpiry=600),
    ev("PaidOut", 6, trainer=HONEST, amount=3 * 10**15),
]


def test_a_job_shows_its_rounds_updates_votes_pay_and_slashes() -> None:
    updates = {(0, 0): update(HONEST, UpdateStatus.ACCEPTED, 3 * 10**15),
               (0, 1): update(CHEAT, UpdateStatus.REJECTED, 0)}
    rounds = {0: RoundInfo(submitted_mask=3, accepted_mask=1, priced=True, committer=Address(LEADER), audit_anchor=0,
                           audit=AuditOutcome.PASSED, audit_ok=1, audit_failed=0, auditors=(),
                           checkpoint_cid=Cid(CKPT))}
    measured = {CKPT: Measurement("accuracy", 0.71, 0.72, 500)}
    d = job_detail(job(1), [e for e in EVENTS if "jobId" in e.args], updates, rounds, measured, fetch="")
    assert [(r.round, r.accepted_slots, r.audit, r.measurement) for r in d.rounds] == [(0, (0,), "PASSED",
                                                                                        measured[CKPT])]
    honest, cheat = d.updates
    assert (honest.status, honest.pay_wei, honest.paid, [v.valid for v in honest.votes]) == ("ACCEPTED", 3 * 10**15,
                                                                                            True, [True])
    assert (cheat.status, cheat.pay_wei, [v.valid for v in cheat.votes]) == ("REJECTED", 0, [False])
    assert [(p.kind, p.account, p.amount_wei) for p in d.penalties] == [("TrainerSlashed", CHEAT, ETH // 10)]
    assert [(t.term, t.leader) for t in d.terms] == [(1, LEADER)]
    assert (d.summary.rounds_done, d.summary.rounds_total, d.summary.final_cid) == (1, 3, CKPT)


def test_signed_votes_fill_in_where_the_chain_recorded_no_vote() -> None:
    """``settleUpdates`` stores no vote: a fast-path update's votes are the ones decoded from its calldata
    (``signed``); an update with on-chain votes keeps those."""
    other = "0x" + "f" * 40
    signed = {(0, 2): (Vote(VALIDATOR, 0, False), Vote(other, 0, False)),
              (0, 0): (Vote(other, 0, False),)}  # inconsistent with the chain's own votes: the chain's win
    votes = votes_of([e for e in EVENTS if "jobId" in e.args], signed)
    assert votes[(0, 2)] == signed[(0, 2)]
    assert [(v.validator, v.phase, v.valid) for v in votes[(0, 0)]] == [(VALIDATOR, 1, True)]
    d = job_detail(job(1), [e for e in EVENTS if "jobId" in e.args], {}, {}, {}, fetch="", signed={(0, 1): (
        Vote(other, 0, False),)})
    assert [v.validator for u in d.updates for v in u.votes] == [VALIDATOR, VALIDATOR]  # on-chain votes win


def test_an_update_not_read_yet_is_pending_and_an_unmeasured_round_has_no_metric() -> None:
    d = job_detail(job(1), [e for e in EVENTS if "jobId" in e.args], {}, {}, {}, fetch="")
    assert [u.status for u in d.updates] == ["PENDING", "PENDING"]
    assert d.rounds[0].measurement is None and d.rounds[0].audit == "OPEN"


def test_nodes_count_accepted_and_rejected_work_and_earnings() -> None:
    trainers = {HONEST: TrainerInfo(True, NodeClass.M, 0, ETH, 0),
                CHEAT: TrainerInfo(True, NodeClass.S, 0, ETH // 2, 0)}
    validators = {VALIDATOR: ValidatorInfo(True, 0, 2 * ETH)}
    rows = {r.address: r for r in node_rows(trainers, validators, EVENTS, {HONEST.lower(): 1.5})}
    assert (rows[HONEST].accepted, rows[HONEST].rejected, rows[HONEST].earned_wei) == (1, 0, 3 * 10**15)
    assert (rows[CHEAT].accepted, rows[CHEAT].rejected, rows[CHEAT].node_class) == (0, 1, "S")
    assert rows[VALIDATOR].roles == ("validator",) and rows[VALIDATOR].stake_wei == 2 * ETH
    assert rows[HONEST].last_seen_s == 1.5 and rows[CHEAT].last_seen_s is None


def test_wei_leaves_as_exact_decimal_strings() -> None:
    d = job_detail(job(0), [], {}, {}, {}, fetch="")
    data = json.loads(json.dumps(to_json(d)))
    assert data["summary"]["deposit_wei"] == str(5 * ETH) and data["summary"]["rounds_done"] == 0


@pytest.mark.parametrize(("text", "host", "port"), [
    ("8080", "127.0.0.1", 8080), ("127.0.0.1:0", "127.0.0.1", 0), ("0.0.0.0:9000", "0.0.0.0", 9000),
    ("[::1]:8080", "::1", 8080), ("localhost:80", "localhost", 80),
])
def test_http_address(text: str, host: str, port: int) -> None:
    address = parse_http_address(text)
    assert (address.host, address.port) == (host, port)


@pytest.mark.parametrize("text", ["", "host:", "example.com:80", "127.0.0.1:70000", "[::1]8080", "1.2.3.4:x"])
def test_http_address_refused_names_the_setting(text: str) -> None:
    with pytest.raises(ConfigError, match="setting 'http'"):
        parse_http_address(text)


def test_this_nodes_reject_reason_is_shown_as_its_own() -> None:
    d = job_detail(job(1), [e for e in EVENTS if "jobId" in e.args], {}, {}, {}, fetch="",
                   own_reasons={(0, 1): "LOSS_MISMATCH", (5, 0): "BAD_TASK"})
    assert [(u.slot, u.own_reason) for u in d.updates] == [(0, ""), (1, "LOSS_MISMATCH")]
    assert to_json(d)["updates"][1]["own_reason"] == "LOSS_MISMATCH"
