"""``HardenedPubsub``: py-libp2p 0.8.1's ``Pubsub`` made safe against remote peers and fast under our traffic.

Per host (the gossip layer builds one); why each override exists is in :mod:`protocols.p2p.hardening`'s module doc,
which also checks at start-up that every overridden name still exists (``check_library``).
"""

from __future__ import annotations

import collections
import logging
from typing import Any

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamClosed, StreamReset
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.utils.varint import encode_uvarint, encode_varint_prefixed

from protocols.p2p.drops import DropLog
from protocols.p2p.errors import PartialFrameTimeout
from protocols.p2p.metrics import P2PMetrics

logger = logging.getLogger(__name__)

PUBSUB_WRITE_BATCH_BYTES = 64 * 1024 - 12
"""Most bytes of queued RPCs written to a peer at once: one yamux frame (64 KiB less its 12-byte header), so a
batch never interleaves with another writer's frames on the same stream."""

SENDER_RECORD_RESEND_S = 600.0
"""Longest a pubsub stream goes without our signed peer record (GossipSub would attach it to every RPC)."""

PUBSUB_READ_CHUNK = 64 * 1024
"""Bytes asked of the muxed stream per read by :class:`BufferedReader`: one yamux frame's worth."""


class _FrameTracker:
    """Follows the varint-length-prefixed RPCs of a pubsub stream through the bytes handed to the parser, to know
    whether a frame is in progress and since when (the parser reads each length a byte at a time, then the body)."""

    def __init__(self) -> None:
        self._length = 0
        self._length_bytes = 0
        self._body_left = 0
        self.started_at: float | None = None
        """When the first byte of the frame in progress was handed out; None between frames."""

    def feed(self, data: bytes, now: float) -> None:
        i = 0
        while i < len(data):
            if self._body_left:
                step = min(self._body_left, len(data) - i)
                self._body_left -= step
                i += step
                if not self._body_left:
                    self.started_at = None
                continue
            if self.started_at is None:
                self.started_at = now
            byte = data[i]
            i += 1
            self._length |= (byte & 0x7F) << (7 * self._length_bytes)
            self._length_bytes += 1
            if not byte & 0x80:
                self._body_left, self._length, self._length_bytes = self._length, 0, 0
                if not self._body_left:
                    self.started_at = None


class BufferedReader:
    """A read-buffering view of a stream for parsers that read a few bytes at a time.

    ``read(n)`` returns at most ``n`` bytes, from the buffer when it has any, else from one ``read`` of the
    underlying stream of up to ``max(n, PUBSUB_READ_CHUNK)`` bytes (a muxed stream returns what it has, it does not
    wait for the full amount). Every other attribute is the stream's own, so the library can still reset it or
    ask for its connection.

    With ``frame_timeout_s``, the stream carries varint-length-prefixed frames: waiting for the rest of a frame
    whose first byte was handed out more than ``frame_timeout_s`` ago raises :class:`PartialFrameTimeout`. Waiting
    between frames has no deadline (a pubsub stream is idle whenever nobody publishes).

    With ``bytes_in``, every byte read from the stream is counted there under the stream's protocol (one add per
    stream read, not per parser read).
    """

    def __init__(self, stream: INetStream, *, frame_timeout_s: float | None = None,
                 bytes_in: collections.Counter[str] | None = None) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._frame_timeout_s = frame_timeout_s
        self._frames = _FrameTracker() if frame_timeout_s is not None else None
        self._bytes_in = bytes_in
        self._protocol = str(stream.get_protocol()) if bytes_in is not None else ""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def read(self, n: int | None = None) -> bytes:
        data = await self._read(n)
        if self._frames is not None:
            self._frames.feed(data, trio.current_time())
        return data

    async def _read(self, n: int | None) -> bytes:
        if n is None or n < 0:
            if self._buffer:
                return take(self._buffer, None)
            return await self._read_stream(n)
        if not self._buffer:
            data = await self._read_stream(max(n, PUBSUB_READ_CHUNK))
            if len(data) <= n:
                return data
            self._buffer += data
        return take(self._buffer, n)

    async def _read_stream(self, n: int | None) -> bytes:
        data = await self._read_stream_in_time(n)
        if self._bytes_in is not None:
            self._bytes_in[self._protocol] += len(data)
        return data

    async def _read_stream_in_time(self, n: int | None) -> bytes:
        started = self._frames.started_at if self._frames is not None else None
        if started is None or self._frame_timeout_s is None:
            return await self._stream.read(n)
        with trio.move_on_at(started + self._frame_timeout_s):
            return await self._stream.read(n)
        raise PartialFrameTimeout(
            f"pubsub RPC begun {trio.current_time() - started:.1f} s ago not finished within "
            f"p2p.gossip_frame_timeout_s = {self._frame_timeout_s:.0f} s")


def take(buffer: bytearray, n: int | None) -> bytes:
    """Remove and return the first ``n`` bytes of ``buffer`` (all of them for ``None``)."""
    size = len(buffer) if n is None else min(n, len(buffer))
    data = bytes(buffer[:size])
    del buffer[:size]
    return data


class _Framer:
    """Varint-frames the RPCs of one pubsub stream, sending our signed peer record only when the peer needs it."""

    def __init__(self) -> None:
        self._record = b""
        self._record_sent_at = -SENDER_RECORD_RESEND_S

    def encode(self, rpc: rpc_pb2.RPC) -> bytes:
        record = rpc.senderRecord
        now = trio.current_time()
        if not record or record != self._record or now - self._record_sent_at >= SENDER_RECORD_RESEND_S:
            if record:
                self._record, self._record_sent_at = record, now
            return bytes(encode_varint_prefixed(rpc.SerializeToString()))
        # The RPC may sit in other peers' queues too: clear and restore without yielding in between.
        rpc.ClearField("senderRecord")
        try:
            return bytes(encode_varint_prefixed(rpc.SerializeToString()))
        finally:
            rpc.senderRecord = record


class HardenedPubsub(Pubsub):
    """``Pubsub`` whose per-stream and per-message tasks contain remote-triggered exceptions.

    ``Pubsub.__init__`` registers ``self.stream_handler`` for the router's protocols, so overriding the method is
    enough. ``on_contained`` is called with a short label each time an exception is contained (for metrics).
    With ``metrics``, the bytes of RPC frames read and written are counted in its ``gossip_bytes_in``/``_out``
    (the library's hello RPC, written once per peer at connect, is not: it bypasses the sending loop).
    """

    def __init__(self, *args: Any, on_contained: Any = None, frame_timeout_s: float | None = None,
                 drops: DropLog | None = None, metrics: P2PMetrics | None = None, **kwargs: Any) -> None:
        self._on_contained = on_contained
        self._metrics = metrics
        self._frame_timeout_s = frame_timeout_s
        self._drops = drops
        self._in_flight: set[bytes] = set()
        super().__init__(*args, **kwargs)

    def _contained(self, label: str) -> None:
        if self._on_contained is not None:
            self._on_contained(label)

    async def stream_handler(self, stream: INetStream) -> None:
        peer_id = stream.muxed_conn.peer_id
        try:
            await super().stream_handler(stream)
        except trio.Cancelled:
            raise
        except Exception as exc:  # task boundary: a remote peer's bytes must not take the host down
            detail = f"pubsub stream from {peer_id} ({type(exc).__name__}: {exc}); peer dropped from pubsub"
            if self._drops is not None:
                reason = "pubsub_partial_frame" if isinstance(exc, PartialFrameTimeout) else "pubsub_stream"
                self._drops.drop(reason, detail)
            else:
                logger.warning("dropped %s", detail)
            self._contained("pubsub_stream")
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                try:
                    await stream.reset()
                except Exception:  # the stream may already be gone; nothing left to protect
                    logger.debug("reset of a failed pubsub stream from %s failed", peer_id)
            if self.manager.is_running:
                self._handle_dead_peer(peer_id)

    async def continuously_read_stream(self, stream: INetStream) -> None:
        # Buffered: see the module doc. Only reads go through the buffer; resets and peer ids reach the stream.
        # With a frame deadline: a peer that begins an RPC and stalls is cut off (see BufferedReader).
        reader = BufferedReader(stream, frame_timeout_s=self._frame_timeout_s,
                                bytes_in=self._metrics.gossip_bytes_in if self._metrics is not None else None)
        await super().continuously_read_stream(reader)  # type: ignore[arg-type]

    async def handle_sending_messages(self, peer_id: ID, stream: INetStream, queue: Any) -> None:
        """The library's per-peer sending loop, writing what is queued in batches (see the module doc)."""
        pending = bytearray()
        frames = _Framer()
        bytes_out = self._metrics.gossip_bytes_out if self._metrics is not None else None
        protocol = str(stream.get_protocol()) if bytes_out is not None else ""
        try:
            while True:
                rpc = await queue.pop()
                while rpc is not None:
                    frame = frames.encode(rpc)
                    if pending and len(pending) + len(frame) > PUBSUB_WRITE_BATCH_BYTES:
                        await _flush(stream, pending, bytes_out, protocol)
                    pending += frame
                    # pop() returns at once, without yielding, while the queue holds anything.
                    rpc = await queue.pop() if len(queue) else None
                if not pending:
                    return  # the queue was closed: the peer is gone
                await _flush(stream, pending, bytes_out, protocol)
        except (StreamClosed, StreamReset):
            logger.debug("pubsub stream to %s closed while sending", peer_id)
            self._handle_dead_peer(peer_id)
        except Exception:  # task boundary, as in the library's loop: the peer is dropped, the host lives on
            logger.debug("sending loop for %s terminated with error", peer_id, exc_info=True)
            self._handle_dead_peer(peer_id)

    async def write_msg(self, stream: INetStream, rpc_msg: rpc_pb2.RPC) -> bool:
        # GossipSub's own direct sends (flushed and recent messages for a new mesh peer) bypass the sending loop.
        written = bool(await super().write_msg(stream, rpc_msg))
        if written and self._metrics is not None:
            self._metrics.gossip_bytes_out[str(stream.get_protocol())] += _framed_size(rpc_msg)
        return written

    def _is_subscribed_to_msg(self, msg: rpc_pb2.Message) -> bool:
        # Asked by the reader before it spawns push_msg; a duplicate would be dropped there (see the module doc).
        return bool(super()._is_subscribed_to_msg(msg)) and not self._is_msg_seen(msg)

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        if msg_forwarder == self.my_id:
            # Our own publish: let errors reach the caller of publish().
            await super().push_msg(msg_forwarder, msg)
            return
        msg_id = self.get_message_id(msg)
        if msg_id in self._in_flight:
            return  # the same message from another peer, still being validated (see the module doc)
        self._in_flight.add(msg_id)
        try:
            await super().push_msg(msg_forwarder, msg)
        except trio.Cancelled:
            raise
        except Exception as exc:  # task boundary: runs as its own task per received message
            logger.warning("pubsub message forwarded by %s failed (%s: %s); dropped", msg_forwarder,
                           type(exc).__name__, exc)
            self._contained("pubsub_message")
        finally:
            self._in_flight.discard(msg_id)


async def _flush(stream: INetStream, pending: bytearray, bytes_out: collections.Counter[str] | None,
                 protocol: str) -> None:
    """Write the batched frames (counting them under ``protocol`` in ``bytes_out``), then empty the batch."""
    await stream.write(bytes(pending))
    if bytes_out is not None:
        bytes_out[protocol] += len(pending)
    pending.clear()


def _framed_size(rpc: rpc_pb2.RPC) -> int:
    """Bytes ``rpc`` takes on the wire, varint length prefix included."""
    size = rpc.ByteSize()
    return size + len(encode_uvarint(size))
