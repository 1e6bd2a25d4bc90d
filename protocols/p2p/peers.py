"""The peer table: who is out there, built only from verified presence messages, aged by last-seen time."""

from __future__ import annotations

from dataclasses import dataclass

from protocols.messages import Presence
from protocols.types import Address, PeerIdStr


@dataclass(frozen=True)
class PeerEntry:
    """One peer as last announced. ``last_seen`` is on the ``trio.current_time()`` clock."""

    peer_id: PeerIdStr
    eth_address: Address
    roles: tuple[str, ...]
    node_class: str
    jobs: tuple[int, ...]
    addrs: tuple[str, ...]
    version: str
    last_seen: float


class PeerTable:
    """Peers keyed by peer id. Not thread-safe; used from the node's trio tasks only."""

    def __init__(self) -> None:
        self._entries: dict[PeerIdStr, PeerEntry] = {}

    def update(self, presence: Presence, now: float) -> bool:
        """Record ``presence`` as seen at ``now``; True when the peer was not in the table before.

        A presence seen earlier than the entry's ``last_seen`` (an older envelope from peer exchange) is ignored,
        so second-hand news never makes a peer look more recent, nor replaces what it announced later.
        """
        peer_id = PeerIdStr(presence.peer_id)
        current = self._entries.get(peer_id)
        if current is not None and current.last_seen > now:
            return False
        is_new = current is None
        self._entries[peer_id] = PeerEntry(
            peer_id=peer_id,
            eth_address=Address(presence.eth_address),
            roles=presence.roles,
            node_class=presence.node_class,
            jobs=presence.jobs,
            addrs=presence.addrs,
            version=presence.version,
            last_seen=now,
        )
        return is_new

    def expire(self, now: float, ttl: float) -> list[PeerEntry]:
        """Drop and return entries not seen for more than ``ttl`` seconds."""
        gone = [entry for entry in self._entries.values() if now - entry.last_seen > ttl]
        for entry in gone:
            del self._entries[entry.peer_id]
        return gone

    def get(self, peer_id: str) -> PeerEntry | None:
        return self._entries.get(PeerIdStr(peer_id))

    def by_address(self, eth_address: str) -> PeerEntry | None:
        """The peer acting as ``eth_address`` on-chain, if it announced itself."""
        wanted = eth_address.lower()
        return next((e for e in self._entries.values() if e.eth_address.lower() == wanted), None)

    def entries(self) -> list[PeerEntry]:
        return sorted(self._entries.values(), key=lambda e: e.peer_id)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._entries
