"""A peer without our protocols (an IPFS node) is not an ERROR; every other stream failure still is."""

from __future__ import annotations

import logging

import pytest

from protocols.p2p.hardening import quiet_unsupported_protocol_errors

HOST_LOGGER = "libp2p.host.basic_host"


def test_only_unsupported_protocol_failures_are_quieted(caplog: pytest.LogCaptureFixture) -> None:
    quiet_unsupported_protocol_errors()
    quiet_unsupported_protocol_errors()  # idempotent: one filter, not two
    log = logging.getLogger(HOST_LOGGER)
    assert len(log.filters) == 1
    with caplog.at_level(logging.DEBUG):
        log.error("Failed to open stream to peer 12D3Koo:\n  Error: protocols not supported: tried "
                  "['/meshsub/1.1.0', '/meshsub/1.0.0']\n  Protocols: ['/meshsub/1.1.0']")
        log.error("Failed to open stream to peer 16Uiu2:\n  Error: stream reset\n  Protocols: ['/dtnode/task/1.0.0']")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage().splitlines()[1] for r in errors] == ["  Error: stream reset"]
    assert any(r.levelno == logging.DEBUG and "does not speak the protocol" in r.getMessage() for r in caplog.records)
