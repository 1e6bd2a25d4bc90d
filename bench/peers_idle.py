"""What an idle node costs: one validator process on a Hardhat devnet with an open job that nobody works on (no
leader, no trainer: no submission ever comes), its CPU read from ``/proc`` over a window once it is registered and
warm; or (``--role leader``) the leader candidate that does not lead, while the other candidate holds the lease of a
job no trainer works on. Issue 18's goal: an idle node uses at most 2 % of one core.

    .venv/bin/python bench/peers_idle.py                  # 60 s window after 20 s of warm-up
    .venv/bin/python bench/peers_idle.py --measure-s 120
    .venv/bin/python bench/peers_idle.py --poll-s 30       # what the node costs besides polling the chain
    .venv/bin/python bench/peers_idle.py --role leader     # the candidate waiting for another's lease to end

The validator polls the chain every ``chain_poll_interval_s`` (1 s, as on the devnet) and gossips presence like any
node; the job is the devnet's demo job (its spec and shards), posted by the customer node in this process. Prints the
validator's CPU-seconds and share of a core over the window, with the load average before and after (the machine's
other work slows Hardhat and the node alike: read the load).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import psutil
import trio

from node.devnet import Devnet, DevnetPlan
from node.devnet.customer_flow import post_demo_job
from node.devnet.plan import DEV_ACCOUNTS, members, node_config
from node.devnet.run import start_customer
from protocols.chain.backends import dev_accounts
from protocols.errors import DtnodeError
from protocols.p2p.hardening import install_hardening

REGISTER_TIMEOUT_S = 300.0


def _cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


async def measure_idle(*, role: str, warm_up_s: float, measure_s: float, poll_s: float) -> dict[str, float]:
    settings = {**DevnetPlan().node_settings, "chain_poll_interval_s": poll_s}
    leaders, validators = (2, 0) if role == "leader" else (0, 1)
    plan = DevnetPlan(trainers=0, validators=validators, leaders=leaders, embedded=False, node_settings=settings,
                      out=lambda line: print(line, flush=True))
    net = Devnet(plan)
    try:
        async with trio.open_nursery() as nursery:
            side = await start_customer(net, nursery)
            posted = await post_demo_job(plan, side.ctx.store, side.client, workdir=net.workdir)
            started = {}
            for member in (m for m in members(plan) if m.role == role):
                account = dev_accounts(DEV_ACCOUNTS)[member.account_index]
                cfg = node_config(plan, member, job_id=posted.job_id, data_dir=net.workdir / member.label,
                                  bootstrap=net.bootstrap, rpc=net.rpc_url, contract=side.client.address)
                await net.start_member(nursery, member, cfg, account)
                started[account.address.lower()] = member.label
            with trio.fail_after(REGISTER_TIMEOUT_S):
                while (idle := await _idle_member(side, role, started, posted.job_id)) is None:
                    net.check_children()
                    await trio.sleep(1.0)
            proc = psutil.Process(net.procs[idle].pid)
            print(f"{idle} is idle; warming up {warm_up_s:.0f} s, then measuring {measure_s:.0f} s", flush=True)
            await trio.sleep(warm_up_s)
            load_before = os.getloadavg()[0]
            cpu0, t0 = _cpu_s(proc), time.monotonic()
            await trio.sleep(measure_s)
            cpu1, t1 = _cpu_s(proc), time.monotonic()
            net.check_children()
            if net.hardhat is not None:
                chain_cpu = _cpu_s(psutil.Process(net.hardhat.pid))
            else:
                raise DtnodeError("peers_idle: Hardhat did not start")
            nursery.cancel_scope.cancel()
    finally:
        net.close()
    return {"cpu_s": cpu1 - cpu0, "window_s": t1 - t0, "core_share": (cpu1 - cpu0) / (t1 - t0),
            "load_before": load_before, "load_after": os.getloadavg()[0], "hardhat_cpu_s_total": chain_cpu}


async def _idle_member(side: Any, role: str, started: dict[str, str], job_id: int) -> str | None:
    """The label of the node to measure once it is idle: the registered validator; the candidate that does not
    lead once the other holds the lease. None while not yet."""
    if role == "validator":
        address, label = next(iter(started.items()))
        info = await side.chain(lambda: side.client.validators(address), what="validators()")
        return label if info.registered else None
    job = await side.chain(lambda: side.client.get_job(job_id), what="getJob")
    if job.leader is None:
        return None
    others = [label for address, label in started.items() if address != job.leader.lower()]
    return others[0] if len(others) == 1 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["validator", "leader"], default="validator",
                        help="validator: the only validator of a job nobody works on; leader: the candidate that does "
                             "not lead")
    parser.add_argument("--warm-up-s", type=float, default=20.0)
    parser.add_argument("--measure-s", type=float, default=60.0)
    parser.add_argument("--poll-s", type=float, default=1.0,
                        help="the validator's chain_poll_interval_s (the devnet's: 1 s); a long one shows what an idle "
                             "node costs besides polling the chain")
    args = parser.parse_args()
    install_hardening()  # the customer's node runs in this process: as the dtnode binary does
    r = trio.run(lambda: measure_idle(role=args.role, warm_up_s=args.warm_up_s, measure_s=args.measure_s,
                                      poll_s=args.poll_s))
    print(f"idle {args.role} (chain poll {args.poll_s:g} s): {r['cpu_s']:.2f} CPU-s in {r['window_s']:.1f} s = "
          f"{100 * r['core_share']:.2f} % of a core (goal <= 2 %); load average {r['load_before']:.2f} before, "
          f"{r['load_after']:.2f} after")


if __name__ == "__main__":
    main()
