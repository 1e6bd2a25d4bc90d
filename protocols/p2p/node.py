"""``P2PNode``: one libp2p host (TCP + Noise + Yamux) with gossip, discovery, a Kademlia DHT and request/response.

The node roles in ``node/`` use only this class's public methods. It composes the parts and owns their lifecycle:
gossip (:mod:`protocols.p2p.gossip`), presence, peer table, peer exchange and dialling
(:mod:`protocols.p2p.discovery`), request/response (:mod:`protocols.p2p.reqresp`). Lifecycle::

    install_hardening()  # once per process, before any node (the dtnode binary does it at start-up)
    node = P2PNode(identity, P2PConfig(bootstrap=(addr,), roles=("trainer",)))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        inbox = await node.subscribe("my-app/1", validator=my_check)
        async for msg, signer in inbox: ...
        await node.stop()

The Kademlia DHT (random walk on) keeps a routing table for peer and provider lookups.

Cancellation: cancelling the scope that runs :meth:`run` (or calling :meth:`stop`) closes the host, the services
and every subscription channel.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.kad_dht.kad_dht import KadDHT
from libp2p.peer.id import ID
from libp2p.rcmgr.manager import ResourceManager
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service

from protocols.messages import Presence, WireMessage
from protocols.p2p.admission import InboundAdmission
from protocols.p2p.config import P2PConfig
from protocols.p2p.content_routing import ContentRouting, initial_dht_mode
from protocols.p2p.dialback import Reachability
from protocols.p2p.discovery import Discovery
from protocols.p2p.drops import DropLog
from protocols.p2p.gossip import Delivery, Gossip, Validator
from protocols.p2p.hardening import disable_auto_connector, require_hardening
from protocols.p2p.identity import NodeIdentity
from protocols.p2p.limits import connection_config, library_limits
from protocols.p2p.metrics import P2PMetrics
from protocols.p2p.nat import NatTraversal
from protocols.p2p.peers import PeerEntry, PeerTable
from protocols.p2p.reqresp import RequestHandler, Requests
from protocols.p2p.stream_limits import InboundStreamLimits
from protocols.topics import PING_PROTOCOL
from protocols.types import Address

__all__ = ["Delivery", "P2PMetrics", "P2PNode", "Validator"]

logger = logging.getLogger(__name__)


class P2PNode:
    """A dtnode's presence on the network. See the module docstring for the lifecycle.

    Raises :class:`protocols.p2p.errors.HardeningNotInstalled` if ``install_hardening()`` has not run.
    """

    def __init__(self, identity: NodeIdentity, config: P2PConfig | None = None) -> None:
        self.identity = identity
        self.config = config or P2PConfig()
        require_hardening(self.config)
        self.metrics = P2PMetrics()
        self.peer_table = PeerTable()
        self._host: IHost = new_host(
            key_pair=identity.key_pair,
            # Noise only: the library's default set also offers plaintext and secio.
            sec_opt={NOISE_PROTOCOL_ID: NoiseTransport(
                identity.key_pair, noise_privkey=create_new_x25519_key_pair().private_key)},
            muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
            listen_addrs=[multiaddr.Multiaddr(a) for a in self.config.listen_addrs],
            enable_mDNS=self.config.enable_mdns,
            # The default resource manager's circuit breaker and graceful degradation refuse streams when this
            # 2-core process is busy, which starved pubsub stream negotiation (10 s timeouts) in 10-node tests.
            resource_manager=ResourceManager(enable_circuit_breaker=False, enable_graceful_degradation=False,
                                             enable_metrics=False, connection_limits=library_limits(self.config)),
            # One connection per peer: with more allowed, connect() waits a fixed 250 ms for extra dials.
            # No auto-connector: discovery decides whom to dial (the library default dials toward 100).
            connection_config=connection_config(self.config),
        )
        disable_auto_connector(self._host)
        self.drops = DropLog(self.metrics, interval_s=self.config.drop_log_interval_s)
        network = self._host.get_network()
        # Inbound connections and streams are admitted by our rules (see admission.py, stream_limits.py).
        self.admission = InboundAdmission(network, self.config, self.drops, is_useful=self._has_gossip_stream)
        self.admission.install()
        self.stream_limits = InboundStreamLimits(network, self.config, self.drops)
        self.stream_limits.install()
        self._dht = KadDHT(self._host, initial_dht_mode(self.config), enable_random_walk=self.config.enable_random_walk)
        self.requests = Requests(self._host, self.config, self.metrics, self.peer_table)
        self.nat = NatTraversal(self._host, self.config, self.requests, on_addrs_changed=self._addrs_changed)
        self.routing = ContentRouting(self._host, self._dht, self.config, is_private=self._is_private,
                                      advertised=self.nat.advertised_addrs)
        """Provider records in the DHT: what this node holds, and who holds what it lacks."""
        self.gossip = Gossip(self._host, identity, self.config, self.metrics, on_presence=self._on_presence,
                             drops=self.drops)
        self.discovery = Discovery(self._host, identity, self.config, self.metrics, peer_table=self.peer_table,
                                   gossip=self.gossip, dht=self._dht, requests=self.requests,
                                   advertised=self.nat.advertised_addrs)
        self._stop_requested = trio.Event()
        self.set_request_handler(PING_PROTOCOL, self._echo)

    # --- identity and addresses -----------------------------------------------------------------------------

    @property
    def peer_id(self) -> ID:
        return self.identity.peer_id

    @property
    def host(self) -> IHost:
        """The libp2p host, for services that attach their own protocols (the block exchange)."""
        return self._host

    @property
    def eth_address(self) -> Address:
        return self.identity.eth_address

    def _has_gossip_stream(self, peer: ID) -> bool:
        return peer in self.gossip.pubsub.peers

    def listen_addrs(self) -> list[str]:
        """Full multiaddrs (with ``/p2p/<peer id>``) others can dial; give one to new nodes as bootstrap."""
        suffix = f"/p2p/{self.peer_id.to_base58()}"
        return [str(a) if "/p2p/" in str(a) else str(a) + suffix for a in self._host.get_addrs()]

    def connected_peers(self) -> list[ID]:
        return self.discovery.connected_peers()

    def _is_private(self) -> bool:
        return self.nat.reachability is Reachability.PRIVATE

    def _addrs_changed(self) -> None:
        self.discovery.announce_soon()

    def peers(self) -> list[PeerEntry]:
        """Peers known from presence, live within ``peer_ttl_s``, excluding this node."""
        return self.peer_table.entries()

    def peer_of(self, address: str) -> ID | None:
        """The peer acting as Ethereum ``address`` on-chain, or None: see :meth:`Discovery.peer_of`."""
        return self.discovery.peer_of(address)

    def presence(self) -> Presence:
        """This node's presence as it announces it now."""
        return self.discovery.presence()

    # --- lifecycle ------------------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the host and services, report started, and serve until :meth:`stop` or cancellation."""
        listen = [multiaddr.Multiaddr(a) for a in self.config.listen_addrs]
        try:
            # Order matters for a clean shutdown: the pubsub services outlive the host (Gossip.services).
            async with self.gossip.services():
                async with self._host.run(listen), background_trio_service(self._dht), self.nat.services():
                    async with trio.open_nursery() as nursery:
                        await nursery.start(self.drops.run)
                        await self.gossip.attach(nursery)
                        self.discovery.start(nursery)
                        self.nat.start(nursery)
                        await nursery.start(self.routing.run)
                        logger.info("p2p node %s listening on %s", self.eth_address, self.listen_addrs())
                        task_status.started()
                        await self._stop_requested.wait()
                        nursery.cancel_scope.cancel()
        finally:
            self.discovery.stop()
            self.gossip.close()

    async def stop(self) -> None:
        """Ask :meth:`run` to shut down; returns at once (await the nursery to wait for the end)."""
        self._stop_requested.set()

    # --- gossip ---------------------------------------------------------------------------------------------

    async def subscribe(
        self, topic: str, validator: Validator | None = None, *, buffer: int | None = None
    ) -> trio.MemoryReceiveChannel[Delivery]:
        """Receive verified ``(message, signer_address)`` pairs published on ``topic`` by other nodes.

        ``validator(msg, signer)`` (sync or async) runs after the built-in checks; False rejects the message for
        the whole node (it is not forwarded either). It must not raise; if it does, the message is rejected and
        the error logged. Closing the returned channel ends this subscription.
        """
        return await self.gossip.subscribe(topic, validator, buffer=buffer)

    async def publish(self, topic: str, msg: WireMessage) -> None:
        """Sign ``msg`` with this node's key and publish it on ``topic``."""
        await self.gossip.publish(topic, msg)

    async def wait_for_topic_peers(self, topic: str, n: int, timeout: float) -> None:
        """Wait until ``n`` connected peers subscribe to ``topic`` and our gossip mesh for it is formed.

        Publishing before this is fine but reaches only the peers already meshed; use it where a first message
        must reach everyone (tests, a leader's first announcement).
        """
        await self.gossip.wait_for_topic_peers(topic, n, timeout)

    # --- discovery ------------------------------------------------------------------------------------------

    def _on_presence(self, presence: Presence, envelope: bytes, seen: float) -> None:
        self.discovery.on_presence(presence, envelope, seen)

    async def exchange_peers(self, peer: ID | str, timeout: float | None = None) -> int:
        """Ask ``peer`` for the signed presence of the peers it knows; returns how many entries were accepted.

        Every envelope is verified as if it came by gossip (signature, schema, age within ``peer_ttl_s``, the
        announced peer id and account both the signer's), so ``peer`` can withhold peers but not forge them;
        rejected envelopes are counted in ``metrics.rejected``. Raises what :meth:`request` raises, and
        :class:`RemoteError` with code ``PROTOCOL_VIOLATION`` for an unreadable reply.
        """
        return await self.discovery.exchange_peers(peer, timeout)

    async def wait_for_peers(self, n: int, timeout: float, *, predicate: Callable[[PeerEntry], bool] | None = None
                             ) -> list[PeerEntry]:
        """Wait until at least ``n`` peers (matching ``predicate``) are in the peer table; returns them."""
        return await self.discovery.wait_for_peers(n, timeout, predicate=predicate)

    async def wait_until_gone(self, peer_id: str, timeout: float) -> None:
        """Wait until ``peer_id`` has left the peer table (stopped announcing for ``peer_ttl_s``, scaled)."""
        await self.discovery.wait_until_gone(peer_id, timeout)

    # --- request/response -----------------------------------------------------------------------------------

    def set_request_handler(self, protocol: TProtocol, handler: RequestHandler) -> None:
        """Serve ``protocol`` with ``async handler(request, remote_peer) -> response``.

        Raise ``RemoteError(code, detail)`` in the handler to refuse with a code; any other exception is logged
        and reaches the caller as ``RemoteError("INTERNAL", ...)``. Only that stream is affected.
        """
        self.requests.set_handler(protocol, handler)

    async def request(
        self, peer: ID | str, protocol: TProtocol, payload: bytes, timeout: float | None = None
    ) -> bytes:
        """Send ``payload`` to ``peer`` (peer id, base58 string, or multiaddr with ``/p2p/``) and return the reply.

        Raises :class:`PayloadTooLarge`, :class:`RequestTimeout`, :class:`PeerUnreachable`, :class:`RemoteError`.
        """
        return await self.requests.request(peer, protocol, payload, timeout)

    async def ping(self, peer: ID | str, timeout: float | None = None) -> float:
        """Round-trip time in seconds of an echo request to ``peer``."""
        start = trio.current_time()
        await self.request(peer, PING_PROTOCOL, b"ping", timeout)
        return trio.current_time() - start

    async def _echo(self, request: bytes, _peer: ID) -> bytes:
        return request
