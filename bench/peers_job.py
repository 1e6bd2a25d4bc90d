"""The job ``bench_peers.py`` runs three ways, as pure functions shared by the one-process and Flower sides.

What the devnet derives from the chain and the signed tickets is derived here from the same rules, so that the
three sides train the same tasks on the same bytes: the dataset cut into 16 shards as ``dtnode dataset add`` cuts it
(:func:`node.training.data.make_shards`, then through the shard codec), the evaluation shard (the first 2,000 test
images), the initial checkpoint from the spec's seed, the task of slot ``s`` in round ``r`` from
:func:`~node.training.ticket_check.ticket_shard` and :func:`~node.training.ticket_check.ticket_seed` (the job's id is
1: the first job on a fresh contract), every delta through the ``f32`` codec, and the round's checkpoint from the
spec's strategy. Each round's result is its checkpoint's CID (as the leader publishes it), accuracy and loss.

Also here: the comparison of the three sides' rounds, and the figures taken from a side's rounds.

Never imports ``flwr``: the test command runs without it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from node.checkpoint import encode_checkpoint
from node.devnet.demos import get_demo
from node.devnet.plan import demo_spec
from node.training.aggregate import strategy_from_spec
from node.training.data import ArraySet, decode_shard, encode_shard, make_shards
from node.training.evaluate import evaluate
from node.training.local import train_local
from node.training.models import State, initial_state, model_ref
from node.training.task import Task, task_size
from node.training.ticket_check import ticket_seed, ticket_shard
from protocols.specs import JobSpec
from protocols.types import NodeClass
from storage.cid import cid_to_str
from storage.unixfs import import_chunks, rechunk

JOB_ID = 1
"""The devnet's job: the first on a fresh contract (job ids start at 1). Every task's seed depends on it."""
SHARDS = 16
EVAL_SAMPLES = 2000
TARGET = 0.88
NODE_CLASS = NodeClass.M
"""The devnet's trainers' class (its plan's default): the class of every task here."""


LARGE_MODEL_LEASE_S = 3600
"""The lease of a job on a model other than the demo's CNN: an 11M-parameter task on these 2 cores takes minutes
(the demo's 300 s lease would end inside a round)."""


def peer_spec(*, model: str = "fmnist-cnn-v1", rounds: int = 12, trainers: int = 4, local_steps: int = 100) -> JobSpec:
    """The demo job (``make demo``'s spec) with ``rounds``, and ``model`` for the ~10M-parameter variant."""
    if model == "fmnist-cnn-v1":
        return demo_spec(rounds=rounds, trainers=trainers, local_steps=local_steps)
    spec = demo_spec(rounds=rounds, trainers=trainers, model=model, local_steps=local_steps,
                     lease_seconds=LARGE_MODEL_LEASE_S)
    # The demo's AdamW 1e-3 raised resnet18-small-v1's loss past +20% in 2 of 4 first-round tasks of K=10: dtnode
    # would withhold (and validators reject) those, the other sides aggregate them. The comparison needs one job.
    return replace(spec, max_loss_rise_ppm=10**9)


@dataclass(frozen=True, eq=False)
class PeerJob:
    """Everything a side needs to train the job, as the devnet's nodes would have it after fetching by CID."""

    spec: JobSpec
    shards: list[ArraySet | None]
    """In the dataset manifest's order (the order :func:`ticket_shard` indexes); None: a shard this side does not
    hold."""
    held_out: ArraySet
    """The evaluation shard: each round's checkpoint is scored on it."""
    job_id: int = JOB_ID

    def slot_task(self, round_: int, slot: int) -> tuple[Task, ArraySet]:
        """The task (as :meth:`Task.from_ticket` builds it from the leader's ticket) and shard of one slot."""
        shard = self.shards[slot_shard_index(self.spec, round_, slot, len(self.shards))]
        assert shard is not None, f"round {round_} slot {slot}: its shard was not loaded"
        size = task_size(self.spec, NODE_CLASS)
        task = Task(model_name=model_ref(self.spec), steps=size.steps, batch_size=size.batch_size,
                    lr=float(self.spec.inner_lr), seed=ticket_seed(self.spec, self.job_id, round_, slot),
                    segment_every=self.spec.segment_every, optimizer=self.spec.inner_optimizer,
                    sample_range=(0, len(shard)), task_type=self.spec.task, loss_samples=self.spec.loss_samples)
        return task, shard

    @property
    def weight(self) -> float:
        """A delta's aggregation weight: the ticket's (samples processed by a class-M task)."""
        return float(task_size(self.spec, NODE_CLASS).weight)


def slot_shard_index(spec: JobSpec, round_: int, slot: int, shards: int = SHARDS) -> int:
    """Which shard slot ``slot`` of round ``round_`` trains (:func:`ticket_shard` over stand-ins for the manifest's
    shard CIDs: only their order matters)."""
    return int(ticket_shard([str(i) for i in range(shards)], spec, round_, slot))


def _through_codec(part: ArraySet) -> ArraySet:
    return decode_shard(encode_shard(part))


def load_job(spec: JobSpec, *, demo: str = "fmnist", shards: int = SHARDS, eval_samples: int = EVAL_SAMPLES,
             keep: Callable[[int], bool] | None = None) -> PeerJob:
    """The demo's data cut as the devnet's customer cuts it; ``keep``: which shard indices to hold (a Flower client
    holds only its slot's), the others are None."""
    loaded = get_demo(demo).load_data(spec.seed)
    assert loaded.test is not None, "the peer benchmark runs on a dataset with a test split"
    parts = make_shards(loaded.train, shards, iid=True, alpha=0.5, seed=spec.seed)
    kept = [_through_codec(p) if keep is None or keep(i) else None for i, p in enumerate(parts)]
    held_out = _through_codec(loaded.test.subset(np.arange(min(eval_samples, len(loaded.test)), dtype=np.int64)))
    return PeerJob(spec=spec, shards=kept, held_out=held_out)


def initial_model(spec: JobSpec) -> State:
    return initial_state(model_ref(spec), spec.seed)


def train_slot(job: PeerJob, round_: int, slot: int, base: Mapping[str, torch.Tensor]) -> State:
    """One task's delta (blocking). No codec: the spec's ``f32`` encoding is lossless, which the comparison with the
    devnet's checkpoint CIDs checks."""
    task, shard = job.slot_task(round_, slot)
    return train_local(task, base, shard).delta


def aggregate(job: PeerJob, base: Mapping[str, torch.Tensor], deltas: Sequence[State],
              outer: Mapping[str, torch.Tensor] | None) -> tuple[State, State]:
    """The round's model and outer state, as :func:`node.checkpoint.aggregate_checkpoint` computes them."""
    return strategy_from_spec(job.spec.aggregation).apply(base, [(d, job.weight) for d in deltas], outer or {})


def checkpoint_cid(model: Mapping[str, torch.Tensor], outer: Mapping[str, torch.Tensor] | None) -> str:
    """The CID the leader would publish the checkpoint under (UnixFS, CIDv1, raw leaves)."""
    data = encode_checkpoint(model, outer or None)
    return str(cid_to_str(import_chunks(rechunk([data]), lambda _cid, _block: None).root))


@dataclass(frozen=True)
class RoundMetric:
    round: int
    """1-based."""
    cid: str
    accuracy: float
    loss: float
    t_s: float
    """Seconds from the job's submission until the round's checkpoint was known (and scored)."""

    def key(self) -> tuple[str, float, float]:
        return self.cid, self.accuracy, self.loss


def score(job: PeerJob, round_: int, model: Mapping[str, torch.Tensor], outer: Mapping[str, torch.Tensor] | None,
          since: float) -> RoundMetric:
    accuracy, loss = evaluate(model_ref(job.spec), model, job.held_out, task=job.spec.task)
    return RoundMetric(round_ + 1, checkpoint_cid(model, outer), accuracy, loss, time.monotonic() - since)


@dataclass
class Busy:
    """Seconds per activity in one process (training, aggregation, evaluation, ...)."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, what: str, seconds: float) -> None:
        self.seconds[what] = self.seconds.get(what, 0.0) + seconds


def run_one_process(job: PeerJob, *, on_round: Callable[[RoundMetric], None] | None = None,
                    busy: Busy | None = None) -> list[RoundMetric]:
    """The job in this process, the tasks of a round one after another (the reference)."""
    busy = busy or Busy()
    since = time.monotonic()
    model, outer = initial_model(job.spec), None
    rounds: list[RoundMetric] = []
    for r in range(job.spec.rounds):
        began = time.monotonic()
        deltas = [train_slot(job, r, s, model) for s in range(job.spec.tasks_per_round)]
        trained = time.monotonic()
        model, outer = aggregate(job, model, deltas, outer)
        aggregated = time.monotonic()
        metric = score(job, r, model, outer, since)
        busy.add("training", trained - began)
        busy.add("aggregation", aggregated - trained)
        busy.add("evaluation", time.monotonic() - aggregated)
        rounds.append(metric)
        if on_round is not None:
            on_round(metric)
    return rounds


# -- comparing and summarising sides --------------------------------------------------------------------------------


def divergences(sides: Mapping[str, Sequence[RoundMetric]], *, reference: str) -> list[str]:
    """Every round where a side's (CID, accuracy, loss) is not the reference side's, bit for bit, and every side
    with another number of rounds: each line a bug report (the three sides must train the same job)."""
    ref = list(sides[reference])
    problems: list[str] = []
    for name, rounds in sides.items():
        if name == reference:
            continue
        if len(rounds) != len(ref):
            problems.append(f"{name}: {len(rounds)} rounds, {reference}: {len(ref)} rounds")
        for mine, theirs in zip(rounds, ref, strict=False):
            if mine.key() != theirs.key():
                problems.append(f"{name} round {mine.round}: checkpoint {mine.cid[-10:]} accuracy {mine.accuracy!r} "
                                f"loss {mine.loss!r}; {reference}: {theirs.cid[-10:]} {theirs.accuracy!r} "
                                f"{theirs.loss!r}")
    return problems


def time_to_target(rounds: Sequence[RoundMetric], target: float = TARGET) -> tuple[int, float] | None:
    """(round, seconds since submission) of the first round at or above ``target``; None if none is."""
    hit = next((m for m in rounds if m.accuracy >= target), None)
    return (hit.round, hit.t_s) if hit is not None else None


def steady_round_s(rounds: Sequence[RoundMetric]) -> float | None:
    """The median time between consecutive rounds from round 2 on (round 1 carries the start-up); None under 2."""
    gaps = [b.t_s - a.t_s for a, b in zip(rounds, rounds[1:], strict=False)]
    return statistics.median(gaps) if gaps else None
