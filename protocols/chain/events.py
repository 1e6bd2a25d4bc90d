"""JobManager's events: decoding logs into typed events (:class:`ChainEvent`, one subclass per event).

The roles read state with views and the few logs they need with ``JobManagerClient.get_events``; there is no
long-running event feed (the node polls views on its chain interval).

CIDs: event arguments of type ``bytes`` whose name ends in ``cid``/``Cid`` are turned back into CID strings.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, cast

from eth_utils.abi import event_abi_to_log_topic
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.types import LogReceipt

from protocols.chain.abi import load_artifact
from protocols.chain.cids import optional_cid_from_bytes
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


def _by_name(name: str) -> tuple[bytes, dict[str, Any]]:
    """(topic0, ABI entry) of one of JobManager's events; KeyError naming the known ones otherwise."""
    for topic, entry in _topic_map().items():
        if entry["name"] == name:
            return topic, entry
    raise KeyError(f"JobManager has no event {name!r}; known: {sorted(event_names())}")


def event_topic(name: str) -> bytes:
    """topic0 of one of JobManager's events (for ``eth_getLogs`` filters)."""
    return _by_name(name)[0]


LogKey = tuple[int | None, int | None, int | None]
"""A log's ``(jobId, round, slot)``: the indexed arguments of those names, each None where its event has none."""
KEY_ARGS = ("jobId", "round", "slot")
_KEY_TOPICS: dict[bytes, tuple[int | None, ...]] = {}


def log_key(topics: Sequence[bytes]) -> tuple[str, LogKey]:
    """A raw log's event name (from topic0; "" when the ABI has none) and its :data:`LogKey`, read from its indexed
    topics alone (no data decoding)."""
    if not topics:
        return "", (None, None, None)
    topic0 = bytes(topics[0])
    entry = _topic_map().get(topic0)
    if entry is None:
        return "", (None, None, None)
    if topic0 not in _KEY_TOPICS:
        indexed = [str(i["name"]) for i in entry["inputs"] if i.get("indexed")]
        _KEY_TOPICS[topic0] = tuple(indexed.index(a) + 1 if a in indexed else None for a in KEY_ARGS)
    job, round_, slot = (int.from_bytes(bytes(topics[i]), "big") if i is not None and i < len(topics) else None
                         for i in _KEY_TOPICS[topic0])
    return str(entry["name"]), (job, round_, slot)


def keys_overlap(a: LogKey, b: LogKey) -> bool:
    """Whether two keys may name the same thing: equal wherever both are known (None matches anything)."""
    return all(x is None or y is None or x == y for x, y in zip(a, b, strict=True))


def indexes_round(name: str) -> bool:
    """Whether event ``name``'s indexed arguments start with ``jobId, round`` (its topics 1 and 2): such logs can be
    asked for by job and round (``get_events(round=...)``)."""
    indexed = [str(i["name"]) for i in _by_name(name)[1]["inputs"] if i.get("indexed")]
    return indexed[:2] == ["jobId", "round"]


class EventDecoder:
    """Decodes raw logs of one JobManager deployment into :class:`ChainEvent` objects."""

    def __init__(self, w3: Web3, address: str) -> None:
        self.address = to_checksum_address(address)
        self._address_lower = self.address.lower()
        self._contract = w3.eth.contract(address=self.address, abi=load_artifact().abi_list())
        self._events: dict[str, Any] = {}

    def decode(self, raw: LogReceipt | Mapping[str, Any]) -> ChainEvent | None:
        """The event in ``raw``, or ``None`` when it is not one of this contract's events."""
        topics = raw.get("topics") or []
        # Lower-case compare: checksumming every log's address costs a keccak each (a tenth of a node's decoding).
        if not topics or str(raw["address"]).lower() != self._address_lower:
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
