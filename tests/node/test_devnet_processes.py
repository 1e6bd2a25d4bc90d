"""The real thing: a Hardhat node, the contract deployed, and every dtnode a separate OS process on 127.0.0.1.

One job runs from creation to final weights and refund while the serving leader is SIGKILLed mid-round; the other
candidate takes over after the lease and finishes. Checked on-chain: every round committed once, in order; every
accepted update paid exactly once; the money adds up.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio

from node.devnet import Devnet, DevnetPlan, demo_spec, run_devnet
from protocols.chain.backends import hardhat_available
from protocols.chain.client import JobManagerClient
from protocols.chain.models import UpdateStatus

pytestmark = [
    pytest.mark.slow,
    pytest.mark.hardhat,
    pytest.mark.skipif(not hardhat_available(), reason="contracts/node_modules missing: run `make test` (npm ci)"),
]


async def test_job_survives_leader_sigkill_mid_round(tmp_path: Path) -> None:
    spec = demo_spec(rounds=3, trainers=3, model="fmnist-mlp-v1", local_steps=20, lease_seconds=45)
    plan = DevnetPlan(trainers=3, validators=3, spec=spec, shards=8, eval_samples=500, final_eval_samples=2000,
                      workdir=tmp_path, timeout_s=600.0, out=lambda _line: None)
    seen: dict[str, object] = {}

    async def kill_leader_mid_round(net: Devnet, job_id: int) -> None:
        assert net.hardhat is not None
        from protocols.chain.backends import dev_accounts

        client = JobManagerClient(net.hardhat.web3(), _contract_of(net), dev_accounts(1)[0])
        seen["client"] = client
        while True:  # wait until round 2 is being served: some update of round 1 submitted
            job = client.get_job(job_id)
            if job.committed_rounds >= 1 and client.get_round_updates(job_id, job.committed_rounds):
                break
            await trio.sleep(0.3)
        victim = net.labels[str(job.leader).lower()]
        seen["victim"] = victim
        net.kill(victim, signal.SIGKILL)
        net.procs[f"killed:{victim}"] = net.procs.pop(victim)

    result = await run_devnet(plan, on_ready=kill_leader_mid_round)
    client = seen["client"]
    assert isinstance(client, JobManagerClient)
    assert len(result.rounds) == 3
    leaders = [line.leader for line in result.rounds]
    assert seen["victim"] in leaders and len(set(leaders)) == 2, leaders
    for r in range(3):
        for trainer in client.get_round_updates(result.job_id, r):
            update = client.get_update(result.job_id, r, trainer)
            if update.status == UpdateStatus.ACCEPTED:
                assert update.paid, f"round {r}: accepted update of {trainer} unpaid"
    assert result.totals_conserved
    assert sum(result.earnings.values()) + result.refund == result.deposit
    assert result.final_accuracy > 0.6


def _contract_of(net: Devnet) -> str:
    toml = next(net.workdir.glob("trainer-1.toml")).read_text()
    line = next(ln for ln in toml.splitlines() if ln.startswith("contract_address"))
    return line.split("=", 1)[1].strip().strip('"')
