"""Fetching a DAG over bitswap from providers the caller names (ours, not the library's session, which can return
truncated data when a provider dies).

A DAG is walked from its root, want-blocks go to the given providers in windows, every block is re-hashed against
the CID we asked for before it is stored, a provider that dies, stalls or answers DONT_HAVE has its wants moved
to another, and the fetch either completes (every block verified and stored) or raises — never partial data.
Peers that send blocks nobody asked for, or bytes that match no wanted CID, are penalised and dropped from the
fetch once they pass a threshold. Each fetch has its own providers: concurrent fetches, even of one CID, do not
share or overwrite each other's.

Cancellation: a fetch cancelled mid-way leaves only verified blocks in the store.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import trio
from libp2p.abc import IHost, INetStream
from libp2p.bitswap.pb.bitswap_pb2 import Message
from libp2p.peer.id import ID as PeerID
from libp2p.peer.peerinfo import PeerInfo

from storage.bitswap_streams import KeptStreams
from storage.bitswap_wire import PROTOCOLS, ExchangeConfig, cid_from_prefix, send_message
from storage.blockstore import FilesystemBlockStore
from storage.cid import DAG_PB, RAW, ContentId
from storage.errors import BlockNotFound, DagTooLarge, FetchTimeout, InvalidCid, MalformedBlock, StorageError
from storage.unixfs import MAX_BLOCK_SIZE, UNIXFS_FILE, decode_pbnode, decode_unixfs

logger = logging.getLogger(__name__)

Provider = PeerInfo | PeerID
"""A peer that may hold content: with addresses (dialled first) or a bare peer id (already known to the host)."""


@dataclass(eq=False)
class FetchSession:
    """State of one DAG fetch."""

    root: ContentId
    providers: list[PeerID]
    max_bytes: int | None
    wanted: dict[bytes, ContentId] = field(default_factory=dict)  # digest -> CID still needed
    inflight: dict[bytes, tuple[PeerID, float]] = field(default_factory=dict)  # digest -> (peer, sent at)
    lacks: dict[bytes, set[PeerID]] = field(default_factory=lambda: defaultdict(set))  # said DONT_HAVE
    stalled: dict[bytes, set[PeerID]] = field(default_factory=lambda: defaultdict(set))  # timed out once
    progress: dict[PeerID, float] = field(default_factory=dict)  # last block received from each peer
    known: set[bytes] = field(default_factory=set)  # every digest of this DAG seen so far
    checked_local: set[bytes] = field(default_factory=set)  # digests already looked up in the store
    dead: set[PeerID] = field(default_factory=set)
    queue: list[ContentId] = field(default_factory=list)  # known, not yet requested
    received: list[tuple[ContentId, bytes]] = field(default_factory=list)  # verified, to store and expand
    fetched_bytes: int = 0
    file_bytes: int = 0
    wake: trio.Event = field(default_factory=trio.Event)

    def alive(self) -> list[PeerID]:
        return [p for p in self.providers if p not in self.dead]

    def kick(self) -> None:
        self.wake.set()


class BitswapFetcher:
    """Runs fetch sessions over ``host`` into ``store``; ``on_stored(cid)`` runs after each block is stored."""

    def __init__(self, host: IHost, store: FilesystemBlockStore, config: ExchangeConfig, *,
                 on_stored: Callable[[ContentId], Awaitable[None]]) -> None:
        self.host = host
        self.store = store
        self.config = config
        self._on_stored = on_stored
        self.received_bytes = 0
        """Block bytes peers sent us, wanted or not (the node's /metrics)."""
        self._fetches: set[FetchSession] = set()
        self.streams = KeptStreams(host, open_timeout_s=config.stream_timeout_s, idle_s=config.kept_stream_idle_s)
        """Want streams per provider, reused (attached to the exchange's nursery by ``BlockExchange.run``)."""
        self.penalties: dict[PeerID, int] = defaultdict(int)
        """Bad or unsolicited blocks seen per peer (for the node's peer scoring)."""

    # ── what the wire reports ──────────────────────────────────────────────────────────────────────────

    def _penalise(self, peer: PeerID, why: str) -> None:
        self.penalties[peer] += 1
        logger.warning("peer %s: %s (penalty %d)", peer, why, self.penalties[peer])
        for fetch in self._fetches:
            if peer in fetch.providers and self.penalties[peer] >= self.config.max_bad_blocks:
                fetch.dead.add(peer)
                fetch.kick()

    async def receive_block(self, peer: PeerID, prefix: bytes | None, data: bytes) -> None:
        self.received_bytes += len(data)
        if len(data) > MAX_BLOCK_SIZE:
            self._penalise(peer, f"sent a block of {len(data)} bytes")
            return
        try:
            got = cid_from_prefix(prefix or b"", data)
        except InvalidCid as exc:
            self._penalise(peer, str(exc))
            return
        wanted_by = [f for f in self._fetches if got.digest in f.wanted]
        if not wanted_by:
            # Corrupt bytes hash to nothing we asked for; a late duplicate of a block we got elsewhere is fine.
            if not any(got.digest in f.known for f in self._fetches) and not self.store.has_sync(got):
                self._penalise(peer, "sent a block nobody asked for (or whose bytes match no wanted CID)")
            return
        for fetch in wanted_by:
            fetch.progress[peer] = trio.current_time()
            cid = fetch.wanted.pop(got.digest)
            fetch.inflight.pop(got.digest, None)
            if cid.codec != got.codec and prefix:
                self._penalise(peer, f"sent {cid} under the wrong codec")
            fetch.received.append((cid, data))
            fetch.kick()

    def receive_presence(self, peer: PeerID, cid: ContentId, *, have: bool) -> None:
        if have:
            return  # we only send want-block, so HAVE carries no news
        for fetch in self._fetches:
            if cid.digest in fetch.wanted:
                fetch.lacks[cid.digest].add(peer)
                holder = fetch.inflight.get(cid.digest)
                if holder is not None and holder[0] == peer:
                    del fetch.inflight[cid.digest]
                    fetch.queue.append(cid)
                fetch.kick()

    def peer_gone(self, peer: PeerID) -> None:
        for fetch in self._fetches:
            if peer in fetch.providers:
                fetch.dead.add(peer)
                fetch.kick()

    # ── fetching ───────────────────────────────────────────────────────────────────────────────────────

    async def _connect(self, providers: Sequence[Provider]) -> list[PeerID]:
        ids: list[PeerID] = []
        for provider in providers:
            if isinstance(provider, PeerInfo):
                if provider.peer_id == self.host.get_id():
                    continue
                try:
                    with trio.fail_after(self.config.dial_timeout_s):
                        await self.host.connect(provider)
                except Exception as exc:  # one unreachable provider must not fail the fetch
                    logger.warning("provider %s unreachable: %s", provider.peer_id, exc)
                    continue
                ids.append(provider.peer_id)
            elif provider != self.host.get_id():
                ids.append(provider)
        return list(dict.fromkeys(ids))

    async def fetch_dag(
        self,
        root: ContentId,
        providers: Sequence[Provider],
        *,
        timeout_s: float,
        max_bytes: int | None = None,
    ) -> int:
        """See :meth:`storage.exchange.BlockExchange.fetch_dag`."""
        try:
            with trio.fail_after(timeout_s):
                return await self._fetch(root, providers, max_bytes)
        except trio.TooSlowError:
            raise FetchTimeout(
                f"{root}: not fetched within {timeout_s:.0f} s from {len(providers)} provider(s); check that a "
                f"provider has it and is reachable, or raise the timeout"
            ) from None

    async def _fetch(self, root: ContentId, providers: Sequence[Provider], max_bytes: int | None) -> int:
        fetch = FetchSession(root, await self._connect(providers), max_bytes)
        self._fetches.add(fetch)
        try:
            self._enqueue(fetch, [root])
            await self._expand_local(fetch)
            while fetch.wanted or fetch.received:
                if fetch.received:
                    await self._absorb(fetch)
                    continue
                self._expire(fetch)
                await self._dispatch(fetch)
                fetch.wake = trio.Event()
                if fetch.received:
                    continue
                with trio.move_on_after(min(1.0, self.config.block_timeout_s / 4)):
                    await fetch.wake.wait()
            return fetch.fetched_bytes
        finally:
            self._fetches.discard(fetch)
            await self._cancel_wants(fetch)

    def _enqueue(self, fetch: FetchSession, cids: list[ContentId]) -> None:
        for cid in cids:
            if cid.digest not in fetch.wanted:
                fetch.wanted[cid.digest] = cid
                fetch.known.add(cid.digest)
                fetch.queue.append(cid)

    async def _expand_local(self, fetch: FetchSession) -> None:
        """Blocks already here need no request, but their children do."""
        i = 0
        while i < len(fetch.queue):
            cid = fetch.queue[i]
            # Each CID is looked up once (a stat): re-checking the whole queue after every batch cost O(n²).
            if cid.digest in fetch.checked_local:
                i += 1
                continue
            fetch.checked_local.add(cid.digest)
            if self.store.has_sync(cid):
                try:
                    data = await self.store.get(cid)
                except StorageError:
                    i += 1
                    continue
                fetch.queue.pop(i)
                fetch.wanted.pop(cid.digest, None)
                self._check_size(fetch, cid, data, count=False)
                self._enqueue(fetch, self._children(cid, data))
            else:
                i += 1

    def _children(self, cid: ContentId, data: bytes) -> list[ContentId]:
        if cid.codec != DAG_PB:
            return []
        return [link.cid for link in decode_pbnode(data).links]

    def _check_size(self, fetch: FetchSession, cid: ContentId, data: bytes, *, count: bool) -> None:
        if count:
            fetch.fetched_bytes += len(data)
        if cid.codec == RAW:
            fetch.file_bytes += len(data)
        if fetch.max_bytes is None:
            return
        if cid == fetch.root and cid.codec == DAG_PB:
            node = decode_pbnode(data)
            if node.data is not None:
                try:
                    fs = decode_unixfs(node.data)
                except MalformedBlock:
                    fs = None
                if fs is not None and fs.type == UNIXFS_FILE and (fs.filesize or 0) > fetch.max_bytes:
                    raise DagTooLarge(f"{cid}: file of {fs.filesize} bytes exceeds the limit of {fetch.max_bytes}")
        # Leaf bytes are file bytes; dag-pb nodes add ~0.02% on top, so the total gets a small allowance.
        allowance = fetch.max_bytes + (fetch.max_bytes >> 6) + (1 << 20)
        if fetch.file_bytes > fetch.max_bytes or fetch.fetched_bytes > allowance:
            raise DagTooLarge(f"{fetch.root}: DAG exceeds the limit of {fetch.max_bytes} bytes")

    async def _absorb(self, fetch: FetchSession) -> None:
        batch, fetch.received = fetch.received, []
        children: list[list[ContentId]] = []
        for cid, data in batch:
            self._check_size(fetch, cid, data, count=True)
            children.append(self._children(cid, data))  # parse before storing: a malformed node is refused whole
        await self.store.put_many(batch)  # one thread hop for what arrived together, not one per block
        for (cid, _data), links in zip(batch, children, strict=True):
            self._enqueue(fetch, links)
            await self._on_stored(cid)
        await self._expand_local(fetch)

    def _expire(self, fetch: FetchSession) -> None:
        """Move wants off dead peers, and off peers that delivered nothing for ``block_timeout_s``."""
        now = trio.current_time()
        for digest, (peer, sent) in list(fetch.inflight.items()):
            idle = now - max(sent, fetch.progress.get(peer, sent))
            if peer in fetch.dead or idle > self.config.block_timeout_s:
                if peer not in fetch.dead:
                    logger.warning("provider %s stalled on %s; asking again", peer, fetch.wanted.get(digest))
                    fetch.stalled[digest].add(peer)
                del fetch.inflight[digest]
                cid = fetch.wanted.get(digest)
                if cid is not None:
                    fetch.queue.append(cid)

    async def _dispatch(self, fetch: FetchSession) -> None:
        if not fetch.queue:
            return
        load: dict[PeerID, int] = defaultdict(int)
        for peer, _sent in fetch.inflight.values():
            load[peer] += 1
        plan: dict[PeerID, list[ContentId]] = defaultdict(list)
        remaining: list[ContentId] = []
        # Wants go out a batch at a time: refilling each freed slot at once sent one-want messages, each answered
        # by a one-block reply, so the per-message costs were paid per block. A peer is refilled when a whole
        # batch fits its window, when it has nothing in flight, or when the queue is shorter than a batch.
        refill = {
            peer: load[peer] == 0 or self.config.window_blocks - load[peer] >= min(self.config.want_batch,
                                                                                  len(fetch.queue))
            for peer in fetch.alive()
        }
        for cid in fetch.queue:
            if cid.digest not in fetch.wanted or cid.digest in fetch.inflight:
                continue
            candidates = [p for p in fetch.alive() if p not in fetch.lacks[cid.digest]]
            if not candidates:
                raise BlockNotFound(
                    f"{fetch.root}: no provider can deliver block {cid} "
                    f"({len(fetch.providers)} tried, {len(fetch.dead)} gone or misbehaving)"
                )
            # A peer that stalled once is asked again only when no other candidate is left (the fetch's
            # deadline bounds the retries).
            fresh = [p for p in candidates if p not in fetch.stalled[cid.digest]]
            if fresh:
                candidates = fresh
            else:
                fetch.stalled[cid.digest].clear()
            peer = min(candidates, key=lambda p: load[p])
            if load[peer] >= self.config.window_blocks or not refill.get(peer, True):
                remaining.append(cid)
                continue
            load[peer] += 1
            plan[peer].append(cid)
            fetch.inflight[cid.digest] = (peer, trio.current_time())
        fetch.queue = remaining
        for peer, cids in plan.items():
            for start in range(0, len(cids), self.config.want_batch):
                await self._send_wants(fetch, peer, cids[start : start + self.config.want_batch])

    async def _send_wants(self, fetch: FetchSession, peer: PeerID, cids: list[ContentId], *,
                          cancel: bool = False) -> None:
        msg = Message()
        for cid in cids:
            entry = msg.wantlist.entries.add()
            entry.block = cid.to_bytes()
            entry.priority = 1
            if cancel:
                entry.cancel = True
            else:
                entry.wantType = Message.Wantlist.Block
                entry.sendDontHave = True
        async def write(stream: INetStream) -> None:
            await send_message(stream, msg, timeout_s=self.config.stream_timeout_s)

        try:
            with trio.fail_after(2 * self.config.stream_timeout_s):  # a failed kept stream is retried once
                await self.streams.send(peer, PROTOCOLS, write)
        except Exception as exc:  # the provider is unusable; its wants go elsewhere
            if cancel:
                return
            logger.warning("provider %s: sending wants failed (%s); dropping it from this fetch", peer, exc)
            fetch.dead.add(peer)
            for cid in cids:
                if fetch.inflight.get(cid.digest, (None,))[0] == peer:
                    del fetch.inflight[cid.digest]
                    fetch.queue.append(cid)

    async def _cancel_wants(self, fetch: FetchSession) -> None:
        """Tell providers to forget wants we no longer need (best effort, bounded)."""
        pending: dict[PeerID, list[ContentId]] = defaultdict(list)
        for digest, (peer, _sent) in fetch.inflight.items():
            cid = fetch.wanted.get(digest)
            if cid is not None and peer not in fetch.dead:
                pending[peer].append(cid)
        if not pending:
            return
        with trio.move_on_after(2.0) as scope:
            scope.shield = True
            for peer, cids in pending.items():
                await self._send_wants(fetch, peer, cids, cancel=True)
