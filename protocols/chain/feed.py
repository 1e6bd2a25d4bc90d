"""The chain's push feed: new heads and the contract's logs over a WebSocket JSON-RPC endpoint (``eth_subscribe``).

A node that polls learns of a block up to a poll late; one that subscribes hears of it as it is mined. The feed is a
hint, never a source of truth: what the roles act on is still read from the chain (views, ``eth_getLogs``), so a
notification that is lost, late or invented costs at most a read, never a wrong decision. A log is reduced to its
block, event name and indexed (jobId, round, slot) key (:func:`~protocols.chain.events.log_key`), as the polled
``eth_getLogs`` of :meth:`~protocols.chain.reader.JobManagerReader.logged_events` gives it.

Endpoints: Hardhat serves WebSocket on its HTTP port (``ws://127.0.0.1:8545``); geth and reth on their own
(``--ws``, port 8546 by default).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from protocols.chain.errors import ChainUnavailable
from protocols.chain.events import LogKey, log_key

MAX_MESSAGE_BYTES = 1 << 20
"""The largest notification accepted (a block's logs of one contract are far smaller)."""


@dataclass(frozen=True)
class HeadNotice:
    number: int
    timestamp: int


@dataclass(frozen=True)
class LogNotice:
    block: int
    name: str
    """The event's name ("" for a topic the ABI does not know)."""
    key: LogKey
    removed: bool
    """Taken back by a reorganisation: the chain no longer holds it (still news: what it changed is undone)."""


def parse_head(result: Any) -> HeadNotice:
    return HeadNotice(number=int(result["number"], 16), timestamp=int(result["timestamp"], 16))


def parse_logs(result: Any, address: str) -> list[LogNotice]:
    """The contract's logs in one ``logs`` notification (one log, or a list of them on some nodes); another
    contract's logs are dropped."""
    out = []
    for raw in result if isinstance(result, list) else [result]:
        if str(raw.get("address", "")).lower() != address.lower():
            continue
        topics = [bytes.fromhex(str(t).removeprefix("0x")) for t in raw.get("topics") or []]
        out.append(LogNotice(int(raw["blockNumber"], 16), *log_key(topics), removed=bool(raw.get("removed"))))
    return out


async def follow_chain(url: str, address: str, *, on_heads: Callable[[HeadNotice], None],
                       on_logs: Callable[[Sequence[LogNotice]], None],
                       on_subscribed: Callable[[], Awaitable[None]] | None = None,
                       connect_timeout_s: float = 10.0) -> None:
    """Subscribe to ``url``'s new heads and ``address``'s logs and hand each notification to the callbacks until
    cancelled. ``on_subscribed`` is awaited once both subscriptions are confirmed, before any notification is handed
    on: every block mined from then on will be (a catch-up search of what came before goes there). Raises
    :class:`ChainUnavailable` when the endpoint cannot be reached, refuses a subscription, sends something that is
    not JSON-RPC, or closes the connection; whatever ``on_subscribed`` raises passes through."""
    try:
        async with open_websocket_url(url, max_message_size=MAX_MESSAGE_BYTES, connect_timeout=connect_timeout_s,
                                      disconnect_timeout=1.0) as ws:
            subs: dict[str, str] = {}
            requests = {1: ("newHeads",), 2: ("logs", {"address": address})}
            for rid, params in requests.items():
                await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": rid, "method": "eth_subscribe",
                                                  "params": list(params)}))
            pending: list[Any] = []  # notifications that came before the second confirmation
            with trio.fail_after(connect_timeout_s):
                while len(subs) < len(requests):
                    msg = _message(await ws.get_message())
                    if msg.get("method") == "eth_subscription":
                        pending.append(msg)
                    elif msg.get("id") in requests:
                        if "result" not in msg:
                            raise ChainUnavailable(f"{url} refused eth_subscribe {requests[msg['id']][0]}: "
                                                   f"{msg.get('error')}")
                        subs[str(msg["result"])] = str(requests[msg["id"]][0])
            if on_subscribed is not None:
                await on_subscribed()
            for msg in pending:
                _dispatch(msg, subs, address, on_heads, on_logs)
            while True:
                _dispatch(_message(await ws.get_message()), subs, address, on_heads, on_logs)
    except (OSError, HandshakeError, ConnectionClosed, trio.TooSlowError) as exc:
        raise ChainUnavailable(f"chain feed {url}: {type(exc).__name__}: {exc}") from exc


def _message(text: str | bytes) -> Any:
    try:
        msg = json.loads(text)
    except ValueError as exc:
        raise ChainUnavailable(f"chain feed: a message that is not JSON ({exc})") from exc
    if not isinstance(msg, dict):
        raise ChainUnavailable("chain feed: a message that is not a JSON-RPC object")
    return msg


def _dispatch(msg: Any, subs: dict[str, str], address: str, on_heads: Callable[[HeadNotice], None],
              on_logs: Callable[[Sequence[LogNotice]], None]) -> None:
    if msg.get("method") != "eth_subscription":
        return  # a late reply: nothing else was asked
    try:
        params = msg["params"]
        kind = subs.get(str(params["subscription"]))
        if kind == "newHeads":
            on_heads(parse_head(params["result"]))
        elif kind == "logs":
            on_logs(parse_logs(params["result"], address))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ChainUnavailable(f"chain feed: a malformed notification ({type(exc).__name__}: {exc})") from exc
