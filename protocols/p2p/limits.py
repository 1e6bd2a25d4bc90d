"""The library's own connection limits, derived from ours so that they are a backstop and never decide first.

:mod:`protocols.p2p.admission` decides which inbound connections stay (with eviction); py-libp2p 0.8.1 also counts
connections (``ConnectionConfig.max_connections`` in the swarm, ``ConnectionLimits`` in the resource manager's
lifecycle tracker) and refuses past its limits without eviction. Its defaults (300 total, 256 established inbound)
would cut in before ours, so they are set here from ``P2PConfig``, with room for outbound connections.
"""

from __future__ import annotations

from libp2p.network.config import LOW_WATERMARK, MIN_CONNECTIONS, ConnectionConfig
from libp2p.rcmgr.connection_limits import ConnectionLimits, new_connection_limits_with_defaults

from protocols.p2p.config import P2PConfig

_SLACK = 64
"""Connections above our limits that the library tolerates: an evicted connection is counted until its close
finishes (it is closed in the background), so evictions and their replacements overlap."""


def connection_cap(config: P2PConfig) -> int:
    """Every established connection the swarm may hold: inbound, outbound (discovery's cap), slack."""
    return config.max_inbound_connections + config.max_connected_peers + _SLACK


def connection_config(config: P2PConfig) -> ConnectionConfig:
    cap = connection_cap(config)
    low = min(LOW_WATERMARK, cap)
    return ConnectionConfig(
        # One connection per peer: with more allowed, connect() waits a fixed 250 ms for extra dials.
        max_connections_per_peer=1,
        max_connections=cap,
        # The library prunes above high_watermark by its own ranking; our eviction is the one that decides.
        high_watermark=cap,
        low_watermark=low,
        min_connections=min(MIN_CONNECTIONS, low),
        inbound_upgrade_timeout=config.handshake_timeout_s,
        outbound_upgrade_timeout=config.dial_timeout_s,
    )


def library_limits(config: P2PConfig) -> ConnectionLimits:
    limits = new_connection_limits_with_defaults()
    limits.max_established_inbound = config.max_inbound_connections + _SLACK
    limits.max_established_outbound = max(limits.max_established_outbound or 0, config.max_connected_peers + _SLACK)
    limits.max_established_total = connection_cap(config)
    limits.max_pending_inbound = config.max_pending_handshakes + _SLACK
    return limits
