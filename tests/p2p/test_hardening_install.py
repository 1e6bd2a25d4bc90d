"""The py-libp2p hardening is installed once per process, at start-up, and a node refuses to run without it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from protocols.p2p.config import P2PConfig
from protocols.p2p.errors import HardeningNotInstalled
from protocols.p2p.hardening import install_hardening, require_hardening

_BUILD_A_NODE = (
    "from protocols.p2p.identity import NodeIdentity\n"
    "from protocols.p2p.node import P2PNode\n"
    "P2PNode(NodeIdentity.generate())\n"
)


def test_a_node_built_before_install_hardening_fails_naming_it() -> None:
    # A fresh interpreter: this test process installed the hardening at session start (tests/conftest.py).
    run = subprocess.run([sys.executable, "-c", _BUILD_A_NODE], capture_output=True, text=True, timeout=120,
                         check=False)
    assert run.returncode != 0
    assert "HardeningNotInstalled" in run.stderr and "install_hardening(" in run.stderr


def test_install_is_idempotent_and_queue_limits_are_checked() -> None:
    install_hardening()
    install_hardening()
    require_hardening(P2PConfig())
    bigger = P2PConfig(peer_queue_size=P2PConfig().peer_queue_size * 2)
    with pytest.raises(HardeningNotInstalled, match="peer queues"):
        require_hardening(bigger)
    install_hardening(bigger)  # raises the limit; a node with that config may now start
    require_hardening(bigger)
