"""Chain adapter costs on both backends, side by side in one run.

For each backend (in-process py-evm, Hardhat node): deploy, then time N sequential sends (``create_job`` from one
account), N views (``get_job``), the same N sends from 10 concurrent trio tasks sharing the account, a revert decoded
at estimation, and one ``get_events`` over everything. Also: py-evm gas estimate, bisecting (py-evm's default) vs the
single run ``in_process_chain`` installs.

    .venv/bin/python bench/bench_chain.py [--n 30]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import trio
from web3 import Web3

from protocols.chain.backends import HardhatNode, dev_accounts, hardhat_available, in_process_chain
from protocols.chain.client import DeploySettings, JobManagerClient, deploy
from protocols.chain.errors import ContractRevert
from protocols.chain.models import JobParams

PARAMS = JobParams(
    spec_cid="bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq",  # type: ignore[arg-type]
    rounds=2, tasks_per_round=3, local_steps=50, max_work_units=4, quorum=3, base_rate=10**12, bonus_rate=6 * 10**11,
    validator_fee=10**10, leader_fee=10**11, lease_seconds=600,
)  # fmt: skip


def _ms(fn: Callable[[], object], n: int) -> float:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


async def _concurrent(client: JobManagerClient, n: int, tasks: int = 10) -> float:
    started = time.perf_counter()
    per_task = n // tasks
    async with trio.open_nursery() as nursery:
        for _ in range(tasks):

            async def worker() -> None:
                for _ in range(per_task):
                    await trio.to_thread.run_sync(client.create_job, PARAMS)

            nursery.start_soon(worker)
    return (time.perf_counter() - started) * 1000 / (per_task * tasks)


def measure(w3: Web3, n: int) -> dict[str, float]:
    acc = dev_accounts(3)
    t = time.perf_counter()
    manager = deploy(w3, acc[0], DeploySettings(min_quorum=3))
    out = {"deploy ms": (time.perf_counter() - t) * 1000}
    customer = manager.with_account(acc[1])
    out["send ms (median, sequential)"] = _ms(lambda: customer.create_job(PARAMS), n)
    out["send ms (mean, 10 concurrent tasks)"] = trio.run(_concurrent, customer, n)
    out["view ms (get_job, median)"] = _ms(lambda: manager.get_job(1), n)

    def revert() -> None:
        try:
            customer.cancel_job(10**6)
        except ContractRevert:
            pass

    out["revert decoded ms (median)"] = _ms(revert, n)
    t = time.perf_counter()
    events = manager.get_events()
    out[f"get_events ms ({len(events)} events)"] = (time.perf_counter() - t) * 1000
    return out


def estimator_ratio(n: int) -> tuple[float, float]:
    from eth.estimators import get_gas_estimator

    from protocols.chain.backends import _single_run_gas_estimate

    w3 = in_process_chain()
    acc = dev_accounts(2)
    manager = deploy(w3, acc[0], DeploySettings(min_trainer_stake=1, min_validator_stake=1, min_update_bond=1,
                                                validator_slash=1, min_leader_bond=1, deregistration_delay=1,
                                                min_quorum=3))
    tx = {"from": acc[1].address, "to": manager.address, "value": PARAMS.required_deposit(),
          "data": manager._contract.encode_abi("createJob", args=[PARAMS.to_abi()])}  # fmt: skip
    chain = w3.provider.ethereum_tester.backend.chain  # type: ignore[attr-defined]
    result = []
    for estimator in (get_gas_estimator(), _single_run_gas_estimate):
        chain.gas_estimator = estimator
        result.append(_ms(lambda: w3.eth.estimate_gas(tx), n))  # type: ignore[arg-type]
    return result[0], result[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30)
    args = parser.parse_args()
    results = {"py-evm": measure(in_process_chain(), args.n)}
    if hardhat_available():
        with HardhatNode() as node:
            results["hardhat node"] = measure(node.web3(), args.n)
    names = list(results)
    print(f"{'':42}" + "".join(f"{name:>16}" for name in names))
    for key in results[names[0]]:
        row = [results[name].get(key, results[name].get(_match(results[name], key), float("nan"))) for name in names]
        print(f"{key:42}" + "".join(f"{v:16.1f}" for v in row))
    bisect, single = estimator_ratio(args.n)
    print(f"\npy-evm estimate_gas(createJob): bisecting {bisect:.1f} ms, single run {single:.1f} ms "
          f"({bisect / single:.1f}x)")  # fmt: skip


def _match(d: dict[str, float], key: str) -> str:
    prefix = key.split("(")[0]
    return next((k for k in d if k.startswith(prefix)), key)


if __name__ == "__main__":
    main()
