"""Customer actions: publish a dataset, post a job with its deposit, follow it, fetch the final weights.

Following a job reads the chain (round commits, payments) and measures each committed checkpoint itself on the
job's evaluation shard: a leader's own accuracy figure is nowhere on-chain, so nothing would make it verifiable.

The customer's content (dataset shards, the evaluation shard, the initial checkpoint and the spec) is added to its
own block store and served to the network by its node; only CIDs go on-chain.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import trio

from node.checkpoint import decode_checkpoint, initial_checkpoint
from node.content import ContentNode
from node.limits import content_limits
from node.roles.dataset_publish import PublishedData as PublishedData  # the devnet's customer imports these here
from node.roles.dataset_publish import check_spec_data
from node.roles.dataset_publish import eval_subset as eval_subset
from node.roles.dataset_publish import publish_fashion_mnist as publish_fashion_mnist
from node.training.data import ArraySet, decode_shard
from node.training.evaluate import evaluate
from node.training.models import model_ref
from node.training.models.onnx_graph import load_model_files
from node.training.objective import check_spec_task, headline
from node.training.task import max_work_units
from protocols.chain.client import JobManagerClient
from protocols.chain.models import JobInfo, JobParams
from protocols.errors import DtnodeError
from protocols.specs import JobSpec
from storage.content import ContentStore
from storage.dataset import fetch_dataset_manifest


def job_params(spec: JobSpec, spec_cid: str) -> JobParams:
    pay = spec.payment
    return JobParams(
        spec_cid=spec_cid,  # type: ignore[arg-type]
        rounds=spec.rounds, tasks_per_round=spec.tasks_per_round, local_steps=spec.local_steps,
        max_work_units=max_work_units(spec), quorum=pay.quorum, base_rate=pay.base_rate_wei,
        bonus_rate=pay.bonus_rate_wei,
        validator_fee=pay.validator_fee_wei, leader_fee=pay.leader_fee_wei, lease_seconds=pay.lease_seconds,
    )


async def post_job(store: ContentStore, client: JobManagerClient, spec: JobSpec, *,
                   chain_timeout_s: float = 60.0, initial: bytes | None = None) -> tuple[int, str, int]:
    """Publish the initial checkpoint (``initial``: the customer's, from :func:`node.job_model.prepare_job_model`;
    else one generated from the seed) and the spec, then ``createJob`` with exactly the required deposit.

    Returns ``(job id, spec CID, deposit)``. The spec must already name its dataset and evaluation CIDs; a task its
    model does not do, or a dataset its task and model cannot take, is refused before anything is published.
    """
    if not spec.dataset_cid or not spec.eval_cid:
        raise DtnodeError("job spec: set dataset_cid and eval_cid (from `dtnode dataset add`) before creating")
    check_spec_task(spec.task, model_ref(spec))
    check_spec_data(spec, (await fetch_dataset_manifest(store, spec.dataset_cid)).info)
    ckpt_cid = await store.put(initial if initial is not None else initial_checkpoint(model_ref(spec), spec.seed))
    full = spec.with_content(dataset_cid=spec.dataset_cid, eval_cid=spec.eval_cid, initial_checkpoint_cid=ckpt_cid)
    JobSpec.from_bytes(full.to_bytes())  # the same validation every node applies when it fetches it
    spec_cid = await store.put(full.to_bytes())
    params = job_params(full, spec_cid)
    with trio.fail_after(chain_timeout_s):
        job_id, _ = await trio.to_thread.run_sync(lambda: client.create_job(params))
    return int(job_id), spec_cid, params.required_deposit()


async def fetch_final_weights(store: ContentStore, job: JobInfo, spec: JobSpec, *,
                              timeout_s: float = 60.0) -> dict[str, torch.Tensor]:
    """The verified model weights of the job's last committed checkpoint (outer-optimizer state dropped)."""
    if job.last_checkpoint_cid is None:
        raise DtnodeError(f"job {job.job_id} has no committed round yet")
    data = await store.get(job.last_checkpoint_cid, max_bytes=content_limits(spec).checkpoint_bytes,
                           timeout_s=timeout_s)
    return checkpoint_model(data, spec)


def checkpoint_model(data: bytes, spec: JobSpec) -> dict[str, torch.Tensor]:
    """A checkpoint's model weights (its outer-optimizer state dropped), validated against the job's model."""
    model, _ = decode_checkpoint(data, model_ref(spec), max_bytes=content_limits(spec).checkpoint_bytes)
    return model


async def evaluate_checkpoint(data: bytes, spec: JobSpec, eval_set: ArraySet) -> tuple[float, float]:
    """(accuracy, loss) of a checkpoint's model on ``eval_set``, computed in a worker thread."""
    model = checkpoint_model(data, spec)
    return await trio.to_thread.run_sync(lambda: evaluate(model_ref(spec), model, eval_set, task=spec.task))


@dataclass(frozen=True)
class RoundEntry:
    """One committed round as the chain records it, and (once measured) its checkpoint's held-out accuracy."""

    round: int
    leader: str
    """The address that committed it (lower-case)."""
    checkpoint_cid: str
    accuracy: float | None = None
    loss: float | None = None
    metric: tuple[str, float] | None = None
    """The task's own figure, ``("accuracy", a)`` or ``("perplexity", p)``: :func:`objective.headline`."""
    error: str = ""
    """Why it could not be measured (its checkpoint unreachable, say), when it could not."""


def round_history(client: JobManagerClient, job_id: int) -> list[RoundEntry]:
    """Every committed round of the job, from its RoundCommitted events (blocking: call it in a thread)."""
    return [RoundEntry(c.round, c.leader, c.checkpoint_cid) for c in client.round_commits(job_id)]


def job_payments(client: JobManagerClient, job_id: int) -> dict[str, int]:
    """Wei credited per account (lower-case) by the job: trainers' pay and validators' and leaders' fees."""
    earned: dict[str, int] = defaultdict(int)
    for ev in client.get_events(names=["PaidOut", "FeePaid"], job_id=job_id):
        who = str(ev.args.get("trainer") or ev.args.get("account")).lower()
        earned[who] += int(ev.args["amount"])
    return dict(earned)


async def evaluate_rounds(content: ContentNode, job: JobInfo, rounds: list[RoundEntry], *,
                          progress: Callable[[str], None]) -> tuple[str, int, list[RoundEntry]]:
    """Measure each round's checkpoint on the job's evaluation shard; returns (eval CID, samples, measured rounds).

    Spec, shard and checkpoints are fetched by CID (verified), the spec and shard from the customer first, each
    checkpoint from the leader that committed it first. A checkpoint that cannot be fetched is reported in its
    entry's ``error``, and the others are still measured.
    """
    spec = JobSpec.from_bytes(await content.fetch(job.params.spec_cid, max_bytes=1 << 20, what="job spec",
                                                  providers=[job.customer]))
    await load_model_files(spec, lambda cid, limit: content.fetch(cid, max_bytes=limit, what="model file",
                                                                  providers=[job.customer]))
    progress(f"job {job.job_id}: fetching the evaluation shard {spec.eval_cid}")
    shard = await content.fetch(spec.eval_cid, max_bytes=spec.max_dag_bytes, what="evaluation shard",
                                providers=[job.customer])
    eval_set = await trio.to_thread.run_sync(decode_shard, shard)
    measured: list[RoundEntry] = []
    for entry in rounds:
        try:
            done = await measure_round(content, entry, spec, eval_set)
        except DtnodeError as exc:
            measured.append(replace(entry, error=f"{type(exc).__name__}: {exc}"))
            progress(f"round {entry.round + 1}/{job.params.rounds}: not measured: {exc}")
            continue
        measured.append(done)
        name, value = done.metric or ("accuracy", 0.0)
        progress(f"round {entry.round + 1}/{job.params.rounds}: {name} {value:.4g} on "
                 f"{len(eval_set)} held-out samples (checkpoint {entry.checkpoint_cid}, leader {entry.leader})")
    return spec.eval_cid, len(eval_set), measured


async def measure_round(content: ContentNode, entry: RoundEntry, spec: JobSpec, eval_set: ArraySet) -> RoundEntry:
    """``entry`` with its checkpoint's accuracy and loss on ``eval_set``.

    The checkpoint is fetched by CID (verified) from the leader that committed it first: it holds it, and a peer
    that left (a killed leader) costs a stall timeout when asked. Raises the fetch's or the decoder's
    :class:`~protocols.errors.DtnodeError`.
    """
    data = await content.fetch(entry.checkpoint_cid, max_bytes=content_limits(spec).checkpoint_bytes,
                               what=f"round {entry.round + 1} checkpoint", providers=[entry.leader])
    accuracy, loss = await evaluate_checkpoint(data, spec, eval_set)
    return replace(entry, accuracy=accuracy, loss=loss, metric=headline(spec.task, accuracy, loss))
