"""Which segments the drawn validators replay: the chain's ``challengeSeed``, unknown before the panel is drawn (a
block after the submission), the same for every validator of the panel, so honest members check the same segments."""

from __future__ import annotations

import pytest

from node.training.replay import choose_segments
from protocols.chain.backends import dev_accounts, in_process_chain
from protocols.chain.client import JobManagerClient, deploy
from protocols.chain.errors import revert_class
from protocols.chain.models import NodeClass
from tests.chain.helpers import LEADER_BOND, MIN_STAKE, PARAMS, SETTINGS, draw, submit


def test_every_drawn_validator_reads_the_same_seed_and_picks_the_same_segments() -> None:
    w3, acc = in_process_chain(), dev_accounts(12)
    manager = deploy(w3, acc[0], SETTINGS)
    customer, leader = manager.with_account(acc[1]), manager.with_account(acc[2])
    trainers = [manager.with_account(acc[i]) for i in (3, 4)]
    validators: dict[str, JobManagerClient] = {acc[i].address: manager.with_account(acc[i]) for i in range(5, 11)}
    for t in trainers:
        t.register_trainer(NodeClass.M, MIN_STAKE)
    for v in validators.values():
        v.register_validator(MIN_STAKE)
    leader.register_trainer(NodeClass.L, MIN_STAKE)
    job_id, _ = customer.create_job(PARAMS)
    leader.stand_for_leader(job_id, LEADER_BOND)
    seeds = []
    for slot, trainer in enumerate(trainers):
        submit(manager, leader.account, trainer, job_id, 0, slot, 10)
        with pytest.raises(revert_class("JobManagerDrawNotReady")):  # nobody can know it before the draw
            trainer.challenge_seed(job_id, 0, slot)
        panel = draw(manager, job_id, 0, slot)
        read = {validators[v].challenge_seed(job_id, 0, slot) for v in panel}
        assert len(read) == 1
        seed = read.pop()
        choices = {tuple(choose_segments(validators[v].challenge_seed(job_id, 0, slot), 10, 3)) for v in panel}
        assert len(choices) == 1 and len(next(iter(choices))) == 3
        seeds.append(seed)
    assert seeds[0] != seeds[1]  # another update (slot, and block) gives another seed


def test_choices_spread_over_all_segments() -> None:
    """Over many seeds every other segment is drawn about (k-1)/(n-1) of the time and the last always: a trainer
    has no safe segment to forge."""
    counts = [0] * 10
    for u in range(500):
        for i in choose_segments(u.to_bytes(32, "big"), 10, 3):
            counts[i] += 1
    assert counts[9] == 500
    assert all(80 <= c <= 145 for c in counts[:9]), counts  # expected 111 each
