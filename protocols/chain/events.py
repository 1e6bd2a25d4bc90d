"""JobManager's events: decoding logs into typed events, and a poller that misses nothing and repeats nothing.

:class:`EventPoller` reads ``eth_getLogs`` for the contract up to ``head - confirmations`` in bounded block ranges,
hands the events out in chain order ``(block, logIndex)``, and persists a cursor (last handed-out event, or "block
fully scanned") to a small JSON file after every event, so a restarted poller resumes exactly after the last event
it handed out. It assumes no reorg deeper than ``confirmations`` (choose it for the chain: 0 on a dev chain).

CIDs: event arguments of type ``bytes`` whose name ends in ``cid``/``Cid`` are turned back into CID strings.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

import trio
from eth_utils.abi import event_abi_to_log_topic
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.types import FilterParams, LogReceipt

from protocols.chain.abi import load_artifact
from protocols.chain.cids import optional_cid_from_bytes
from protocols.chain.errors import ChainError
from protocols.chain.rpc import RetryPolicy, call_with_retry
from protocols.errors import SchemaError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChainEvent:
    """One decoded JobManager event. Subclasses, one per event in the ABI, are named after the event.

    ``args`` is read-only; ``bytes`` CID fields are CID strings (``None`` when empty), addresses are checksummed,
    arrays are tuples.
    """

    name: str
    args: Mapping[str, Any]
    block_number: int
    log_index: int
    tx_hash: str
    address: str

    @property
    def position(self) -> tuple[int, int]:
        """Where the event sits in chain order."""
        return (self.block_number, self.log_index)

    @property
    def job_id(self) -> int | None:
        """The ``jobId`` argument, for the events that have one."""
        value = self.args.get("jobId")
        return int(value) if value is not None else None


def _is_cid_field(name: str, typ: str) -> bool:
    return typ == "bytes" and name.lower().endswith("cid")


def _normalize(value: Any, typ: str, name: str) -> Any:
    if _is_cid_field(name, typ):
        try:
            return optional_cid_from_bytes(bytes(value))
        except SchemaError:
            return bytes(value)  # junk stored by a caller: surface the raw bytes rather than lose the event
    if isinstance(value, str) and typ == "address":
        return to_checksum_address(value)
    if isinstance(value, list | tuple):
        inner = typ[: typ.rindex("[")] if typ.endswith("]") else typ
        return tuple(_normalize(v, inner, "") for v in value)
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return value


_EVENT_CLASSES: dict[str, type[ChainEvent]] = {}


def event_class(name: str) -> type[ChainEvent]:
    """The :class:`ChainEvent` subclass for one of JobManager's events, by name."""
    _topic_map()
    try:
        return _EVENT_CLASSES[name]
    except KeyError:
        raise KeyError(f"JobManager has no event {name!r}; known: {sorted(_EVENT_CLASSES)}") from None


def event_names() -> frozenset[str]:
    """Names of all events in the shipped ABI."""
    _topic_map()
    return frozenset(_EVENT_CLASSES)


_TOPICS: dict[bytes, dict[str, Any]] = {}


def _topic_map() -> dict[bytes, dict[str, Any]]:
    if not _TOPICS:
        for entry in load_artifact().entries("event"):
            name = str(entry["name"])
            _TOPICS[event_abi_to_log_topic(entry)] = entry  # type: ignore[arg-type]
            _EVENT_CLASSES[name] = type(name, (ChainEvent,), {"__doc__": f"JobManager event {name}."})
    return _TOPICS


def event_topic(name: str) -> bytes:
    """topic0 of one of JobManager's events (for ``eth_getLogs`` filters)."""
    for topic, entry in _topic_map().items():
        if entry["name"] == name:
            return topic
    raise KeyError(f"JobManager has no event {name!r}; known: {sorted(event_names())}")


class EventDecoder:
    """Decodes raw logs of one JobManager deployment into :class:`ChainEvent` objects."""

    def __init__(self, w3: Web3, address: str) -> None:
        self.address = to_checksum_address(address)
        self._contract = w3.eth.contract(address=self.address, abi=load_artifact().abi_list())
        self._events: dict[str, Any] = {}

    def decode(self, raw: LogReceipt | Mapping[str, Any]) -> ChainEvent | None:
        """The event in ``raw``, or ``None`` when it is not one of this contract's events."""
        topics = raw.get("topics") or []
        if not topics or to_checksum_address(raw["address"]) != self.address:
            return None
        entry = _topic_map().get(bytes(topics[0]))
        if entry is None:
            return None
        name = str(entry["name"])
        event = self._events.get(name)
        if event is None:
            event = self._events[name] = self._contract.events[name]()
        data = event.process_log(cast(LogReceipt, raw))
        types = {str(i["name"]): str(i["type"]) for i in entry["inputs"]}
        args = {k: _normalize(v, types.get(k, ""), k) for k, v in data["args"].items()}
        tx_hash = raw["transactionHash"]
        return _EVENT_CLASSES[name](
            name=name,
            args=MappingProxyType(args),
            block_number=int(raw["blockNumber"]),
            log_index=int(raw["logIndex"]),
            tx_hash=tx_hash.to_0x_hex() if hasattr(tx_hash, "to_0x_hex") else str(tx_hash),
            address=self.address,
        )

    def decode_all(self, logs: Sequence[LogReceipt | Mapping[str, Any]]) -> list[ChainEvent]:
        """Decode a batch, keeping only this contract's events, in chain order."""
        out = [ev for ev in (self.decode(raw) for raw in logs) if ev is not None]
        out.sort(key=lambda ev: ev.position)
        return out


@dataclass(frozen=True)
class Cursor:
    """How far the poller got: through event ``(block, log_index)``, or through all of ``block`` if complete."""

    block: int
    log_index: int = -1
    block_complete: bool = False

    def next_block(self) -> int:
        return self.block + 1 if self.block_complete else self.block

    def is_after(self, position: tuple[int, int]) -> bool:
        """Whether an event at ``position`` was already handed out."""
        if self.block_complete:
            return position[0] <= self.block
        return position <= (self.block, self.log_index)


class CursorStore:
    """The cursor as a small JSON file, replaced atomically (write to a temp file, fsync, rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Cursor | None:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as exc:
            raise ChainError(f"event cursor {self.path} is corrupt ({exc}); delete it to rescan from start") from exc
        return Cursor(int(raw["block"]), int(raw["log_index"]), bool(raw["block_complete"]))

    def save(self, cursor: Cursor) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps(
            {"block": cursor.block, "log_index": cursor.log_index, "block_complete": cursor.block_complete}
        )
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


@dataclass(frozen=True)
class PollerConfig:
    """Event polling settings. ``confirmations``: blocks to wait below the head (0 on an auto-mining dev chain)."""

    confirmations: int
    start_block: int = 0
    max_block_range: int = 2_000
    """Largest ``eth_getLogs`` range per request: public RPC endpoints refuse big ranges."""
    poll_interval_s: float = 1.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if self.confirmations < 0 or self.start_block < 0 or self.max_block_range < 1 or self.poll_interval_s <= 0:
            raise ValueError("PollerConfig: confirmations/start_block >= 0, max_block_range >= 1, poll_interval_s > 0")


@dataclass(frozen=True)
class _Batch:
    events: list[ChainEvent]
    end_block: int | None
    """Last block the batch scanned completely (``None``: nothing new was confirmed)."""
    caught_up: bool


class EventPoller:
    """Polls JobManager's logs and hands out each event once, in order, across restarts.

    Sync use: :meth:`poll_once`. Trio use: ``await nursery.start(poller.run, send_channel)``.
    """

    def __init__(self, w3: Web3, address: str, *, cursor_path: Path, config: PollerConfig) -> None:
        self._w3 = w3
        self.config = config
        self.decoder = EventDecoder(w3, address)
        self._store = CursorStore(cursor_path)
        self.cursor = self._store.load() or Cursor(block=config.start_block)

    def _fetch(self) -> _Batch:
        """One bounded ``eth_getLogs`` past the cursor (blocking)."""
        head = call_with_retry(lambda: self._w3.eth.block_number, self.config.retry, what="eth_blockNumber")
        safe = head - self.config.confirmations
        start = self.cursor.next_block()
        if start > safe:
            return _Batch([], None, True)
        end = min(safe, start + self.config.max_block_range - 1)
        params: FilterParams = {"address": self.decoder.address, "fromBlock": start, "toBlock": end}
        logs = call_with_retry(lambda: self._w3.eth.get_logs(params), self.config.retry, what="eth_getLogs")
        cursor = self.cursor
        events = [ev for ev in self.decoder.decode_all(logs) if not cursor.is_after(ev.position)]
        return _Batch(events, end, end >= safe)

    def _ack(self, event: ChainEvent) -> None:
        self.cursor = Cursor(event.block_number, event.log_index, False)
        self._store.save(self.cursor)

    def _finish(self, end_block: int) -> None:
        self.cursor = Cursor(end_block, -1, True)
        self._store.save(self.cursor)

    def poll_once(self) -> list[ChainEvent]:
        """Every confirmed event past the cursor (up to ``max_block_range`` blocks), marked as handed out.

        Blocking. The cursor is saved before this returns: a caller that crashes while handling the list loses
        those events; use :meth:`run` for hand-over-then-save.
        """
        batch = self._fetch()
        # One cursor write for the whole batch: it is handed out as a whole.
        if batch.end_block is not None:
            self._finish(batch.end_block)
        elif batch.events:
            self._ack(batch.events[-1])
        return batch.events

    async def run(
        self,
        send_channel: trio.MemorySendChannel[ChainEvent],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Poll forever, sending each event into ``send_channel`` and saving the cursor right after it was taken.

        Closes ``send_channel`` when it ends. Raises :class:`ChainUnavailable` when the RPC stays unreachable
        through the retry policy (the owner decides whether to restart it).

        Cancellation: safe at any await; an event whose ``send`` was cancelled is not marked, so it is handed out
        again after a restart. A cancel that lands during an RPC waits for that request (bounded by its timeout).
        """
        task_status.started()
        async with send_channel:
            while True:
                batch = await trio.to_thread.run_sync(self._fetch)
                for ev in batch.events:
                    await send_channel.send(ev)
                    # Synchronously, with no checkpoint between hand-over and record: a cancel cannot land between
                    # them, so what the consumer took is exactly what the cursor says (a ~1 ms write of a tiny file).
                    self._ack(ev)
                if batch.end_block is not None:
                    self._finish(batch.end_block)
                if batch.caught_up:
                    await trio.sleep(self.config.poll_interval_s)  # the poll period: nothing new is confirmed yet
