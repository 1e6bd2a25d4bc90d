"""Small helpers shared by the chain tests."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import NamedTuple

import cid as py_cid
import multihash
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3 import Web3

from protocols.chain.backends import mine_blocks
from protocols.chain.client import DeploySettings, JobManagerClient, TxResult
from protocols.chain.models import JobParams, NodeClass
from protocols.chain.ticket import ChainTicket, sign_ticket
from protocols.types import Cid

MIN_STAKE = 10**15
SLASH = 4 * 10**14
DEREG_DELAY = 3_600
LEADER_BOND = 10**15
# min_quorum 1: the tests choose small panels; test_votes.py checks a deployment with the network's floor.
SETTINGS = DeploySettings(min_trainer_stake=MIN_STAKE, min_validator_stake=MIN_STAKE, min_update_bond=10**14,
                          validator_slash=SLASH, min_leader_bond=LEADER_BOND, deregistration_delay=DEREG_DELAY,
                          min_quorum=1)
DRAW_DELAY = 2


@dataclass
class Chain:
    """One backend under test: its Web3 and the funded dev accounts."""

    name: str
    w3: Web3
    accounts: list[LocalAccount]


def cid_of(data: bytes, codec: str = "raw") -> Cid:
    """A real CIDv1 (base32) of ``data``, as IPFS would name it as a single raw block."""
    mh = multihash.encode(hashlib.sha256(data).digest(), "sha2-256")
    encoded = py_cid.make_cid(1, codec, mh).encode("base32")
    return Cid(encoded.decode() if isinstance(encoded, bytes) else str(encoded))


LEASE = 600
PARAMS = JobParams(
    spec_cid=cid_of(b"job spec"),
    rounds=2,
    tasks_per_round=3,
    local_steps=50,
    max_work_units=4,
    quorum=3,
    base_rate=10**12,
    bonus_rate=6 * 10**11,
    validator_fee=10**10,
    leader_fee=10**11,
    lease_seconds=LEASE,
)


def ticket_for(manager: JobManagerClient, job_id: int, rnd: int, trainer: str, slot: int, *, work_units: int = 2,
               term: int | None = None) -> ChainTicket:
    """A ticket of the job's current term (unless ``term``) that expires in an hour of chain time."""
    now = int(manager.w3.eth.get_block("latest")["timestamp"])
    return ChainTicket(job_id=job_id, round=rnd, term=manager.get_job(job_id).term if term is None else term,
                       trainer=trainer, slot=slot, work_units=work_units, expiry=now + 3_600,
                       task_hash=keccak(f"task {job_id} {rnd} {slot}".encode()))


def submit(manager: JobManagerClient, leader: LocalAccount, trainer: JobManagerClient, job_id: int, rnd: int,
           slot: int, loss_reduction: int, *, work_units: int = 2) -> TxResult:
    """``trainer`` submits into ``slot`` under a ticket signed by ``leader``."""
    ticket = ticket_for(manager, job_id, rnd, trainer.sender, slot, work_units=work_units)
    signature = sign_ticket(ticket, manager.ticket_domain(), leader)
    return trainer.submit_update(ticket, cid_of(f"update {job_id} {rnd} {slot}".encode()), loss_reduction,
                                 signature)


class OneUpdate(NamedTuple):
    """A job with a bonded leader and one ticketed update submitted into round 0, slot 0, not drawn yet."""

    customer: JobManagerClient
    leader: JobManagerClient
    trainer: JobManagerClient
    validators: dict[str, JobManagerClient]
    """Address → client of every staked validator."""
    job_id: int


def one_update(chain: Chain, manager: JobManagerClient, validator_accounts: range | tuple[int, ...]) -> OneUpdate:
    """Accounts 1, 2, 3 as customer, leader and trainer, ``validator_accounts`` staked as validators, a job posted
    with ``PARAMS``, the leader standing with its bond, and the trainer's update (loss reduction 10) submitted."""
    acc = chain.accounts
    customer, leader, trainer = (manager.with_account(acc[i]) for i in (1, 2, 3))
    validators = {acc[i].address: manager.with_account(acc[i]) for i in validator_accounts}
    trainer.register_trainer(NodeClass.M, MIN_STAKE)
    leader.register_trainer(NodeClass.L, MIN_STAKE)
    for v in validators.values():
        v.register_validator(MIN_STAKE)
    job_id, _ = customer.create_job(PARAMS)
    leader.stand_for_leader(job_id, LEADER_BOND)
    submit(manager, leader.account, trainer, job_id, 0, 0, 10)
    return OneUpdate(customer, leader, trainer, validators, job_id)


def draw(manager: JobManagerClient, job_id: int, rnd: int, slot: int) -> tuple[str, ...]:
    """Mine past the draw delay and draw the update's current panel."""
    mine_blocks(manager.w3, DRAW_DELAY + 1)  # readyAt: the latest block (estimates run at its number)
    return tuple(manager.draw_validators(job_id, rnd, slot).event("ValidatorsDrawn").args["panel"])
