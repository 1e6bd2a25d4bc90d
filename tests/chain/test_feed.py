"""The chain feed (``eth_subscribe`` over WebSocket) on a real ``hardhat node``: each head and log is heard as it is
mined, the watch stops polling while the feed is live and searches again from before the last head once it is lost,
and an endpoint that is down, refuses or sends garbage is a clear ``ChainUnavailable``, never a crash."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from functools import partial

import pytest
import trio
from trio_websocket import WebSocketRequest, serve_websocket

from node.chainio import AsyncChain
from node.roles.chain_feed import run_chain_feed
from node.roles.chain_view import FEED_RESCAN_BLOCKS, ChainView, ChainWatch, ScanGate
from node.roles.wakeup import Wakeup
from protocols.chain.backends import HardhatNode, dev_accounts
from protocols.chain.client import JobManagerClient, deploy
from protocols.chain.errors import ChainUnavailable
from protocols.chain.events import LogKey
from protocols.chain.feed import HeadNotice, LogNotice, follow_chain
from tests.chain.helpers import MIN_STAKE, SETTINGS

pytestmark = pytest.mark.hardhat


def _ws(node: HardhatNode) -> str:
    return "ws://" + node.url.removeprefix("http://")


class CountingView(ChainView):
    """A ChainView that counts its ``eth_getLogs`` and head reads (what a live feed replaces)."""

    log_reads = 0
    head_reads = 0

    async def logged_events(self, first_block: int) -> list[tuple[int, str, LogKey]]:
        self.log_reads += 1
        return await super().logged_events(first_block)

    async def _latest(self) -> tuple[int, int]:
        if self._head is None or not self.head_pushed:
            self.head_reads += 1
        return await super()._latest()


async def _no_window(_job_id: int) -> int:
    return 0


def _view(client: JobManagerClient, address: str) -> CountingView:
    return CountingView(client=client, chain=AsyncChain(timeout_s=30.0), address=address, signing_window=_no_window)


async def test_every_head_and_log_is_heard_as_it_is_mined(hardhat_node: HardhatNode) -> None:
    acc = dev_accounts(3)
    client = deploy(hardhat_node.web3(), acc[0], SETTINGS)
    heads: list[HeadNotice] = []
    logs: list[LogNotice] = []
    subscribed, news = trio.Event(), Wakeup()

    async def on_subscribed() -> None:
        subscribed.set()

    def on_heads(head: HeadNotice) -> None:
        heads.append(head)
        news.fire()

    def on_logs(batch: Sequence[LogNotice]) -> None:
        logs.extend(batch)
        news.fire()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(follow_chain, _ws(hardhat_node), client.address, on_heads=on_heads,
                                   on_logs=on_logs, on_subscribed=on_subscribed))
        await subscribed.wait()
        waiter = news.waiter()
        tx = await trio.to_thread.run_sync(lambda: client.with_account(acc[1]).register_validator(MIN_STAKE))
        with trio.fail_after(10):
            while not logs or not any(h.number >= tx.block_number for h in heads):
                await waiter.sleep(1.0)
        nursery.cancel_scope.cancel()
    assert [(n.block, n.name, n.removed) for n in logs] == [(tx.block_number, "ValidatorRegistered", False)]
    assert tx.block_number in [h.number for h in heads]


async def test_a_live_feed_replaces_the_watch_s_polling(hardhat_node: HardhatNode) -> None:
    """While the feed is live, a gate learns of an event with no ``eth_getLogs`` and no head read; a lost feed hands
    back to polling from before its last head, so nothing mined meanwhile is missed."""
    acc = dev_accounts(4)
    client = deploy(hardhat_node.web3(), acc[0], SETTINGS)
    view = _view(client, acc[0].address)
    watch = ChainWatch(view, poll_s=0.0)
    gate = ScanGate(watch)
    stamp = await gate.due(busy=False)
    assert stamp is not None
    gate.scanned(stamp)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_chain_feed, watch, _ws(hardhat_node), client.address, logging.getLogger("test"))
        with trio.fail_after(10):
            while not watch.live:
                await watch.wakeup.waiter().sleep(0.05)
        reads = (view.log_reads, view.head_reads)
        waiter = watch.wakeup.waiter()
        tx = await trio.to_thread.run_sync(lambda: client.with_account(acc[1]).register_validator(MIN_STAKE))
        with trio.fail_after(10):
            await waiter.sleep(60.0)  # woken by the block, not by the minute
            while await gate.due(busy=False) is None:
                await waiter.sleep(60.0)
        assert await view.block_number() >= tx.block_number
        assert (view.log_reads, view.head_reads) == reads  # heard, not read
        last_head = await view.block_number()
        nursery.cancel_scope.cancel()
    assert not watch.live and not view.head_pushed
    assert watch._cursor == last_head + 1 - FEED_RESCAN_BLOCKS  # searched again from before the last head
    gate.scanned(watch.stamp)
    await trio.to_thread.run_sync(lambda: client.with_account(acc[2]).register_validator(MIN_STAKE))
    assert await gate.due(busy=False) is not None  # polled again
    assert view.log_reads == reads[0] + 1


async def test_an_endpoint_that_is_down_or_not_json_rpc_is_chain_unavailable() -> None:
    with pytest.raises(ChainUnavailable, match="chain feed ws://127.0.0.1:9"):
        await follow_chain("ws://127.0.0.1:9", "0x" + "00" * 20, on_heads=lambda h: None, on_logs=lambda ls: None,
                           connect_timeout_s=2.0)

    async def serve(replies: list[str], request: WebSocketRequest) -> None:
        ws = await request.accept()
        for _ in range(2):
            await ws.get_message()
        for reply in replies:
            await ws.send_message(reply)
        await trio.sleep_forever()

    cases = [
        (['{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no subscriptions"}}'], "refused eth_subscribe"),
        (["not json"], "not JSON"),
        (['{"jsonrpc":"2.0","id":1,"result":"0xa"}', '{"jsonrpc":"2.0","id":2,"result":"0xb"}',
          json.dumps({"jsonrpc": "2.0", "method": "eth_subscription",
                      "params": {"subscription": "0xa", "result": {"number": "zz"}}})], "malformed notification"),
    ]
    for replies, match in cases:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(serve_websocket, partial(serve, replies), "127.0.0.1", 0,
                                                 ssl_context=None))
            url = f"ws://127.0.0.1:{server.port}"
            with pytest.raises(ChainUnavailable, match=match):
                await follow_chain(url, "0x" + "00" * 20, on_heads=lambda h: None, on_logs=lambda ls: None,
                                   connect_timeout_s=5.0)
            nursery.cancel_scope.cancel()
