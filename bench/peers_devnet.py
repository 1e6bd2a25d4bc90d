"""The dtnode side of ``bench_peers.py``: the devnet in processes (Hardhat, one ``dtnode`` process per node), with
the network running before the job is submitted.

:mod:`node.devnet`'s own pieces in another order than ``dtnode devnet``: chain, customer node and dataset first,
then every trainer and validator process, registered on-chain before the clock starts; then ``createJob`` (the
submission), then the two leader candidates (a leader stands for one job id, so it cannot start before the job
exists: their start-up is inside the measured time, and said so). Rounds are followed and scored by the customer
as in ``dtnode devnet`` (:func:`~node.devnet.customer_flow.follow_rounds`); each round's checkpoint CID comes from
the chain's ``RoundCommitted`` events and its loss from scoring the checkpoint again after the run.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import trio
from peers_job import EVAL_SAMPLES, JOB_ID, SHARDS, RoundMetric
from peers_timeline import commit_seconds

from node.chainio import AsyncChain
from node.devnet import Devnet, DevnetPlan
from node.devnet.customer_flow import PostedJob, follow_rounds
from node.devnet.demos import get_demo
from node.devnet.plan import DEV_ACCOUNTS, members, node_config
from node.devnet.run import start_customer
from node.job_model import prepare_job_model
from node.roles.customer import measure_round, post_job, round_history
from node.roles.dataset_publish import publish_loaded
from node.training.data import MAX_SHARD_BYTES, decode_shard
from protocols.chain.backends import dev_accounts
from protocols.chain.client import JobManagerClient
from protocols.errors import DtnodeError
from protocols.specs import JobSpec

CHAIN_TIMEOUT_S = 120.0
"""Every node's and the customer's wait for one chain call (``make demo``: 30 s)."""
REGISTER_TIMEOUT_S = 600.0
"""How long the trainers and validators have to start and register before the job is submitted."""
NODE_CONTENT = ("blocks", "segments", "fetched-segments")
"""What a node's data dir holds besides its log and ``timings.json``: its block store and segment spills, which the
report does not read (2.5 GB for one round of the 11M-parameter job). Removed when the side ends."""


async def _registered(chain: AsyncChain, client: JobManagerClient, trainers: list[str], validators: list[str],
                      check: Callable[[], None]) -> None:
    """Return once every trainer and validator is registered on-chain: the network is running. ``check``: the
    supervisor's (raises if a node process died)."""
    with trio.fail_after(REGISTER_TIMEOUT_S):
        while True:
            check()
            t = [await chain(lambda a=a: client.trainers(a), what="trainers()") for a in trainers]
            v = [await chain(lambda a=a: client.validators(a), what="validators()") for a in validators]
            if all(i.registered for i in t) and all(i.registered for i in v):
                return
            await trio.sleep(0.5)


async def run_devnet_side(spec: JobSpec, out: Path) -> None:
    """Run the job on a devnet in processes and write the side's result (rounds, timings, labels) to ``out``."""
    say = lambda line: print(f"dtnode: {line}", flush=True)  # noqa: E731
    # A chain call may wait longer than make demo's 30 s: on a 2-core machine shared with other work, Hardhat was
    # measured starved past it (load average 25), which stops the run rather than slowing it.
    # A round waits for all its tasks, up to its lease: the three sides must aggregate the same updates (make demo's
    # 180 s round timeout is shorter than one 11M-parameter round on these 2 cores).
    # Tickets start at a quarter lease (75 s for the demo, whose tasks take ~5 s; 900 s for an 11M-parameter task of
    # ~2 min): the leader's learned lifetime (TicketLifetime) would otherwise spend the first round learning it.
    settings = {**DevnetPlan().node_settings, "chain_timeout_s": CHAIN_TIMEOUT_S,
                "round_timeout_s": float(spec.payment.lease_seconds),
                "task_timeout_s": spec.payment.lease_seconds / 4}
    # The nodes' logs and timings next to the side's JSON: the report reads them (peers_timeline).
    plan = DevnetPlan(trainers=spec.tasks_per_round, validators=3, spec=spec, embedded=False, shards=SHARDS,
                      eval_samples=EVAL_SAMPLES, out=say, node_settings=settings, workdir=out.parent / "dtnode-devnet")
    net = Devnet(plan)
    started: dict[str, float] = {}
    try:
        accounts = dev_accounts(DEV_ACCOUNTS)
        async with trio.open_nursery() as nursery:
            side = await start_customer(net, nursery)
            client, chain, store = side.client, side.chain, side.ctx.store
            loaded = await trio.to_thread.run_sync(lambda: get_demo(plan.demo).load_data(spec.seed))
            data = await publish_loaded(store, loaded, shards=plan.shards, eval_samples=plan.eval_samples,
                                        seed=spec.seed)
            eval_bytes = await store.get(data.eval_cid, max_bytes=MAX_SHARD_BYTES, timeout_s=60.0)
            held_out = await trio.to_thread.run_sync(decode_shard, eval_bytes)

            def start(role_is_leader: bool, job_id: int) -> list[str]:
                chosen = [m for m in members(plan) if (m.role == "leader") == role_is_leader]
                for m in chosen:
                    cfg = node_config(plan, m, job_id=job_id, data_dir=net.workdir / m.label, bootstrap=net.bootstrap,
                                      rpc=net.rpc_url, contract=client.address)
                    net.labels[accounts[m.account_index].address.lower()] = m.label
                    net.spawn(m, cfg)
                    started[m.label] = time.time()
                return [accounts[m.account_index].address for m in chosen]

            workers = start(False, JOB_ID)
            say(f"{len(workers)} trainer and validator processes starting; waiting for their registration")
            await _registered(chain, client, [a for a in workers if net.labels[a.lower()].startswith("trainer")],
                              [a for a in workers if net.labels[a.lower()].startswith("validator")],
                              net.check_children)
            job_spec, initial = await prepare_job_model(
                store, replace(spec, dataset_cid=data.dataset_cid, eval_cid=data.eval_cid))
            submitted, submitted_at = time.monotonic(), time.time()
            job_id, _, deposit = await post_job(store, client, job_spec, initial=initial)
            if job_id != JOB_ID:
                raise DtnodeError(f"devnet: the job got id {job_id}, the other sides train job {JOB_ID}'s tasks")
            say(f"job {job_id} submitted (createJob); starting the {plan.leaders} leader candidates")
            start(True, job_id)
            posted = PostedJob(job_id, job_spec, deposit, held_out, loaded.test, data.info)
            lines = await follow_rounds(plan, chain, client, side.ctx.content, posted, labels=net.labels,
                                        started=submitted, check=net.check_children, logs=net.workdir)
            finished_at = time.time()
            history = await chain(lambda: round_history(client, job_id), what="RoundCommitted logs")
            # A round's time: its commit as the leader logged it (the customer's scoring lags behind on a busy
            # machine); the customer's time where the log has none.
            committed = commit_seconds(net.workdir, submitted_at)
            rounds = []
            for line, entry in zip(lines, sorted(history, key=lambda e: e.round), strict=True):
                measured = await measure_round(side.ctx.content, entry, job_spec, held_out)
                rounds.append(RoundMetric(line.round + 1, entry.checkpoint_cid, line.accuracy, measured.loss or 0.0,
                                          committed.get(line.round + 1, line.wall_s)))
            observed = [line.wall_s for line in lines]
            labels = {str(p.pid): label for label, p in net.procs.items()}
            if net.hardhat is not None:
                labels[str(net.hardhat.pid)] = "hardhat"
            nursery.cancel_scope.cancel()
    finally:
        net.close()  # SIGTERM: every node writes its timings.json as it stops
        for node_dir in net.workdir.iterdir():
            for name in NODE_CONTENT:
                shutil.rmtree(node_dir / name, ignore_errors=True)
    stopped = time.time()
    timings = {p.parent.name: json.loads(p.read_text()) for p in net.workdir.glob("*/timings.json")}
    chain_calls = {p.parent.name: json.loads(p.read_text()) for p in net.workdir.glob("*/chain_calls.json")}
    out.write_text(json.dumps({
        "rounds": [asdict(m) for m in rounds], "submitted_at": submitted_at, "finished_at": finished_at,
        "node_started_at": started, "stopped_at": stopped, "timings": timings, "chain_calls": chain_calls,
        "labels": labels,
        "workdir": str(net.workdir), "customer_observed_s": observed,
    }))
