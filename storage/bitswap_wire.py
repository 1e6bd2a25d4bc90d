"""What the bitswap server and fetcher share: protocol ids, limits, block prefixes, message framing, and the
py-libp2p stream handling they are reached through.

py-libp2p 0.8.1's ``BitswapClient`` answers on the request's own stream (which Kubo/Helia never read), answers
want-have with the whole block, refuses blocks over 512 KiB and keeps served wants forever; :class:`BitswapWire`
subclasses it, keeps its stream handling and message parsing, and hands wantlists, blocks and presences to our
server and fetcher instead (private members: libp2p is pinned to 0.8.1 for this).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import trio
from libp2p.abc import IHost, INetStream
from libp2p.bitswap.client import BitswapClient
from libp2p.bitswap.config import (
    BITSWAP_PROTOCOL_V100,
    BITSWAP_PROTOCOL_V110,
    BITSWAP_PROTOCOL_V120,
    MAX_MESSAGE_SIZE,
)
from libp2p.bitswap.pb.bitswap_pb2 import Message
from libp2p.network.stream.exceptions import StreamEOF, StreamError
from libp2p.peer.id import ID as PeerID

from storage.cid import DAG_PB, ContentId, cid_from_bytes, decode_varint, encode_varint
from storage.errors import InvalidCid

__all__ = ["BITSWAP_PROTOCOL_V100", "BITSWAP_PROTOCOL_V110", "BITSWAP_PROTOCOL_V120", "PROTOCOLS", "BitswapWire",
           "ExchangeConfig", "block_prefix", "cid_from_prefix", "encode_blocks_message", "send_encoded", "send_message"]

logger = logging.getLogger(__name__)

PROTOCOLS: Final = (BITSWAP_PROTOCOL_V120, BITSWAP_PROTOCOL_V110, BITSWAP_PROTOCOL_V100)


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
    reply_streams_per_peer: int = 3
    """Reply streams kept per peer: replies to one peer are written concurrently on up to this many (as many as
    want batches fit in ``window_blocks``), each stream's yamux window growing on its own."""
    kept_stream_idle_s: float = 5.0
    """An outgoing bitswap stream unused this long is closed: before the receiver gives up on it (Helia aborts an
    inbound bitswap stream after 10 s without a message, py-libp2p after 60 s); see ``storage.bitswap_streams``."""
    max_bad_blocks: int = 3
    """Bad or unsolicited blocks from a peer before it is dropped from a fetch."""
    max_late_wants: int = 1024
    """Wants for blocks we lack that we remember per peer, to send them if the block arrives later."""


def block_prefix(cid: ContentId) -> bytes:
    """The bitswap 1.1+ block prefix of ``cid`` (CIDv1, its codec, sha2-256)."""
    return bytes([1]) + encode_varint(cid.codec) + bytes([0x12, 32])


def cid_from_prefix(prefix: bytes, data: bytes) -> ContentId:
    """The CID of ``data`` under ``prefix`` (empty: bitswap 1.0.0, a bare sha2-256 dag-pb block)."""
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


async def send_message(stream: INetStream, msg: Message, *, timeout_s: float) -> None:
    """Write one varint-framed bitswap message, within ``timeout_s`` plus a second per MiB."""
    body = msg.SerializeToString()
    with trio.fail_after(timeout_s + len(body) / (1 << 20)):
        await stream.write(encode_varint(len(body)) + body)


_BLOCKS_V100_TAG = b"\x12"  # Message.blocks: field 2, length-delimited
_PAYLOAD_TAG = b"\x1a"  # Message.payload: field 3, length-delimited
_PREFIX_TAG = b"\x0a"  # Message.Block.prefix: field 1
_DATA_TAG = b"\x12"  # Message.Block.data: field 2


def encode_blocks_message(blocks: Sequence[tuple[bytes | None, bytes]]) -> bytes:
    """One varint-framed bitswap ``Message`` carrying ``blocks`` as ``(prefix, data)`` (prefix None: the 1.0.0
    ``blocks`` field), byte for byte what ``Message.SerializeToString`` makes, with one copy of the data instead
    of three (into the protobuf object, out of it, and into the frame); the reply path is copy-bound."""
    parts: list[bytes] = []
    for prefix, data in blocks:
        if prefix is None:
            parts += (_BLOCKS_V100_TAG, encode_varint(len(data)), data)
            continue
        head = _PREFIX_TAG + encode_varint(len(prefix)) + prefix + _DATA_TAG + encode_varint(len(data))
        parts += (_PAYLOAD_TAG, encode_varint(len(head) + len(data)), head, data)
    size = sum(len(part) for part in parts)
    return b"".join([encode_varint(size), *parts])


async def send_encoded(stream: INetStream, frame: bytes, *, timeout_s: float) -> None:
    """Write one framed message from :func:`encode_blocks_message`, within ``timeout_s`` plus a second per MiB."""
    with trio.fail_after(timeout_s + len(frame) / (1 << 20)):
        await stream.write(frame)


class WireEvents(Protocol):
    """What :class:`BitswapWire` reports (implemented by :class:`storage.exchange.BlockExchange`)."""

    async def _serve_wantlist(self, peer: PeerID, protocol: str, wantlist: Any) -> None: ...
    async def _receive_block(self, peer: PeerID, prefix: bytes | None, data: bytes) -> None: ...
    def _receive_presence(self, peer: PeerID, cid: ContentId, *, have: bool) -> None: ...
    def _peer_gone(self, peer: PeerID) -> None: ...


class BitswapWire(BitswapClient):
    """py-libp2p's bitswap stream handling with the serving and receiving paths handed to ``events``."""

    def __init__(self, host: IHost, events: WireEvents) -> None:
        super().__init__(host, None, BITSWAP_PROTOCOL_V120)
        self._events = events
        self._inbound: set[INetStream] = set()

    async def _handle_stream(self, stream: INetStream) -> None:
        self._inbound.add(stream)
        try:
            await super()._handle_stream(stream)
        finally:
            self._inbound.discard(stream)

    async def _read_message(self, stream: INetStream) -> Message | None:
        """The library's reader without its quadratic body assembly (``msg_data += chunk`` copied the growing
        message once per muxed-stream read: ~8 MiB of copies per 1 MiB reply). Same results: ``None`` on a closed
        stream, a malformed message or one past ``MAX_MESSAGE_SIZE`` (logged)."""
        try:
            length_bytes = bytearray()
            while True:
                byte = await stream.read(1)
                if not byte:
                    return None
                length_bytes += byte
                if not byte[0] & 0x80:
                    break
                if len(length_bytes) >= 10:
                    logger.warning("bitswap message from %s: varint length prefix too long", _peer_of(stream))
                    return None
            length, _ = decode_varint(bytes(length_bytes))
            if length > MAX_MESSAGE_SIZE:
                logger.warning("bitswap message from %s of %d bytes exceeds %d; stream dropped", _peer_of(stream),
                               length, MAX_MESSAGE_SIZE)
                return None
            body = bytearray()
            while len(body) < length:
                chunk = await stream.read(length - len(body))
                if not chunk:
                    logger.debug("bitswap message from %s cut after %d of %d bytes", _peer_of(stream), len(body),
                                 length)
                    return None
                body += chunk
            msg = Message()
            msg.ParseFromString(body)  # type: ignore[arg-type]  # upb parses a bytearray as is: no extra copy
            return msg
        except (StreamEOF, StreamError) as exc:
            logger.debug("bitswap stream from %s ended: %s", _peer_of(stream), exc)
            return None
        except Exception as exc:  # a stranger's bytes (DecodeError, a bad varint): this stream is done
            logger.warning("unreadable bitswap message from %s: %s", _peer_of(stream), exc)
            return None

    async def stop(self) -> None:
        """Stop, and reset the streams peers still write to: servers keep a reply stream open (see
        :mod:`storage.bitswap_server`), and its messages must reach whoever handles bitswap next, not us."""
        await super().stop()
        for stream in list(self._inbound):
            with trio.move_on_after(1.0):
                try:
                    await stream.reset()
                except Exception:  # already gone
                    logger.debug("reset of an inbound bitswap stream at stop failed", exc_info=True)
        self._inbound.clear()

    async def _process_wantlist(self, wantlist: Any, peer_id: PeerID, stream: INetStream) -> None:
        protocol = stream.get_protocol()
        await self._events._serve_wantlist(peer_id, str(protocol) if protocol else BITSWAP_PROTOCOL_V100, wantlist)

    async def _process_blocks_v100(self, blocks: list[bytes], peer_id: PeerID) -> None:
        for data in blocks:
            await self._events._receive_block(peer_id, None, bytes(data))

    async def _process_blocks_v110(self, blocks: Sequence[Any], peer_id: PeerID) -> None:
        for block in blocks:
            await self._events._receive_block(peer_id, bytes(block.prefix), bytes(block.data))

    async def _process_block_presences(self, presences: Sequence[Any], peer_id: PeerID) -> None:
        for presence in presences:
            try:
                cid = cid_from_bytes(bytes(presence.cid))
            except InvalidCid:
                continue
            self._events._receive_presence(peer_id, cid, have=presence.type != Message.DontHave)

    async def _notify_peers_about_block(self, cid: Any, data: bytes) -> None:
        # Late blocks are sent by BitswapServer.notify_new_block on fresh streams, never via message queues.
        return

    def cleanup_peer(self, peer_id: PeerID) -> None:
        super().cleanup_peer(peer_id)
        self._events._peer_gone(peer_id)


def _peer_of(stream: INetStream) -> object:
    return getattr(getattr(stream, "muxed_conn", None), "peer_id", "?")
