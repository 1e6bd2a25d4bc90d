"""Start-up calibration: measure this node's training throughput and turn it into its node class (S, M, L).

A class is a promise of throughput (:data:`node.training.tasks.capacity`) that the leader sizes tasks by, so it is
measured, not declared: a few segments of the reference workload (the CNN the class table is stated for, batch 32,
AdamW, on synthetic Fashion-MNIST-shaped data) run through the very code a task runs (:func:`run_segment`, under
:func:`deterministic_torch`, one thread on the CPU), on the node's device, for about :data:`CALIBRATION_SECONDS`.
:func:`~node.training.tasks.class_for_throughput` maps the figure to a class.

An operator may still name a class (``--class``), but only a smaller one than measured (a node shared with other
work, or a steadier promise): :func:`settle_class` caps a declared class at the measured one, because a node that
promises more than it delivers misses its tickets' deadlines. Nothing here touches the network or the chain.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from node.training.data import ArraySet
from node.training.device import CPU
from node.training.local import deterministic_torch, initial_trainer_state, run_segment
from node.training.models import initial_state
from node.training.task import Task
from node.training.tasks import class_for_throughput
from protocols.types import NodeClass

REFERENCE_MODEL = "fmnist-cnn-v1"
"""The workload :data:`node.training.tasks.capacity` states its samples per second for."""
REFERENCE_BATCH = 32
CALIBRATION_SECONDS = 1.5
"""Long enough to amortise the warm-up and timer noise (2026-12, this shared 2-core machine under a load of ~10:
two runs measured 550 and 880 samples/s, both class S; the spread is the machine's, not the benchmark's)."""
_SEGMENT_STEPS = 10
_SAMPLES = 2048


@dataclass(frozen=True)
class Calibration:
    """What the start-up benchmark measured on ``device``, and the class that throughput earns."""

    device: str
    steps: int
    seconds: float
    samples_per_s: float
    measured_class: NodeClass


def measure_throughput(device: str = CPU, *, seconds: float = CALIBRATION_SECONDS, seed: int = 0) -> Calibration:
    """Train the reference workload on ``device`` (a kind) for about ``seconds`` (after one warm-up segment, which
    pays for the first-call costs: allocator, kernel loading, cuDNN handles) and report the throughput."""
    rng = np.random.default_rng(seed)
    data = ArraySet(rng.integers(0, 256, size=(_SAMPLES, 28, 28), dtype=np.uint8),
                    rng.integers(0, 10, size=_SAMPLES).astype(np.uint8))
    task = Task(model_name=REFERENCE_MODEL, steps=1_000_000, batch_size=REFERENCE_BATCH, lr=1e-3, seed=seed,
                segment_every=_SEGMENT_STEPS)
    state = initial_trainer_state(initial_state(REFERENCE_MODEL, seed))
    with deterministic_torch(device=device):
        state = run_segment(task, state, data, 0, device=device)
        steps, index = 0, 1
        start = time.perf_counter()
        # run_segment ends with a copy to the CPU, so a CUDA segment's time includes its kernels (no extra sync).
        while (elapsed := time.perf_counter() - start) < seconds or steps == 0:
            state = run_segment(task, state, data, index, device=device)
            steps += _SEGMENT_STEPS
            index += 1
    rate = steps * REFERENCE_BATCH / elapsed
    return Calibration(device=device, steps=steps, seconds=elapsed, samples_per_s=rate,
                       measured_class=class_for_throughput(rate))


def settle_class(measured: NodeClass, declared: NodeClass | None) -> NodeClass:
    """The class a node registers with: the measured one, or a declared one capped at it (a node may promise less
    than it measured, never more)."""
    return measured if declared is None else min(measured, declared)

