"""``P2PNode``: one libp2p host with hardened GossipSub, a Kademlia DHT, presence discovery and request/response.

The node roles in ``node/`` use only this class's public methods. Lifecycle::

    node = P2PNode(identity, P2PConfig(bootstrap=(addr,), roles=("trainer",)))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        inbox = await node.subscribe(job_topic(7), validator=my_check)
        async for msg, signer in inbox: ...
        await node.stop()

Discovery: the node dials its bootstrap peers, then every node announces a signed :class:`Presence` on
``PRESENCE_TOPIC``. A newcomer asks its bootstrap peer for the signed presence envelopes it holds
(``/dtnode/peers/1.0.0``, every signature re-verified here) and announces itself at once, so it learns the network
in one round trip and the network learns it in one gossip wave: O(N) messages per join. Knowing a peer does not
need a connection to it: the node dials newly learned peers only while it has fewer than ``target_peers``
connections, and requests and block fetches dial on demand by the addresses in the peer table (also put in the
peerstore). The Kademlia DHT (random walk on) keeps a routing table for peer and provider lookups. Peers whose
presence is older than ``peer_ttl_s`` leave the peer table; beyond ``presence_scale_peers`` nodes the presence
interval and that TTL grow with the network, so presence costs O(N) deliveries a second rather than O(N^2).

Gossip messages are validated before delivery and before being forwarded: signature, schema, timestamp window,
signer = publishing peer, job id = topic's job, then the subscriber's validator. A rejection is counted in
``node.metrics.rejected[reason]`` and the message is neither delivered nor forwarded.

Cancellation: cancelling the scope that runs :meth:`run` (or calling :meth:`stop`) closes the host, the services
and every subscription channel.
"""

from __future__ import annotations

import collections
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.rcmgr.manager import ResourceManager
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service

from protocols.errors import SchemaError
from protocols.messages import (
    MessageRejected,
    Presence,
    RejectReason,
    WireMessage,
    decode,
    decode_envelope,
    encode,
)
from protocols.p2p.config import P2PConfig
from protocols.p2p.errors import (
    DiscoveryTimeout,
    NotRunning,
    P2PError,
    PayloadTooLarge,
    PeerUnreachable,
    RemoteError,
    RequestTimeout,
)
from protocols.p2p.hardening import (
    HardenedPubsub,
    buffer_tcp_reads,
    cache_sender_records,
    check_library,
    disable_auto_connector,
    make_yamux_frames_atomic,
    quiet_unsupported_protocol_errors,
    raise_pubsub_queue_limits,
)
from protocols.p2p.identity import NodeIdentity, address_of_peer
from protocols.p2p.peers import PeerEntry, PeerTable
from protocols.p2p.reqresp import RequestHandler, StreamClosedEarly, call_stream, serve_stream
from protocols.topics import PEERS_PROTOCOL, PING_PROTOCOL, PRESENCE_TOPIC, job_of_topic
from protocols.types import Address
from protocols.wire import MAX_PEERS_PER_EXCHANGE, PeersRequest, PeersResponse

logger = logging.getLogger(__name__)

Delivery = tuple[WireMessage, Address]
Validator = Callable[[WireMessage, Address], bool | Awaitable[bool]]
_VALIDATED_CACHE = 4096
_FAST_START_ANNOUNCES = 3
_ANNOUNCE_COALESCE_S = 0.3
_PEER_EXCHANGE_TRIES = 3


@dataclass
class P2PMetrics:
    """Counters for operators and tests. Plain ints and Counters; read them, never write them."""

    rejected: collections.Counter[str] = field(default_factory=collections.Counter)
    """Gossip messages rejected, by :class:`RejectReason`."""
    delivered: int = 0
    dropped_slow_subscriber: int = 0
    """Valid messages dropped because a subscriber's channel was full."""
    contained: collections.Counter[str] = field(default_factory=collections.Counter)
    """Remote-triggered exceptions contained inside the library (pubsub stream, pubsub message)."""
    requests_served: int = 0
    request_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    """Requests we answered with an error, or whose stream failed, by code."""

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


@dataclass
class _Subscriber:
    send: trio.MemorySendChannel[Delivery]
    validator: Validator | None


class P2PNode:
    """A dtnode's presence on the network. See the module docstring for the lifecycle."""

    def __init__(self, identity: NodeIdentity, config: P2PConfig | None = None) -> None:
        check_library()
        # A deadline expiring mid-write must not tear down the connection (hardening.make_yamux_frames_atomic).
        make_yamux_frames_atomic()
        # GossipSub rebuilds our signed peer record for every message it forwards (hardening.cache_sender_records).
        cache_sender_records()
        # One connection's reader is one task: it must not yield per Noise length prefix (hardening.buffer_tcp_reads).
        buffer_tcp_reads()
        # A peer without our protocols (an IPFS node) is not an error (hardening.quiet_unsupported_protocol_errors).
        quiet_unsupported_protocol_errors()
        self.identity = identity
        self.config = config or P2PConfig()
        self.metrics = P2PMetrics()
        self.peer_table = PeerTable()
        raise_pubsub_queue_limits(
            peer_queue_size=self.config.peer_queue_size,
            subscription_channel_size=self.config.subscription_buffer,
        )
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
                                             enable_metrics=False),
            # One connection per peer: with more allowed, connect() waits a fixed 250 ms for extra dials.
            # No auto-connector: discovery below decides whom to dial (the library default dials toward 100).
            connection_config=ConnectionConfig(max_connections_per_peer=1),
        )
        disable_auto_connector(self._host)
        self._gossipsub = GossipSub(
            # v1.1 and v1.0 only: v1.2 (IDONTWANT) delivered fewer messages in our 10-node runs; revisit later.
            protocols=[PROTOCOL_ID_V11, PROTOCOL_ID],
            degree=self.config.gossip_degree,
            degree_low=self.config.gossip_degree_low,
            degree_high=self.config.gossip_degree_high,
            heartbeat_interval=self.config.heartbeat_s,
            heartbeat_initial_delay=0.1,
            max_messages_per_topic_per_second=self.config.gossip_max_msgs_per_topic_per_s,
            eclipse_protection_enabled=self.config.gossip_eclipse_protection,
        )
        self._pubsub = HardenedPubsub(
            self._host,
            self._gossipsub,
            validation_timeout=self.config.gossip_validation_timeout_s,
            on_contained=self._count_contained,
        )
        self._dht = KadDHT(self._host, DHTMode.SERVER, enable_random_walk=self.config.enable_random_walk)
        self._subscribers: dict[str, list[_Subscriber]] = {}
        self._validated: collections.OrderedDict[bytes, Delivery] = collections.OrderedDict()
        self._dialing: set[ID] = set()
        self._first_seen: dict[ID, float] = {}
        self._presence_envelopes: dict[str, bytes] = {}
        """Each peer's latest signed presence as received, passed on unchanged by peer exchange."""
        self._table_changed = trio.Event()
        self._announce_soon = trio.Event()
        self._stop_requested = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.set_request_handler(PING_PROTOCOL, self._echo)
        self.set_request_handler(PEERS_PROTOCOL, self._serve_peers)

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

    def listen_addrs(self) -> list[str]:
        """Full multiaddrs (with ``/p2p/<peer id>``) others can dial; give one to new nodes as bootstrap."""
        suffix = f"/p2p/{self.peer_id.to_base58()}"
        return [str(a) if "/p2p/" in str(a) else str(a) + suffix for a in self._host.get_addrs()]

    def connected_peers(self) -> list[ID]:
        return list(self._host.get_network().connections.keys())

    def peers(self) -> list[PeerEntry]:
        """Peers known from presence, live within ``peer_ttl_s``, excluding this node."""
        return self.peer_table.entries()

    # --- lifecycle ------------------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the host and services, report started, and serve until :meth:`stop` or cancellation."""
        listen = [multiaddr.Multiaddr(a) for a in self.config.listen_addrs]
        try:
            # Order matters for a clean shutdown: the pubsub services outlive the host, so no stream handler
            # spawns into a closed nursery while the host winds down.
            async with background_trio_service(self._pubsub), background_trio_service(self._gossipsub):
                async with self._host.run(listen), background_trio_service(self._dht):
                    await self._pubsub.wait_until_ready()
                    async with trio.open_nursery() as nursery:
                        self._nursery = nursery
                        await self._subscribe_topic(PRESENCE_TOPIC)
                        nursery.start_soon(self._presence_loop)
                        nursery.start_soon(self._expiry_loop)
                        for addr in self.config.bootstrap:
                            nursery.start_soon(self._bootstrap_loop, addr)
                        logger.info("p2p node %s listening on %s", self.eth_address, self.listen_addrs())
                        task_status.started()
                        await self._stop_requested.wait()
                        nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            for subscribers in self._subscribers.values():
                for sub in subscribers:
                    sub.send.close()
            self._subscribers.clear()

    async def stop(self) -> None:
        """Ask :meth:`run` to shut down; returns at once (await the nursery to wait for the end)."""
        self._stop_requested.set()

    def _require_running(self) -> trio.Nursery:
        if self._nursery is None:
            raise NotRunning("the p2p node is not running; start it with `await nursery.start(node.run)`")
        return self._nursery

    # --- gossip ---------------------------------------------------------------------------------------------

    async def subscribe(
        self, topic: str, validator: Validator | None = None, *, buffer: int | None = None
    ) -> trio.MemoryReceiveChannel[Delivery]:
        """Receive verified ``(message, signer_address)`` pairs published on ``topic`` by other nodes.

        ``validator(msg, signer)`` (sync or async) runs after the built-in checks; False rejects the message for
        the whole node (it is not forwarded either). It must not raise; if it does, the message is rejected and
        the error logged. Closing the returned channel ends this subscription.
        """
        self._require_running()
        send, receive = trio.open_memory_channel[Delivery](buffer or self.config.subscription_buffer)
        await self._subscribe_topic(topic)
        self._subscribers.setdefault(topic, []).append(_Subscriber(send, validator))
        return receive

    async def publish(self, topic: str, msg: WireMessage) -> None:
        """Sign ``msg`` with this node's key and publish it on ``topic``."""
        self._require_running()
        await self._pubsub.publish(topic, encode(msg, self.identity, now=time.time()))

    async def _subscribe_topic(self, topic: str) -> None:
        if topic in self._pubsub.topic_ids:
            return
        self._pubsub.set_topic_validator(topic, functools.partial(self._validate, topic), True)
        subscription = await self._pubsub.subscribe(topic)
        self._require_running().start_soon(self._pump, topic, subscription)

    async def _validate(self, topic: str, forwarder: ID, raw: rpc_pb2.Message) -> bool:
        # Called by Pubsub.validate_msg; must return a bool and never raise (a raise cancels the host stack).
        try:
            delivery = await self._check(topic, raw)
        except MessageRejected as exc:
            self.metrics.rejected[exc.reason] += 1
            logger.debug("rejected %s on %s from %s: %s", exc.reason, topic, forwarder, exc)
            return False
        except Exception:  # task boundary inside the library's validator call
            logger.exception("gossip validator failed on %s; message rejected", topic)
            self.metrics.rejected[RejectReason.REJECTED] += 1
            return False
        if delivery is None:
            self.metrics.rejected[RejectReason.REJECTED] += 1
            return False
        self._validated[self._pubsub.get_message_id(raw)] = delivery
        while len(self._validated) > _VALIDATED_CACHE:
            self._validated.popitem(last=False)
        return True

    async def _check(self, topic: str, raw: rpc_pb2.Message) -> Delivery | None:
        expected = (Presence,) if topic == PRESENCE_TOPIC else None
        msg, signer = decode(
            raw.data,
            now=time.time(),
            max_skew=self.config.max_clock_skew_s,
            max_age=self.config.max_message_age_s,
            expected=expected,
        )
        origin = ID(raw.from_id)
        if address_of_peer(origin) != signer:
            raise _Rejected(RejectReason.WRONG_SIGNER, f"signed by {signer} but published by {origin}")
        if isinstance(msg, Presence):
            if topic != PRESENCE_TOPIC:
                raise _Rejected(RejectReason.WRONG_TYPE, "presence belongs on the presence topic")
            if msg.peer_id != origin.to_base58() or msg.eth_address != signer:
                raise _Rejected(RejectReason.WRONG_SIGNER, "presence announces another peer or account")
        job = job_of_topic(topic)
        msg_job = getattr(msg, "job_id", None)
        if job is not None and msg_job is not None and msg_job != job:
            raise _Rejected(RejectReason.WRONG_JOB, f"job {msg_job} message on the topic of job {job}")
        address = Address(signer)
        for sub in self._subscribers.get(topic, []):
            if sub.validator is None:
                continue
            verdict = sub.validator(msg, address)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if not verdict:
                return None
        return msg, address

    async def _pump(self, topic: str, subscription: Any) -> None:
        # Reads every message, our own included: an unread subscription channel fills and then drops.
        own = self.peer_id.to_bytes()
        while True:
            raw: rpc_pb2.Message = await subscription.get()
            delivery = self._validated.pop(self._pubsub.get_message_id(raw), None)
            if raw.from_id == own or delivery is None:
                continue
            if topic == PRESENCE_TOPIC and isinstance(delivery[0], Presence):
                self._on_presence(delivery[0], raw.data, trio.current_time())
            subscribers = self._subscribers.get(topic, [])
            for sub in list(subscribers):
                try:
                    sub.send.send_nowait(delivery)
                    self.metrics.delivered += 1
                except trio.WouldBlock:
                    self.metrics.dropped_slow_subscriber += 1
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    subscribers.remove(sub)

    # --- discovery ------------------------------------------------------------------------------------------

    def _presence(self) -> Presence:
        addrs = tuple(str(a) for a in self._host.get_addrs())
        return Presence(
            peer_id=self.peer_id.to_base58(),
            addrs=tuple(a.split("/p2p/")[0] for a in addrs),
            eth_address=self.eth_address,
            roles=self.config.roles,
            node_class=self.config.node_class,
            jobs=self.config.jobs,
            version=self.config.software_version,
        )

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
                await self.publish(PRESENCE_TOPIC, self._presence())
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

    def _on_presence(self, presence: Presence, envelope: bytes, seen: float) -> None:
        # ``presence`` is verified and bound to its signer (gossip validator or peer exchange); ``seen`` is when
        # it was signed, on the trio clock.
        if presence.peer_id == self.peer_id.to_base58():
            return
        current = self.peer_table.get(presence.peer_id)
        if current is not None and current.last_seen > seen:
            return  # older news than we have
        # No re-announcement here: with every node answering every newcomer, one join cost N^2 messages and a
        # wave of N joins N^3, which kept 50 nodes on two cores from ever settling. Newcomers use peer exchange.
        if self.peer_table.update(presence, seen):
            self._notify_table()
        self._presence_envelopes[presence.peer_id] = envelope
        peer = ID.from_base58(presence.peer_id)
        addrs = [multiaddr.Multiaddr(a) for a in presence.addrs]
        # Requests and bitswap dial by peer id: the peerstore must know the addresses of peers we are not
        # connected to.
        self._host.get_peerstore().add_addrs(peer, addrs, int(2 * self.config.peer_ttl_s * self._presence_scale()))
        network = self._host.get_network()
        if peer in network.connections or peer in self._dialing:
            return
        pending = sum(1 for p in self._dialing if p not in network.connections)
        degree = len(network.connections) + pending
        if degree >= min(self.config.target_peers, self.config.max_connected_peers):
            return
        # Two peers that learn of each other at once would dial each other at once, and with one connection per
        # peer the loser's streams fail mid-negotiation. So the smaller peer id dials first; the larger one dials
        # only if still unconnected a while later (the smaller one may be unable to reach it).
        first_seen = self._first_seen.setdefault(peer, trio.current_time())
        if peer.to_bytes() < self.peer_id.to_bytes():
            if trio.current_time() - first_seen < 2 * self.config.presence_interval_s:
                return
        self._require_running().start_soon(self._dial, PeerInfo(peer, addrs))

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
        for peer in self.connected_peers():
            if peer not in self._pubsub.peers and peer not in self._dialing:
                self._require_running().start_soon(self._ensure_pubsub_stream, peer)

    async def _ensure_pubsub_stream(self, peer: ID) -> None:
        self._dialing.add(peer)
        try:
            await self._pubsub.ensure_peer_stream(peer, timeout=self.config.dial_timeout_s)
        except trio.Cancelled:
            raise
        except Exception as exc:  # the peer may have gone meanwhile
            logger.debug("pubsub stream to %s not restored: %r", peer, exc)
        finally:
            self._dialing.discard(peer)

    async def exchange_peers(self, peer: ID | str, timeout: float | None = None) -> int:
        """Ask ``peer`` for the signed presence of the peers it knows; returns how many entries were accepted.

        Every envelope is verified as if it came by gossip (signature, schema, age within ``peer_ttl_s``, the
        announced peer id and account both the signer's), so ``peer`` can withhold peers but not forge them;
        rejected envelopes are counted in ``metrics.rejected``. Raises what :meth:`request` raises, and
        :class:`RemoteError` with code ``PROTOCOL_VIOLATION`` for an unreadable reply.
        """
        body = await self.request(peer, PEERS_PROTOCOL, PeersRequest(max_peers=MAX_PEERS_PER_EXCHANGE).to_bytes(),
                                  timeout)
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
                    raise _Rejected(RejectReason.BAD_SCHEMA, f"presence.peer_id {msg.peer_id!r}") from exc
                if announced != signer or msg.eth_address != signer:
                    raise _Rejected(RejectReason.WRONG_SIGNER, "presence announces another peer or account")
                age = max(0.0, now - decode_envelope(envelope)[0].timestamp_ms / 1000)
            except MessageRejected as exc:
                self.metrics.rejected[exc.reason] += 1
                logger.info("peer exchange from %s: rejected %s: %s", peer, exc.reason, exc)
                continue
            self._on_presence(msg, envelope, trio.current_time() - age)
            accepted += 1
        return accepted

    async def _serve_peers(self, request: bytes, _peer: ID) -> bytes:
        try:
            wanted = PeersRequest.from_bytes(request).max_peers
        except SchemaError as exc:
            raise RemoteError("PROTOCOL_VIOLATION", str(exc)) from exc
        # Our own presence first, freshly signed: the asker learns this peer's addresses from it as well.
        presences = [encode(self._presence(), self.identity, now=time.time()).decode("utf-8")]
        for entry in self.peer_table.entries():
            envelope = self._presence_envelopes.get(entry.peer_id)
            if envelope is not None and len(presences) < wanted:
                presences.append(envelope.decode("utf-8"))
        return PeersResponse(presences=tuple(presences)).to_bytes()

    def _notify_table(self) -> None:
        self._table_changed.set()
        self._table_changed = trio.Event()

    async def wait_for_peers(self, n: int, timeout: float, *, predicate: Callable[[PeerEntry], bool] | None = None
                             ) -> list[PeerEntry]:
        """Wait until at least ``n`` peers (matching ``predicate``) are in the peer table; returns them."""
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

    async def wait_for_topic_peers(self, topic: str, n: int, timeout: float) -> None:
        """Wait until ``n`` connected peers subscribe to ``topic`` and our gossip mesh for it is formed.

        Publishing before this is fine but reaches only the peers already meshed; use it where a first message
        must reach everyone (tests, a leader's first announcement).
        """
        try:
            with trio.fail_after(timeout):
                while True:
                    subscribed = len(self._pubsub.peer_topics.get(topic, ()))
                    # A topic we do not subscribe to is published through fanout peers, chosen at publish time.
                    meshed = len(self._gossipsub.mesh.get(topic, ())) if topic in self._pubsub.topic_ids else n
                    if subscribed >= n and meshed >= min(n, self.config.gossip_degree_low):
                        return
                    # The library has no event for mesh changes; its heartbeat is heartbeat_s.
                    await trio.sleep(0.05)
        except trio.TooSlowError:
            raise DiscoveryTimeout(f"fewer than {n} peers joined {topic} within {timeout} s") from None

    async def wait_until_gone(self, peer_id: str, timeout: float) -> None:
        """Wait until ``peer_id`` has left the peer table (stopped announcing for ``peer_ttl_s``, scaled as above)."""
        try:
            with trio.fail_after(timeout):
                while peer_id in self.peer_table:
                    await self._table_changed.wait()
        except trio.TooSlowError:
            raise DiscoveryTimeout(f"peer {peer_id} still announced after {timeout} s") from None

    # --- request/response -----------------------------------------------------------------------------------

    def set_request_handler(self, protocol: TProtocol, handler: RequestHandler) -> None:
        """Serve ``protocol`` with ``async handler(request, remote_peer) -> response``.

        Raise ``RemoteError(code, detail)`` in the handler to refuse with a code; any other exception is logged
        and reaches the caller as ``RemoteError("INTERNAL", ...)``. Only that stream is affected.
        """

        async def on_stream(stream: INetStream) -> None:
            self.metrics.requests_served += 1
            await serve_stream(
                stream,
                handler,
                max_request_bytes=self.config.max_request_bytes,
                max_response_bytes=self.config.max_response_bytes,
                read_timeout_s=self.config.request_timeout_s,
                handler_timeout_s=self.config.handler_timeout_s,
                chunk=self.config.stream_chunk_bytes,
                on_error=self._count_request_error,
            )

        self._host.set_stream_handler(protocol, on_stream)

    async def request(
        self, peer: ID | str, protocol: TProtocol, payload: bytes, timeout: float | None = None
    ) -> bytes:
        """Send ``payload`` to ``peer`` (peer id, base58 string, or multiaddr with ``/p2p/``) and return the reply.

        Raises :class:`PayloadTooLarge`, :class:`RequestTimeout`, :class:`PeerUnreachable`, :class:`RemoteError`.
        """
        if len(payload) > self.config.max_request_bytes:
            raise PayloadTooLarge(
                f"request of {len(payload)} bytes exceeds max_request_bytes={self.config.max_request_bytes}; "
                "put large data in storage and send its CID"
            )
        deadline = self.config.request_timeout_s if timeout is None else timeout
        stream: INetStream | None = None
        try:
            with trio.fail_after(deadline):
                peer_id = await self._resolve(peer)
                try:
                    stream = await self._host.new_stream(peer_id, [protocol])
                except trio.Cancelled:
                    raise
                except Exception as exc:  # dial, upgrade and negotiation failures have many types
                    raise PeerUnreachable(f"cannot open {protocol} to {peer_id}: {exc}") from exc
                return await call_stream(
                    stream, payload, max_response_bytes=self.config.max_response_bytes,
                    chunk=self.config.stream_chunk_bytes,
                )
        except trio.TooSlowError:
            await _reset_quietly(stream)
            raise RequestTimeout(f"{protocol} to {peer} got no answer within {deadline} s") from None
        except StreamClosedEarly as exc:
            await _reset_quietly(stream)
            raise RemoteError("STREAM_CLOSED", str(exc)) from exc
        except (RemoteError, PayloadTooLarge):
            await _reset_quietly(stream)
            raise
        except P2PError:
            await _reset_quietly(stream)
            raise
        except trio.Cancelled:
            await _reset_quietly(stream)
            raise
        except Exception as exc:  # a write to a dying connection
            await _reset_quietly(stream)
            raise PeerUnreachable(f"{protocol} to {peer} failed: {exc!r}") from exc

    async def _resolve(self, peer: ID | str) -> ID:
        if isinstance(peer, ID):
            return self._with_table_addrs(peer)
        if peer.startswith("/"):
            try:
                info = info_from_p2p_addr(multiaddr.Multiaddr(peer))
            except Exception as exc:  # the multiaddr library raises several types
                raise PeerUnreachable(f"{peer!r} is not a multiaddr with /p2p/<peer id>") from exc
            try:
                await self._host.connect(info)
            except trio.Cancelled:
                raise
            except Exception as exc:
                raise PeerUnreachable(f"cannot connect to {peer}: {exc}") from exc
            return info.peer_id
        try:
            peer_id = ID.from_base58(peer)
        except Exception as exc:  # base58 errors
            raise PeerUnreachable(f"{peer!r} is not a peer id") from exc
        return self._with_table_addrs(peer_id)

    def _with_table_addrs(self, peer_id: ID) -> ID:
        # Connections are bounded (target_peers): a peer we know but are not connected to is dialled by the
        # addresses it announced.
        entry = self.peer_table.get(peer_id.to_base58())
        if entry is not None and peer_id not in self._host.get_network().connections:
            self._host.get_peerstore().add_addrs(peer_id, [multiaddr.Multiaddr(a) for a in entry.addrs], 600)
        return peer_id

    async def ping(self, peer: ID | str, timeout: float | None = None) -> float:
        """Round-trip time in seconds of an echo request to ``peer``."""
        start = trio.current_time()
        await self.request(peer, PING_PROTOCOL, b"ping", timeout)
        return trio.current_time() - start

    async def _echo(self, request: bytes, _peer: ID) -> bytes:
        return request

    # --- metrics --------------------------------------------------------------------------------------------

    def _count_contained(self, label: str) -> None:
        self.metrics.contained[label] += 1

    def _count_request_error(self, code: str) -> None:
        self.metrics.request_errors[code] += 1


class _Rejected(MessageRejected):
    """A rejection decided by the node (signer or job binding) rather than by decoding."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason  # type: ignore[misc]


async def _reset_quietly(stream: INetStream | None) -> None:
    if stream is None:
        return
    with trio.CancelScope(shield=True), trio.move_on_after(1):
        try:
            await stream.reset()
        except Exception:  # the stream may already be closed or reset
            logger.debug("stream reset failed", exc_info=True)
