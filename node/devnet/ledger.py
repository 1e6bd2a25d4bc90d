"""The money side of a devnet job, read from the chain once it has finished: every update's status, paid flag and
amount, every trainer's remaining stake, every round commit and every payout; and the wait for the last payouts.

The end-to-end tests assert on this one record (tests/node/ledger_checks.py); nothing here judges it.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import NamedTuple

import trio

from node.chainio import AsyncChain
from protocols.chain.client import JobManagerClient
from protocols.chain.errors import ContractRevert
from protocols.chain.models import UpdateStatus

log = logging.getLogger("dtnode.devnet")


class UpdateLine(NamedTuple):
    round: int
    slot: int
    trainer: str
    """Address, lower-case."""
    status: UpdateStatus
    paid: bool
    amount: int
    """Wei owed for it (base + bonus; zero unless accepted)."""


@dataclass(frozen=True)
class Ledger:
    updates: list[UpdateLine]
    """Every submitted update, in round order."""
    trainer_stakes: dict[str, int]
    """Remaining stake per trainer address (lower-case)."""
    commits: list[tuple[int, str, int]]
    """(round, leader address lower-case, accepted mask) of every RoundCommitted event, in chain order."""
    payouts: list[tuple[str, int]]
    """(trainer address lower-case, amount) of every PaidOut event, in chain order."""
    trainer_slashes: list[tuple[str, int]]
    """(trainer address lower-case, amount) of every TrainerSlashed event (a rejected update's bond), in order."""
    validator_slashes: list[tuple[str, int]]
    """(validator address lower-case, amount) of every ValidatorSlashed event (losing or silent voters), in order."""
    leader_bonds_forfeited: list[tuple[str, int]]
    """(leader address lower-case, amount) of every LeaderBondForfeited event, in chain order."""


def read_updates(client: JobManagerClient, job_id: int, rounds: int) -> list[UpdateLine]:
    """Every submitted update of the job (blocking: call it in a thread)."""
    updates: list[UpdateLine] = []
    for sub in client.submissions(job_id):
        if sub.round < rounds:
            u = client.get_update(job_id, sub.round, sub.slot)
            updates.append(UpdateLine(sub.round, sub.slot, sub.trainer.lower(), u.status, u.paid, u.amount))
    return sorted(updates)


def unpaid_trainers(updates: list[UpdateLine]) -> set[str]:
    """Trainers with an accepted update not paid yet."""
    return {u.trainer for u in updates if u.status == UpdateStatus.ACCEPTED and not u.paid}


def read_ledger(client: JobManagerClient, job_id: int, rounds: int, trainers: list[str]) -> Ledger:
    """The job's ledger as the chain has it now (blocking: call it in a thread); ``trainers``: addresses whose
    remaining stake to read."""
    return Ledger(
        updates=read_updates(client, job_id, rounds),
        trainer_stakes={a: client.trainers(a).stake for a in trainers},
        commits=[(c.round, c.leader, c.accepted_mask) for c in client.round_commits(job_id)],
        payouts=_pairs(client, job_id, "PaidOut", "trainer"),
        trainer_slashes=_pairs(client, job_id, "TrainerSlashed", "trainer"),
        validator_slashes=_pairs(client, job_id, "ValidatorSlashed", "validator"),
        leader_bonds_forfeited=_pairs(client, job_id, "LeaderBondForfeited", "leader"),
    )


def _pairs(client: JobManagerClient, job_id: int, event: str, who: str) -> list[tuple[str, int]]:
    return [(str(ev.args[who]).lower(), int(ev.args["amount"])) for ev in client.get_events(names=[event],
                                                                                             job_id=job_id)]


async def settle_payouts(chain: AsyncChain, client: JobManagerClient, job_id: int, rounds: int, *,
                         timeout_s: float, poll_s: float = 0.5) -> None:
    """Wait until every accepted update is paid, so the ledger read next is final.

    The last round's leader pays its trainers right after the commit that finishes the job, so the follower can see
    the job finished before those payouts are mined. A leader that died in between never pays: after
    ``timeout_s`` the customer calls ``payout`` itself (anyone may).
    """
    with trio.move_on_after(timeout_s):
        while True:
            updates = await chain(lambda: read_updates(client, job_id, rounds), what=f"job {job_id}'s updates")
            if not unpaid_trainers(updates):
                return
            await trio.sleep(poll_s)
    updates = await chain(lambda: read_updates(client, job_id, rounds), what=f"job {job_id}'s updates")
    for r in sorted({u.round for u in updates if u.status == UpdateStatus.ACCEPTED and not u.paid}):
        log.warning("job %d: round %d still owes accepted updates; paying out as the customer", job_id, r)
        with contextlib.suppress(ContractRevert):  # paid meanwhile: NothingToPay
            await chain(lambda: client.payout(job_id, r), what=f"payout({job_id}, {r})")  # noqa: B023
