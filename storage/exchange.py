"""Block exchange between nodes: bitswap (``/ipfs/bitswap/1.2.0``, 1.1.0, 1.0.0) over any libp2p host.

Serving follows the bitswap spec the way Kubo and Helia expect: a peer's wantlist arrives on a stream it opened;
the answer goes back on a **new** stream we open with the requester's own protocol id — presences first, then
blocks in messages of at most ~1 MiB — and that stream is closed. py-libp2p 0.8.1's ``BitswapClient`` answers on
the request's own stream (which Kubo/Helia never read), answers want-have with the whole block, refuses blocks over
512 KiB and keeps served wants forever; :class:`_BitswapWire` subclasses it, keeps its stream handling and message
parsing, and replaces the serving and receiving paths (private members: libp2p is pinned to 0.8.1 for this).

Fetching is ours, not the library's session (which can return truncated data when a provider dies): a DAG is
walked from its root, want-blocks go to the given providers in windows, every block is re-hashed against the
CID we asked for before it is stored, a provider that dies, stalls or answers DONT_HAVE has its wants moved to
another, and the fetch either completes (every block verified and stored) or raises — never partial data.
Peers that send blocks nobody asked for, or bytes that match no wanted CID, are penalised and dropped from the
fetch once they pass a threshold.

Cancellation: :meth:`BlockExchange.run` owns the reply tasks; cancelling it stops serving. A fetch cancelled
mid-way leaves only verified blocks in the store.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import trio
from libp2p.abc import IHost, INetStream
from libp2p.bitswap.client import BitswapClient
from libp2p.bitswap.config import (
    BITSWAP_PROTOCOL_V100,
    BITSWAP_PROTOCOL_V110,
    BITSWAP_PROTOCOL_V120,
)
from libp2p.bitswap.pb.bitswap_pb2 import Message
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID as PeerID
from libp2p.peer.peerinfo import PeerInfo

from storage.blockstore import FilesystemBlockStore
from storage.cid import DAG_PB, RAW, ContentId, cid_from_bytes, decode_varint, encode_varint
from storage.errors import (
    BlockNotFound,
    DagTooLarge,
    FetchTimeout,
    InvalidCid,
    MalformedBlock,
    StorageError,
)
from storage.unixfs import MAX_BLOCK_SIZE, UNIXFS_FILE, decode_pbnode, decode_unixfs

logger = logging.getLogger(__name__)

PROTOCOLS: Final = (BITSWAP_PROTOCOL_V120, BITSWAP_PROTOCOL_V110, BITSWAP_PROTOCOL_V100)
Provider = PeerInfo | PeerID
ProvidersFn = Callable[[ContentId], Awaitable[Sequence[Provider]]]


@dataclass(frozen=True, slots=True)
class ExchangeConfig:
    """Named limits of the exchange (every wait has one)."""

    reply_batch_bytes: int = 1 << 20
    """Blocks per reply message, by size (Helia and Kubo accept up to 4 MiB messages)."""
    want_batch: int = 16
    """Want-blocks per wantlist message: small batches let the server answer progressively."""
    window_blocks: int = 48
    """Blocks in flight per provider."""
    block_timeout_s: float = 10.0
    """A want unanswered this long moves to another provider."""
    dial_timeout_s: float = 10.0
    stream_timeout_s: float = 10.0
    """Opening a stream and writing one message to a peer."""
    max_bad_blocks: int = 3
    """Bad or unsolicited blocks from a peer before it is dropped from a fetch."""
    max_late_wants: int = 1024
    """Wants for blocks we lack that we remember per peer, to send them if the block arrives later."""


def _prefix(cid: ContentId) -> bytes:
    return bytes([1]) + encode_varint(cid.codec) + bytes([0x12, 32])


def _cid_from_prefix(prefix: bytes, data: bytes) -> ContentId:
    if not prefix:  # bitswap 1.0.0 carries no prefix: the block is addressed by its bare sha2-256
        return ContentId(DAG_PB, hashlib.sha256(data).digest(), 0)
    try:
        version, pos = decode_varint(prefix)
        codec, pos = decode_varint(prefix, pos)
        mh, pos = decode_varint(prefix, pos)
        length, pos = decode_varint(prefix, pos)
    except ValueError as exc:
        raise InvalidCid(f"bad block prefix ({exc})") from exc
    if mh != 0x12 or length != 32:
        raise InvalidCid(f"block prefix names hash 0x{mh:x}/{length}; only sha2-256 is accepted")
    return ContentId(codec, hashlib.sha256(data).digest(), 1 if version == 1 else 0)


class _BitswapWire(BitswapClient):
    """py-libp2p's bitswap stream handling with the serving and receiving paths replaced (see module doc)."""

    def __init__(self, host: IHost, exchange: BlockExchange) -> None:
        super().__init__(host, None, BITSWAP_PROTOCOL_V120)
        self._exchange = exchange

    async def _process_wantlist(self, wantlist: Any, peer_id: PeerID, stream: INetStream) -> None:
        protocol = stream.get_protocol()
        await self._exchange._serve_wantlist(peer_id, str(protocol) if protocol else BITSWAP_PROTOCOL_V100,
                                             wantlist)

    async def _process_blocks_v100(self, blocks: list[bytes], peer_id: PeerID) -> None:
        for data in blocks:
            await self._exchange._receive_block(peer_id, None, bytes(data))

    async def _process_blocks_v110(self, blocks: Sequence[Any], peer_id: PeerID) -> None:
        for block in blocks:
            await self._exchange._receive_block(peer_id, bytes(block.prefix), bytes(block.data))

    async def _process_block_presences(self, presences: Sequence[Any], peer_id: PeerID) -> None:
        for presence in presences:
            try:
                cid = cid_from_bytes(bytes(presence.cid))
            except InvalidCid:
                continue
            self._exchange._receive_presence(peer_id, cid, have=presence.type != Message.DontHave)

    async def _notify_peers_about_block(self, cid: Any, data: bytes) -> None:
        # Late blocks are sent by BlockExchange.notify_new_block on fresh streams, never via message queues.
        return

    def cleanup_peer(self, peer_id: PeerID) -> None:
        super().cleanup_peer(peer_id)
        self._exchange._peer_gone(peer_id)


@dataclass(eq=False)
class _Fetch:
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


class BlockExchange:
    """Bitswap over ``host`` backed by ``store``. Start with ``await nursery.start(exchange.run)``."""

    def __init__(self, host: IHost, store: FilesystemBlockStore, *, config: ExchangeConfig | None = None) -> None:
        self.host = host
        self.store = store
        self.config = config or ExchangeConfig()
        self._wire = _BitswapWire(host, self)
        self._nursery: trio.Nursery | None = None
        self._fetches: set[_Fetch] = set()
        self._late_wants: dict[PeerID, dict[bytes, tuple[ContentId, int]]] = {}
        self.penalties: dict[PeerID, int] = defaultdict(int)
        """Bad or unsolicited blocks seen per peer (for the node's peer scoring)."""
        self.served_blocks = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Register the bitswap handlers on the host and serve until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._wire.start()
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._nursery = None
                with trio.CancelScope(shield=True):
                    await self._wire.stop()

    # ── serving ────────────────────────────────────────────────────────────────────────────────────────

    async def _serve_wantlist(self, peer: PeerID, protocol: str, wantlist: Any) -> None:
        presences: list[tuple[ContentId, bool]] = []
        blocks: list[ContentId] = []
        late = self._late_wants.setdefault(peer, {})
        if wantlist.full:
            late.clear()
        for entry in wantlist.entries:
            try:
                cid = cid_from_bytes(bytes(entry.block))
            except InvalidCid:
                continue
            if entry.cancel:
                late.pop(cid.digest, None)
                continue
            have = self.store.has_sync(cid)
            want_have = entry.wantType == Message.Wantlist.Have
            if have and want_have and protocol == BITSWAP_PROTOCOL_V120:
                presences.append((cid, True))
            elif have:
                blocks.append(cid)
            else:
                if entry.sendDontHave and protocol == BITSWAP_PROTOCOL_V120:
                    presences.append((cid, False))
                if len(late) < self.config.max_late_wants:
                    late[cid.digest] = (cid, int(entry.wantType))
        if (presences or blocks) and self._nursery is not None:
            self._nursery.start_soon(self._reply, peer, protocol, presences, blocks)

    async def notify_new_block(self, cid: ContentId) -> None:
        """Send a block we just obtained to peers that wanted it earlier (the late-block path)."""
        for peer, late in list(self._late_wants.items()):
            want = late.pop(cid.digest, None)
            if want is None or self._nursery is None:
                continue
            is_have = want[1] == Message.Wantlist.Have
            self._nursery.start_soon(
                self._reply, peer, BITSWAP_PROTOCOL_V120, [(cid, True)] if is_have else [], [] if is_have else [cid]
            )

    async def _reply(self, peer: PeerID, protocol: str, presences: list[tuple[ContentId, bool]],
                     cids: list[ContentId]) -> None:
        """Answer on a new stream with the requester's protocol: presences, then ≤ ~1 MiB block batches."""
        try:
            with trio.fail_after(self.config.stream_timeout_s):
                stream = await self.host.new_stream(peer, [TProtocol(protocol)])
        except Exception as exc:  # task boundary: the peer may be gone; its wants are simply dropped
            logger.debug("cannot open a bitswap reply stream to %s: %s", peer, exc)
            return
        try:
            if presences:
                msg = Message()
                for cid, have in presences:
                    bp = msg.blockPresences.add()
                    bp.cid = cid.to_bytes()
                    bp.type = Message.Have if have else Message.DontHave
                await self._send(stream, msg)
            msg, size = Message(), 0
            for cid in cids:
                try:
                    data = await self.store.get(cid)
                except StorageError:
                    continue  # deleted or corrupt since the want arrived
                if size and size + len(data) > self.config.reply_batch_bytes:
                    await self._send(stream, msg)
                    msg, size = Message(), 0
                if protocol == BITSWAP_PROTOCOL_V100:
                    msg.blocks.append(data)
                else:
                    block = msg.payload.add()
                    block.prefix = _prefix(cid)
                    block.data = data
                size += len(data)
                self.served_blocks += 1
            if size:
                await self._send(stream, msg)
            await stream.close()
        except Exception as exc:  # task boundary: a dead peer must not take the server down
            logger.debug("bitswap reply to %s failed: %s", peer, exc)
            try:
                await stream.reset()
            except Exception:  # noqa: S110 - the stream is already broken; nothing more to do
                logger.debug("reset after failed reply to %s also failed", peer)

    async def _send(self, stream: INetStream, msg: Message) -> None:
        body = msg.SerializeToString()
        with trio.fail_after(self.config.stream_timeout_s + len(body) / (1 << 20)):
            await stream.write(encode_varint(len(body)) + body)

    # ── receiving ──────────────────────────────────────────────────────────────────────────────────────

    def _penalise(self, peer: PeerID, why: str) -> None:
        self.penalties[peer] += 1
        logger.warning("peer %s: %s (penalty %d)", peer, why, self.penalties[peer])
        for fetch in self._fetches:
            if peer in fetch.providers and self.penalties[peer] >= self.config.max_bad_blocks:
                fetch.dead.add(peer)
                fetch.kick()

    async def _receive_block(self, peer: PeerID, prefix: bytes | None, data: bytes) -> None:
        if len(data) > MAX_BLOCK_SIZE:
            self._penalise(peer, f"sent a block of {len(data)} bytes")
            return
        try:
            got = _cid_from_prefix(prefix or b"", data)
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

    def _receive_presence(self, peer: PeerID, cid: ContentId, *, have: bool) -> None:
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

    def _peer_gone(self, peer: PeerID) -> None:
        self._late_wants.pop(peer, None)
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
        """Fetch every block of the DAG under ``root`` into the store; returns the bytes fetched.

        Raises :class:`FetchTimeout` (deadline passed), :class:`BlockNotFound` (every provider lacks a block,
        died, or misbehaved), :class:`DagTooLarge` (the DAG's declared or fetched size passes ``max_bytes``).
        On error the store holds only verified blocks; nothing is pinned.
        """
        try:
            with trio.fail_after(timeout_s):
                return await self._fetch(root, providers, max_bytes)
        except trio.TooSlowError:
            raise FetchTimeout(
                f"{root}: not fetched within {timeout_s:.0f} s from {len(providers)} provider(s); check that a "
                f"provider has it and is reachable, or raise the timeout"
            ) from None

    async def _fetch(self, root: ContentId, providers: Sequence[Provider], max_bytes: int | None) -> int:
        fetch = _Fetch(root, await self._connect(providers), max_bytes)
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

    def _enqueue(self, fetch: _Fetch, cids: list[ContentId]) -> None:
        for cid in cids:
            if cid.digest not in fetch.wanted:
                fetch.wanted[cid.digest] = cid
                fetch.known.add(cid.digest)
                fetch.queue.append(cid)

    async def _expand_local(self, fetch: _Fetch) -> None:
        """Blocks already here need no request, but their children do."""
        i = 0
        while i < len(fetch.queue):
            cid = fetch.queue[i]
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

    def _check_size(self, fetch: _Fetch, cid: ContentId, data: bytes, *, count: bool) -> None:
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

    async def _absorb(self, fetch: _Fetch) -> None:
        batch, fetch.received = fetch.received, []
        for cid, data in batch:
            self._check_size(fetch, cid, data, count=True)
            children = self._children(cid, data)  # parse before storing: a malformed node is refused whole
            await self.store.put(cid, data)
            self._enqueue(fetch, children)
            await self.notify_new_block(cid)
        await self._expand_local(fetch)

    def _expire(self, fetch: _Fetch) -> None:
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

    async def _dispatch(self, fetch: _Fetch) -> None:
        if not fetch.queue:
            return
        load: dict[PeerID, int] = defaultdict(int)
        for peer, _sent in fetch.inflight.values():
            load[peer] += 1
        plan: dict[PeerID, list[ContentId]] = defaultdict(list)
        remaining: list[ContentId] = []
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
            if load[peer] >= self.config.window_blocks:
                remaining.append(cid)
                continue
            load[peer] += 1
            plan[peer].append(cid)
            fetch.inflight[cid.digest] = (peer, trio.current_time())
        fetch.queue = remaining
        for peer, cids in plan.items():
            for start in range(0, len(cids), self.config.want_batch):
                await self._send_wants(fetch, peer, cids[start : start + self.config.want_batch])

    async def _send_wants(self, fetch: _Fetch, peer: PeerID, cids: list[ContentId], *, cancel: bool = False) -> None:
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
        try:
            with trio.fail_after(self.config.stream_timeout_s):
                stream = await self.host.new_stream(peer, [TProtocol(p) for p in PROTOCOLS])
                await self._send(stream, msg)
                await stream.close()
        except Exception as exc:  # the provider is unusable; its wants go elsewhere
            if cancel:
                return
            logger.warning("provider %s: sending wants failed (%s); dropping it from this fetch", peer, exc)
            fetch.dead.add(peer)
            for cid in cids:
                if fetch.inflight.get(cid.digest, (None,))[0] == peer:
                    del fetch.inflight[cid.digest]
                    fetch.queue.append(cid)

    async def _cancel_wants(self, fetch: _Fetch) -> None:
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


async def fetch_from_any(
    exchange: BlockExchange, root: ContentId, providers_fn: ProvidersFn, *, timeout_s: float,
    max_bytes: int | None = None,
) -> int:
    """Find providers with ``providers_fn`` (an explicit list, the DHT, gossip) and fetch the DAG from them."""
    deadline = trio.current_time() + timeout_s
    with trio.move_on_after(timeout_s):
        providers = await providers_fn(root)
        if not providers:
            raise BlockNotFound(f"{root}: no provider known; give a peer that has it or announce it first")
        left = deadline - trio.current_time()
        return await exchange.fetch_dag(root, providers, timeout_s=left, max_bytes=max_bytes)
    raise FetchTimeout(f"{root}: finding providers took longer than {timeout_s:.0f} s")
