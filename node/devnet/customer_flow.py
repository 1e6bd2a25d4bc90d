"""The devnet's customer: publish the demo's dataset, post the job with its deposit (and, fine-tuning, its own
checkpoint), follow its rounds, then fetch, verify and evaluate the final weights and withdraw the refund.

Each step is the customer role's own code (:mod:`node.roles.customer`), the same that ``dtnode dataset add``,
``dtnode job create`` (``--init`` included), ``dtnode job status`` and ``dtnode job fetch`` run; this module only
orders the steps and prints a progress line per committed round.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import trio

from node.chainio import AsyncChain
from node.content import ContentNode
from node.devnet.demos import get_demo
from node.devnet.plan import ETH, DevnetPlan
from node.job_model import prepare_job_model
from node.roles.customer import eval_subset, fetch_final_weights, measure_round, post_job, round_history
from node.roles.dataset_publish import publish_loaded
from node.training.data import MAX_SHARD_BYTES, ArraySet, decode_shard
from node.training.evaluate import evaluate
from node.training.models import State, model_ref
from node.training.objective import format_metric
from protocols.chain.client import JobManagerClient
from protocols.chain.models import JobInfo, JobStatus
from protocols.errors import DtnodeError
from protocols.specs import JobSpec
from storage.content import ContentStore
from storage.dataset import DatasetInfo


@dataclass(frozen=True)
class RoundLine:
    round: int
    leader: str
    """The committing leader's devnet label (its address if it has none)."""
    accuracy: float
    wall_s: float
    metric: tuple[str, float] = ("accuracy", 0.0)
    """The task's own figure (:func:`node.training.objective.headline`)."""
    loss: float | None = None


@dataclass(frozen=True)
class PostedJob:
    job_id: int
    spec: JobSpec
    """As posted: naming the dataset and evaluation shard."""
    deposit: int
    held_out: ArraySet
    """The evaluation shard's samples, as published: each round is measured on them."""
    test: ArraySet | None
    """The dataset's test split for the final evaluation (None: the evaluation shard)."""
    info: DatasetInfo


@dataclass(frozen=True)
class FinalModel:
    job: JobInfo
    accuracy: float
    loss: float
    test_samples: int
    weights: State



async def post_demo_job(plan: DevnetPlan, store: ContentStore, client: JobManagerClient, *,
                        workdir: Path) -> PostedJob:
    """Shard the demo's dataset into the customer's store and post ``plan.spec`` on it with exactly its deposit,
    starting from the customer's own checkpoint where the demo has one (made in ``workdir``), as ``dtnode job create
    --init`` does."""
    out, demo = plan.out, get_demo(plan.demo)
    out(f"customer: demo {demo.name}: {demo.summary}")
    loaded = await trio.to_thread.run_sync(lambda: demo.load_data(plan.spec.seed))
    out(f"customer: sharding the dataset ({loaded.info.format}, {loaded.info.licence.split(':')[0]}) into "
        f"{plan.shards} shards and adding them to IPFS ...")
    data = await publish_loaded(store, loaded, shards=plan.shards, eval_samples=plan.eval_samples,
                                seed=plan.spec.seed)
    out(f"dataset: {data.dataset_cid} ({data.train_samples} samples), eval shard {data.eval_cid}")
    eval_bytes = await store.get(data.eval_cid, max_bytes=MAX_SHARD_BYTES, timeout_s=plan.node_settings.get(
        "fetch_timeout_s", 60.0))
    held_out = await trio.to_thread.run_sync(decode_shard, eval_bytes)
    init_weights = None
    if demo.init_weights is not None:
        make = demo.init_weights
        out("customer: pre-training its own checkpoint in one process (python -m node.devnet.pretrain) ...")
        init_weights = await trio.to_thread.run_sync(lambda: make(workdir))
        out(f"customer: fine-tuning from its checkpoint ({len(init_weights)} bytes), as job create --init does")
    spec = replace(plan.spec, dataset_cid=data.dataset_cid, eval_cid=data.eval_cid)
    spec, initial = await prepare_job_model(store, spec, init_weights=init_weights)
    job_id, spec_cid, deposit = await post_job(store, client, spec, initial=initial)
    out(f"job {job_id}: spec {spec_cid}, deposit {deposit / ETH:.4f} ETH, {spec.rounds} rounds x "
        f"{spec.tasks_per_round} tasks, model {spec.model}")
    return PostedJob(job_id, spec, deposit, held_out, loaded.test, data.info)


async def follow_rounds(plan: DevnetPlan, chain: AsyncChain, client: JobManagerClient, content: ContentNode,
                        posted: PostedJob, *, labels: dict[str, str], started: float, check: Callable[[], None],
                        logs: Path, poll_s: float = 0.5) -> list[RoundLine]:
    """Measure each committed round on the held-out images and print a line for it, until the job finishes.

    ``check`` runs before every poll (the supervisor's: raise if a node died); ``logs``: where the node logs are,
    for the stall message. Raises
    :class:`~protocols.errors.DtnodeError` if the job is cancelled or has not finished within ``plan.timeout_s``.
    """
    job_id, spec = posted.job_id, posted.spec
    held_out = posted.held_out  # the job's evaluation shard
    lines: list[RoundLine] = []
    deadline = time.monotonic() + plan.timeout_s
    while True:
        check()
        job = await chain(lambda: client.get_job(job_id), what=f"getJob({job_id})")
        if len(lines) < job.committed_rounds:
            history = await chain(lambda: round_history(client, job_id), what="RoundCommitted logs")
            for entry in history:
                if entry.round != len(lines):
                    continue
                measured = await measure_round(content, entry, spec, held_out)
                line = RoundLine(entry.round, labels.get(entry.leader, entry.leader), measured.accuracy or 0.0,
                                 time.monotonic() - started, measured.metric or ("accuracy", 0.0), measured.loss)
                lines.append(line)
                bar = "#" * len(lines) + "-" * (spec.rounds - len(lines))
                plan.out(f"[{bar}] round {len(lines):>2}/{spec.rounds}  {format_metric(*line.metric)}  "
                         f"leader {line.leader:<9} spent {job.spent / ETH:.4f} ETH  t={line.wall_s:5.1f}s")
        if job.status == JobStatus.FINISHED and len(lines) >= job.committed_rounds:
            return lines
        if job.status == JobStatus.CANCELLED:
            raise DtnodeError(f"job {job_id} was cancelled")
        if time.monotonic() > deadline:
            raise DtnodeError(f"devnet: job {job_id} did not finish within {plan.timeout_s:.0f} s "
                              f"(committed {job.committed_rounds}/{spec.rounds}); see the node logs in {logs}")
        await trio.sleep(poll_s)


async def final_model(chain: AsyncChain, client: JobManagerClient, store: ContentStore, posted: PostedJob, *,
                      test_samples: int | None) -> FinalModel:
    """The job's final weights fetched by CID, verified and evaluated on ``test_samples`` samples (None: all) of the
    dataset's test split (or, for a dataset without one, of the evaluation shard)."""
    job = await chain(lambda: client.get_job(posted.job_id), what=f"getJob({posted.job_id})")
    model = await fetch_final_weights(store, job, posted.spec)
    test = posted.test if posted.test is not None else posted.held_out
    test_set = test if test_samples is None else eval_subset(test, test_samples)
    accuracy, loss = await trio.to_thread.run_sync(lambda: evaluate(model_ref(posted.spec), model, test_set,
                                                                    task=posted.spec.task))
    return FinalModel(job, accuracy, loss, len(test_set), model)


async def withdraw_refund(chain: AsyncChain, client: JobManagerClient) -> None:
    """Withdraw whatever the contract holds for the customer (the job's refund)."""
    address = client.account.address
    if await chain(lambda: client.balance_of(address), what="balanceOf(customer)") > 0:
        await chain(client.withdraw, what="withdraw()")
