"""Serving blocks over bitswap the way Kubo and Helia expect.

A peer's wantlist arrives on a stream it opened; the answer goes back on a stream **we** open with the requester's
own protocol id — presences first, then blocks in messages of at most ~1 MiB. Such streams (up to
``reply_streams_per_peer``) are kept per peer and reused for later replies (:mod:`storage.bitswap_streams` says
why). Wants for blocks we lack are remembered (bounded per peer) and answered if the block arrives later.

This module never fetches; :mod:`storage.bitswap_fetch` does.

Cancellation: replies run in the nursery given to :meth:`BitswapServer.attach`; cancelling it stops serving.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from libp2p.abc import IHost, INetStream
from libp2p.bitswap.pb.bitswap_pb2 import Message
from libp2p.peer.id import ID as PeerID

from storage.bitswap_streams import KeptStreams
from storage.bitswap_wire import (
    BITSWAP_PROTOCOL_V100,
    BITSWAP_PROTOCOL_V120,
    ExchangeConfig,
    block_prefix,
    encode_blocks_message,
    send_encoded,
    send_message,
)
from storage.blockstore import FilesystemBlockStore
from storage.cid import ContentId, cid_from_bytes
from storage.errors import InvalidCid, StorageError

logger = logging.getLogger(__name__)

_BLOCKS_PER_READ = 4
"""Blocks read from the store per thread hop when answering (≤ 4 MiB in memory at once)."""


class BitswapServer:
    """Answers other peers' wantlists from ``store``."""

    def __init__(self, host: IHost, store: FilesystemBlockStore, config: ExchangeConfig) -> None:
        self.host = host
        self.store = store
        self.config = config
        self._nursery: trio.Nursery | None = None
        self._late_wants: dict[PeerID, dict[bytes, tuple[ContentId, int]]] = {}
        self.streams = KeptStreams(host, open_timeout_s=config.stream_timeout_s, idle_s=config.kept_stream_idle_s,
                                   per_peer=config.reply_streams_per_peer)
        self.served_blocks = 0
        self.served_bytes = 0

    def attach(self, nursery: trio.Nursery | None) -> None:
        """Run replies in ``nursery`` (None: stop answering)."""
        self._nursery = nursery
        self.streams.attach(nursery)

    async def serve_wantlist(self, peer: PeerID, protocol: str, wantlist: Any) -> None:
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
            self._nursery.start_soon(self.reply, peer, protocol, presences, blocks)

    async def notify_new_block(self, cid: ContentId) -> None:
        """Send a block we just obtained to peers that wanted it earlier (the late-block path)."""
        for peer, late in list(self._late_wants.items()):
            want = late.pop(cid.digest, None)
            if want is None or self._nursery is None:
                continue
            is_have = want[1] == Message.Wantlist.Have
            self._nursery.start_soon(
                self.reply, peer, BITSWAP_PROTOCOL_V120, [(cid, True)] if is_have else [], [] if is_have else [cid]
            )

    def peer_gone(self, peer: PeerID) -> None:
        self._late_wants.pop(peer, None)

    async def reply(self, peer: PeerID, protocol: str, presences: list[tuple[ContentId, bool]],
                    cids: list[ContentId]) -> None:
        """Answer on the peer's reply stream (opened if needed): presences, then ≤ ~1 MiB block batches."""
        async def write(stream: INetStream) -> None:
            await self._write_reply(stream, protocol, presences, cids)

        try:
            await self.streams.send(peer, [protocol], write)
        except Exception as exc:  # task boundary: the peer may be gone; its wants are simply dropped
            logger.debug("bitswap reply to %s failed: %s", peer, exc)

    async def _write_reply(self, stream: INetStream, protocol: str, presences: list[tuple[ContentId, bool]],
                           cids: list[ContentId]) -> None:
        timeout_s = self.config.stream_timeout_s
        if presences:
            msg = Message()
            for cid, have in presences:
                bp = msg.blockPresences.add()
                bp.cid = cid.to_bytes()
                bp.type = Message.Have if have else Message.DontHave
            await send_message(stream, msg, timeout_s=timeout_s)
        batch: list[tuple[bytes | None, bytes]] = []
        size = 0
        for start in range(0, len(cids), _BLOCKS_PER_READ):
            for cid, data in await self._read_blocks(cids[start : start + _BLOCKS_PER_READ]):
                if size and size + len(data) > self.config.reply_batch_bytes:
                    await send_encoded(stream, encode_blocks_message(batch), timeout_s=timeout_s)
                    batch, size = [], 0
                batch.append((None if protocol == BITSWAP_PROTOCOL_V100 else block_prefix(cid), data))
                size += len(data)
                self.served_blocks += 1
                self.served_bytes += len(data)
        if batch:
            await send_encoded(stream, encode_blocks_message(batch), timeout_s=timeout_s)

    async def _read_blocks(self, cids: list[ContentId]) -> list[tuple[ContentId, bytes]]:
        """The blocks of ``cids`` we still hold, read (and re-hashed) in one thread hop, not one per block."""
        def read() -> list[tuple[ContentId, bytes]]:
            found = []
            for cid in cids:
                try:
                    found.append((cid, self.store.get_sync(cid)))
                except StorageError:
                    continue  # deleted or corrupt since the want arrived
            return found

        return await trio.to_thread.run_sync(read)
