"""In-process federated simulation: N trainers, K local steps, a strategy, IID or label-skewed shards.

No network, no chain: the same functions the roles call (:func:`train_local`, :meth:`Strategy.apply`,
:func:`evaluate`), in one process, one trainer after another. "Parallel" wall time is simulated as the sum over
rounds of the slowest trainer's time plus the aggregation time, i.e. what N machines working at once would take.
Used by the tests, ``bench/bench_training.py`` and the network-vs-in-process benchmark.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from node.training.aggregate import Strategy, strategy_from_spec
from node.training.codec import State
from node.training.data import ArraySet, make_shards
from node.training.errors import TrainingError
from node.training.evaluate import evaluate
from node.training.local import train_local
from node.training.models import ModelRef, initial_state
from node.training.task import Task
from protocols.specs import AggregationSpec


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """One federated experiment. Defaults: the settings measured fastest to 88% (CNN, DiLoCo, 4 trainers, K=50)."""

    model_name: ModelRef = "fmnist-cnn-v1"
    task_type: str = "classification"
    """The spec's ``task``: its loss trains, its objective evaluates."""
    n_trainers: int = 4
    local_steps: int = 50
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adamw"
    strategy: Strategy = field(default_factory=lambda: strategy_from_spec(AggregationSpec()))
    """The job spec's default: DiLoCo (mean + Nesterov outer step)."""
    iid: bool = True
    alpha: float = 0.5
    rounds: int = 20
    seed: int = 0
    segment_every: int = 10
    target_accuracy: float | None = None
    """Stop after the first round whose test accuracy reaches this."""
    eval_samples: int | None = None


@dataclass(frozen=True)
class RoundRecord:
    """Measurements after one round (cumulative counters include this round)."""

    round: int
    accuracy: float
    loss: float
    steps: int
    """Local optimizer steps by all trainers so far."""
    samples: int
    compute_s: float
    """Training + aggregation CPU time so far (all trainers added up)."""
    parallel_s: float
    """Simulated wall time so far with the trainers running at once."""
    mean_loss_after: float


@dataclass(frozen=True, eq=False)
class SimResult:
    config: SimConfig
    history: list[RoundRecord]
    final_state: State

    @property
    def reached(self) -> RoundRecord | None:
        """The first round that reached ``config.target_accuracy`` (None if none did, or no target)."""
        target = self.config.target_accuracy
        if target is None:
            return None
        return next((r for r in self.history if r.accuracy >= target), None)


def trainer_seed(seed: int, round_: int, trainer: int) -> int:
    """The batch-order seed of one trainer's task in one round."""
    return (seed * 1_000_003 + round_ * 10_007 + trainer) % (1 << 63)


def simulate(
    train: ArraySet,
    test: ArraySet,
    config: SimConfig,
    *,
    shards: list[ArraySet] | None = None,
    on_round: Callable[[RoundRecord], None] | None = None,
    start_state: State | None = None,
) -> SimResult:
    """Run ``config.rounds`` federated rounds (or until ``target_accuracy``) and evaluate after each, from
    ``start_state`` (a customer's pre-trained weights) or the seed's initial state."""
    if config.n_trainers < 1 or config.rounds < 1:
        raise TrainingError("simulation needs at least one trainer and one round")
    if shards is None:
        shards = make_shards(train, config.n_trainers, iid=config.iid, alpha=config.alpha, seed=config.seed)
    if len(shards) != config.n_trainers:
        raise TrainingError(f"{len(shards)} shards for {config.n_trainers} trainers")
    state = dict(start_state) if start_state is not None else initial_state(config.model_name, config.seed)
    outer: State = {}
    history: list[RoundRecord] = []
    steps = samples = 0
    compute = parallel = 0.0
    for rnd in range(config.rounds):
        weighted: list[tuple[State, float]] = []
        slowest = 0.0
        losses = []
        for t, shard in enumerate(shards):
            start = time.perf_counter()
            task = Task(model_name=config.model_name, steps=config.local_steps, batch_size=config.batch_size,
                        lr=config.lr, seed=trainer_seed(config.seed, rnd, t), segment_every=config.segment_every,
                        optimizer=config.optimizer, task_type=config.task_type)
            result = train_local(task, state, shard)
            took = time.perf_counter() - start
            compute += took
            slowest = max(slowest, took)
            weighted.append((result.delta, float(config.local_steps * config.batch_size)))
            losses.append(result.loss_after)
            steps += config.local_steps
            samples += config.local_steps * config.batch_size
        start = time.perf_counter()
        state, outer = config.strategy.apply(state, weighted, outer)
        took = time.perf_counter() - start
        compute += took
        parallel += slowest + took
        accuracy, loss = evaluate(config.model_name, state, test, max_samples=config.eval_samples,
                                  task=config.task_type)
        record = RoundRecord(rnd + 1, accuracy, loss, steps, samples, compute, parallel, sum(losses) / len(losses))
        history.append(record)
        if on_round is not None:
            on_round(record)
        if config.target_accuracy is not None and accuracy >= config.target_accuracy:
            break
    return SimResult(config, history, state)
