"""Customer actions: publish a dataset, post a job with its deposit, follow it, fetch the final weights.

The customer's content (dataset shards, the evaluation shard, the initial checkpoint and the spec) is added to its
own block store and served to the network by its node; only CIDs go on-chain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import trio

from node.checkpoint import decode_checkpoint, initial_checkpoint
from node.training.data import ArraySet, encode_shard, load_fashion_mnist, make_shards
from node.training.evaluate import evaluate
from protocols.chain.client import JobManagerClient
from protocols.chain.models import JobInfo, JobParams
from protocols.errors import DtnodeError
from protocols.specs import JobSpec
from storage.content import ContentStore
from storage.dataset import publish_dataset

FASHION_MNIST_LICENCE = "Fashion-MNIST, (c) Zalando SE, MIT licence; from Debian's dataset-fashion-mnist"


@dataclass(frozen=True)
class PublishedData:
    dataset_cid: str
    eval_cid: str
    shards: int
    train_samples: int
    eval_samples: int


async def publish_fashion_mnist(store: ContentStore, *, shards: int = 16, eval_samples: int = 2000,
                                non_iid_alpha: float | None = None, seed: int = 0,
                                root: str | None = None) -> PublishedData:
    """Shard Fashion-MNIST's training set into the store, plus an evaluation shard from the test set."""
    train, test = await trio.to_thread.run_sync(lambda: load_fashion_mnist(root))
    parts = make_shards(train, shards, iid=non_iid_alpha is None, alpha=non_iid_alpha or 0.5, seed=seed)
    encoded = [await trio.to_thread.run_sync(encode_shard, p) for p in parts]
    dataset_cid = await publish_dataset(store, encoded, [len(p) for p in parts], "fashion-mnist-idx/shard-v1",
                                        FASHION_MNIST_LICENCE)
    held_out = eval_subset(test, eval_samples)
    eval_cid = await store.put(encode_shard(held_out))
    return PublishedData(dataset_cid, eval_cid, shards, len(train), len(held_out))


def job_params(spec: JobSpec, spec_cid: str) -> JobParams:
    pay = spec.payment
    return JobParams(
        spec_cid=spec_cid,  # type: ignore[arg-type]
        rounds=spec.rounds, tasks_per_round=spec.tasks_per_round, local_steps=spec.local_steps,
        quorum=pay.quorum, base_rate=pay.base_rate_wei, bonus_rate=pay.bonus_rate_wei,
        validator_fee=pay.validator_fee_wei, leader_fee=pay.leader_fee_wei, lease_seconds=pay.lease_seconds,
    )


async def post_job(store: ContentStore, client: JobManagerClient, spec: JobSpec, *,
                   chain_timeout_s: float = 60.0) -> tuple[int, str, int]:
    """Publish the initial checkpoint and the spec, then ``createJob`` with exactly the required deposit.

    Returns ``(job id, spec CID, deposit)``. The spec must already name its dataset and evaluation CIDs.
    """
    if not spec.dataset_cid or not spec.eval_cid:
        raise DtnodeError("job spec: set dataset_cid and eval_cid (from `dtnode dataset add`) before creating")
    ckpt_cid = await store.put(initial_checkpoint(spec.model, spec.seed))
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
    data = await store.get(job.last_checkpoint_cid, max_bytes=spec.max_dag_bytes, timeout_s=timeout_s)
    return checkpoint_model(data, spec)


def checkpoint_model(data: bytes, spec: JobSpec) -> dict[str, torch.Tensor]:
    """A checkpoint's model weights (its outer-optimizer state dropped), validated against the job's model."""
    model, _ = decode_checkpoint(data, spec.model, max_bytes=spec.max_dag_bytes)
    return model


async def evaluate_checkpoint(data: bytes, spec: JobSpec, eval_set: ArraySet) -> tuple[float, float]:
    """(accuracy, loss) of a checkpoint's model on ``eval_set``, computed in a worker thread."""
    model = checkpoint_model(data, spec)
    return await trio.to_thread.run_sync(lambda: evaluate(spec.model, model, eval_set))


def eval_subset(test: ArraySet, n: int) -> ArraySet:
    return test.subset(np.arange(min(n, len(test)), dtype=np.int64))
