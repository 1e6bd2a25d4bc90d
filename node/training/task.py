"""The one task type: everything besides the base checkpoint and the shard that determines a local training run.

A trainer and every validator replaying its work must derive the same :class:`Task` from the same signed ticket,
or no replay matches; :meth:`Task.from_ticket` is therefore the only place a ticket and its job's spec become a
task. :func:`task_size` is the only place a node class becomes a task's size (the leader's tickets and every
ticket check use it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from node.training.errors import TrainingError
from node.training.models import ModelRef, model_ref
from node.training.objective import check_spec_task
from node.training.tasks import TaskFactory, TaskSize
from protocols.specs import LOSS_SAMPLES, TASK_TYPES, JobSpec, TaskTicket
from protocols.types import NodeClass

OPTIMIZERS: tuple[str, ...] = ("adamw", "sgd")
MAX_SEGMENT_EVERY = 10


def task_size(spec: JobSpec, node_class: NodeClass) -> TaskSize:
    """The steps, batch size and weight of a task for ``node_class`` in the job of ``spec``.

    The spec's ``local_steps`` × ``batch_size`` is class M's task; S and L get the same batch and half or twice the
    steps (``scale="steps"`` keeps every delta's batch statistics comparable across classes).
    """
    return TaskFactory(base_steps=spec.local_steps, batch_size=spec.batch_size, reference=NodeClass.M,
                       scale="steps").size(node_class)


def work_units(spec: JobSpec, node_class: NodeClass) -> int:
    """What the chain pays a task of ``node_class`` for (the ticket's ``work_units``): its size in units of the
    smallest class's task (S 1, M 2, L 4 with the spec's step scaling)."""
    smallest = task_size(spec, NodeClass.S).weight
    return max(1, round(task_size(spec, node_class).weight / smallest))


def max_work_units(spec: JobSpec) -> int:
    """The job's ``maxWorkUnits``: the largest class's work units."""
    return max(work_units(spec, c) for c in NodeClass)


@dataclass(frozen=True, kw_only=True)
class Task:
    """A deterministic local training run: ``steps`` of ``batch_size`` over ``sample_range`` of a shard.

    Raises :class:`TrainingError` on construction when a value is out of range (a validator turns that into a
    ``BAD_TASK`` verdict).
    """

    model_name: ModelRef
    """The architecture (:func:`node.training.models.model_ref`: a bare name for a spec without model section)."""
    steps: int
    batch_size: int
    lr: float
    seed: int
    segment_every: int = MAX_SEGMENT_EVERY
    optimizer: str = "adamw"
    sample_range: tuple[int, int] | None = None
    """``[start, stop)`` of the shard's samples; ``None`` for the whole shard."""
    task_type: str = "classification"
    """The spec's ``task``: which loss trains it (:func:`node.training.objective.objective_for`)."""
    loss_samples: int = LOSS_SAMPLES
    """The spec's ``loss_samples``: how many of the range's first samples the task's two losses are measured on."""

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise TrainingError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise TrainingError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 1 <= self.segment_every <= MAX_SEGMENT_EVERY:
            raise TrainingError(f"segment_every must be in 1..{MAX_SEGMENT_EVERY}, got {self.segment_every}")
        if self.optimizer not in OPTIMIZERS:
            raise TrainingError(f"unknown optimizer {self.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise TrainingError(f"lr must be a positive finite number, got {self.lr}")
        if self.loss_samples < 1:
            raise TrainingError(f"loss_samples must be >= 1, got {self.loss_samples}")
        if self.task_type not in TASK_TYPES:
            raise TrainingError(f"unknown task type {self.task_type!r}; expected one of {', '.join(TASK_TYPES)}")

    @classmethod
    def from_ticket(cls, spec: JobSpec, ticket: TaskTicket) -> Task:
        """The task a signed ticket hands out in the job of ``spec`` (the ticket itself is checked elsewhere:
        :func:`node.training.ticket_check.check_ticket`). Raises :class:`TrainingError` if the spec's task is not
        its model's."""
        check_spec_task(spec.task, model_ref(spec))
        return cls(model_name=model_ref(spec), steps=ticket.steps, batch_size=ticket.batch_size,
                   lr=float(spec.inner_lr), seed=ticket.seed, segment_every=spec.segment_every,
                   optimizer=spec.inner_optimizer,
                   sample_range=(ticket.sample_start, ticket.sample_start + ticket.sample_count),
                   task_type=spec.task, loss_samples=spec.loss_samples)

    @property
    def n_segments(self) -> int:
        return math.ceil(self.steps / self.segment_every)

    def segment_bounds(self, index: int) -> tuple[int, int]:
        """Steps ``[start, stop)`` of segment ``index``."""
        if not 0 <= index < self.n_segments:
            raise TrainingError(f"segment {index} out of range 0..{self.n_segments - 1}")
        start = index * self.segment_every
        return start, min(start + self.segment_every, self.steps)
