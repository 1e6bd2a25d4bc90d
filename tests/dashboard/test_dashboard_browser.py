"""The dashboard in a real browser (Debian's chromium driven by Playwright) against an embedded devnet.

One network: a leader, two honest trainers and one that fabricates its delta (rejected by the validator), one
validator, two rounds. The customer's node serves the dashboard; once the first round is committed the test opens
the job's page and checks that it shows the committed rounds and the metric/loss plot, that it updates without a
reload when the next round commits, and that the fabricated update is shown as rejected; then the jobs, nodes and
this-node pages. A screenshot of each page goes into the test's temp folder.

The browser is the system's (``scripts/setup.sh`` installs Debian's ``chromium`` and pip's ``playwright``);
Playwright's own browser download is never used.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from node.commands import job_status
from node.config import NodeConfig
from node.devnet import Devnet, run_devnet
from node.http.plot import points_from_status, write_curve_png
from tests.dashboard.devnet_plan import NODE_SETTINGS, dashboard_plan, dashboard_url, wait_for_rounds

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PAGE_TIMEOUT_MS = 120_000
"""A round on two shared cores takes tens of seconds; the page must show the next one within this."""

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                                   reason="needs Debian's chromium (scripts/setup.sh installs it)")]


def browse(url: str, job_id: int, shots: Path) -> dict[str, Any]:
    """Drive chromium through the pages (blocking: run in a worker thread); returns what the pages showed."""
    from playwright.sync_api import expect, sync_playwright

    seen: dict[str, Any] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"{url}/jobs/{job_id}")
            rounds = page.locator("#rounds tbody tr[data-round]")
            expect(rounds.first).to_be_visible(timeout=PAGE_TIMEOUT_MS)
            seen["rounds_at_open"] = rounds.count()
            page.wait_for_selector("svg#curve circle.metric-pt", timeout=PAGE_TIMEOUT_MS)
            seen["plot_points_at_open"] = page.locator("svg#curve circle.metric-pt").count()
            drawn_at_open = int(page.evaluate("document.body.dataset.drawn"))
            page.screenshot(path=shots / "job-first-round.png", full_page=True)
            # Live: no reload from here on; the next commit arrives over /events.
            expect(rounds).to_have_count(seen["rounds_at_open"] + 1, timeout=PAGE_TIMEOUT_MS)
            expect(page.locator("svg#curve circle.metric-pt")).to_have_count(seen["rounds_at_open"] + 1,
                                                                               timeout=PAGE_TIMEOUT_MS)
            seen["redrawn"] = int(page.evaluate("document.body.dataset.drawn")) - drawn_at_open
            rejected = page.locator("#updates tbody tr.REJECTED")
            expect(rejected.first).to_be_visible(timeout=PAGE_TIMEOUT_MS)
            seen["rejected_rows"] = rejected.count()
            seen["rejected_text"] = rejected.first.locator("[data-status]").inner_text()
            seen["rejected_votes"] = rejected.first.locator(".vote.no").count()
            page.screenshot(path=shots / "job-live.png", full_page=True)
            for name in ("jobs", "nodes", "node"):
                page.goto(f"{url}/{name}")
                page.wait_for_selector("main table", timeout=30_000)
                seen[f"{name}_rows"] = page.locator("main table tbody tr").count()
                page.screenshot(path=shots / f"{name}.png", full_page=True)
            seen["jobs_rounds_cell"] = page.goto(f"{url}/jobs") and page.locator("#jobs td.rounds").first.inner_text()
        finally:
            browser.close()
    return seen


async def test_dashboard_shows_rounds_live_and_a_rejected_update(tmp_path: Path) -> None:
    lines: list[str] = []
    plan = dashboard_plan(tmp_path / "devnet", out=lines.append)
    seen: dict[str, Any] = {}
    shots = tmp_path / "screenshots"
    shots.mkdir()
    watched = trio.Event()

    async def watch(net: Devnet, job_id: int) -> None:
        url = dashboard_url(lines)
        await wait_for_rounds(net, job_id, 1)
        seen.update(await trio.to_thread.run_sync(lambda: browse(url, job_id, shots)))
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            text = (await http.get("/metrics")).text
        seen["metrics"] = {(s.name, tuple(sorted(s.labels.items()))): s.value
                           for family in text_string_to_metric_families(text) for s in family.samples}
        watched.set()

    async def finished(net: Devnet, job_id: int) -> None:
        """The finished job's page data: final weights and the command that fetches them; then ``dtnode job status
        N --plot``'s picture, from a fresh node measuring the checkpoints it fetches."""
        assert net.client is not None
        # The devnet is torn down after this hook, cancelling `watch`: a job that ends while the browser still
        # reads the pages (its rounds take seconds) must not cut the browser off.
        with trio.fail_after(3 * PAGE_TIMEOUT_MS / 1000):
            await watched.wait()
        async with httpx.AsyncClient(base_url=dashboard_url(lines), timeout=10) as http:
            with trio.fail_after(60):
                while True:
                    detail = (await http.get(f"/api/jobs/{job_id}")).json()["data"]
                    if detail["summary"]["status"] == "FINISHED" and all(r["measurement"] for r in detail["rounds"]):
                        break
                    await trio.sleep(0.5)  # the dashboard reads the chain every 2 s, then measures the checkpoint
        seen["finished"] = detail
        async with httpx.AsyncClient(base_url=dashboard_url(lines), timeout=10) as http:
            seen["nodes"] = (await http.get("/api/nodes")).json()["data"]
        cfg = NodeConfig(data_dir=str(tmp_path / "status"), bootstrap=(net.bootstrap,), **NODE_SETTINGS).validate()
        report = await job_status(cfg, net.client, job_id, progress=lambda _line: None)
        seen["status_points"] = points_from_status(report["history"])
        write_curve_png(tmp_path / "status-curve.png", seen["status_points"], title="status")

    result = await run_devnet(plan, on_ready=watch, on_finished=finished)
    assert len(result.rounds) == plan.spec.rounds
    final = seen["finished"]
    assert final["summary"]["final_cid"] == result.final_cid
    assert final["fetch_command"].startswith(f"dtnode job fetch {result.job_id} -o ")
    assert [r["measurement"]["metric_name"] for r in final["rounds"]] == ["accuracy"] * plan.spec.rounds
    decided = [u for u in final["updates"] if u["status"] in ("ACCEPTED", "REJECTED")]
    pool = {r["address"].lower() for r in seen["nodes"] if "validator" in r["roles"]}
    assert decided and all(u["votes"] and {v["validator"].lower() for v in u["votes"]} <= pool for u in decided), \
        "each decided update shows its panel's votes (on-chain, or signed in the settleUpdates calldata)"
    assert [p.round for p in seen["status_points"]] == list(range(1, plan.spec.rounds + 1))
    assert all(p.metric_name == "accuracy" and p.loss is not None for p in seen["status_points"])
    assert (tmp_path / "status-curve.png").read_bytes().startswith(b"\x89PNG")
    assert plan.workdir is not None and result.curve_png == str(plan.workdir / "curve.png")
    assert Path(result.curve_png).stat().st_size > 5_000
    assert any(line.startswith(" curve: ") for line in "\n".join(lines).splitlines())
    assert seen, "the browser did not finish before the job did"
    assert seen["rounds_at_open"] >= 1 and seen["plot_points_at_open"] >= 1
    assert seen["redrawn"] >= 1, "the page did not redraw on its own"
    assert seen["rejected_rows"] >= 1 and seen["rejected_text"] == "REJECTED"
    assert seen["rejected_votes"] >= 1, "the rejected update shows no invalid vote"
    metrics = seen["metrics"]
    assert metrics[("dtnode_rounds_committed_total", ())] >= 2, "the browser saw two rounds committed"
    assert metrics[("dtnode_updates_total", (("verdict", "rejected"),))] >= 1
    assert metrics[("dtnode_p2p_bytes_total", (("direction", "out"), ("protocol", "bitswap")))] > 100_000, \
        "the customer served its dataset shards"
    assert seen["jobs_rows"] == 1 and seen["nodes_rows"] >= 4 and seen["node_rows"] >= 1
    assert {p.name for p in shots.iterdir()} == {"job-first-round.png", "job-live.png", "jobs.png", "nodes.png",
                                                 "node.png"}
    assert all(p.stat().st_size > 10_000 for p in shots.iterdir())
