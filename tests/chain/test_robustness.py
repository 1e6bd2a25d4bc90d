"""The adapter under stress: a dead or silent RPC, concurrent senders sharing an account, a revert that only
happens on-chain (two transactions racing in one block)."""

from __future__ import annotations

import socket
import time

import pytest
import trio
from eth_account.signers.local import LocalAccount
from web3 import Web3

from protocols.chain.backends import connect_http, dev_accounts, free_port, mine_blocks, set_automine
from protocols.chain.client import JobManagerClient
from protocols.chain.errors import ChainUnavailable, revert_class
from protocols.chain.models import NodeClass, UpdateStatus
from protocols.chain.rpc import RetryPolicy
from protocols.chain.tx import ClientConfig

from .helpers import LEADER_BOND, MIN_STAKE, PARAMS, Chain, submit

DEADLINE_S = 60


def _pool_size(w3: Web3) -> int:
    """Transactions waiting to be mined (Hardhat with automine off)."""
    return len(w3.eth.get_block("pending")["transactions"])


def _client_for(url: str, account: LocalAccount, *, request_timeout_s: float) -> JobManagerClient:
    config = ClientConfig(retry=RetryPolicy(attempts=3, backoff_s=0.05))
    w3 = connect_http(url, request_timeout_s=request_timeout_s)
    return JobManagerClient(w3, "0x5FbDB2315678afecb367f032d93F642f64180aa3", account, config=config)


def test_refused_connection_is_chain_unavailable_quickly() -> None:
    client = _client_for(f"http://127.0.0.1:{free_port()}", dev_accounts(1)[0], request_timeout_s=2.0)
    started = time.monotonic()
    with pytest.raises(ChainUnavailable, match="after 3 attempts") as err:
        client.get_job(1)
    assert time.monotonic() - started < 5
    assert isinstance(err.value, ConnectionError)
    with pytest.raises(ChainUnavailable):
        client.register_validator(MIN_STAKE)


def test_silent_endpoint_times_out_instead_of_hanging() -> None:
    # A socket that accepts connections (the kernel completes the handshake) but never answers a request.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        client = _client_for(url, dev_accounts(1)[0], request_timeout_s=0.3)
        started = time.monotonic()
        with pytest.raises(ChainUnavailable):
            client.job_count()
        # 3 attempts x 0.3 s + 0.05 + 0.1 s of backoff, with slack for a loaded machine
        assert time.monotonic() - started < 5


async def test_ten_concurrent_senders_share_one_account(chain: Chain, manager: JobManagerClient) -> None:
    customer = manager.with_account(chain.accounts[1])
    nonce_before = chain.w3.eth.get_transaction_count(customer.account.address)
    job_ids: list[int] = []

    async def create() -> None:
        job_id, _ = await trio.to_thread.run_sync(customer.create_job, PARAMS)
        job_ids.append(job_id)

    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(create)
    assert sorted(job_ids) == list(range(1, 11))
    assert manager.job_count() == 10
    # No gap and no collision: the account's nonce moved by exactly the ten sends.
    assert chain.w3.eth.get_transaction_count(customer.account.address) == nonce_before + 10


# Hardhat only: eth-tester's manual-mining mode re-applies queued transactions when mining resumes (nonce errors),
# so two transactions cannot share a block there.
@pytest.mark.parametrize("chain", ["hardhat"], indirect=True)
async def test_revert_that_happens_on_chain_is_decoded_by_replay(chain: Chain, manager: JobManagerClient) -> None:
    """Two trainers submit into the same slot at once (a leader that signed the slot twice): both estimates pass,
    both land in one block, the second reverts on-chain with SlotTaken, and the adapter names it from the receipt
    by replaying the call."""
    acc = chain.accounts
    leader = manager.with_account(acc[2])
    trainers: dict[str, JobManagerClient] = {a.address: manager.with_account(a) for a in acc[4:6]}
    for t in trainers.values():
        t.register_trainer(NodeClass.S, MIN_STAKE)
    job_id, _ = manager.with_account(acc[1]).create_job(PARAMS)
    leader.register_validator(MIN_STAKE)
    leader.stand_for_leader(job_id, LEADER_BOND)

    outcomes: dict[str, BaseException | None] = {}

    async def send(addr: str) -> None:
        try:
            await trio.to_thread.run_sync(submit, manager, leader.account, trainers[addr], job_id, 0, 0, 7)
            outcomes[addr] = None
        except BaseException as exc:  # collected and asserted on below
            outcomes[addr] = exc

    w3 = chain.w3
    set_automine(w3, False)
    try:
        with trio.fail_after(DEADLINE_S):
            async with trio.open_nursery() as nursery:
                for addr in trainers:
                    nursery.start_soon(send, addr)
                # Polls the node (no trio.Event can tell): both sends estimated, signed and sent, none mined.
                while _pool_size(w3) < 2:  # noqa: ASYNC110
                    await trio.sleep(0.02)
                mine_blocks(w3, 1)
    finally:
        set_automine(w3, True)
    failures = [exc for exc in outcomes.values() if exc is not None]
    assert len(outcomes) == 2 and len(failures) == 1, outcomes
    assert isinstance(failures[0], revert_class("JobManagerSlotTaken")), failures[0]
    assert failures[0].args_decoded == {"jobId": job_id, "round": 0, "slot": 0}
    assert manager.get_update(job_id, 0, 0).status == UpdateStatus.PENDING
