"""A node behind a NAT: learn reachability, serve or use a circuit relay, and hole-punch to direct connections.

Built from py-libp2p 0.8.1's own circuit relay v2 (``libp2p.relay.circuit_v2``: the hop/stop protocol with its
reservation and circuit limits, the relay transport that dials ``/p2p-circuit`` addresses, DCUtR) and our
dial-back check (:mod:`protocols.p2p.dialback`, because the library's AutoNAT judges every node public).

What a node does, by its reachability (``P2PConfig.reachability``; ``auto`` asks connected peers to dial it back,
bootstrap peers first, and again every ``reachability_interval_s``):

* **public**: with ``relay_service``, serves the hop protocol: private peers reserve a slot
  (``relay_max_reservations``, each for ``relay_reservation_ttl_s``) and others open circuits to them
  (``relay_max_circuits`` per reserved peer, each reset after ``relay_circuit_duration_s`` or
  ``relay_circuit_bytes``). It announces its direct addresses, as before.
* **private**: reserves a slot on ``relay_reservations`` relays (``P2PConfig.relays``, else its bootstrap peers)
  and announces ``<relay addr>/p2p/<relay>/p2p-circuit`` in its presence instead of its unreachable listen
  addresses. Peers learn those from presence (gossip or peer exchange) and dial through the relay (the swarm falls
  back to relayed addresses: :func:`protocols.p2p.hardening.dial_relayed_addrs`). A lost relay connection is noticed
  within ``bootstrap_retry_s`` and the slot taken again.
* **unknown** (nobody answered yet): announces direct addresses and asks again soon.

Every node runs the stop side (it can be reached through a relay), dials relayed addresses, and with
``hole_punching`` runs DCUtR: over each relayed connection the two peers exchange their observed addresses and dial
each other at the same moment; where both NATs keep the mapping (endpoint-independent, as nftables masquerade
does when the port is free) the direct connection replaces the relayed one, which the library closes after a grace
period. Where the punch fails, traffic stays on the relay.

Cancellation: :meth:`NatTraversal.services` owns the library services; :meth:`NatTraversal.start` runs the loops
in the node's nursery.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import multiaddr
import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.tools.anyio_service import background_trio_service

from protocols.p2p.config import P2PConfig
from protocols.p2p.dialback import DialBack, Reachability, is_relayed
from protocols.p2p.hardening import dial_relayed_addrs
from protocols.p2p.reqresp import Requests

logger = logging.getLogger(__name__)

_ASK_PEERS = 3
"""Peers asked to dial back per check."""
_UNKNOWN_RETRY_S = 2.0
_DIRECT_FIRST_S = 1.0
"""A peer announcing relayed addresses is tried on its direct ones this long first (enough on a shared LAN)."""


def relay_limits(config: P2PConfig) -> RelayLimits:
    return RelayLimits(
        duration=config.relay_circuit_duration_s,
        data=config.relay_circuit_bytes,
        max_circuit_conns=config.relay_max_circuits,
        max_reservations=config.relay_max_reservations,
        reservation_ttl=config.relay_reservation_ttl_s,
    )


def circuit_addr(relay_addr: str) -> str:
    """The address a private node announces for a slot on the relay at ``relay_addr`` (with ``/p2p/<relay>``)."""
    return f"{relay_addr}/p2p-circuit"


class NatTraversal:
    """Reachability, relay service and client, and hole punching for one host (see the module docstring)."""

    def __init__(self, host: IHost, config: P2PConfig, requests: Requests, *,
                 on_addrs_changed: Callable[[], None]) -> None:
        self._host = host
        self.config = config
        self._on_addrs_changed = on_addrs_changed
        self.reachability = {"public": Reachability.PUBLIC, "private": Reachability.PRIVATE}.get(
            config.reachability, Reachability.UNKNOWN)
        self.dialback = DialBack(host, requests, dial_timeout_s=config.dial_timeout_s)
        # allow_hop=False: the hop handler is ours (_serve_hop), so that only a node found public relays.
        self.protocol = CircuitV2Protocol(host, relay_limits(config), allow_hop=False)
        # STOP only: with CLIENT the library reserves a slot on the relay for every *dial* through it.
        self.transport = CircuitV2Transport(host, self.protocol, RelayConfig(roles=RelayRole.STOP))
        self.hole_punch = DCUtRProtocol(host, dial_timeout=int(config.dial_timeout_s)) if config.hole_punching \
            else None
        self.reservations: dict[ID, str] = {}
        """Relay peer → the circuit address this node announces through it."""
        self._reachability_known = trio.Event()
        host.set_stream_handler(HOP_PROTOCOL, self._serve_hop)
        dial_relayed_addrs(host, self.dial_relayed, direct_first_s=_DIRECT_FIRST_S)

    # --- what the node announces ----------------------------------------------------------------------------

    def advertised_addrs(self) -> tuple[str, ...]:
        """Addresses for this node's presence: its circuit addresses when private (none before a relay slot is
        reserved: others could not dial its listen addresses), else its direct ones."""
        if self.reachability is Reachability.PRIVATE:
            return tuple(self.reservations.values())
        own = f"/p2p/{self._host.get_id().to_base58()}"
        return tuple(str(a).removesuffix(own) for a in self._host.get_addrs() if not is_relayed(a))

    def is_relaying(self) -> bool:
        return self.config.relay_service and self.reachability is Reachability.PUBLIC

    def relayed_peers(self) -> list[ID]:
        """Peers this node is connected to only through a relay."""
        found = []
        for peer, conns in self._host.get_network().connections.items():
            if conns and all(any(is_relayed(a) for a in c.get_transport_addresses()) for c in conns):
                found.append(peer)
        return found

    # --- lifecycle ------------------------------------------------------------------------------------------

    @asynccontextmanager
    async def services(self) -> AsyncIterator[None]:
        """Run the library's relay (stop side) and DCUtR services; inside the host's run."""
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(background_trio_service(self.protocol))
            if self.hole_punch is not None:
                await stack.enter_async_context(background_trio_service(self.hole_punch))
            yield

    def start(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self._reachability_loop)
        nursery.start_soon(self._reservation_loop, nursery)

    async def wait_reachability(self, timeout: float) -> Reachability:
        """The reachability once known (or UNKNOWN after ``timeout``)."""
        with trio.move_on_after(timeout):
            await self._reachability_known.wait()
        return self.reachability

    # --- reachability ---------------------------------------------------------------------------------------

    async def _reachability_loop(self) -> None:
        if self.config.reachability != "auto":
            self._reachability_known.set()
            return
        while True:
            peers = self._peers_to_ask()
            found = Reachability.UNKNOWN
            if peers:
                found = await self.dialback.check(peers, timeout=self.config.request_timeout_s)
            if found is not Reachability.UNKNOWN:
                if found is not self.reachability:
                    logger.info("reachability: %s (asked %d peers)", found.value, len(peers))
                    self.reachability = found
                    self._on_addrs_changed()
                self._reachability_known.set()
                await trio.sleep(self.config.reachability_interval_s)
            else:
                await trio.sleep(_UNKNOWN_RETRY_S)

    def _peers_to_ask(self) -> list[ID]:
        connected = [p for p in self._host.get_network().connections if p not in self.relayed_peers()]
        bootstrap = [info_from_p2p_addr(multiaddr.Multiaddr(a)).peer_id for a in self.config.bootstrap]
        ordered = [p for p in bootstrap if p in connected] + [p for p in connected if p not in bootstrap]
        return ordered[:_ASK_PEERS]

    # --- relay service --------------------------------------------------------------------------------------

    async def _serve_hop(self, stream: INetStream) -> None:
        if not self.is_relaying():
            await stream.reset()  # the asker sees the protocol refused and tries another relay
            return
        # The library's handler reads RESERVE/CONNECT and applies the RelayLimits given at construction.
        await self.protocol._handle_hop_stream(stream)

    # --- relay client ---------------------------------------------------------------------------------------

    def _relay_candidates(self) -> list[str]:
        return list(self.config.relays or self.config.bootstrap)

    async def _reservation_loop(self, nursery: trio.Nursery) -> None:
        while True:
            if self.reachability is Reachability.PRIVATE:
                await self._keep_reservations(nursery)
            elif self.reservations:
                self.reservations.clear()  # found public: announce direct addresses again
                self._on_addrs_changed()
            await trio.sleep(self.config.bootstrap_retry_s)

    async def _keep_reservations(self, nursery: trio.Nursery) -> None:
        connections = self._host.get_network().connections
        lost = [relay for relay in self.reservations if relay not in connections]
        for relay in lost:
            logger.info("relay %s lost; reserving again", relay)
            del self.reservations[relay]
        changed = bool(lost)
        for addr in self._relay_candidates():
            if len(self.reservations) >= self.config.relay_reservations:
                break
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
            if info.peer_id in self.reservations:
                continue
            if await self._reserve(info, nursery):
                self.reservations[info.peer_id] = circuit_addr(addr)
                logger.info("reserved a relay slot: reachable at %s", self.reservations[info.peer_id])
                changed = True
        if changed:
            self._on_addrs_changed()

    async def _reserve(self, relay: PeerInfo, nursery: trio.Nursery) -> bool:
        try:
            with trio.fail_after(self.config.dial_timeout_s + self.config.request_timeout_s):
                await self._host.connect(relay)
                stream = await self._host.new_stream(relay.peer_id, [HOP_PROTOCOL])
                try:
                    # The library keeps the reservation refreshed (in ``nursery``) before it lapses.
                    return await self.transport.reserve(stream, relay.peer_id, nursery)
                finally:
                    await stream.close()
        except trio.TooSlowError:
            logger.info("reservation on relay %s timed out", relay.peer_id)
        except Exception as exc:  # unreachable, not a relay (not public, relay_service off), slots full
            logger.info("reservation on relay %s failed: %s", relay.peer_id, exc)
        return False

    async def dial_relayed(self, peer: ID, addrs: Sequence[multiaddr.Multiaddr]) -> None:
        """Connect to ``peer`` through the first of its ``/p2p-circuit`` addresses that works (for the swarm)."""
        errors = []
        for addr in addrs:
            relay_addr = str(addr).split("/p2p-circuit")[0]
            try:
                relay = info_from_p2p_addr(multiaddr.Multiaddr(relay_addr))
                if relay.peer_id == self._host.get_id():
                    continue
                self._host.get_peerstore().add_addrs(relay.peer_id, relay.addrs, 600)
                target = multiaddr.Multiaddr(f"{relay_addr}/p2p-circuit/p2p/{peer.to_base58()}")
                with trio.fail_after(self.config.dial_timeout_s):
                    await self.transport.dial(target)
                return
            except trio.TooSlowError:
                errors.append(f"{addr}: timed out")
            except Exception as exc:  # relay unreachable, no reservation, limits: try the next relay
                errors.append(f"{addr}: {exc}")
        raise ConnectionError(f"no relayed address of {peer} worked: {errors}")
