"""Where py-libp2p 0.8.1 is wrapped so that a remote peer cannot crash a node, and tuned for our traffic.

Everything here touches the library's internals, so it lives in one place and is checked at start-up
(:func:`check_library`): if a name we patch has gone, start-up fails with :class:`LibraryDrift` instead of the
node silently running unprotected. Pin ``libp2p==0.8.1``.

What and why (each measured on 0.8.1, see DESIGN.md §7):

* ``Pubsub.stream_handler`` lets a malformed protobuf frame (``DecodeError``) or any router error escape and cancel
  the whole host. :class:`HardenedPubsub` catches it, resets that stream and forgets that peer.
* ``Pubsub.push_msg`` runs as its own task per received message; a well-framed message with a garbage ``key`` makes
  nacl raise inside it, which again cancels the host. We catch exceptions for messages from other peers.
* Per-peer outbound queues (``RpcQueue``, 32 RPCs) and subscription channels (``SUBSCRIPTION_CHANNEL_SIZE``, 32)
  drop messages silently in bursts. Both are read from the ``libp2p.pubsub.pubsub`` module at call time, so we
  raise them there (process-wide, before peers connect).
* ``Yamux._write_frame`` is not cancellation-safe: Noise encrypts a frame (advancing its nonce) before the socket
  write, and the write itself may stop half-way. A caller whose deadline expires there (any ``fail_after`` around a
  stream write: a request timeout, a bitswap send) leaves the peer a missing or torn frame; its Noise decryption
  then fails ("Failed authentication of message") and the whole connection dies, so every later stream to that
  peer fails with "fail to write to multiselect communicator" until someone re-dials. :func:`make_yamux_frames_atomic`
  makes it write each frame whole under a cancel shield (bounded by :data:`FRAME_WRITE_TIMEOUT_S`, past which the
  connection is closed, since a torn frame cannot be repaired).
"""

from __future__ import annotations

import logging
from typing import Any

import libp2p
import libp2p.pubsub.pubsub as _pubsub_module
import trio
from libp2p.abc import INetStream
from libp2p.io.exceptions import ConnectionClosedError
from libp2p.peer.id import ID
from libp2p.pubsub import rpc_queue as _rpc_queue_module
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.stream_muxer.yamux.yamux import Yamux

from protocols.p2p.errors import LibraryDrift

logger = logging.getLogger(__name__)

PINNED_LIBP2P_VERSION = "0.8.1"
_PATCHED_MODULE_NAMES = ("RpcQueue", "SUBSCRIPTION_CHANNEL_SIZE")
_OVERRIDDEN_METHODS = ("stream_handler", "push_msg", "_handle_dead_peer")
_YAMUX_NAMES = ("_write_frame",)  # with instance attributes _write_lock, secured_conn, event_shutting_down

FRAME_WRITE_TIMEOUT_S = 60.0
"""Longest a single yamux frame (≤ 64 KiB) may take to reach the socket before the connection is given up for
dead: the peer has stopped reading. Matches yamux's own 60 s limit for receiving a frame's body."""


def check_library() -> None:
    """Fail start-up if py-libp2p no longer has the names this module patches or overrides."""
    missing = [name for name in _PATCHED_MODULE_NAMES if not hasattr(_pubsub_module, name)]
    missing += [f"Pubsub.{name}" for name in _OVERRIDDEN_METHODS if not hasattr(Pubsub, name)]
    if not hasattr(_rpc_queue_module, "RpcQueue"):
        missing.append("rpc_queue.RpcQueue")
    missing += [f"Yamux.{name}" for name in _YAMUX_NAMES if not hasattr(Yamux, name)]
    if missing:
        raise LibraryDrift(
            f"py-libp2p {libp2p.__version__} lacks {missing}, which protocols.p2p.hardening patches; "
            f"install libp2p=={PINNED_LIBP2P_VERSION}"
        )
    if libp2p.__version__ != PINNED_LIBP2P_VERSION:
        logger.warning(
            "py-libp2p %s is not the pinned %s; the P2P hardening was measured on the pinned version",
            libp2p.__version__,
            PINNED_LIBP2P_VERSION,
        )


def raise_pubsub_queue_limits(*, peer_queue_size: int, subscription_channel_size: int) -> None:
    """Raise the per-peer outbound queue and subscription channel sizes, process-wide; never lowers them."""
    check_library()
    base: Any = _rpc_queue_module.RpcQueue
    current: Any = getattr(_pubsub_module, "RpcQueue")  # noqa: B009 (not re-exported)
    current_size = int(getattr(current, "dtnode_max_size", _rpc_queue_module.OutBoundQueueSize))
    if peer_queue_size > current_size:
        size = peer_queue_size

        class _LargerRpcQueue(base):  # type: ignore[misc,valid-type]
            dtnode_max_size = size

            def __init__(self, max_size: int = size, **kwargs: Any) -> None:
                super().__init__(max_size=max_size, **kwargs)

        setattr(_pubsub_module, "RpcQueue", _LargerRpcQueue)  # noqa: B010 (read at call time by Pubsub)
    if subscription_channel_size > _pubsub_module.SUBSCRIPTION_CHANNEL_SIZE:
        _pubsub_module.SUBSCRIPTION_CHANNEL_SIZE = subscription_channel_size


class HardenedPubsub(Pubsub):
    """``Pubsub`` whose per-stream and per-message tasks contain remote-triggered exceptions.

    ``Pubsub.__init__`` registers ``self.stream_handler`` for the router's protocols, so overriding the method is
    enough. ``on_contained`` is called with a short label each time an exception is contained (for metrics).
    """

    def __init__(self, *args: Any, on_contained: Any = None, **kwargs: Any) -> None:
        self._on_contained = on_contained
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
            logger.warning("pubsub stream from %s failed (%s: %s); dropping the peer", peer_id, type(exc).__name__,
                           exc)
            self._contained("pubsub_stream")
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                try:
                    await stream.reset()
                except Exception:  # the stream may already be gone; nothing left to protect
                    logger.debug("reset of a failed pubsub stream from %s failed", peer_id)
            if self.manager.is_running:
                self._handle_dead_peer(peer_id)

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        if msg_forwarder == self.my_id:
            # Our own publish: let errors reach the caller of publish().
            await super().push_msg(msg_forwarder, msg)
            return
        try:
            await super().push_msg(msg_forwarder, msg)
        except trio.Cancelled:
            raise
        except Exception as exc:  # task boundary: runs as its own task per received message
            logger.warning("pubsub message forwarded by %s failed (%s: %s); dropped", msg_forwarder,
                           type(exc).__name__, exc)
            self._contained("pubsub_message")


def disable_auto_connector(host: Any) -> None:
    """Stop the swarm's auto-connector from dialing peers on its own.

    It dials every peerstore entry toward ~150 connections; together with our discovery that makes two peers dial
    each other at once, and with one connection per peer the loser's pubsub streams fail mid-negotiation (measured:
    10 nodes took 35 s to discover each other instead of ~2 s). Discovery in ``protocols.p2p.node`` decides whom
    to dial instead.
    """
    connector = getattr(host.get_network(), "auto_connector", None)
    if connector is None or not hasattr(connector, "maybe_connect"):
        raise LibraryDrift("py-libp2p's swarm has no auto_connector.maybe_connect to disable; pin libp2p==0.8.1")

    async def _no_auto_dial(*_args: Any, **_kwargs: Any) -> None:
        return None

    connector.maybe_connect = _no_auto_dial



async def _atomic_write_frame(self: Any, data: bytes) -> None:
    """``Yamux._write_frame`` that puts each frame on the wire whole or not at all (see the module doc)."""
    async with self._write_lock:  # waiting here stays cancellable: nothing of the frame is encrypted or sent yet
        with trio.CancelScope(shield=True):
            with trio.move_on_after(FRAME_WRITE_TIMEOUT_S) as stuck:
                await self.secured_conn.write(data)
            if stuck.cancelled_caught:
                # Part of the frame may be out: no later frame could be decoded, so end the connection now (its
                # reader then fails and the swarm drops it) rather than let its streams fail one by one.
                self.event_shutting_down.set()
                with trio.move_on_after(1.0):
                    try:
                        await self.secured_conn.close()
                    except Exception:  # already broken; closing is best effort
                        logger.debug("closing a stuck connection to %s failed", self.peer_id)
                raise ConnectionClosedError(
                    f"yamux frame to {self.peer_id} not written within {FRAME_WRITE_TIMEOUT_S:.0f} s; "
                    "connection closed")
    # A cancellation that arrived during the shielded write is delivered here, once the frame is whole.
    await trio.lowlevel.checkpoint()


def make_yamux_frames_atomic() -> None:
    """Replace ``Yamux._write_frame`` process-wide (idempotent).

    Process-wide because 0.8.1's muxer negotiation instantiates ``Yamux`` itself and ignores the class given in
    ``muxer_opt``. Measured (two hosts on loopback, 8 MiB requests under 20–60 ms deadlines): unpatched, a frame was
    cut after Noise had encrypted it, the peer's next decryption failed ("Failed authentication of message"), the
    connection closed, and the next request and every ping after it failed ("fail to write to multiselect
    communicator", then "No valid connections available"); patched, every later ping succeeds.
    """
    check_library()
    if getattr(Yamux, "_write_frame", None) is not _atomic_write_frame:
        setattr(Yamux, "_write_frame", _atomic_write_frame)  # noqa: B010 (patching the library class)
