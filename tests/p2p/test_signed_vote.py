"""The ``signed-vote`` gossip message: it round-trips through the signed envelope, its fields are checked at the
boundary, and the EIP-712 signature it carries recovers to the validator that signed the vote."""

from __future__ import annotations

import pytest
from eth_account import Account

from protocols.chain.ticket import ChainVote, TicketDomain, sign_vote, vote_signer
from protocols.messages import BadSchema, SignedVote, decode, encode
from protocols.p2p.identity import NodeIdentity
from protocols.topics import job_topic

ALICE = NodeIdentity.generate()
NOW = 1_800_000_000.0
DOMAIN = TicketDomain(chain_id=31337, contract="0x5FbDB2315678afecb367f032d93F642f64180aa3")


def test_a_signed_vote_round_trips_and_its_signature_names_the_validator() -> None:
    validator = Account.create()
    vote = ChainVote(job_id=3, round=1, slot=2, anchor_block=120, valid=True)
    signature = sign_vote(vote, DOMAIN, validator)
    msg = SignedVote(job_id=3, round=1, slot=2, anchor_block=120, valid=True, signature="0x" + signature.hex())
    decoded, signer = decode(encode(msg, ALICE, now=NOW), now=NOW, max_skew=5)
    assert (decoded, signer) == (msg, ALICE.eth_address)
    assert isinstance(decoded, SignedVote)
    heard = ChainVote(decoded.job_id, decoded.round, decoded.slot, decoded.anchor_block, decoded.valid)
    assert vote_signer(heard, DOMAIN, bytes.fromhex(decoded.signature[2:])) == validator.address
    flipped = ChainVote(decoded.job_id, decoded.round, decoded.slot, decoded.anchor_block, not decoded.valid)
    assert vote_signer(flipped, DOMAIN, signature) != validator.address
    assert job_topic(3) == "dtnode/job/3/votes/1"


@pytest.mark.parametrize("bad", [dict(job_id=0), dict(slot=64), dict(anchor_block=0), dict(signature="0x12"),
                                 dict(signature="ab" * 65), dict(signature="0x" + "zz" * 65)])
def test_a_malformed_signed_vote_is_refused(bad: dict[str, object]) -> None:
    fields: dict[str, object] = dict(job_id=3, round=1, slot=2, anchor_block=120, valid=True,
                                     signature="0x" + "11" * 65)
    fields.update(bad)
    with pytest.raises(BadSchema):
        SignedVote(**fields).validate()  # type: ignore[arg-type]
