"""Settings of the P2P layer, validated once, frozen. ``node.config`` fills these from TOML/env/flags."""

from __future__ import annotations

from dataclasses import dataclass

import multiaddr

from protocols.errors import ConfigError
from protocols.types import NodeClass

MIB = 1 << 20
REACHABILITY_MODES = ("auto", "public", "private")


@dataclass(frozen=True, kw_only=True)
class P2PConfig:
    """Everything a :class:`protocols.p2p.node.P2PNode` needs besides its identity.

    Times are seconds. Defaults suit a small network on one machine or a LAN.
    """

    listen_addrs: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    """Multiaddrs to listen on; port 0 picks a free port."""
    bootstrap: tuple[str, ...] = ()
    """Full multiaddrs (with ``/p2p/<peer id>``) of peers to join the network through; one reachable is enough,
    and the node dials them all in parallel, so give several: one flooded or down bootstrap then costs nothing."""
    roles: tuple[str, ...] = ()
    node_class: str = "S"
    jobs: tuple[int, ...] = ()
    software_version: str = "0.1.0"

    heartbeat_s: int = 1
    """GossipSub heartbeat: mesh repair and gossip (IHAVE) every second, not the library's 120 s."""
    presence_interval_s: float = 5.0
    peer_ttl_s: float = 20.0
    """A peer whose last presence is older than this leaves the peer table."""
    presence_scale_peers: int = 16
    """Up to this many nodes, each announces every ``presence_interval_s`` and ages out after ``peer_ttl_s``; in
    a larger network both grow in proportion to its size, so presence costs O(N) deliveries a second, not O(N²)."""
    max_clock_skew_s: float = 30.0
    """Messages stamped further in the future than this are rejected (FUTURE)."""
    max_message_age_s: float = 120.0
    """Messages older than this are rejected (STALE); also bounds replays."""
    target_peers: int = 8
    """Discovery dials newly learned peers only while fewer than this many are connected (or being dialled).
    The peer table does not need a connection per peer: it comes from gossiped presence and peer exchange, and
    requests and block fetches dial on demand by the addresses in it."""
    max_connected_peers: int = 64
    """Hard cap: discovery never dials beyond this many connections (a bootstrap's inbound ones count)."""
    dial_timeout_s: float = 5.0
    bootstrap_retry_s: float = 2.0
    request_timeout_s: float = 10.0
    handler_timeout_s: float = 30.0
    max_request_bytes: int = 1 * MIB
    max_response_bytes: int = 64 * MIB
    stream_chunk_bytes: int = 256 * 1024

    gossip_degree: int = 6
    gossip_degree_low: int = 4
    gossip_degree_high: int = 12
    gossip_max_msgs_per_topic_per_s: float = 1000.0
    """GossipSub's spam limit per sender per topic (library default 10/s counts our own publishes too)."""
    gossip_eclipse_protection: bool = False
    """Grafts for IP diversity; off by default because local and LAN networks share few IPs."""
    gossip_validation_timeout_s: float = 5.0
    peer_queue_size: int = 1024
    subscription_buffer: int = 1024
    enable_random_walk: bool = True
    enable_mdns: bool = False

    # --- content routing: provider records in the Kademlia DHT (protocols.p2p.content_routing) ---
    dht_mode: str = "auto"
    """``server``: answer other nodes' DHT queries and keep their provider records (a node others can dial);
    ``client``: only ask; ``auto``: server unless this node is found (or configured) private."""
    provide_max_roots: int = 256
    """Roots this node keeps announcing (the most recently stored or pinned); older ones are no longer re-announced."""
    provide_interval_s: float = 22 * 3600.0
    """Re-announce each root this often: DHT servers drop a provider record 48 h after it was last announced."""
    provide_retry_s: float = 60.0
    """An announcement that reached no peer (no DHT peers yet) is tried again after this."""
    provide_spacing_s: float = 1.0
    """Pause between two announcements: py-libp2p servers reset a peer sending over 10 ADD_PROVIDER in 10 s."""
    provide_timeout_s: float = 30.0
    """One announcement (closest-peer walk plus ADD_PROVIDER to each) is abandoned after this."""
    provider_lookup_timeout_s: float = 10.0
    """A DHT lookup for the providers of a root, when no known peer has it, returns what it found by then."""
    provider_lookup_max: int = 8
    """At most this many providers from one lookup are tried (each bogus one costs a dial or stall timeout)."""

    # --- admission: what a stranger may hold on this node (protocols.p2p.admission, stream_limits) ---
    max_inbound_connections: int = 256
    """Established inbound connections; a newcomer past it evicts the least useful one (see ``admission``)."""
    max_inbound_per_ip: int = 32
    """Established inbound connections from one IP address (a home NAT hides a few nodes, not hundreds)."""
    max_pending_handshakes: int = 64
    """Inbound connections still in their security+muxer handshake; past it the oldest of the IP holding the most
    is closed. Separate from ``max_inbound_connections``: a peer that completes a handshake never waits behind ones
    that do not."""
    max_pending_per_ip: int = 16
    """Handshakes in progress from one IP address; more are closed at once."""
    handshake_timeout_s: float = 5.0
    """An inbound connection that has not finished Noise + yamux within this is closed."""
    inbound_grace_s: float = 10.0
    """A new inbound connection cannot be evicted for this long (time to open its gossip streams)."""
    max_inbound_streams_per_peer: int = 256
    """Concurrent inbound streams one peer may hold; more are reset (that peer's own, nobody else's)."""
    max_inbound_streams: int = 4096
    """Concurrent inbound streams in all; past it the newest stream of the peer holding the most is reset."""
    gossip_frame_timeout_s: float = 10.0
    """Once the first byte of a pubsub RPC arrived, the rest must arrive within this or the stream is closed
    (idle streams between RPCs are fine)."""
    drop_log_interval_s: float = 10.0
    """Drops of one reason are logged at most once per this, with a count (``protocols.p2p.drops``)."""

    # --- NAT traversal: reachability, relaying, hole punching (protocols.p2p.dialback, protocols.p2p.nat) ---
    reachability: str = "auto"
    """``auto``: ask connected peers to dial this node back (``/dtnode/dialback/1.0.0``) and act on their verdict;
    ``public`` / ``private``: skip the check (a node behind a NAT that knows it, or a test)."""
    reachability_interval_s: float = 300.0
    """How often ``auto`` checks again (a home's public address or port forwarding can change)."""
    relays: tuple[str, ...] = ()
    """Full multiaddrs of relays a private node reserves a slot on; empty: its bootstrap peers."""
    relay_reservations: int = 1
    """Relays a private node keeps a reservation on (its ``/p2p-circuit`` addresses, one per relay)."""
    relay_service: bool = True
    """A node found public serves as a circuit relay v2 for private ones, within the limits below."""
    relay_max_reservations: int = 32
    """Private peers this relay holds a slot for at once; more are refused (RESERVATION_REFUSED)."""
    relay_max_circuits: int = 16
    """Relayed connections open at once through one reserved peer."""
    relay_reservation_ttl_s: int = 3600
    """A reservation lasts this long; the private peer refreshes it before it lapses."""
    relay_circuit_duration_s: int = 3600
    """One relayed connection is reset after this long (DCUtR should have upgraded it to a direct one by then)."""
    relay_circuit_bytes: int = 512 * MIB
    """Bytes one relayed connection may carry (both directions); past it the relay resets the circuit."""
    hole_punching: bool = True
    """Try DCUtR (coordinated simultaneous dial) to replace a relayed connection with a direct one."""

    def __post_init__(self) -> None:
        for name in ("listen_addrs", "bootstrap", "relays"):
            for addr in getattr(self, name):
                try:
                    parsed = multiaddr.Multiaddr(addr)
                except Exception as exc:  # multiaddr raises several types for bad text
                    raise ConfigError(f"p2p.{name}: {addr!r} is not a multiaddr ({exc})") from exc
                if name != "listen_addrs" and "p2p" not in [p.name for p in parsed.protocols()]:
                    raise ConfigError(f"p2p.{name}: {addr!r} needs a /p2p/<peer id> suffix")
        if self.dht_mode not in ("auto", "server", "client"):
            raise ConfigError(f"p2p.dht_mode: must be one of auto, server, client; got {self.dht_mode!r}")
        if self.reachability not in REACHABILITY_MODES:
            raise ConfigError(f"p2p.reachability: must be one of {REACHABILITY_MODES}, got {self.reachability!r}")
        if not self.listen_addrs:
            raise ConfigError("p2p.listen_addrs: at least one address is needed")
        if self.node_class not in NodeClass.__members__:
            raise ConfigError(f"p2p.node_class: must be S, M or L, got {self.node_class!r}")
        positive = (
            "heartbeat_s", "presence_interval_s", "peer_ttl_s", "max_clock_skew_s", "max_message_age_s",
            "target_peers", "max_connected_peers", "dial_timeout_s", "bootstrap_retry_s", "request_timeout_s",
            "handler_timeout_s", "presence_scale_peers",
            "max_request_bytes", "max_response_bytes", "stream_chunk_bytes", "gossip_degree",
            "gossip_max_msgs_per_topic_per_s", "gossip_validation_timeout_s", "peer_queue_size",
            "subscription_buffer", "max_inbound_connections", "max_inbound_per_ip", "max_pending_handshakes",
            "max_pending_per_ip", "handshake_timeout_s", "max_inbound_streams_per_peer", "max_inbound_streams",
            "gossip_frame_timeout_s", "drop_log_interval_s", "reachability_interval_s", "relay_reservations",
            "relay_max_reservations", "relay_max_circuits", "relay_reservation_ttl_s", "relay_circuit_duration_s",
            "relay_circuit_bytes", "provide_max_roots", "provide_interval_s", "provide_retry_s",
            "provide_spacing_s", "provide_timeout_s", "provider_lookup_timeout_s", "provider_lookup_max",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"p2p.{name}: must be positive, got {getattr(self, name)!r}")
        if not self.gossip_degree_low <= self.gossip_degree <= self.gossip_degree_high:
            raise ConfigError("p2p.gossip_degree: need gossip_degree_low <= gossip_degree <= gossip_degree_high")
        if self.target_peers > self.max_connected_peers:
            raise ConfigError("p2p.target_peers: must not exceed max_connected_peers")
        if self.inbound_grace_s < 0:
            raise ConfigError(f"p2p.inbound_grace_s: must not be negative, got {self.inbound_grace_s!r}")
        if self.peer_ttl_s <= self.presence_interval_s:
            raise ConfigError("p2p.peer_ttl_s: must exceed presence_interval_s, or live peers would age out")
