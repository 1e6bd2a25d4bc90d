"""Deterministic local training: K steps from a base checkpoint on a shard, with replayable segment checkpoints.

Determinism on CPU comes from: one intra-op thread (``torch.set_num_threads(1)``), deterministic algorithms, no
randomness inside the model (no dropout), and a batch order that is a pure function of ``(seed, step)``: sample
position ``p = step · batch_size + j`` reads index ``perm_e[p mod n]`` of epoch ``e = p // n``, where ``perm_e`` is
the permutation drawn by ``numpy.random.default_rng([seed, e])``. Any segment can therefore be replayed without
replaying the steps before it.

Every ``segment_every`` steps (and after the last step) the *trainer state* (model weights under ``model/`` and
optimizer moments under ``optim/``) is recorded with its :func:`~node.training.codec.state_hash`. Training itself
runs segment by segment from those exported states, so the trainer and a validator replaying a segment go through
exactly the same code path. Measured here: two processes with the same settings give bitwise-identical weights.

Never call this from a trio thread that shares the process with other torch work in parallel: the thread count and
the deterministic-algorithms flag are process-wide (they are restored on exit).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from node.training.codec import State, state_hash, state_sub
from node.training.data import ArraySet
from node.training.device import CPU, CUDA, cuda_deterministic, to_cpu, torch_device
from node.training.errors import TrainingError
from node.training.models import build_model
from node.training.objective import objective_for
from node.training.task import Task

EVAL_CHUNK = 64
"""Samples per forward pass when scoring (losses, evaluation). Measured on one CPU thread: the CNN scores 1,024
samples 2.6x faster in chunks of 64 than of 512 (activations stay in cache); loss checks dominated replay cost."""
MODEL_PREFIX, OPTIM_PREFIX = "model/", "optim/"
MICRO = 1_000_000


def loss_to_micro(loss: float) -> int:
    """A loss as integer micro-units, for canonical JSON (which forbids floats): ``round(loss · 1e6)``."""
    if not math.isfinite(loss):
        raise TrainingError(f"loss {loss} is not finite")
    return round(loss * MICRO)


def micro_to_loss(micro: int) -> float:
    """Inverse of :func:`loss_to_micro` (to within 5e-7)."""
    return micro / MICRO


@dataclass(frozen=True, eq=False)
class LocalResult:
    """What a trainer publishes: the delta, losses, and the segment checkpoints with their hashes."""

    delta: State
    final_state: State
    loss_before: float
    loss_after: float
    segment_hashes: list[str]
    segment_states: list[State] = field(repr=False)

    @property
    def loss_before_micro(self) -> int:
        return loss_to_micro(self.loss_before)

    @property
    def loss_after_micro(self) -> int:
        return loss_to_micro(self.loss_after)


_TORCH_SETTINGS = threading.RLock()
"""Both settings are process-wide: two worker threads that interleave enter/exit would leave them changed (and
could train with another thread count mid-task). One deterministic computation at a time per process."""


@contextmanager
def deterministic_torch(threads: int = 1, *, device: str = CPU) -> Iterator[None]:
    """Run the body with ``threads`` intra-op threads and deterministic algorithms; restore both after. On a
    ``cuda`` device also CUDA's reproducible settings (:func:`node.training.device.cuda_deterministic`).

    Serialised per process by a lock (re-entrant, so nested use is fine): the settings are global.
    """
    with _TORCH_SETTINGS:
        prev_threads = torch.get_num_threads()
        prev_det = torch.are_deterministic_algorithms_enabled()
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True)
        try:
            if device == CUDA:
                with cuda_deterministic():
                    yield
            else:
                yield
        finally:
            torch.use_deterministic_algorithms(prev_det)
            torch.set_num_threads(prev_threads)


def warm_up() -> None:
    """Load what a process's first deterministic computation loads: ``torch.use_deterministic_algorithms`` imports
    torch's compiler stack (~900 modules: 6 s for one process, 22 s for four starting at once on two busy
    cores). Nodes call it in a worker thread at start-up, so their first task or replay does not pay for it on the
    round's clock (blocking)."""
    with deterministic_torch():
        pass


def task_view(shard: ArraySet, sample_range: tuple[int, int] | None) -> ArraySet:
    """The samples a task trains on: ``shard[start:stop]`` or the whole shard."""
    if sample_range is None:
        return shard
    start, stop = sample_range
    if not 0 <= start < stop <= len(shard):
        raise TrainingError(f"sample range {sample_range} is outside the shard's 0..{len(shard)}")
    return shard.subset(slice(start, stop))


class BatchSchedule:
    """Random-access batch order: the indices of step ``t`` depend only on ``(seed, t, batch_size, n)``."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self._n, self._batch, self._seed = n, batch_size, seed
        self._perms: dict[int, npt.NDArray[np.int64]] = {}

    def _perm(self, epoch: int) -> npt.NDArray[np.int64]:
        perm = self._perms.get(epoch)
        if perm is None:
            perm = np.random.default_rng([self._seed, epoch]).permutation(self._n).astype(np.int64)
            self._perms = {epoch: perm}  # keep one epoch: steps are visited in order
        return perm

    def indices(self, step: int) -> npt.NDArray[np.int64]:
        positions = np.arange(step * self._batch, (step + 1) * self._batch, dtype=np.int64)
        out = np.empty(self._batch, dtype=np.int64)
        epochs = positions // self._n
        for epoch in np.unique(epochs):
            mask = epochs == epoch
            out[mask] = self._perm(int(epoch))[positions[mask] % self._n]
        return out


def _param_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_parameters()]


def _make_optimizer(task: Task, model: nn.Module) -> torch.optim.Optimizer:
    # Every hyper-parameter pinned explicitly (and the plain for-loop kernels, not foreach/fused), so a default
    # changing in a future torch cannot silently change the bits.
    if task.optimizer == "adamw":
        return torch.optim.AdamW(
            model.parameters(), lr=task.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
            amsgrad=False, foreach=False, fused=False, maximize=False, capturable=False, differentiable=False,
        )
    return torch.optim.SGD(model.parameters(), lr=task.lr, momentum=0.0, weight_decay=0.0, foreach=False)


def _export(model: nn.Module, optimizer: torch.optim.Optimizer) -> State:
    # CPU copies whatever the device: states are hashed and published from the CPU (node.training.device).
    out: State = {MODEL_PREFIX + k: to_cpu(v) for k, v in model.state_dict().items()}
    names = _param_names(model)
    for idx, entry in optimizer.state_dict()["state"].items():
        for fieldname, value in entry.items():
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value, dtype=torch.float32)
            out[f"{OPTIM_PREFIX}{names[idx]}/{fieldname}"] = to_cpu(tensor)
    return out


def _import(task: Task, trainer_state: Mapping[str, torch.Tensor],
            device: str = CPU) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = build_model(task.model_name)
    model_state = {k[len(MODEL_PREFIX):]: v for k, v in trainer_state.items() if k.startswith(MODEL_PREFIX)}
    try:
        model.load_state_dict(model_state, strict=True)
    except RuntimeError as exc:
        raise TrainingError(f"trainer state does not fit {task.model_name}: {exc}") from exc
    if device != CPU:
        # Before the optimizer exists: its load_state_dict moves the moments to the parameters' device (the step
        # counters stay CPU tensors, as torch keeps them for the non-fused kernels).
        model.to(torch_device(device))
    optimizer = _make_optimizer(task, model)
    names = _param_names(model)
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in trainer_state.items():
        if not key.startswith(OPTIM_PREFIX):
            continue
        pname, _, fieldname = key[len(OPTIM_PREFIX):].rpartition("/")
        if pname not in names:
            raise TrainingError(f"trainer state has optimizer entry {key!r} for no parameter of the model")
        per_param.setdefault(names.index(pname), {})[fieldname] = value.clone()
    if per_param:
        sd = optimizer.state_dict()
        sd["state"] = per_param
        optimizer.load_state_dict(sd)
    return model, optimizer


def initial_trainer_state(base_state: Mapping[str, torch.Tensor]) -> State:
    """The trainer state before step 0: the base weights and an empty optimizer."""
    return {MODEL_PREFIX + k: v.detach().clone() for k, v in sorted(base_state.items())}


def model_part(trainer_state: Mapping[str, torch.Tensor]) -> State:
    """The model weights inside a trainer state."""
    return {k[len(MODEL_PREFIX):]: v for k, v in sorted(trainer_state.items()) if k.startswith(MODEL_PREFIX)}


def run_segment(
    task: Task, start_state: Mapping[str, torch.Tensor], data: ArraySet, index: int, *, device: str = CPU
) -> State:
    """Run the steps of segment ``index`` from ``start_state`` (a trainer state) on ``device`` (a kind,
    :mod:`node.training.device`) and return the trainer state after, on the CPU.

    Call inside :func:`deterministic_torch` (with the same ``device``) for reproducible bits.
    """
    start, stop = task.segment_bounds(index)
    model, optimizer = _import(task, start_state, device)
    on = torch_device(device)
    schedule = BatchSchedule(len(data), task.batch_size, task.seed)
    objective = objective_for(task.task_type)
    model.train()
    try:
        for step in range(start, stop):
            idx = schedule.indices(step)
            inputs, targets = objective.batch(data, idx)
            if device != CPU:
                inputs, targets = inputs.to(on), targets.to(on)
            optimizer.zero_grad(set_to_none=True)
            loss = objective.loss(model, inputs, targets)
            if not torch.isfinite(loss):
                raise TrainingError(f"loss diverged to {float(loss)} at step {step}; lower the learning rate")
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    except RuntimeError as exc:
        # use_deterministic_algorithms makes an operation with no reproducible kernel on this device raise (on CUDA
        # e.g. AdaptiveAvgPool2d's backward): a task that cannot replay, not a crash of the node.
        if "deterministic" not in str(exc):
            raise
        raise TrainingError(f"{task.model_name} cannot train reproducibly on {device}: {exc}; train this job on "
                            "the CPU (--device cpu)") from exc
    return _export(model, optimizer)


def task_loss(task: Task, state: Mapping[str, torch.Tensor], data: ArraySet) -> float:
    """Mean loss (the task type's) of ``state`` on the first ``task.loss_samples`` samples of ``data`` (the task's
    range)."""
    model = build_model(task.model_name)
    model.load_state_dict(dict(state), strict=True)
    model.eval()
    with torch.no_grad():
        return objective_for(task.task_type).score(model, data, min(len(data), task.loss_samples),
                                                   EVAL_CHUNK).mean_loss


def train_local(task: Task, base_state: Mapping[str, torch.Tensor], shard: ArraySet, *,
                keep: Callable[[State], str] | None = None, device: str = CPU) -> LocalResult:
    """Train ``task.steps`` deterministic steps from ``base_state`` on ``shard`` (or the task's sample range).

    The delta is ``final - base`` (float32). ``segment_states[i]`` is the trainer state after segment ``i`` and
    ``segment_hashes[i]`` its :func:`~node.training.codec.state_hash`. With ``keep`` (e.g. the trainer's segment
    spill), each state is handed to it as soon as it is computed and its return value is the hash; the states are
    then not kept in memory (``segment_states`` is empty): a 100M-parameter task of n segments would otherwise hold
    n × 1.2 GB.

    ``device`` (a kind, :mod:`node.training.device`) is where the steps run; states, delta and losses are CPU
    tensors and CPU figures whatever it is. The losses are always computed on the CPU, so a validator recomputes
    them bit for bit whatever hardware trained the task.
    """
    data = task_view(shard, task.sample_range)
    base = {k: v.detach().clone() for k, v in sorted(base_state.items())}
    with deterministic_torch():
        loss_before = task_loss(task, base, data)
        state = initial_trainer_state(base)
        states: list[State] = []
        hashes: list[str] = []
        for index in range(task.n_segments):
            if device == CPU:
                state = run_segment(task, state, data, index)
            else:
                with deterministic_torch(device=device):
                    state = run_segment(task, state, data, index, device=device)
            if keep is None:
                states.append(state)
                hashes.append(state_hash(state))
            else:
                hashes.append(keep(state))
        final = model_part(state)
        loss_after = task_loss(task, final, data)
    return LocalResult(
        delta=state_sub(final, base),
        final_state=final,
        loss_before=loss_before,
        loss_after=loss_after,
        segment_hashes=hashes,
        segment_states=states,
    )
