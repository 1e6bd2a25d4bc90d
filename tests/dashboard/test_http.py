"""The dashboard's HTTP surface on a real node (libp2p host, block store, JobManager on in-process py-evm), without
a browser: ``/metrics`` parsed by prometheus-client's own parser, the JSON routes, the event stream, read-only
methods, and assets that load nothing from the internet."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from node.config import NodeConfig
from node.http.app import STATIC
from node.runtime import DtNode
from protocols.chain.backends import dev_accounts, in_process_chain
from protocols.chain.client import deploy
from protocols.chain.models import NodeClass
from protocols.errors import ConfigError

STAKE = 10**17


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[DtNode]:
    """A node serving its dashboard on a free loopback port; two other accounts registered on-chain."""
    accounts = dev_accounts(3)
    client = await trio.to_thread.run_sync(lambda: deploy(in_process_chain(), accounts[0]))
    await trio.to_thread.run_sync(lambda: client.with_account(accounts[1]).register_trainer(NodeClass.S, STAKE))
    await trio.to_thread.run_sync(lambda: client.with_account(accounts[2]).register_validator(STAKE))
    cfg = NodeConfig(data_dir=str(tmp_path), http="127.0.0.1:0", chain_poll_interval_s=1.0).validate()
    dt = DtNode(config=cfg, account=accounts[0], client=client, log=logging.getLogger("dtnode.test"))
    async with trio.open_nursery() as nursery:
        await nursery.start(dt.run)
        yield dt
        nursery.cancel_scope.cancel()


async def get_json(http: httpx.AsyncClient, path: str) -> dict:  # type: ignore[type-arg]
    response = await http.get(path)
    response.raise_for_status()
    data: dict = response.json()  # type: ignore[type-arg]
    return data


async def until_nodes_listed(http: httpx.AsyncClient, n: int) -> list[dict]:  # type: ignore[type-arg]
    with trio.fail_after(20):
        while True:
            rows: list[dict] = (await get_json(http, "/api/nodes"))["data"]  # type: ignore[type-arg]
            if len(rows) >= n:
                return rows
            await trio.sleep(0.2)  # the feed reads the chain every 2 s


async def test_metrics_parse_as_prometheus_text(node: DtNode) -> None:
    async with httpx.AsyncClient(base_url=node.dashboard_url, timeout=10) as http:
        await until_nodes_listed(http, 2)
        response = await http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    for name in ("dtnode_rounds_committed", "dtnode_updates", "dtnode_validator_verdicts", "dtnode_gossip_delivered",
                 "dtnode_gossip_rejected", "dtnode_requests_served", "dtnode_activity_seconds", "dtnode_chain_calls",
                 "dtnode_chain_wait_seconds", "dtnode_store_bytes", "dtnode_peers_connected", "dtnode_chain_block",
                 "dtnode_dashboard_chain_calls", "dtnode_p2p_bytes", "dtnode_p2p_dropped"):
        assert name in families, sorted(families)
    assert families["dtnode_rounds_committed"].type == "counter"
    assert {(s.labels["protocol"], s.labels["direction"]) for s in families["dtnode_p2p_bytes"].samples
            if s.name.endswith("_total")} >= {("bitswap", "in"), ("bitswap", "out")}
    assert {s.labels["verdict"] for s in families["dtnode_updates"].samples if s.name.endswith("_total")} == {
        "pending", "accepted", "rejected", "expired"}
    block = families["dtnode_chain_block"].samples[0].value
    assert block >= 3, "the dashboard has read the chain past the three set-up transactions"
    assert families["dtnode_dashboard_chain_calls"].samples[0].value > 0


async def test_pages_json_and_event_stream(node: DtNode) -> None:
    async with httpx.AsyncClient(base_url=node.dashboard_url, timeout=10) as http:
        rows = await until_nodes_listed(http, 2)
        assert sorted((r["roles"], r["node_class"], r["stake_wei"]) for r in rows) == [
            (["trainer"], "S", str(STAKE)), (["validator"], "", str(STAKE))]
        assert (await get_json(http, "/api/jobs"))["data"] == []
        missing = await http.get("/api/jobs/7")
        assert missing.status_code == 404 and "job 7 is not on-chain" in missing.json()["error"]
        me = (await get_json(http, "/api/node"))["data"]
        assert me["roles"] == ["provider"] and me["address"] == node.account.address
        for path in ("/", "/jobs", "/jobs/1", "/nodes", "/node"):
            page = await http.get(path)
            assert page.status_code == 200 and '<script src="/static/app.js">' in page.text
        async with http.stream("GET", "/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            with trio.fail_after(10):
                async for line in stream.aiter_lines():
                    if line.startswith("data: "):
                        assert json.loads(line[6:])["block"] >= 3
                        break


async def test_read_only(node: DtNode) -> None:
    async with httpx.AsyncClient(base_url=node.dashboard_url, timeout=10) as http:
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            for path in ("/api/jobs", "/jobs/1", "/metrics", "/events"):
                assert (await http.request(method, path)).status_code == 405, (method, path)


def test_assets_load_nothing_from_elsewhere() -> None:
    for asset in STATIC.iterdir():
        text = asset.read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE), asset.name


async def test_a_busy_port_is_a_config_error(node: DtNode) -> None:
    from node.http.address import parse_http_address
    from node.http.server import serve_dashboard

    port = int(node.dashboard_url.rsplit(":", 1)[1])
    with pytest.raises(ConfigError, match=f"setting 'http': cannot listen on 127.0.0.1:{port}"):
        await serve_dashboard(node, parse_http_address(f"127.0.0.1:{port}"))
