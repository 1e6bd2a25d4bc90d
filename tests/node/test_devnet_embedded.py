"""``dtnode devnet --embedded``: the same network inside one process on an in-process py-evm chain.

Kept small on purpose: every node shares one Python interpreter (and the pure-Python EVM behind one lock), so the
whole-network scenarios run with one OS process per node in test_devnet_processes.py. Here: one leader, two trainers
and one validator (quorum 1) run a 2-round MLP job from creation to final weights and refund.
"""

from __future__ import annotations

import pytest

from node.devnet import DevnetPlan, demo_spec, run_devnet

pytestmark = pytest.mark.slow


async def test_embedded_devnet_runs_a_job_end_to_end() -> None:
    spec = demo_spec(rounds=2, trainers=2, model="fmnist-mlp-v1", local_steps=20, lease_seconds=120, quorum=1)
    plan = DevnetPlan(trainers=2, validators=1, leaders=1, embedded=True, spec=spec, shards=8, eval_samples=500,
                      final_eval_samples=2000, timeout_s=400.0, out=lambda _line: None)
    result = await run_devnet(plan)
    assert len(result.rounds) == 2
    assert result.final_accuracy > 0.6
    assert result.totals_conserved
    assert sum(result.earnings.values()) + result.refund == result.deposit
    assert all(result.earnings.get(a, 0) > 0 for a, label in result.labels.items() if label.startswith("trainer"))
