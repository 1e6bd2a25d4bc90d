"""What a job trains for: the loss and the headline metric of each task type, in one place.

* ``classification``: a sample is an input and a class id; the model gives one row of logits per sample; the loss is
  cross-entropy, the metric accuracy.
* ``causal_lm``: a sample is a token sequence of ``context + 1`` ids; the model reads ids ``[0, context)`` and gives
  logits for every position; the loss is the cross-entropy of each next token (ids ``[1, context]``), the metric
  perplexity, ``exp`` of the mean loss per token.

Local training, replay and evaluation all score through this module, so a trainer and a validator compute the same
bits from the same (task, state, data). How a sample becomes a tensor is here too: uint8 inputs are pixels (scaled to
[0, 1], standardised by Fashion-MNIST's statistics, and given a channel axis when they have none), int32 inputs are
ids (int64 for embeddings), float32 inputs are taken as they are. This module never touches the network.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from node.training.data import ArraySet
from node.training.errors import TrainingError
from node.training.models import ModelRef, architecture, task_kind
from protocols.specs import TASK_TYPES

CLASSIFICATION: Final = "classification"
CAUSAL_LM: Final = "causal_lm"
# Fashion-MNIST pixel mean and std (over the training set, scaled to [0, 1]).
_MEAN, _STD = 0.2860, 0.3530


def to_inputs(inputs: np.ndarray) -> torch.Tensor:
    """A batch of classification inputs as the model's tensor (see the module docstring)."""
    if inputs.dtype == np.uint8:
        x = torch.from_numpy(np.ascontiguousarray(inputs)).to(torch.float32).div_(255.0).sub_(_MEAN).div_(_STD)
        return x.unsqueeze(1) if x.ndim == 3 else x
    if inputs.dtype == np.int32:
        return torch.from_numpy(inputs.astype(np.int64))
    return torch.from_numpy(np.ascontiguousarray(inputs))


def to_targets(labels: npt.NDArray[np.integer]) -> torch.Tensor:
    return torch.from_numpy(labels.astype(np.int64))


@dataclass(frozen=True)
class Score:
    """Sums over scored predictions (samples, or next tokens): loss (float64), correct top-1 guesses, and count."""

    loss_sum: float
    correct: int
    count: int

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / self.count

    @property
    def accuracy(self) -> float:
        return self.correct / self.count


def _logits(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    try:
        out = model(inputs)
    except IndexError as exc:  # an embedding lookup past the model's vocabulary
        raise TrainingError(f"the data does not fit the model ({exc}): is the vocabulary the tokenizer's?") from exc
    # A transformers model returns an output object; its logits are the tensor we score.
    logits = getattr(out, "logits", out)
    if not isinstance(logits, torch.Tensor):
        raise TrainingError(f"the model returned {type(out).__name__}, not logits")
    return logits


@contextmanager
def channels_last_pooling(model: nn.Module) -> Iterator[None]:
    """Run ``model``'s 2-D max pools on channels-last copies of their inputs, handing the next layer the usual
    contiguous layout: for scoring only (no gradient). A max is one of its inputs whatever the memory order, so
    every output is the same, bit for bit (a test checks it, NaN and ties included), but torch's CPU kernel for the
    default layout is ~10x slower (measured here, 2026-12: 10.6 ms against 1.1 ms on 64x32x28x28): in the CNN's
    1,024-sample loss passes, which every trainer and each validator of an update run twice, the pools took 60% of
    the time."""
    handles = []
    for module in model.modules():
        if isinstance(module, nn.MaxPool2d) and not module.return_indices:
            handles.append(module.register_forward_pre_hook(_to_channels_last))
            handles.append(module.register_forward_hook(_to_contiguous))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _to_channels_last(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    x = args[0] if args else None
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return (x.contiguous(memory_format=torch.channels_last), *args[1:])
    return None


def _to_contiguous(_module: nn.Module, _args: tuple[Any, ...], out: Any) -> Any:
    return out.contiguous() if isinstance(out, torch.Tensor) else out


class Objective:
    """Loss and metric of one task type; :func:`objective_for` gives the instance."""

    task: str = ""
    metric_name: str = ""

    def batch(self, data: ArraySet, index: npt.NDArray[np.int64] | slice) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's inputs and the targets of the selected samples."""
        raise NotImplementedError

    def flat(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits as (predictions × classes) and targets as (predictions,), checked to fit each other."""
        raise NotImplementedError

    def loss(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mean loss over the batch's predictions (what a training step minimises)."""
        logits, flat_targets = self.flat(_logits(model, inputs), targets)
        return nn.functional.cross_entropy(logits, flat_targets)

    def score(self, model: nn.Module, data: ArraySet, n: int, chunk: int) -> Score:
        """The loss, correct guesses and count over the first ``n`` samples of ``data``, ``chunk`` at a time.

        Call under ``torch.no_grad()`` with the model in eval mode; the loss is summed in float64.
        """
        total = torch.zeros((), dtype=torch.float64)
        correct = count = 0
        with channels_last_pooling(model):
            for lo in range(0, n, chunk):
                inputs, targets = self.batch(data, slice(lo, min(n, lo + chunk)))
                logits, flat_targets = self.flat(_logits(model, inputs), targets)
                total += nn.functional.cross_entropy(logits, flat_targets, reduction="sum").to(torch.float64)
                correct += int((logits.argmax(dim=1) == flat_targets).sum())
                count += int(flat_targets.numel())
        if count == 0:
            raise TrainingError("nothing to score: no samples")
        return Score(float(total), correct, count)

    def metric(self, accuracy: float, mean_loss: float) -> float:
        """The task's headline figure (:attr:`metric_name`) from a measured accuracy and mean loss."""
        raise NotImplementedError


def _check_targets(targets: torch.Tensor, classes: int, what: str) -> None:
    if targets.numel() and int(targets.max()) >= classes:
        raise TrainingError(f"{what} {int(targets.max())} is out of range for a model with {classes} outputs")


class Classification(Objective):
    task = CLASSIFICATION
    metric_name = "accuracy"

    def batch(self, data: ArraySet, index: npt.NDArray[np.int64] | slice) -> tuple[torch.Tensor, torch.Tensor]:
        if data.labels is None:
            raise TrainingError("a classification task needs labelled samples, and the shard holds token sequences")
        return to_inputs(data.inputs[index]), to_targets(data.labels[index])

    def flat(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if logits.ndim != 2:
            raise TrainingError(f"a classifier gives one row of logits per sample, got shape {tuple(logits.shape)}")
        _check_targets(targets, logits.shape[1], "label")
        return logits, targets

    def metric(self, accuracy: float, mean_loss: float) -> float:
        return accuracy


class CausalLM(Objective):
    task = CAUSAL_LM
    metric_name = "perplexity"

    def batch(self, data: ArraySet, index: npt.NDArray[np.int64] | slice) -> tuple[torch.Tensor, torch.Tensor]:
        if not data.is_sequences:
            raise TrainingError("a causal_lm task needs token sequences, and the shard holds labelled samples")
        tokens = torch.from_numpy(data.inputs[index].astype(np.int64))
        return tokens[:, :-1], tokens[:, 1:]

    def flat(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if logits.ndim != 3 or logits.shape[:2] != targets.shape:
            raise TrainingError(f"a causal LM gives logits per position, (batch, {targets.shape[1]}, vocabulary); "
                                f"got shape {tuple(logits.shape)}")
        _check_targets(targets, logits.shape[2], "token id")
        return logits.reshape(-1, logits.shape[2]), targets.reshape(-1)

    def metric(self, accuracy: float, mean_loss: float) -> float:
        return math.exp(min(mean_loss, 700.0))  # exp overflows a float past ~709


_OBJECTIVES: dict[str, Objective] = {CLASSIFICATION: Classification(), CAUSAL_LM: CausalLM()}
assert tuple(_OBJECTIVES) == TASK_TYPES, "one objective per task type of the spec"


def objective_for(task: str) -> Objective:
    """The objective of a task type (the spec's ``task``)."""
    try:
        return _OBJECTIVES[task]
    except KeyError:
        raise TrainingError(f"unknown task type {task!r}; expected one of {', '.join(TASK_TYPES)}") from None


def headline(task: str, accuracy: float, mean_loss: float) -> tuple[str, float]:
    """``(metric name, value)`` a report shows for a task measured at ``accuracy`` and ``mean_loss``."""
    objective = objective_for(task)
    return objective.metric_name, objective.metric(accuracy, mean_loss)


def check_spec_task(task: str, ref: ModelRef) -> None:
    """Refuse a job whose ``task`` is not what its model's output means (a classifier trained as a language model,
    or the reverse); raises :class:`TrainingError` naming both."""
    objective_for(task)
    kind = task_kind(ref)
    if kind != task:
        raise TrainingError(f"job spec: task {task!r} does not fit model {architecture(ref).name!r}, a {kind} "
                            f"model; set \"task\": \"{kind}\" or choose a {task} model")


def format_metric(name: str, value: float) -> str:
    """``accuracy 89.16%`` or ``perplexity 12.34``, for progress lines and summaries."""
    return f"accuracy {value * 100:.2f}%" if name == "accuracy" else f"{name} {value:.4g}"
