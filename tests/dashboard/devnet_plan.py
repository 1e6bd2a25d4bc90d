"""The small embedded devnet the dashboard tests watch: one leader, two honest trainers and one that fabricates
its delta, one validator (quorum 1), two rounds; the customer's node serves the dashboard on a free port."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from node.devnet import Devnet, DevnetPlan, demo_spec
from tests.node.adversaries import FabricatingTrainer

NODE_SETTINGS: dict[str, Any] = {
    "chain_poll_interval_s": 1.0, "task_timeout_s": 30.0, "round_timeout_s": 60.0, "fetch_timeout_s": 30.0,
    "request_timeout_s": 15.0, "chain_timeout_s": 30.0,
}
CHEAT = "trainer-3"


def dashboard_plan(workdir: Path, *, out: Callable[[str], None], rounds: int = 2) -> DevnetPlan:
    spec = demo_spec(rounds=rounds, trainers=3, model="fmnist-mlp-v1", local_steps=20, lease_seconds=120, quorum=1)
    return DevnetPlan(trainers=3, validators=1, leaders=1, embedded=True, spec=spec, shards=8, eval_samples=500,
                      final_eval_samples=1000, workdir=workdir, timeout_s=300.0, node_settings=dict(NODE_SETTINGS),
                      http="127.0.0.1:0", out=out, trainer_cls={CHEAT: FabricatingTrainer})


def dashboard_url(lines: list[str]) -> str:
    """The URL the devnet printed (``dashboard: URL ...``)."""
    return next(line.split()[1] for line in lines if line.startswith("dashboard: "))


async def wait_for_rounds(net: Devnet, job_id: int, n: int, *, timeout_s: float = 180.0) -> None:
    """Until the chain records ``n`` committed rounds of the job."""
    assert net.client is not None
    client = net.client
    with trio.fail_after(timeout_s):
        while True:
            job = await trio.to_thread.run_sync(lambda: client.get_job(job_id))
            if job.committed_rounds >= n:
                return
            await trio.sleep(0.5)  # the chain has no push: poll it (the customer's node polls at 1 s too)
