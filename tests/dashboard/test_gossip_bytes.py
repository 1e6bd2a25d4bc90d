"""Gossip bytes on ``/metrics``: two real nodes (libp2p hosts on loopback, one JobManager on in-process py-evm), one
publishes a message the other subscribes to; the sender's GossipSub bytes out and the receiver's bytes in each grow
by at least the message's size, in ``P2PMetrics`` and in the ``dtnode_p2p_bytes`` family their ``/metrics`` serve."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from node.config import NodeConfig
from node.runtime import DtNode
from protocols.chain.backends import dev_accounts, in_process_chain
from protocols.chain.client import deploy
from protocols.messages import encode
from protocols.p2p.testing import TEST_DEFAULTS, Note, scratch_topic

TOPIC = scratch_topic(16)
MESHSUB = "/meshsub/1.1.0"


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[tuple[DtNode, DtNode]]:
    """Two provider nodes (no roles) serving their dashboards; the second bootstraps from the first."""
    accounts = dev_accounts(2)
    client = await trio.to_thread.run_sync(lambda: deploy(in_process_chain(), accounts[0]))
    overrides = {k: v for k, v in TEST_DEFAULTS.items() if k in ("presence_interval_s", "peer_ttl_s",
                                                                   "enable_random_walk")}
    async with trio.open_nursery() as nursery:
        started: list[DtNode] = []
        for i, account in enumerate(accounts):
            bootstrap = tuple(started[0].ctx.net.listen_addrs()[:1]) if started and started[0].ctx else ()
            cfg = NodeConfig(data_dir=str(tmp_path / f"n{i}"), http="127.0.0.1:0", bootstrap=bootstrap,
                             chain_poll_interval_s=1.0).validate()
            node = DtNode(config=cfg, account=account, client=client.with_account(account),
                          log=logging.getLogger(f"dtnode.test{i}"), p2p_overrides=dict(overrides))
            started.append(await nursery.start(node.run))
        yield started[0], started[1]
        nursery.cancel_scope.cancel()


async def meshsub_bytes(node: DtNode) -> dict[str, float]:
    """``dtnode_p2p_bytes_total`` for GossipSub v1.1 by direction, as this node's ``/metrics`` serves it."""
    async with httpx.AsyncClient(base_url=node.dashboard_url, timeout=10) as http:
        response = await http.get("/metrics")
    response.raise_for_status()
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    return {s.labels["direction"]: s.value for s in families["dtnode_p2p_bytes"].samples
            if s.name.endswith("_total") and s.labels["protocol"] == MESHSUB}


async def test_gossip_bytes_are_counted_both_ways_and_served(nodes: tuple[DtNode, DtNode]) -> None:
    receiver, sender = nodes
    assert receiver.ctx is not None and sender.ctx is not None
    inbox = await receiver.ctx.net.subscribe(TOPIC)
    await sender.ctx.net.wait_for_topic_peers(TOPIC, 1, timeout=30)
    note = Note(round=1, text="g" * 500)  # the schema's longest string
    size = len(encode(note, sender.ctx.net.identity, now=time.time()))
    sent_before = sender.ctx.net.metrics.gossip_bytes_out[MESHSUB]
    received_before = receiver.ctx.net.metrics.gossip_bytes_in[MESHSUB]

    await sender.ctx.net.publish(TOPIC, note)
    with trio.fail_after(20):
        delivered, signer = await inbox.receive()
    assert delivered == note and str(signer) == sender.account.address
    with trio.fail_after(10):
        # The sender counts its frames when the write returns: on a busy loop, just after the receiver has them.
        while sender.ctx.net.metrics.gossip_bytes_out[MESHSUB] - sent_before < size:  # noqa: ASYNC110
            await trio.sleep(0.05)
    assert receiver.ctx.net.metrics.gossip_bytes_in[MESHSUB] - received_before >= size

    served_out, served_in = await meshsub_bytes(sender), await meshsub_bytes(receiver)
    assert served_out["out"] >= sent_before + size
    assert served_in["in"] >= received_before + size
