"""Outgoing bitswap streams kept open per peer and reused, for both wantlists (fetcher) and replies (server).

Bitswap sends every message on a stream the *sender* opens, and receivers (Kubo, Helia, py-libp2p) read messages
from such a stream until it ends. Opening one per message, as we did, cost a multistream-select round trip each and
started every message at yamux's 256 KiB window, which grows only on a long-lived stream: a fetch ran at 32% of a
raw stream's speed on the same connection (BENCHMARKS.md). :class:`KeptStreams` keeps up to ``per_peer`` streams
per peer and protocol list (replies to one peer then overlap, as they did on separate streams), lets one writer at
a time use each, closes it after ``idle_s`` without use (before the receiver's own
idle limit: Helia aborts an inbound bitswap stream after 10 s without a message, py-libp2p after 60 s), and when a
write fails on a kept stream (the peer closed or reset it meanwhile) writes once more on a new one.

Cancellation: the idle closers run in the nursery given to :meth:`KeptStreams.attach`; without one (not attached),
each stream is closed right after its message, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID as PeerID

logger = logging.getLogger(__name__)

_Key = tuple[PeerID, tuple[str, ...], int]
"""(peer, protocol ids, slot): one kept stream."""

Writer = Callable[[INetStream], Awaitable[None]]
"""Writes one or more framed messages to the stream it is given; raises if the stream fails."""


@dataclass(eq=False)
class _Kept:
    lock: trio.Lock = field(default_factory=trio.Lock)
    stream: INetStream | None = None
    last_used: float = 0.0


class KeptStreams:
    """Outgoing streams per (peer, protocols), reused by successive writers (see the module doc)."""

    def __init__(self, host: IHost, *, open_timeout_s: float, idle_s: float, per_peer: int = 1) -> None:
        self._host = host
        self._open_timeout_s = open_timeout_s
        self._idle_s = idle_s
        self._per_peer = per_peer
        self._streams: dict[_Key, _Kept] = {}
        self._nursery: trio.Nursery | None = None

    def attach(self, nursery: trio.Nursery | None) -> None:
        """Run idle closers in ``nursery`` (None: close each stream after its message)."""
        self._nursery = nursery

    def __len__(self) -> int:
        return sum(1 for kept in self._streams.values() if kept.stream is not None)

    async def send(self, peer: PeerID, protocols: Sequence[str], write: Writer) -> None:
        """Run ``write`` on the kept stream to ``peer`` (opened if needed; once more on a new one if a kept stream
        fails). Raises what opening or writing raised when it cannot be done."""
        # Up to ``per_peer`` streams, each used by one writer at a time: a free one, else the least awaited.
        slots = [((peer, tuple(protocols), i), self._streams.get((peer, tuple(protocols), i))) for i in
                 range(self._per_peer)]
        key, found = next(((k, v) for k, v in slots if v is None or not v.lock.locked()),
                          min(slots, key=lambda kv: kv[1].lock.statistics().tasks_waiting if kv[1] else 0))
        kept = found if found is not None else self._streams.setdefault(key, _Kept())
        try:
            async with kept.lock:
                await self._send_locked(key, kept, write)
        finally:
            kept.last_used = trio.current_time()
            if kept.stream is None and not kept.lock.statistics().tasks_waiting and self._streams.get(key) is kept:
                del self._streams[key]

    async def _send_locked(self, key: _Key, kept: _Kept, write: Writer) -> None:
        for attempt in range(2):
            fresh = kept.stream is None
            if kept.stream is None:
                with trio.fail_after(self._open_timeout_s):
                    kept.stream = await self._host.new_stream(key[0], [TProtocol(p) for p in key[1]])
                if self._nursery is not None:
                    self._nursery.start_soon(self._close_when_idle, key, kept)
            stream = kept.stream
            try:
                await write(stream)
            except Exception as exc:
                kept.stream = None
                await _reset(stream)
                if fresh:
                    raise
                # Blocks written before the failure may arrive twice; receivers ignore duplicates.
                logger.debug("kept bitswap stream to %s failed (%s); writing again on a new one (try %d)",
                             key[0], exc, attempt + 2)
                continue
            if self._nursery is None:
                kept.stream = None
                await stream.close()
            return

    async def _close_when_idle(self, key: _Key, kept: _Kept) -> None:
        while True:
            await trio.sleep_until(kept.last_used + self._idle_s)
            busy = kept.lock.locked() or kept.lock.statistics().tasks_waiting
            if busy or trio.current_time() < kept.last_used + self._idle_s:
                await trio.sleep(self._idle_s / 4)
                continue
            # No await between this check and the removal: a writer arriving now opens a new stream.
            stream, kept.stream = kept.stream, None
            if self._streams.get(key) is kept:
                del self._streams[key]
            if stream is not None:
                with trio.move_on_after(self._open_timeout_s):
                    try:
                        await stream.close()
                    except Exception:  # the peer closed it first
                        logger.debug("closing an idle bitswap stream to %s failed", key[0])
            return


async def _reset(stream: INetStream) -> None:
    with trio.move_on_after(1.0):
        try:
            await stream.reset()
        except Exception:  # already broken; nothing more to do
            logger.debug("reset of a failed bitswap stream failed")
