"""Backends: the same funded dev accounts on both, and a Hardhat node that is really gone after stop()."""

from __future__ import annotations

import os

import pytest
from web3 import Web3

from protocols.chain.backends import (
    HARDHAT_ACCOUNT_BALANCE_ETH,
    HardhatNode,
    dev_accounts,
    hardhat_available,
    in_process_chain,
    increase_time,
    keep_time,
)

# Hardhat's first dev address is public knowledge (its docs print it); the key is derived, never stored.
HARDHAT_ACCOUNT_0 = Web3.to_checksum_address("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266")


def test_in_process_chain_funds_hardhats_dev_accounts() -> None:
    w3 = in_process_chain()
    accounts = dev_accounts(20)
    assert accounts[0].address == HARDHAT_ACCOUNT_0
    assert len({a.address for a in accounts}) == 20
    for acct in (accounts[0], accounts[19]):
        assert w3.eth.get_balance(acct.address) == HARDHAT_ACCOUNT_BALANCE_ETH * 10**18
    before = w3.eth.get_block("latest")["timestamp"]
    assert increase_time(w3, 3_600) - before >= 3_600


def test_an_in_process_chains_clock_catches_up_in_one_block_and_never_runs_further_ahead() -> None:
    w3 = in_process_chain()
    latest = int(w3.eth.get_block("latest")["timestamp"])
    # 100 s behind the clock (a starved ticker): one block stamped with the clock, not one a second after its parent.
    keep_time(w3, latest + 100.5)
    block = w3.eth.get_block("latest")
    assert int(block["timestamp"]) == latest + 100
    # One second behind: a block one second after its parent.
    keep_time(w3, latest + 101.5)
    assert int(w3.eth.get_block("latest")["timestamp"]) == latest + 101
    # Ahead of the clock (a busy chain): no block at all.
    number = w3.eth.block_number
    keep_time(w3, latest + 50.0)
    assert w3.eth.block_number == number


@pytest.mark.hardhat
def test_hardhat_node_serves_the_same_accounts_and_stops_by_pid() -> None:
    if not hardhat_available():
        pytest.skip("contracts/node_modules is missing (run `npm ci` in contracts/)")
    with HardhatNode() as node:
        pid = node.pid
        assert pid is not None
        w3 = node.web3()
        assert w3.eth.chain_id == 31337
        assert w3.eth.get_balance(HARDHAT_ACCOUNT_0) == HARDHAT_ACCOUNT_BALANCE_ETH * 10**18
        before = w3.eth.get_block("latest")["timestamp"]
        assert increase_time(w3, 3_600) - before >= 3_600
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # nothing of its process group is left either
