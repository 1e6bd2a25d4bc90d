"""Where py-libp2p 0.8.1 is wrapped so that a remote peer cannot crash a node, and tuned for our traffic.

Everything here touches the library's internals, so it lives in one place and is checked at start-up
(:func:`check_library`): if a name we patch has gone, start-up fails with :class:`LibraryDrift` instead of the
node silently running unprotected. Pin ``libp2p==0.8.1``.

The process-wide patches are applied once, by :func:`install_hardening`, which the ``dtnode`` binary calls at
start-up (and test fixtures and benchmarks that build hosts call too). It is never applied from a constructor:
:class:`protocols.p2p.node.P2PNode` only checks (:func:`require_hardening`) and refuses to build a host without it,
so nothing runs the unpatched library by accident. :class:`~protocols.p2p.hardened_pubsub.HardenedPubsub` (its own
module) and :func:`disable_auto_connector` are per host and used by the node itself.

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
* ``Pubsub.continuously_read_stream`` reads each RPC's varint length one byte at a time, then its body, straight from
  the muxed stream. Every such read takes the net stream's lock, yamux's stream lock and window lock (each a trio
  scheduling point) and sends the peer a yamux WINDOW_UPDATE frame for the bytes read, so one RPC costs about a
  dozen passes of the scheduler and three extra frames on the wire. With many hosts in one process (a pass takes
  milliseconds) one stream then carries only ~15 RPCs/s: at 20 msg/s latency grew without bound (the benchmark
  counted what had not arrived 3 s after the last publish as lost; BENCHMARKS.md, P2P). :class:`HardenedPubsub`
  hands the parser a :class:`BufferedReader` that takes whatever the stream has buffered in one read and parses
  every RPC in it without yielding.
* Yamux acknowledges every read with a WINDOW_UPDATE frame unless ``PY_YAMUX_RELEASE_ON_READ=0``
  (:func:`batch_yamux_window_updates` sets it: updates once half the window is read, go-yamux's rule).
* ``Pubsub.handle_sending_messages`` writes one RPC per stream write, i.e. one yamux frame, one Noise message and
  one socket send each. :meth:`HardenedPubsub.handle_sending_messages` writes everything queued for a peer (up to
  one yamux frame) in one write; the receiver sees the same varint-framed RPCs in the same order.
* GossipSub attaches our signed peer record to every RPC it forwards, and the receiver verifies its signature and
  updates its peerstore for each one (~0.2 ms a time). The sending loop sends the record on a stream once, and
  again when it changes or every :data:`SENDER_RECORD_RESEND_S` (the receiver keeps it for 2 h).
* The reader spawns a task per received message (the service manager's ``run_task`` walks the whole task tree,
  so its cost grows with the number of tasks) even for duplicates, which ``push_msg`` then drops at once; with
  mesh degree D each message arrives about D times. ``_is_subscribed_to_msg``, which the reader asks first, also
  answers False for a message already seen, so duplicates are dropped before a task is spawned.
* ``push_msg`` marks a message seen only after its (async) validation, so copies that arrive from several peers
  while the first is being validated are validated again and each is delivered to the subscription: subscribers
  got duplicates under load (go-libp2p checks ``markSeen`` before delivering). :meth:`HardenedPubsub.push_msg`
  drops a copy whose id is already being processed; the first copy decides.
* ``env_to_send_in_RPC`` (our signed peer record, which GossipSub builds for every message it forwards) calls
  ``host.get_addrs()`` each time to see whether the record is current: ~0.4 ms. :func:`cache_sender_records`
  makes the pubsub modules reuse a host's record for :data:`SENDER_RECORD_CACHE_S`.
* ``TrioTCPStream.read`` takes a lock and calls ``receive_some`` for each read (two scheduler passes), and Noise
  reads each message's 2-byte length and its body separately: four passes per yamux frame before yamux itself
  runs. A connection's reader is one task, so with many hosts in a process (a pass takes milliseconds) it fell
  behind once ~8 mesh peers forwarded 20 msg/s to one node: frames waited seconds in the socket.
  :func:`buffer_tcp_reads` makes each read take up to :data:`TCP_READ_CHUNK` bytes from the socket and serve later
  reads from that buffer without yielding.
* ``BasicHost.new_stream`` logs an ERROR with a multi-line dump whenever a stream cannot be opened, then raises
  ``StreamFailure`` anyway. A peer that does not speak a protocol is normal in an open network (a Helia or Kubo
  node has no ``/meshsub/*``, so pubsub's attempt to open its stream fails on every such connection):
  :func:`quiet_unsupported_protocol_errors` drops exactly those records ("protocols not supported") and logs one
  DEBUG line instead; every other stream failure still logs as the library wrote it.
* ``Swarm.dial_peer`` drops every ``/p2p-circuit`` address, and the relay transport cannot be registered with the
  swarm, so a peer reachable only through a relay could not be dialled by peer id (requests, bitswap, discovery).
  :func:`dial_relayed_addrs` (per host) makes the swarm fall back to them through the node's relay transport.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import libp2p
import libp2p.pubsub.pubsub as _pubsub_module
import libp2p.stream_muxer.yamux.yamux as _yamux_module
import multiaddr
import trio
from libp2p.io.exceptions import ConnectionClosedError
from libp2p.io.trio import TrioTCPStream
from libp2p.network.exceptions import SwarmException
from libp2p.peer.id import ID
from libp2p.pubsub import gossipsub as _gossipsub_module
from libp2p.pubsub import rpc_queue as _rpc_queue_module
from libp2p.pubsub.pubsub import Pubsub
from libp2p.stream_muxer.yamux.yamux import Yamux

from protocols.p2p.config import P2PConfig
from protocols.p2p.errors import HardeningNotInstalled, LibraryDrift
from protocols.p2p.hardened_pubsub import take

logger = logging.getLogger(__name__)

PINNED_LIBP2P_VERSION = "0.8.1"
_PATCHED_MODULE_NAMES = ("RpcQueue", "SUBSCRIPTION_CHANNEL_SIZE")
_OVERRIDDEN_METHODS = (
    "stream_handler", "continuously_read_stream", "handle_sending_messages", "_is_subscribed_to_msg",
    "_is_msg_seen", "get_message_id", "push_msg", "_handle_dead_peer", "write_msg",
)
_RECORD_MODULES = (_pubsub_module, _gossipsub_module)
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
    if not hasattr(_yamux_module, "_yamux_release_on_read"):  # what reads PY_YAMUX_RELEASE_ON_READ
        missing.append("yamux._yamux_release_on_read")
    missing += [f"{m.__name__}.env_to_send_in_RPC" for m in _RECORD_MODULES if not hasattr(m, "env_to_send_in_RPC")]
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


def install_hardening(config: P2PConfig | None = None) -> None:
    """Apply every process-wide patch of this module, before any host is built (idempotent).

    ``config`` sizes the pubsub queues (its ``peer_queue_size`` and ``subscription_buffer``; defaults otherwise);
    a later call with a larger config raises them, never lowers them. Raises :class:`LibraryDrift` if py-libp2p
    lacks a name patched here.
    """
    cfg = config or P2PConfig()
    check_library()
    # A reader of a few bytes (a varint length, a DHT reply) must not send a WINDOW_UPDATE frame per read.
    batch_yamux_window_updates()
    # A deadline expiring mid-write must not tear down the connection.
    make_yamux_frames_atomic()
    # GossipSub rebuilds our signed peer record for every message it forwards.
    cache_sender_records()
    # One connection's reader is one task: it must not yield per Noise length prefix.
    buffer_tcp_reads()
    # A peer without our protocols (an IPFS node) is not an error.
    quiet_unsupported_protocol_errors()
    raise_pubsub_queue_limits(peer_queue_size=cfg.peer_queue_size, subscription_channel_size=cfg.subscription_buffer)


YAMUX_RELEASE_ON_READ = "PY_YAMUX_RELEASE_ON_READ"
"""0.8.1's switch (read from the environment at every read) for acknowledging each read with its own frame."""


def batch_yamux_window_updates() -> None:
    """Have yamux send a WINDOW_UPDATE only once half the receive window was read, as go-yamux does, not after
    every read: 0.8.1 does the latter by default, so each byte of a varint read one at a time (the DHT's and the
    stream protocols' length prefixes) cost a Noise-encrypted frame and a socket send. Measured (py-spy on a devnet
    validator, 2026-12-05): those frames took 2.3 s of 40 s. Transfers are unchanged (26 MB in 1.3 MB requests:
    0.55 s of CPU either way). Set in the process environment, where the library reads it; an operator's own
    setting wins."""
    os.environ.setdefault(YAMUX_RELEASE_ON_READ, "0")


def require_hardening(config: P2PConfig) -> None:
    """Raise :class:`HardeningNotInstalled` unless :func:`install_hardening` has run with queues at least as large
    as ``config`` asks for. Checks the library itself, so a patch undone later is caught too."""
    missing = []
    if getattr(Yamux, "_write_frame", None) is not _atomic_write_frame:
        missing.append("atomic yamux frames")
    if YAMUX_RELEASE_ON_READ not in os.environ:
        missing.append("batched yamux window updates")
    if not getattr(TrioTCPStream.read, "dtnode_buffered", False):
        missing.append("buffered TCP reads")
    if not all(getattr(getattr(m, "env_to_send_in_RPC"), "dtnode_cached", False)  # noqa: B009
               for m in _RECORD_MODULES):
        missing.append("cached sender records")
    if _UNSUPPORTED_FILTER not in logging.getLogger("libp2p.host.basic_host").filters:
        missing.append("quiet unsupported-protocol errors")
    queue: Any = getattr(_pubsub_module, "RpcQueue")  # noqa: B009 (not re-exported)
    if int(getattr(queue, "dtnode_max_size", _rpc_queue_module.OutBoundQueueSize)) < config.peer_queue_size:
        missing.append(f"peer queues of {config.peer_queue_size}")
    if _pubsub_module.SUBSCRIPTION_CHANNEL_SIZE < config.subscription_buffer:
        missing.append(f"subscription channels of {config.subscription_buffer}")
    if missing:
        raise HardeningNotInstalled(
            f"the py-libp2p hardening is not installed in this process (missing: {', '.join(missing)}); call "
            "protocols.p2p.hardening.install_hardening(config) once at start-up, before building a P2PNode "
            "(the dtnode binary does; tests and benchmarks that build hosts must too)"
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


TCP_READ_CHUNK = 256 * 1024
"""Bytes asked of the socket per read by the buffered ``TrioTCPStream.read``: several yamux frames."""

SENDER_RECORD_CACHE_S = 1.0
"""How long the pubsub modules reuse a host's signed peer record before checking it against its addresses."""

def buffer_tcp_reads() -> None:
    """Make ``TrioTCPStream.read`` buffer what the socket has (see the module doc; idempotent, process-wide)."""
    check_library()
    current = TrioTCPStream.read
    if getattr(current, "dtnode_buffered", False):
        return

    async def read(self: Any, n: int | None = None) -> bytes:
        if n == 0:
            return b""
        buffer: bytearray = self.__dict__.setdefault("_dtnode_read_buffer", bytearray())
        if not buffer:
            data = await current(self, TCP_READ_CHUNK if n is None else max(n, TCP_READ_CHUNK))
            # Another reader may have filled the buffer while this one waited for the socket's lock; the lock
            # hands bytes out in order, and appending happens before anyone else runs, so order is kept.
            if not buffer and (n is None or len(data) <= n):
                return bytes(data)
            buffer += data
        return take(buffer, n)

    read.dtnode_buffered = True  # type: ignore[attr-defined]
    setattr(TrioTCPStream, "read", read)  # noqa: B010 (patching the library class)


def cache_sender_records() -> None:
    """Make the pubsub modules reuse each host's signed peer record for a while (idempotent, process-wide)."""
    check_library()
    for module in _RECORD_MODULES:
        current = getattr(module, "env_to_send_in_RPC")  # noqa: B009 (a library module's global)
        if getattr(current, "dtnode_cached", False):
            continue
        setattr(module, "env_to_send_in_RPC", _cached_records(current))  # noqa: B010 (read at call time)


def _cached_records(build: Any) -> Any:
    cache: weakref.WeakKeyDictionary[Any, tuple[float, bytes]] = weakref.WeakKeyDictionary()

    def env_to_send_in_rpc(host: Any) -> tuple[bytes, bool]:
        now = time.monotonic()
        hit = cache.get(host)
        if hit is not None and now < hit[0]:
            return hit[1], False
        envelope, created = build(host)
        cache[host] = (now + SENDER_RECORD_CACHE_S, envelope)
        return envelope, created

    env_to_send_in_rpc.dtnode_cached = True  # type: ignore[attr-defined]
    return env_to_send_in_rpc


def disable_auto_connector(host: Any) -> None:
    """Stop the swarm's auto-connector from dialing peers on its own.

    It dials every peerstore entry toward ~150 connections; together with our discovery that makes two peers dial
    each other at once, and with one connection per peer the loser's pubsub streams fail mid-negotiation (measured:
    10 nodes took 35 s to discover each other instead of ~2 s). Discovery in ``protocols.p2p.discovery`` decides whom
    to dial instead.
    """
    connector = getattr(host.get_network(), "auto_connector", None)
    if connector is None or not hasattr(connector, "maybe_connect"):
        raise LibraryDrift("py-libp2p's swarm has no auto_connector.maybe_connect to disable; pin libp2p==0.8.1")

    async def _no_auto_dial(*_args: Any, **_kwargs: Any) -> None:
        return None

    connector.maybe_connect = _no_auto_dial


CircuitDialer = Callable[[ID, list[multiaddr.Multiaddr]], Awaitable[Any]]


def dial_relayed_addrs(host: Any, dial_circuit: CircuitDialer, *, direct_first_s: float) -> None:
    """Let this host's swarm reach a peer known by ``/p2p-circuit`` addresses.

    ``Swarm.dial_peer`` (behind ``host.connect`` and ``host.new_stream``) drops every relayed address, and its relay
    transport cannot be registered with the swarm (``CircuitV2Transport.dial`` returns an upgraded connection, the
    swarm expects a raw one). So for a peer whose peerstore entry holds relayed addresses, the direct addresses get
    ``direct_first_s`` (a private peer's LAN addresses still arrive in gossiped peer records, and the swarm retries
    each unreachable one with back-off for longer than a request's deadline), then ``dial_circuit(peer, addrs)``
    (:meth:`protocols.p2p.nat.NatTraversal.dial_relayed`) registers a relayed connection with the swarm itself.
    Per host; peers without relayed addresses are dialled exactly as before.
    """
    swarm = host.get_network()
    direct = getattr(swarm, "dial_peer", None)
    if direct is None or not hasattr(swarm, "connections"):
        raise LibraryDrift("py-libp2p's swarm has no dial_peer/connections to extend; pin libp2p==0.8.1")

    def relayed_addrs(peer_id: ID) -> list[multiaddr.Multiaddr]:
        try:
            return [a for a in swarm.peerstore.addrs(peer_id) if "/p2p-circuit" in str(a)]
        except Exception:  # PeerStoreError for a peer it does not know: the direct dial reports that
            return []

    async def dial_peer(peer_id: ID) -> list[Any]:
        relayed = relayed_addrs(peer_id)
        if not relayed:
            return list(await direct(peer_id))
        with trio.move_on_after(direct_first_s):
            try:
                return list(await direct(peer_id))
            except Exception as exc:  # unreachable LAN addresses of a peer behind another NAT
                logger.debug("direct dial to %s failed (%r); trying its relayed addresses", peer_id, exc)
        await dial_circuit(peer_id, relayed)
        connections = list(swarm.connections.get(peer_id, []))
        if not connections:
            raise SwarmException(f"relayed dial to {peer_id} made no connection")
        return connections

    swarm.dial_peer = dial_peer



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


class _UnsupportedProtocolFilter(logging.Filter):
    """Drops ``BasicHost.new_stream``'s ERROR for a peer that merely lacks the protocol (see module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Failed to open stream to peer") and "protocols not supported" in message:
            logger.debug("peer does not speak the protocol: %s", message.splitlines()[0])
            return False
        return True


_UNSUPPORTED_FILTER = _UnsupportedProtocolFilter()


def quiet_unsupported_protocol_errors() -> None:
    """Install the filter on the library's host logger (idempotent; a logging filter, so nothing else changes)."""
    host_logger = logging.getLogger("libp2p.host.basic_host")
    if _UNSUPPORTED_FILTER not in host_logger.filters:
        host_logger.addFilter(_UNSUPPORTED_FILTER)
