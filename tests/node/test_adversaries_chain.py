"""Adversary suite, chain part: a trainer that grinds its manifest to steer which segments are challenged.

Before issue 14 the challenged segments were a hash of values the trainer knew or varied (its manifest's CID among
them): with a forged segment it could try manifest variants until the forged one was not drawn, and publish that
variant. Now the manifest (every segment's hash) goes on-chain at submission and the segments follow from the
contract's ``challengeSeed``, derived from the hash of a block mined ``DRAW_DELAY`` blocks after the submission and
from the update's ids, nothing the trainer publishes. Real contract on an in-process py-evm chain.
"""

from __future__ import annotations

import hashlib

import pytest
from eth_abi.abi import encode
from eth_utils.crypto import keccak

from node.training.challenge import choose_segments
from protocols.chain.backends import dev_accounts, in_process_chain
from protocols.chain.client import deploy
from protocols.chain.errors import revert_class
from protocols.chain.models import Phase
from tests.chain.helpers import DRAW_DELAY, SETTINGS, Chain, cid_of, draw, one_update

N_SEGMENTS, CHALLENGED, FORGED = 10, 3, 0


def seed_from_block(block_hash: bytes, job_id: int, rnd: int, slot: int) -> bytes:
    """``challengeSeed`` recomputed from the draw block's hash and the update's ids alone (JobManager's
    ``drawValidators`` and ``challengeSeed``)."""
    draw_seed = keccak(encode(["bytes32", "uint256", "uint32", "uint32", "uint8"],
                              [block_hash, job_id, rnd, slot, int(Phase.AWAITING_PANEL)]))
    challenge = int.from_bytes(keccak(encode(["bytes32", "string"], [draw_seed, "challenge"])), "big") % 2**64
    return keccak(encode(["uint64", "uint256", "uint32", "uint32"], [challenge, job_id, rnd, slot]))


def test_grinding_the_manifest_cannot_steer_the_challenge() -> None:
    # The grinder's 40 manifest variants, all committing to a forged segment 0.
    variants = [cid_of(f"manifest variant {i}".encode()) for i in range(40)]
    # Under the old rule (a hash of the manifest), some variant avoids the forged segment: the grinder picks it.
    old_rule = {cid: choose_segments(hashlib.sha256(cid.encode()).digest(), N_SEGMENTS, CHALLENGED)
                for cid in variants}
    assert any(FORGED not in picks for picks in old_rule.values())

    chain = Chain("pyevm", in_process_chain(), dev_accounts(20))
    manager = deploy(chain.w3, chain.accounts[0], SETTINGS)
    setup = one_update(chain, manager, range(4, 10))  # the trainer's update (slot 0 of round 0) is on-chain
    job_id = setup.job_id
    # Before the draw there is nothing to grind against: no seed exists, for anybody.
    with pytest.raises(revert_class("JobManagerDrawNotReady")):
        setup.trainer.challenge_seed(job_id, 0, 0)
    anchor = manager.get_update(job_id, 0, 0).anchor_block
    draw(manager, job_id, 0, 0)
    update = manager.get_update(job_id, 0, 0)
    assert update.anchor_block == anchor and update.phase == Phase.VOTING
    seed = setup.trainer.challenge_seed(job_id, 0, 0)
    # The seed is the draw block's hash and the ids, nothing the trainer published; that block was mined after the
    # submission, so no variant the trainer could publish was chosen knowing it.
    draw_block = chain.w3.eth.get_block(anchor + DRAW_DELAY)
    assert seed == seed_from_block(bytes(draw_block["hash"]), job_id, 0, 0)
    assert draw_block["number"] > anchor
    # Every validator reads that one seed and challenges the same segments, the delta-defining last one included.
    picks = choose_segments(seed, N_SEGMENTS, CHALLENGED)
    assert {tuple(choose_segments(v.challenge_seed(job_id, 0, 0), N_SEGMENTS, CHALLENGED))
            for v in setup.validators.values()} == {tuple(picks)}
    assert picks[-1] == N_SEGMENTS - 1
