"""Content routing: provider records in the Kademlia DHT (``/ipfs/kad/1.0.0``, the IPFS "Amino" protocol).

A node announces the roots of content it holds that others need (datasets, deltas, checkpoints: what its store
``put`` or ``pin``\\ s), and looks a root up when no peer it knows of answers for it. Provider records are hints
from strangers: whoever fetches still checks every block against its CID (:mod:`storage.bitswap_fetch`), and a
record that names a peer without the content costs the fetch at most a dial or stall timeout.

It uses py-libp2p 0.8.1's :class:`~libp2p.kad_dht.kad_dht.KadDHT` (routing table, ``FIND_NODE`` walk, the
``ADD_PROVIDER`` / ``GET_PROVIDERS`` RPCs, the provider store it serves to others) and works around these defects
of it, here and nowhere else (each seen on 0.8.1 on loopback):

* ``find_providers`` has no overall deadline (a walk of up to 30 s, then 10 s per queried peer) and returns nothing
  when cancelled, so a caller with a deadline gets no partial answer. :meth:`ContentRouting.find_providers` walks
  under its own deadline over the library's RPC (``_get_providers_from_peer_with_closers``) and keeps what it found.
* ``find_providers`` answers from the local provider store alone as soon as that holds any record for the key: a
  stale or bogus record then hides every real provider for 48 h. Ours asks the network too unless local records
  already fill the limit.
* ``find_providers`` stores every record it is told about in the provider store this node *serves to others*, as if
  the provider had announced itself here: one lookup that met a bogus record re-serves it for 48 h. Ours stores
  nothing it was told.
* ``provide`` has no deadline, and it adds the key to ``providing_keys``, which the library re-announces every 22 h
  all at once, unbounded in number. Receivers (py-libp2p) reset the stream of a peer that sends more than 10
  ``ADD_PROVIDER`` in 10 s, so a burst of re-announcements is mostly refused. We take the key out of
  ``providing_keys`` after each announcement and re-announce ourselves: a bounded set of roots, one announcement
  per ``provide_spacing_s``, each under ``provide_timeout_s``.
* ``get_providers`` (and so the store a DHT server serves) returns this node's own record too; our lookups drop it.
* A DHT server logs a WARNING ("Failed to read DHT message from stream: " and an empty reason) every time a
  py-libp2p client closes its stream after the one answer it wanted, i.e. for nearly every query it serves: a
  logging filter (:func:`quiet_closed_dht_streams`) turns exactly that record into a DEBUG line.
* ``provide`` names the host's listen addresses in the record; a node behind a NAT must name its relayed address
  (``NatTraversal.advertised_addrs``), so with ``advertised`` given we send ``ADD_PROVIDER`` ourselves with those.

Cancellation: :meth:`ContentRouting.run` owns the announcing task; cancelling it stops announcing (records already
placed at other nodes expire there after 48 h).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import trio
import varint
from libp2p.abc import IHost
from libp2p.kad_dht.common import ALPHA, BUCKET_SIZE
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.kad_dht.utils import sort_peer_ids_by_distance
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.peer.peerstore import PeerStoreError, env_to_send_in_RPC
from multiaddr import Multiaddr

from protocols.p2p.config import P2PConfig
from protocols.p2p.errors import LibraryDrift

logger = logging.getLogger(__name__)

_LIBRARY_NAMES = ("provide", "get_providers", "add_provider", "providers", "providing_keys", "_send_add_provider",
                  "_get_providers_from_peer_with_closers")
_CLOSE_TIMEOUT_S = 2.0
"""Closing an ``ADD_PROVIDER`` stream waits for nothing from the peer; a wedged connection is not waited for."""
MODE_CHECK_S = 30.0
"""How often a node in ``auto`` DHT mode looks at its reachability again (it changes rarely)."""


def initial_dht_mode(config: P2PConfig) -> DHTMode:
    """The mode a node's DHT starts in: a server answers other nodes' queries and stores their records, which
    only a node others can dial is useful for; a client only asks. ``auto`` starts as a server unless the node is
    configured as private, and follows its measured reachability afterwards (:meth:`ContentRouting.run`)."""
    if config.dht_mode == "client" or (config.dht_mode == "auto" and config.reachability == "private"):
        return DHTMode.CLIENT
    return DHTMode.SERVER


class _ClosedStreamFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() == "Failed to read DHT message from stream: ":
            logger.debug("a DHT client closed its stream after its answer")
            return False
        return True


_CLOSED_STREAM_FILTER = _ClosedStreamFilter()


def quiet_closed_dht_streams() -> None:
    """Drop the library's WARNING for a DHT stream its client closed (module docstring); idempotent. Any other
    read failure (a torn or oversized message) still logs as the library wrote it."""
    library = logging.getLogger("libp2p.kad_dht.kad_dht")
    if _CLOSED_STREAM_FILTER not in library.filters:
        library.addFilter(_CLOSED_STREAM_FILTER)


def _check_library(dht: KadDHT) -> None:
    store = dht.provider_store
    missing = [name for name in _LIBRARY_NAMES if not hasattr(store, name)]
    missing += [name for name in ("find_closest_peers_network",) if not hasattr(dht.peer_routing, name)]
    if missing:
        raise LibraryDrift(f"py-libp2p's kad_dht lacks {missing}, which protocols.p2p.content_routing uses; "
                           "pin libp2p==0.8.1")


class ContentRouting:
    """Provider records for this node's content, and provider lookups, over ``dht`` (a py-libp2p KadDHT run by the
    node). Keys are multihashes (bytes), as the DHT stores them; ``storage`` passes a root's ``multihash``.

    ``is_private()``, when given, says whether this node was found unreachable from outside; in ``auto`` mode
    the DHT then serves as a client only (peers could not dial it to query it).
    """

    def __init__(self, host: IHost, dht: KadDHT, config: P2PConfig, *,
                 is_private: Callable[[], bool] | None = None,
                 advertised: Callable[[], Sequence[str]] | None = None) -> None:
        _check_library(dht)
        quiet_closed_dht_streams()
        self._host = host
        self._dht = dht
        self.config = config
        self._is_private = is_private
        self._advertised = advertised
        if advertised is not None:
            # Our records name the addresses the node advertises (module docstring), not its listen addresses.
            dht.provider_store._send_add_provider = self._send_add_provider  # type: ignore[method-assign]
        self._roots: OrderedDict[bytes, float] = OrderedDict()
        """Announced keys, oldest first, each with when it is due again (-inf: not yet announced)."""
        self._due = trio.Event()
        self.announced = 0
        """Announcements that reached at least one peer (for tests and the benchmark)."""

    # --- announcing -----------------------------------------------------------------------------------------

    def announce(self, key: bytes) -> None:
        """Have this node announce itself as a provider of ``key`` soon, and again before the record expires.

        Returns at once (the announcing task does the network work, spaced out). At most ``provide_max_roots``
        keys are kept: announcing one more drops the oldest from re-announcement.
        """
        if self._keep(key, due=-math.inf):
            self._due.set()

    def _keep(self, key: bytes, *, due: float) -> bool:
        """Keep ``key`` among the announced roots (the newest); True if it was not kept before."""
        if key in self._roots:
            self._roots.move_to_end(key)
            return False
        self._roots[key] = due
        while len(self._roots) > self.config.provide_max_roots:
            self._roots.popitem(last=False)
        return True

    def withdraw(self, key: bytes) -> None:
        """Stop re-announcing ``key`` (unpinned); records already placed expire on their own."""
        self._roots.pop(key, None)
        self._dht.provider_store.providers.get(key, {}).pop(str(self._host.get_id()), None)

    def announcing(self) -> list[bytes]:
        """The keys this node keeps announcing, oldest first."""
        return list(self._roots)

    async def provide_now(self, key: bytes) -> bool:
        """Announce ``key`` once, now, within ``provide_timeout_s``; True if at least one peer took the record.

        Also keeps ``key`` for re-announcement, as :meth:`announce` does.
        """
        self._keep(key, due=math.inf)  # not due: the announcing task must not send it a second time meanwhile
        ok = False
        try:
            ok = await self._provide(key)
        finally:  # also when the caller gave up: the announcing task takes the key over
            if key in self._roots:
                self._roots[key] = trio.current_time() + (self.config.provide_interval_s if ok else
                                                          self.config.provide_retry_s)
        return ok

    async def _provide(self, key: bytes) -> bool:
        store = self._dht.provider_store
        ok = False
        with trio.move_on_after(self.config.provide_timeout_s):
            try:
                ok = bool(await store.provide(key))
            except Exception as exc:  # a library error in one announcement must not end the announcing task
                logger.warning("announcing provider record %s failed: %r", key.hex(), exc)
        # The library would re-announce every key it ever provided, all at once (module docstring): we do it.
        store.providing_keys.discard(key)
        if self._advertised is not None and (addrs := self._provider_addrs()):
            store.add_provider(key, PeerInfo(self._host.get_id(), addrs))  # the record this node serves itself
        if ok:
            self.announced += 1
        return ok

    def _provider_addrs(self) -> list[Multiaddr]:
        assert self._advertised is not None
        return [Multiaddr(a) for a in self._advertised()]

    async def _send_add_provider(self, peer_id: ID, key: bytes) -> bool:
        """The library's ``ADD_PROVIDER`` (fire and forget, as Kubo expects), naming the advertised addresses."""
        addrs = self._provider_addrs()
        if not addrs:
            return False  # a private node before its relay slot: a record nobody could dial is worse than none
        message = Message()
        message.type = Message.MessageType.ADD_PROVIDER
        message.key = key
        envelope, _ = env_to_send_in_RPC(self._host)
        message.senderRecord = envelope
        provider = message.providerPeers.add()
        provider.id = self._host.get_id().to_bytes()
        provider.addrs.extend(a.to_bytes() for a in addrs)
        provider.signedRecord = envelope
        data = message.SerializeToString()
        stream = None
        try:
            stream = await self._host.new_stream(peer_id, [KAD_PROTOCOL])
            await stream.write(varint.encode(len(data)) + data)
            return True
        except Exception as exc:  # one unreachable DHT peer; the others still get the record
            logger.debug("ADD_PROVIDER to %s failed: %r", peer_id, exc)
            return False
        finally:
            if stream is not None:
                with trio.move_on_after(_CLOSE_TIMEOUT_S):
                    await stream.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Announce due keys, one per ``provide_spacing_s``, and follow reachability in ``auto`` mode; until
        cancelled."""
        async with trio.open_nursery() as nursery:
            if self.config.dht_mode == "auto" and self._is_private is not None:
                nursery.start_soon(self._follow_reachability)
            task_status.started()
            while True:
                now = trio.current_time()
                due = [k for k, at in self._roots.items() if at <= now]
                for key in due:
                    if key not in self._roots:
                        continue  # withdrawn meanwhile
                    ok = await self._provide(key)
                    if key in self._roots:
                        self._roots[key] = trio.current_time() + (
                            self.config.provide_interval_s if ok else self.config.provide_retry_s)
                    await trio.sleep(self.config.provide_spacing_s)
                self._due = trio.Event()
                wait = min((at for at in self._roots.values()), default=math.inf) - trio.current_time()
                with trio.move_on_after(max(wait, self.config.provide_spacing_s)):
                    await self._due.wait()

    async def _follow_reachability(self) -> None:
        assert self._is_private is not None
        while True:
            wanted = DHTMode.CLIENT if self._is_private() else DHTMode.SERVER
            if self._dht.mode is not wanted:
                logger.info("DHT now in %s mode (reachability changed)", wanted.value)
                await self._dht.switch_mode(wanted)
            await trio.sleep(MODE_CHECK_S)

    # --- looking up -----------------------------------------------------------------------------------------

    async def find_providers(self, key: bytes, *, limit: int | None = None,
                             timeout_s: float | None = None) -> list[PeerInfo]:
        """Peers that say they provide ``key``: records held here first, then the DHT's, at most ``limit``
        (default ``provider_lookup_max``), within ``timeout_s`` (default ``provider_lookup_timeout_s``).

        Never raises for an unanswered or failed lookup: returns what it found by the deadline (maybe nothing).
        Every entry is an unverified hint; this node itself is never among them.
        """
        lookup = _Lookup(key, self._host.get_id(),
                         self.config.provider_lookup_max if limit is None else limit)
        timeout = self.config.provider_lookup_timeout_s if timeout_s is None else timeout_s
        lookup.take(self._dht.provider_store.get_providers(key))
        if lookup.full():
            return lookup.result()
        with trio.move_on_after(timeout) as scope:
            await self._walk(lookup, deadline=scope.deadline)
        if scope.cancelled_caught:
            logger.debug("provider lookup %s: %.1f s passed with %d found", key.hex(), timeout, len(lookup.found))
        return lookup.result()

    async def _walk(self, lookup: _Lookup, *, deadline: float) -> None:
        """Ask peers close to the key for its providers, ALPHA at a time, nearest first.

        First the closest peers this node knows (often enough: a record sits at the k closest peers, and in a
        small network that is most of them); then, if nothing was found, the FIND_NODE walk (for half the time
        left) finds the closest peers in the network and their addresses. It stops once it has ``limit``
        providers, one round after it found the first, or when the k closest peers it knows of were all asked.
        """
        key, me = lookup.key, lookup.me
        local = self._dht.routing_table.find_local_closest_peers(key, BUCKET_SIZE)
        candidates = [p for p in dict.fromkeys([*local, *self._host.get_connected_peers()]) if p != me]
        queried: set[ID] = set()
        store: Any = self._dht.provider_store  # the RPC is not public API (checked by _check_library)
        per_peer_s = max(1.0, self.config.provider_lookup_timeout_s / 2)

        async def ask(peer: ID) -> None:
            with trio.move_on_after(per_peer_s):  # a peer that accepts the stream and never answers
                providers, closer = await store._get_providers_from_peer_with_closers(peer, key)
                lookup.take(list(providers))
                # The RPC keeps no address of the closer peers it is told about: only those already known here
                # (from the FIND_NODE walk or earlier) can be asked.
                candidates.extend(p for p in closer if p != me and p not in candidates and self._has_addrs(p))

        async def one_round() -> bool:
            nearest = sort_peer_ids_by_distance(key, candidates)[:BUCKET_SIZE]
            batch = [p for p in nearest if p not in queried][:ALPHA]
            if not batch:
                return False
            queried.update(batch)
            async with trio.open_nursery() as nursery:
                for peer in batch:
                    nursery.start_soon(ask, peer)
            return True

        if await one_round() and lookup.found:
            await one_round()
            return
        with trio.move_on_at(trio.current_time() + (deadline - trio.current_time()) / 2):
            walked = await self._dht.peer_routing.find_closest_peers_network(key)
            candidates.extend(p for p in walked if p != me and p not in candidates)
        found_in: int | None = None
        rounds = 0
        while not lookup.full() and (found_in is None or rounds <= found_in) and await one_round():
            rounds += 1
            if lookup.found and found_in is None:
                found_in = rounds

    def _has_addrs(self, peer: ID) -> bool:
        try:
            return bool(self._host.get_peerstore().addrs(peer))
        except PeerStoreError:  # a peer the peerstore never heard of
            return False


class _Lookup:
    """What one provider lookup found so far (kept when its deadline cuts the walk short)."""

    def __init__(self, key: bytes, me: ID, limit: int) -> None:
        self.key = key
        self.me = me
        self.limit = limit
        self.found: dict[ID, PeerInfo] = {}

    def take(self, providers: list[PeerInfo]) -> None:
        for info in providers:
            if info.peer_id != self.me and info.peer_id not in self.found and not self.full():
                self.found[info.peer_id] = info

    def full(self) -> bool:
        return len(self.found) >= self.limit

    def result(self) -> list[PeerInfo]:
        return list(self.found.values())
