"""Fixtures: the same tests run on an in-process py-evm chain and on a real ``hardhat node`` process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from protocols.chain.backends import HardhatNode, dev_accounts, hardhat_available, in_process_chain
from protocols.chain.client import JobManagerClient, deploy

from .helpers import SETTINGS, Chain


@pytest.fixture(scope="session")
def hardhat_node() -> Iterator[HardhatNode]:
    if not hardhat_available():
        pytest.skip("contracts/node_modules is missing (run `npm ci` in contracts/): Hardhat backend not tested")
    with HardhatNode() as node:
        yield node


@pytest.fixture(params=["pyevm", pytest.param("hardhat", marks=pytest.mark.hardhat)])
def chain(request: pytest.FixtureRequest) -> Chain:
    if request.param == "pyevm":
        return Chain("pyevm", in_process_chain(), dev_accounts(20))
    node: HardhatNode = request.getfixturevalue("hardhat_node")
    return Chain("hardhat", node.web3(), dev_accounts(20))


@pytest.fixture
def manager(chain: Chain) -> JobManagerClient:
    """A fresh JobManager deployed by dev account 0 (each test gets its own contract, so state never leaks)."""
    return deploy(chain.w3, chain.accounts[0], SETTINGS)
