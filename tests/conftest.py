"""Fixtures for every test: the py-libp2p hardening, installed once per test process as the binary does at start-up.

In-process nodes (tests/p2p, tests/storage, tests/node, tests/chain) build libp2p hosts; without this,
``P2PNode`` refuses to start (:class:`protocols.p2p.errors.HardeningNotInstalled`) and bare hosts would run the
unpatched library.
"""

from __future__ import annotations

import pytest

from protocols.p2p.hardening import install_hardening


@pytest.fixture(autouse=True, scope="session")
def _p2p_hardening() -> None:
    install_hardening()
