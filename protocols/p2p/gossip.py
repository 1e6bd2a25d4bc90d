"""Signed, typed gossip over a hardened GossipSub: publish, subscribe, and the validation every message passes.

Gossip messages are validated before delivery and before being forwarded: signature, schema, timestamp window,
signer = publishing peer, job id = topic's job, then the subscriber's validator. A rejection is counted in
``metrics.rejected[reason]`` and the message is neither delivered nor forwarded. Verified presence messages go
to ``on_presence`` (discovery) before subscribers see them.

This module never dials or keeps a peer table; :mod:`protocols.p2p.discovery` does.

Cancellation: the pumps run in the nursery given to :meth:`Gossip.attach`; cancelling it ends them, and
:meth:`Gossip.close` closes every subscription channel.
"""

from __future__ import annotations

import collections
import functools
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.tools.anyio_service import background_trio_service

from protocols.messages import MessageRejected, Presence, WireMessage, decode, encode
from protocols.p2p.config import P2PConfig
from protocols.p2p.drops import DropLog
from protocols.p2p.errors import DiscoveryTimeout, NotRunning
from protocols.p2p.hardened_pubsub import HardenedPubsub
from protocols.p2p.identity import NodeIdentity, address_of_peer
from protocols.p2p.metrics import P2PMetrics
from protocols.topics import PRESENCE_TOPIC
from protocols.types import Address, RejectCode

logger = logging.getLogger(__name__)

Delivery = tuple[WireMessage, Address]
Validator = Callable[[WireMessage, Address], bool | Awaitable[bool]]
PresenceHandler = Callable[[Presence, bytes, float], None]
"""``on_presence(presence, envelope, seen)``: a verified presence, its signed bytes, when it was seen (trio clock)."""
_VALIDATED_CACHE = 4096


class Rejected(MessageRejected):
    """A rejection decided by the node (signer or job binding) rather than by decoding."""

    def __init__(self, reason: RejectCode, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason  # type: ignore[misc]


@dataclass
class _Subscriber:
    send: trio.MemorySendChannel[Delivery]
    validator: Validator | None


class Gossip:
    """GossipSub (v1.1/v1.0) on ``host`` with our validation in front of every subscriber."""

    def __init__(self, host: IHost, identity: NodeIdentity, config: P2PConfig, metrics: P2PMetrics, *,
                 on_presence: PresenceHandler, drops: DropLog | None = None) -> None:
        self.identity = identity
        self.config = config
        self.metrics = metrics
        self._on_presence = on_presence
        self.gossipsub = GossipSub(
            # v1.1 and v1.0 only: v1.2 (IDONTWANT) delivered fewer messages in our 10-node runs; revisit later.
            protocols=[PROTOCOL_ID_V11, PROTOCOL_ID],
            degree=config.gossip_degree,
            degree_low=config.gossip_degree_low,
            degree_high=config.gossip_degree_high,
            heartbeat_interval=config.heartbeat_s,
            heartbeat_initial_delay=0.1,
            max_messages_per_topic_per_second=config.gossip_max_msgs_per_topic_per_s,
            eclipse_protection_enabled=config.gossip_eclipse_protection,
        )
        self.pubsub = HardenedPubsub(
            host,
            self.gossipsub,
            validation_timeout=config.gossip_validation_timeout_s,
            on_contained=self._count_contained,
            frame_timeout_s=config.gossip_frame_timeout_s,
            drops=drops,
            metrics=metrics,
        )
        self._subscribers: dict[str, list[_Subscriber]] = {}
        self._validated: collections.OrderedDict[bytes, Delivery] = collections.OrderedDict()
        self._nursery: trio.Nursery | None = None

    @asynccontextmanager
    async def services(self) -> AsyncIterator[None]:
        """Run the pubsub and router services; enter before the host runs, so they outlive it on the way out
        (no stream handler then spawns into a closed nursery while the host winds down)."""
        async with background_trio_service(self.pubsub), background_trio_service(self.gossipsub):
            yield

    async def attach(self, nursery: trio.Nursery) -> None:
        """Once the host runs: wait for pubsub, then pump topics in ``nursery``, starting with presence."""
        await self.pubsub.wait_until_ready()
        self._nursery = nursery
        await self._subscribe_topic(PRESENCE_TOPIC)

    def close(self) -> None:
        """Detach from the nursery and close every subscription channel."""
        self._nursery = None
        for subscribers in self._subscribers.values():
            for sub in subscribers:
                sub.send.close()
        self._subscribers.clear()

    def _require_running(self) -> trio.Nursery:
        if self._nursery is None:
            raise NotRunning("the p2p node is not running; start it with `await nursery.start(node.run)`")
        return self._nursery

    @property
    def peers(self) -> Any:
        """Peers we have a pubsub stream with."""
        return self.pubsub.peers

    async def subscribe(
        self, topic: str, validator: Validator | None = None, *, buffer: int | None = None
    ) -> trio.MemoryReceiveChannel[Delivery]:
        """See :meth:`protocols.p2p.node.P2PNode.subscribe`."""
        self._require_running()
        send, receive = trio.open_memory_channel[Delivery](buffer or self.config.subscription_buffer)
        await self._subscribe_topic(topic)
        self._subscribers.setdefault(topic, []).append(_Subscriber(send, validator))
        return receive

    async def publish(self, topic: str, msg: WireMessage) -> None:
        """Sign ``msg`` with this node's key and publish it on ``topic``."""
        self._require_running()
        await self.pubsub.publish(topic, encode(msg, self.identity, now=time.time()))

    async def _subscribe_topic(self, topic: str) -> None:
        if topic in self.pubsub.topic_ids:
            return
        self.pubsub.set_topic_validator(topic, functools.partial(self._validate, topic), True)
        subscription = await self.pubsub.subscribe(topic)
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
            self.metrics.rejected[RejectCode.REJECTED] += 1
            return False
        if delivery is None:
            self.metrics.rejected[RejectCode.REJECTED] += 1
            return False
        self._validated[self.pubsub.get_message_id(raw)] = delivery
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
            raise Rejected(RejectCode.WRONG_SIGNER, f"signed by {signer} but published by {origin}")
        if isinstance(msg, Presence):
            if topic != PRESENCE_TOPIC:
                raise Rejected(RejectCode.WRONG_TYPE, "presence belongs on the presence topic")
            if msg.peer_id != origin.to_base58() or msg.eth_address != signer:
                raise Rejected(RejectCode.WRONG_SIGNER, "presence announces another peer or account")
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
        own = self.identity.peer_id.to_bytes()
        while True:
            raw: rpc_pb2.Message = await subscription.get()
            delivery = self._validated.pop(self.pubsub.get_message_id(raw), None)
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

    async def wait_for_topic_peers(self, topic: str, n: int, timeout: float) -> None:
        """See :meth:`protocols.p2p.node.P2PNode.wait_for_topic_peers`."""
        try:
            with trio.fail_after(timeout):
                while True:
                    subscribed = len(self.pubsub.peer_topics.get(topic, ()))
                    # A topic we do not subscribe to is published through fanout peers, chosen at publish time.
                    meshed = len(self.gossipsub.mesh.get(topic, ())) if topic in self.pubsub.topic_ids else n
                    if subscribed >= n and meshed >= min(n, self.config.gossip_degree_low):
                        return
                    # The library has no event for mesh changes; its heartbeat is heartbeat_s.
                    await trio.sleep(0.05)
        except trio.TooSlowError:
            raise DiscoveryTimeout(f"fewer than {n} peers joined {topic} within {timeout} s") from None

    def _count_contained(self, label: str) -> None:
        self.metrics.contained[label] += 1
