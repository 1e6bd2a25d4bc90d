"""Who may hold an inbound connection on this node: handshake deadlines, per-IP limits, reserved slots, eviction.

py-libp2p 0.8.1's inbound path does not survive a flood (measured, see ``docs/api/p2p.md``): its inbound cap
(``max_connections - min_connections`` = 250 slots) counts connections still in their handshake together with
established ones, a slot is held until the *swarm* stops (the handler waits for ``manager.wait_finished()``, not for
the connection to close), nothing is per IP, and the resource manager's per-subnet slots are released with no IP
(``ConnectionScope.close`` passes none), so they leak. 300 raw TCP connections re-opened in a loop kept every slot
busy and new peers could not join. :class:`InboundAdmission` replaces the swarm's inbound handler, per host, with:

* a **handshake deadline**: an inbound connection that has not finished Noise + yamux within
  ``handshake_timeout_s`` is closed;
* a **pending pool** of ``max_pending_handshakes``, separate from established connections, with at most
  ``max_pending_per_ip`` from one IP (more are closed at once); when the pool is full, the oldest handshake of the IP
  holding the most is closed, so a flood evicts itself and a newcomer's single handshake survives;
* **reserved slots**: ``max_inbound_connections`` established inbound connections (``max_inbound_per_ip`` per IP),
  taken only by peers that completed a handshake; when they are full, a newcomer evicts the least useful connection:
  one whose peer has no gossip stream with us (``is_useful`` is False), past its ``inbound_grace_s``, from the IP
  holding the most, oldest first. If every connection is useful or young, the newcomer is refused.

Every drop goes through :class:`~protocols.p2p.drops.DropLog`. The slot is released when the connection closes.
Pre-multiplexed transports (QUIC: the handshake runs inside the transport) take the library's handler.

Cancellation: each handler runs in the listener's task for that connection; cancelling it closes that connection.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from libp2p.abc import IMuxedConn
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.peer.id import ID

from protocols.p2p.config import P2PConfig
from protocols.p2p.drops import DropLog
from protocols.p2p.errors import LibraryDrift

logger = logging.getLogger(__name__)

_SWARM_NAMES = ("_handle_inbound_connection", "upgrader", "add_conn")
_EVICTION_CLOSE_S = 10.0
"""Longest an evicted connection's close may take (yamux's GO_AWAY to a peer that does not read)."""


@dataclass(eq=False)
class _Pending:
    ip: str
    started: float
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


@dataclass(eq=False)
class _Established:
    ip: str
    peer: ID
    since: float
    conn: Any
    """The swarm's connection (``SwarmConn``), closed on eviction."""
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    """Cancelled on eviction: wakes this connection's handler, which closes it."""


class InboundAdmission:
    """Admission control for one host's inbound connections (see the module doc). Install with :meth:`install`."""

    def __init__(self, swarm: Any, config: P2PConfig, drops: DropLog, *, is_useful: Callable[[ID], bool]) -> None:
        missing = [name for name in _SWARM_NAMES if not hasattr(swarm, name)]
        if missing:
            raise LibraryDrift(f"py-libp2p's swarm lacks {missing}, which protocols.p2p.admission replaces or calls; "
                               "pin libp2p==0.8.1")
        self._swarm = swarm
        self._config = config
        self._drops = drops
        self._is_useful = is_useful
        self._library_handler = swarm._handle_inbound_connection
        self._pending: list[_Pending] = []
        self._established: list[_Established] = []

    def install(self) -> None:
        """Route the swarm's inbound connections through :meth:`handle` (the listener looks it up per connection)."""
        self._swarm._handle_inbound_connection = self.handle

    # --- what operators and tests read ----------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Handshakes in progress (not counting ones already told to close)."""
        return len(self._live_pending())

    def _live_pending(self) -> list[_Pending]:
        return [p for p in self._pending if not p.scope.cancel_called]

    @property
    def established(self) -> int:
        return len(self._established)

    # --- the handler ----------------------------------------------------------------------------------------

    async def handle(self, stream: Any, maddr: Any) -> None:
        """Take one inbound connection through the handshake and admission; returns when it closes."""
        if isinstance(stream, IMuxedConn):
            await self._library_handler(stream, maddr)
            return
        address = stream.get_remote_address() if hasattr(stream, "get_remote_address") else None
        ip = address[0] if address else "?"
        raw = RawConnection(stream, False)
        pending = self._admit_pending(ip)
        if pending is None:
            await _close_quietly(raw)
            return
        muxed = None
        try:
            with pending.scope:
                pending.scope.deadline = pending.started + self._config.handshake_timeout_s
                muxed = await self._handshake(raw)
        except Exception as exc:  # a stranger's bytes: any library error type means "not a peer"
            logger.debug("inbound handshake from %s failed: %r", ip, exc)
        finally:
            self._pending.remove(pending)
        if muxed is None:
            if pending.scope.cancelled_caught and trio.current_time() >= pending.scope.deadline:
                self._drops.drop("handshake_timeout", f"{ip} did not finish Noise+yamux within "
                                 f"{self._config.handshake_timeout_s:.0f} s")
            await _close_quietly(raw)
            return
        peer = muxed.peer_id
        admitted, victim = self._make_room(ip, peer)
        if not admitted:
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                await _close_quietly(muxed)
            return
        # The slot is taken now, before any await, so concurrent handshakes cannot all pass the check.
        entry = _Established(ip=ip, peer=peer, since=trio.current_time(), conn=None)
        self._established.append(entry)
        try:
            if victim is not None:
                victim.scope.cancel()  # its own handler closes it (see below), this one goes on
            try:
                entry.conn = await self._swarm.add_conn(muxed, direction="inbound")
            except Exception as exc:  # the library refused it (its own limits); already logged and closed there
                logger.debug("inbound connection from %s (%s) not added: %r", ip, peer, exc)
                return
            # trio closes the socket when this handler returns, so it lives as long as the connection.
            with entry.scope:
                await entry.conn.event_closed.wait()
            if entry.scope.cancelled_caught:
                # Evicted. The close must finish: cut short, the library never removes the connection from its
                # tables (SwarmConn.close removes it last, after yamux's GO_AWAY) and keeps counting it.
                with trio.CancelScope(shield=True), trio.move_on_after(_EVICTION_CLOSE_S):
                    await _close_quietly(entry.conn)
        finally:
            if entry in self._established:  # an eviction removed it already
                self._established.remove(entry)

    async def _handshake(self, raw: RawConnection) -> Any:
        secured = await self._swarm.upgrader.upgrade_security(raw, False)
        return await self._swarm.upgrader.upgrade_connection(secured, secured.get_remote_peer())

    # --- the pending pool -----------------------------------------------------------------------------------

    def _admit_pending(self, ip: str) -> _Pending | None:
        cfg = self._config
        live = self._live_pending()
        by_ip = collections.Counter(p.ip for p in live)
        if by_ip[ip] >= cfg.max_pending_per_ip:
            self._drops.drop("handshake_per_ip", f"{ip} already has {by_ip[ip]} handshakes in progress "
                             f"(p2p.max_pending_per_ip = {cfg.max_pending_per_ip})")
            return None
        if len(live) >= cfg.max_pending_handshakes:
            heaviest = max(by_ip, key=lambda k: by_ip[k])
            victim = min((p for p in live if p.ip == heaviest), key=lambda p: p.started)
            victim.scope.cancel()
            self._drops.drop("handshake_evicted", f"oldest handshake of {heaviest} ({by_ip[heaviest]} in "
                             f"progress) closed for one from {ip}: {cfg.max_pending_handshakes} in progress")
        pending = _Pending(ip=ip, started=trio.current_time())
        self._pending.append(pending)
        return pending

    # --- the established pool -------------------------------------------------------------------------------

    def _make_room(self, ip: str, peer: ID) -> tuple[bool, _Established | None]:
        """Whether ``peer`` (from ``ip``, handshake done) may stay, and the connection it evicts, if any."""
        cfg = self._config
        from_ip = [e for e in self._established if e.ip == ip]
        if len(from_ip) >= cfg.max_inbound_per_ip:
            victim = self._least_useful(from_ip)
            if victim is None:
                self._drops.drop("inbound_per_ip", f"{peer} from {ip}: {len(from_ip)} connections from that IP "
                                 f"(p2p.max_inbound_per_ip = {cfg.max_inbound_per_ip}), none evictable")
                return False, None
            return True, self._evict(victim, f"for {peer}: {ip} at p2p.max_inbound_per_ip")
        if len(self._established) >= cfg.max_inbound_connections:
            by_ip = collections.Counter(e.ip for e in self._established)
            # The most crowded IP first, so one address cannot push out everyone else.
            for crowded, _count in by_ip.most_common():
                victim = self._least_useful([e for e in self._established if e.ip == crowded])
                if victim is not None:
                    return True, self._evict(victim, f"for {peer} from {ip}: {len(self._established)} inbound "
                                             "connections")
            self._drops.drop("inbound_full", f"{peer} from {ip}: {len(self._established)} inbound connections "
                             f"(p2p.max_inbound_connections = {cfg.max_inbound_connections}), all useful or "
                             f"younger than {cfg.inbound_grace_s:.0f} s")
            return False, None
        return True, None

    def _least_useful(self, entries: list[_Established]) -> _Established | None:
        now = trio.current_time()
        candidates = [e for e in entries if e.conn is not None and now - e.since >= self._config.inbound_grace_s
                      and not self._is_useful(e.peer)]
        return min(candidates, key=lambda e: e.since, default=None)

    def _evict(self, victim: _Established, why: str) -> _Established:
        self._established.remove(victim)
        self._drops.drop("inbound_evicted", f"{victim.peer} from {victim.ip} (no gossip stream, "
                         f"{trio.current_time() - victim.since:.0f} s old) {why}")
        return victim


async def _close_quietly(conn: Any) -> None:
    try:
        await conn.close()
    except Exception:  # already broken: closing is best effort
        logger.debug("closing an inbound connection failed", exc_info=True)
