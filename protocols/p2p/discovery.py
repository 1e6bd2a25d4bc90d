"""Who is out there: signed presence, the peer table, peer exchange (``/dtnode/peers/1.0.0``) and bounded dialling.

The node dials its bootstrap peers, then every node announces a signed :class:`Presence` on ``PRESENCE_TOPIC``. A
newcomer asks its bootstrap peer for the signed presence envelopes it holds (``/dtnode/peers/1.0.0``, every
signature re-verified here) and announces itself at once, so it learns the network in one round trip and the
network learns it in one gossip wave: O(N) messages per join. Knowing a peer does not need a connection to it: the
node dials newly learned peers only while it has fewer than ``target_peers`` connections, and requests and block
fetches dial on demand by the addresses in the peer table (also put in the peerstore). Peers whose presence is
older than ``peer_ttl_s`` leave the peer table; beyond ``presence_scale_peers`` nodes the presence interval and
that TTL grow with the network, so presence costs O(N) deliveries a second rather than O(N^2).

The table also answers "which peer acts as this Ethereum address" (:meth:`Discovery.peer_of`), for the roles and
the block exchange, which know nodes by their on-chain address.

Cancellation: every loop runs in the nursery given to :meth:`Discovery.start`; cancelling it ends them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.kad_dht.kad_dht import KadDHT
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr

from protocols.errors import SchemaError
from protocols.messages import MessageRejected, Presence, decode, decode_envelope, encode
from protocols.p2p.config import P2PConfig
from protocols.p2p.errors import DiscoveryTimeout, P2PError, RemoteError
from protocols.p2p.gossip import Gossip, Rejected
from protocols.p2p.identity import NodeIdentity, address_of_peer
from protocols.p2p.metrics import P2PMetrics
from protocols.p2p.peers import PeerEntry, PeerTable
from protocols.p2p.reqresp import Requests
from protocols.topics import PEERS_PROTOCOL, PRESENCE_TOPIC
from protocols.types import RejectCode
from protocols.wire import MAX_PEERS_PER_EXCHANGE, PeersRequest, PeersResponse

logger = logging.getLogger(__name__)

_FAST_START_ANNOUNCES = 3
_ANNOUNCE_COALESCE_S = 0.3
_PEER_EXCHANGE_TRIES = 3


class Discovery:
    """Presence, the peer table and dialling for one host. Start with :meth:`start` once the host runs."""

    def __init__(self, host: IHost, identity: NodeIdentity, config: P2PConfig, metrics: P2PMetrics, *,
                 peer_table: PeerTable, gossip: Gossip, dht: KadDHT, requests: Requests,
                 advertised: Callable[[], tuple[str, ...]]) -> None:
        self._host = host
        self._advertised = advertised
        """The addresses to announce: NAT traversal picks direct or relayed ones (``NatTraversal.advertised_addrs``)."""
        self.identity = identity
        self.config = config
        self.metrics = metrics
        self.peer_table = peer_table
        self._gossip = gossip
        self._dht = dht
        self._requests = requests
        self._dialing: set[ID] = set()
        self._first_seen: dict[ID, float] = {}
        self._presence_envelopes: dict[str, bytes] = {}
        """Each peer's latest signed presence as received, passed on unchanged by peer exchange."""
        self._seen_peers: dict[str, ID] = {}
        """Address (lower-case) → the last peer id seen acting for it, for :meth:`peer_of`."""
        self._table_changed = trio.Event()
        self._announce_soon = trio.Event()
        self._nursery: trio.Nursery | None = None
        requests.set_handler(PEERS_PROTOCOL, self._serve_peers)

    def start(self, nursery: trio.Nursery) -> None:
        """Start announcing, ageing out and bootstrapping in ``nursery`` (after gossip is attached)."""
        self._nursery = nursery
        nursery.start_soon(self._presence_loop)
        nursery.start_soon(self._expiry_loop)
        for addr in self.config.bootstrap:
            nursery.start_soon(self._bootstrap_loop, addr)

    def stop(self) -> None:
        self._nursery = None

    # --- lookups --------------------------------------------------------------------------------------------

    def connected_peers(self) -> list[ID]:
        return list(self._host.get_network().connections.keys())

    def peer_of(self, address: str) -> ID | None:
        """The peer acting as ``address`` on-chain, or None if this node knows no such peer.

        A connected peer's id carries its secp256k1 key, hence its address, so connections answer first; the peer
        table (which loses entries when gossip drops announcements under load) second; peers seen before last.
        """
        target = address.lower()
        for peer_id in self.connected_peers():
            found = address_of_peer(peer_id)
            if found is not None and found.lower() == target:
                self._seen_peers[target] = peer_id
                return peer_id
        entry = self.peer_table.by_address(target)
        if entry is not None:
            peer = ID.from_base58(entry.peer_id)
            self._seen_peers[target] = peer
            return peer
        return self._seen_peers.get(target)

    # --- presence -------------------------------------------------------------------------------------------

    def presence(self) -> Presence:
        """This node's presence as it announces it now."""
        return Presence(
            peer_id=self.identity.peer_id.to_base58(),
            addrs=self._advertised(),
            eth_address=self.identity.eth_address,
            roles=self.config.roles,
            node_class=self.config.node_class,
            jobs=self.config.jobs,
            version=self.config.software_version,
        )

    def announce_soon(self) -> None:
        """Announce presence within a moment (the addresses changed), not at the next interval."""
        self._announce_soon.set()

    def _presence_scale(self) -> float:
        # Every presence reaches every node, so N nodes announcing every interval cost N^2 deliveries per interval
        # (50 nodes at 5 s saturated a core). Beyond presence_scale_peers the interval, and with it the TTL, grows
        # with N, so the network-wide rate stays at ~presence_scale_peers / presence_interval_s. Every node
        # sees about the same N, so announcers and age-out agree.
        return max(1.0, (len(self.peer_table) + 1) / self.config.presence_scale_peers)

    async def _presence_loop(self) -> None:
        announces = 0
        while True:
            try:
                await self._gossip.publish(PRESENCE_TOPIC, self.presence())
            except P2PError:
                raise
            except Exception:  # no peers yet, a closing stream: the next round retries
                logger.debug("presence publish failed", exc_info=True)
            announces += 1
            interval = self.config.presence_interval_s * self._presence_scale()
            if announces <= _FAST_START_ANNOUNCES:
                interval = min(interval, float(self.config.heartbeat_s))
            with trio.move_on_after(interval):
                await self._announce_soon.wait()
                await trio.sleep(_ANNOUNCE_COALESCE_S)
            self._announce_soon = trio.Event()

    def on_presence(self, presence: Presence, envelope: bytes, seen: float) -> None:
        """Take a verified presence (gossip validator or peer exchange) into the table; ``seen`` is when it was
        signed, on the trio clock. May start a dial."""
        if presence.peer_id == self.identity.peer_id.to_base58():
            return
        current = self.peer_table.get(presence.peer_id)
        if current is not None and current.last_seen > seen:
            return  # older news than we have
        # No re-announcement here: with every node answering every newcomer, one join cost N^2 messages and a
        # wave of N joins N^3, which kept 50 nodes on two cores from ever settling. Newcomers use peer exchange.
        moved = current is not None and current.addrs != presence.addrs  # e.g. a private node got a relay slot
        if self.peer_table.update(presence, seen) or moved:
            self._notify_table()
        self._presence_envelopes[presence.peer_id] = envelope
        peer = ID.from_base58(presence.peer_id)
        addrs = [multiaddr.Multiaddr(a) for a in presence.addrs]
        # Requests and bitswap dial by peer id: the peerstore must know the addresses of peers we are not
        # connected to.
        self._host.get_peerstore().add_addrs(peer, addrs, int(2 * self.config.peer_ttl_s * self._presence_scale()))
        network = self._host.get_network()
        if peer in network.connections or peer in self._dialing or self._nursery is None:
            return
        pending = sum(1 for p in self._dialing if p not in network.connections)
        degree = len(network.connections) + pending
        if degree >= min(self.config.target_peers, self.config.max_connected_peers):
            return
        # Two peers that learn of each other at once would dial each other at once, and with one connection per
        # peer the loser's streams fail mid-negotiation. So the smaller peer id dials first; the larger one dials
        # only if still unconnected a while later (the smaller one may be unable to reach it).
        first_seen = self._first_seen.setdefault(peer, trio.current_time())
        if peer.to_bytes() < self.identity.peer_id.to_bytes():
            if trio.current_time() - first_seen < 2 * self.config.presence_interval_s:
                return
        self._nursery.start_soon(self._dial, PeerInfo(peer, addrs))

    # --- dialling -------------------------------------------------------------------------------------------

    async def _dial(self, info: PeerInfo) -> bool:
        self._dialing.add(info.peer_id)
        try:
            with trio.move_on_after(self.config.dial_timeout_s):
                await self._host.connect(info)
                await self._dht.add_peer(info.peer_id, skip_server_mode_check=True)
                return True
            logger.debug("dial to %s timed out", info.peer_id)
        except trio.Cancelled:
            raise
        except Exception as exc:  # unreachable peers are normal in discovery
            logger.debug("dial to %s failed: %r", info.peer_id, exc)
        finally:
            self._dialing.discard(info.peer_id)
        return False

    async def _bootstrap_loop(self, addr: str) -> None:
        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        exchange_tries = 0
        while True:
            connections = self._host.get_network().connections
            if info.peer_id not in connections and info.peer_id not in self._dialing:
                if await self._dial(info):
                    self._announce_soon.set()  # announce now that someone will hear it
                    exchange_tries = _PEER_EXCHANGE_TRIES
                else:
                    logger.info("bootstrap peer %s not reachable yet; retrying", addr)
            if exchange_tries > 0 and info.peer_id in connections:
                # Learn the network from the bootstrap; retried because a busy bootstrap may miss the deadline.
                exchange_tries -= 1
                try:
                    await self.exchange_peers(info.peer_id)
                    exchange_tries = 0
                except P2PError as exc:  # an older or busy bootstrap: gossiped presence still arrives
                    logger.info("peer exchange with %s failed: %s", addr, exc)
            await trio.sleep(self.config.bootstrap_retry_s)

    async def _expiry_loop(self) -> None:
        period = min(self.config.presence_interval_s, self.config.peer_ttl_s / 4)
        while True:
            await trio.sleep(period)
            gone = self.peer_table.expire(trio.current_time(), self.config.peer_ttl_s * self._presence_scale())
            for entry in gone:
                self._first_seen.pop(ID.from_base58(entry.peer_id), None)
                self._presence_envelopes.pop(entry.peer_id, None)
            self._repair_pubsub_streams()
            if gone:
                logger.info("peers aged out: %s", [e.peer_id for e in gone])
                self._notify_table()

    def _repair_pubsub_streams(self) -> None:
        # A connection can come up without a pubsub stream (the stream open raced a connection swap); the
        # library retries only briefly, so re-check every connected peer periodically.
        if self._nursery is None:
            return
        for peer in self.connected_peers():
            if peer not in self._gossip.peers and peer not in self._dialing:
                self._nursery.start_soon(self._ensure_pubsub_stream, peer)

    async def _ensure_pubsub_stream(self, peer: ID) -> None:
        self._dialing.add(peer)
        try:
            await self._gossip.pubsub.ensure_peer_stream(peer, timeout=self.config.dial_timeout_s)
        except trio.Cancelled:
            raise
        except Exception as exc:  # the peer may have gone meanwhile
            logger.debug("pubsub stream to %s not restored: %r", peer, exc)
        finally:
            self._dialing.discard(peer)

    # --- peer exchange --------------------------------------------------------------------------------------

    async def exchange_peers(self, peer: ID | str, timeout: float | None = None) -> int:
        """See :meth:`protocols.p2p.node.P2PNode.exchange_peers`."""
        body = await self._requests.request(
            peer, PEERS_PROTOCOL, PeersRequest(max_peers=MAX_PEERS_PER_EXCHANGE).to_bytes(), timeout)
        try:
            reply = PeersResponse.from_bytes(body)
        except SchemaError as exc:
            raise RemoteError("PROTOCOL_VIOLATION", f"peers reply from {peer}: {exc}") from exc
        accepted = 0
        for text in reply.presences:
            envelope = text.encode("utf-8")
            now = time.time()
            try:
                msg, signer = decode(envelope, now=now, max_skew=self.config.max_clock_skew_s,
                                     max_age=self.config.peer_ttl_s * self._presence_scale(), expected=(Presence,))
                assert isinstance(msg, Presence)
                try:
                    announced = address_of_peer(ID.from_base58(msg.peer_id))
                except Exception as exc:  # base58 and key-decoding errors have several types
                    raise Rejected(RejectCode.BAD_SCHEMA, f"presence.peer_id {msg.peer_id!r}") from exc
                if announced != signer or msg.eth_address != signer:
                    raise Rejected(RejectCode.WRONG_SIGNER, "presence announces another peer or account")
                age = max(0.0, now - decode_envelope(envelope)[0].timestamp_ms / 1000)
            except MessageRejected as exc:
                self.metrics.rejected[exc.reason] += 1
                logger.info("peer exchange from %s: rejected %s: %s", peer, exc.reason, exc)
                continue
            self.on_presence(msg, envelope, trio.current_time() - age)
            accepted += 1
        return accepted

    async def _serve_peers(self, request: bytes, _peer: ID) -> bytes:
        try:
            wanted = PeersRequest.from_bytes(request).max_peers
        except SchemaError as exc:
            raise RemoteError("PROTOCOL_VIOLATION", str(exc)) from exc
        # Our own presence first, freshly signed: the asker learns this peer's addresses from it as well.
        presences = [encode(self.presence(), self.identity, now=time.time()).decode("utf-8")]
        for entry in self.peer_table.entries():
            envelope = self._presence_envelopes.get(entry.peer_id)
            if envelope is not None and len(presences) < wanted:
                presences.append(envelope.decode("utf-8"))
        return PeersResponse(presences=tuple(presences)).to_bytes()

    # --- waiting --------------------------------------------------------------------------------------------

    def _notify_table(self) -> None:
        self._table_changed.set()
        self._table_changed = trio.Event()

    async def wait_for_peers(self, n: int, timeout: float, *, predicate: Callable[[PeerEntry], bool] | None = None
                             ) -> list[PeerEntry]:
        """See :meth:`protocols.p2p.node.P2PNode.wait_for_peers`."""
        try:
            with trio.fail_after(timeout):
                while True:
                    matching = [e for e in self.peer_table.entries() if predicate is None or predicate(e)]
                    if len(matching) >= n:
                        return matching
                    await self._table_changed.wait()
        except trio.TooSlowError:
            raise DiscoveryTimeout(
                f"found {len(self.peer_table)} peers, wanted {n}, within {timeout} s; check p2p.bootstrap"
            ) from None

    async def wait_until_gone(self, peer_id: str, timeout: float) -> None:
        """See :meth:`protocols.p2p.node.P2PNode.wait_until_gone`."""
        try:
            with trio.fail_after(timeout):
                while peer_id in self.peer_table:
                    await self._table_changed.wait()
        except trio.TooSlowError:
            raise DiscoveryTimeout(f"peer {peer_id} still announced after {timeout} s") from None
