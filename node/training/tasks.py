"""Task factory: size a micro-task for a node's class so every class takes about the same wall time.

A node registers with a class (S, M or L, on-chain as 0, 1, 2), measured at start-up
(:mod:`node.training.calibrate`, mapped by :func:`class_for_throughput`). Each class promises a throughput in
training samples per second on the reference model and an amount of memory. The factory scales the work
of the reference class (``base_steps`` × ``batch_size``) by the throughput ratio, so
``expected_seconds = steps · batch_size / samples_per_s`` is about equal for all classes. By default the extra work
goes into larger batches (K, the number of local steps, stays equal across classes, which keeps deltas of
comparable magnitude for the outer optimizer); batches are capped by the class's memory, and what does not fit
goes into more steps. A delta's aggregation weight is the work it represents: the number of samples processed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from node.training.errors import TrainingError
from protocols.types import NodeClass


@dataclass(frozen=True)
class Capacity:
    """What a node class promises: sustained training throughput and memory available to a task."""

    samples_per_s: int
    memory_mb: int


# Nominal tiers, 1×/2×/4×: S is one CPU core on the CNN (measured here ~2,500-3,500 samples/s at batch 32).
_CAPACITY: dict[NodeClass, Capacity] = {
    NodeClass.S: Capacity(samples_per_s=2_000, memory_mb=1_024),
    NodeClass.M: Capacity(samples_per_s=4_000, memory_mb=2_048),
    NodeClass.L: Capacity(samples_per_s=8_000, memory_mb=4_096),
}


def capacity(node_class: NodeClass) -> Capacity:
    """What ``node_class`` promises (the classes themselves are :class:`protocols.types.NodeClass`)."""
    return _CAPACITY[node_class]


def class_for_throughput(samples_per_s: float) -> NodeClass:
    """The class a node that measured ``samples_per_s`` on the reference workload can promise: the largest whose
    :attr:`Capacity.samples_per_s` it reaches. A node slower than class S's promise is still S (the smallest class
    there is; its tasks simply take longer than the nominal time)."""
    reached = [c for c in NodeClass if samples_per_s >= _CAPACITY[c].samples_per_s]
    return max(reached) if reached else NodeClass.S

# Samples per batch a class may use per MiB of memory (activations + gradients of the reference CNN at batch 1
# are ~0.1 MiB; 4× headroom).
_BATCH_PER_MB = 2


@dataclass(frozen=True)
class TaskSize:
    """A sized micro-task: ``steps`` of ``batch_size``, ``num_samples`` = steps × batch, aggregation ``weight``."""

    steps: int
    batch_size: int
    num_samples: int
    weight: int

    def expected_seconds(self, node_class: NodeClass) -> float:
        return self.num_samples / capacity(node_class).samples_per_s


@dataclass(frozen=True, kw_only=True)
class TaskFactory:
    """Sizes tasks relative to ``reference`` (the class that gets exactly ``base_steps`` × ``batch_size``)."""

    base_steps: int
    batch_size: int
    reference: NodeClass = NodeClass.S
    scale: Literal["batch", "steps"] = "batch"
    max_batch_size: int = 1024

    def __post_init__(self) -> None:
        if self.base_steps < 1 or self.batch_size < 1:
            raise TrainingError(f"base_steps and batch_size must be >= 1, got {self.base_steps}, {self.batch_size}")
        if self.scale not in ("batch", "steps"):
            raise TrainingError(f"scale must be 'batch' or 'steps', got {self.scale!r}")

    def size(self, node_class: NodeClass) -> TaskSize:
        ratio = capacity(node_class).samples_per_s / capacity(self.reference).samples_per_s
        work = round(self.base_steps * self.batch_size * ratio)
        if self.scale == "steps":
            batch = self.batch_size
        else:
            cap = min(self.max_batch_size, capacity(node_class).memory_mb * _BATCH_PER_MB)
            batch = max(1, min(round(self.batch_size * ratio), cap))
        steps = max(1, math.ceil(work / batch))
        return TaskSize(steps=steps, batch_size=batch, num_samples=steps * batch, weight=steps * batch)
