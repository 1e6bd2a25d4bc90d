"""``get_events`` reads a long block range in chunks (public endpoints refuse long ``eth_getLogs`` ranges): on an
in-process py-evm chain with events spread over many blocks, any chunk size returns what one call returns, with
the name, job and range filters alike (the dashboard's :class:`~node.http.gather.ChainFacts` reads every log)."""

from __future__ import annotations

import pytest

from protocols.chain.backends import dev_accounts, in_process_chain, mine_blocks
from protocols.chain.client import JobManagerClient, deploy
from protocols.chain.models import NodeClass
from tests.chain.helpers import LEADER_BOND, MIN_STAKE, PARAMS, SETTINGS

WHOLE = 10**9
"""A chunk larger than any range here: one ``eth_getLogs`` call, as before chunking."""


@pytest.fixture(scope="module")
def manager() -> JobManagerClient:
    """Two jobs with a standing leader each, and registrations, a few empty blocks apart."""
    accounts = dev_accounts(6)
    manager = deploy(in_process_chain(), accounts[0], SETTINGS)
    customer, leader = manager.with_account(accounts[1]), manager.with_account(accounts[2])
    leader.register_trainer(NodeClass.L, MIN_STAKE)
    for job in range(2):
        mine_blocks(manager.w3, 3)
        job_id, _ = customer.create_job(PARAMS)
        leader.stand_for_leader(job_id, LEADER_BOND)
        manager.with_account(accounts[3 + job]).register_validator(MIN_STAKE)
    mine_blocks(manager.w3, 2)
    return manager


@pytest.mark.parametrize("chunk", [1, 2, 7])
def test_chunked_reads_equal_one_read(manager: JobManagerClient, chunk: int) -> None:
    whole = manager.get_events(chunk_blocks=WHOLE)
    first, last = whole[0].block_number, manager.block_number()
    assert last - first + 1 > 2 * chunk and len({e.block_number for e in whole}) >= 6, "the range spans chunks"
    assert manager.get_events(chunk_blocks=chunk) == whole
    assert manager.get_events() == whole  # the default chunk (5,000 blocks)
    for filters in ({"job_id": 2}, {"names": ["LeaderElected", "ValidatorRegistered"]}):
        expected = manager.get_events(chunk_blocks=WHOLE, **filters)  # type: ignore[arg-type]
        assert expected and manager.get_events(chunk_blocks=chunk, **filters) == expected  # type: ignore[arg-type]
    middle = (first + 2, last - 3)
    expected = [e for e in whole if middle[0] <= e.block_number <= middle[1]]
    assert expected and manager.get_events(from_block=middle[0], to_block=middle[1], chunk_blocks=chunk) == expected
    assert manager.get_events(from_block=last + 1, to_block=last, chunk_blocks=chunk) == []


def test_a_chunk_of_no_blocks_is_refused(manager: JobManagerClient) -> None:
    with pytest.raises(ValueError, match="chunk_blocks must be at least 1"):
        manager.get_events(chunk_blocks=0)
