"""The votes of first panels settled on the fast path, read from the ``settleUpdates`` transaction's calldata.

``settleUpdates`` stores no vote (that is its gas saving) and its logs carry only the verdict and the fees. The votes
are in the call itself: one ``VoteSet`` per update, bit k of ``validMask`` member k's vote and signature k member k's
EIP-712 signature over ``Vote{jobId, round, slot, anchorBlock, valid}``. The contract settled the update only after
checking every signature against the panel it drew, so the address a signature recovers to *is* that member: the
votes shown are verified by the chain, no one's word. Read-only: one ``eth_getTransactionByHash`` per settling
transaction; nothing here signs or sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import TransactionNotFound

from node.http.facts import Vote
from protocols.chain.abi import load_artifact
from protocols.chain.reader import JobManagerReader
from protocols.chain.rpc import call_with_retry
from protocols.chain.ticket import SIGNATURE_BYTES, ChainVote, TicketDomain, VoteSet, vote_signer
from protocols.errors import SchemaError

SETTLE_FUNCTION = "settleUpdates"


@dataclass(frozen=True)
class SettleCall:
    """The arguments of one ``settleUpdates(jobId, round, sets)`` call."""

    job_id: int
    round: int
    sets: tuple[VoteSet, ...]


@cache
def _abi_contract() -> type[Contract]:
    """The JobManager ABI as a web3 contract object, for decoding calldata only (no provider, no address)."""
    return Web3().eth.contract(abi=load_artifact().abi_list())


def decode_settle_call(calldata: bytes) -> SettleCall | None:
    """``calldata`` decoded as a ``settleUpdates`` call; None for a call of any other function."""
    try:
        fn, args = _abi_contract().decode_function_input(calldata)
    except ValueError:  # a selector the ABI does not have
        return None
    if fn.fn_name != SETTLE_FUNCTION:
        return None
    return SettleCall(job_id=int(args["jobId"]), round=int(args["round"]),
                      sets=tuple(_vote_set(s) for s in args["sets"]))


def _vote_set(raw: dict[str, Any]) -> VoteSet:
    sigs = bytes(raw["signatures"])  # one 65-byte signature per member, concatenated
    return VoteSet(slot=int(raw["slot"]), valid_mask=int(raw["validMask"]),
                   signatures=tuple(sigs[i:i + SIGNATURE_BYTES] for i in range(0, len(sigs), SIGNATURE_BYTES)))


def read_settle_call(client: JobManagerReader, tx_hash: str) -> SettleCall | None:
    """The ``settleUpdates`` call transaction ``tx_hash`` made to this deployment (``eth_getTransactionByHash``);
    None when it called another function or contract (a settlement relayed through another contract shows no
    votes) or the node no longer has it. Raises the chain module's ``ChainError`` when the node is unreachable."""
    try:
        tx = call_with_retry(lambda: client.w3.eth.get_transaction(tx_hash),  # type: ignore[arg-type]
                             client.config.retry, what="eth_getTransactionByHash")
    except TransactionNotFound:
        return None
    to = tx.get("to")
    if to is None or to_checksum_address(to) != str(client.address):
        return None
    return decode_settle_call(bytes(tx["input"]))


def panel_votes(vote_set: VoteSet, *, job_id: int, round: int, anchor_block: int,
                domain: TicketDomain) -> tuple[Vote, ...]:
    """Each panel member's first-panel vote in ``vote_set``, in draw order: the signer of signature k over the
    vote bit k of ``valid_mask`` names, for the draw anchored at ``anchor_block`` (the update's ``anchorBlock``,
    which a settled update keeps). Empty if a signature does not recover (the contract would have reverted)."""
    votes = []
    for k, signature in enumerate(vote_set.signatures):
        valid = bool(vote_set.valid_mask >> k & 1)
        vote = ChainVote(job_id=job_id, round=round, slot=vote_set.slot, anchor_block=anchor_block, valid=valid)
        try:
            votes.append(Vote(vote_signer(vote, domain, signature), 0, valid))
        except SchemaError:
            return ()
    return tuple(votes)
