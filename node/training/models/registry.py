"""Model registry: versioned architectures by name, and deterministic initial checkpoints.

A job spec names its model ("fmnist-cnn-v1") and, for the models that take them, gives its sizes or graph file in
the model section (:class:`~protocols.specs.ModelConfig`); together they are an :class:`Architecture`. A name is a
promise that the architecture, parameter names and shapes for a given config never change: a new architecture gets
a new name. Nothing is ever downloaded; the weights come from the job seed, the customer's graph file, or the
customer's ``--init`` checkpoint.

Every model built here is checked to train deterministically under replay (:func:`build_model`):

- dropout is refused (a model with an active dropout needs random numbers that the replay would have to
  reproduce; none of ours has one, and a customer's graph with one gets a clear error);
- BatchNorm is kept, with its buffers in the state: running mean and variance are part of the checkpoint, the
  deltas, the aggregation and the replayed hash like any weight. Its ``num_batches_tracked`` counter is held as
  float32 (exact up to 2^24 batches) so that the whole state is float32 and travels through the float32 delta codec;
  with a fixed momentum the counter never enters the computation, and a BatchNorm without one
  (``momentum=None``, a cumulative average over the counter) is refused;
- every state tensor is float32.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from functools import cache
from typing import Literal

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.dropout import _DropoutNd

from node.training.errors import InvalidDelta, TrainingError
from node.training.models.fmnist import cnn_v1, mlp_v1
from node.training.models.language import gpt2_lm_v1, gpt2_parameters, untie_saved_head
from node.training.models.onnx_graph import MAX_GRAPH_PARAMETERS, onnx_v1
from node.training.models.vision import resnet18_small_v1
from protocols.specs import JobSpec, ModelConfig

State = dict[str, torch.Tensor]
TaskKind = Literal["classification", "causal_lm"]
"""What a model's output means: class logits ``N×C`` for inputs ``N×…``, or next-token logits ``N×T×V`` for token
ids ``N×T``. The task type of a job (its loss and metric) follows from its model's kind."""

MAX_PARAMETERS = 1_000_000_000
"""The largest model a job may name: 4 GB of float32 weights, 12 GB of trainer state (weights + AdamW moments)."""


@dataclass(frozen=True)
class ModelInfo:
    """One registered architecture: its builder, what its output means, and which config fields it reads."""

    name: str
    build: Callable[[ModelConfig], nn.Module]
    description: str
    task: TaskKind
    config_fields: frozenset[str] = frozenset()
    """The :class:`~protocols.specs.ModelConfig` fields the builder reads; any other must stay at 0 / ""."""
    estimate: Callable[[ModelConfig], int] | None = None
    """The parameter count for a config, computed before building (to refuse absurd sizes without allocating)."""
    seeded: bool = True
    """Initial weights drawn from the job seed; False: they come from the model's graph file."""
    complete_init: Callable[[State], State] | None = None
    """Makes a customer's ``--init`` state, as the usual tooling saves it, whole for this model (before the check)."""


MODELS: dict[str, ModelInfo] = {info.name: info for info in (
    ModelInfo("fmnist-cnn-v1", cnn_v1, "2 conv + 2 linear, 105,866 params, ~90% test acc", "classification"),
    ModelInfo("fmnist-mlp-v1", mlp_v1, "784-256-10 MLP, 203,530 params, fast for tests", "classification"),
    ModelInfo("resnet18-small-v1", resnet18_small_v1,
              "torchvision ResNet-18 for small images (3x3 stem, no max-pool), BatchNorm; 11.2 M params at 10 "
              "classes; model_config.classes (10) and .channels (1)", "classification",
              frozenset({"classes", "channels"})),
    ModelInfo("gpt2-lm-v1", gpt2_lm_v1,
              "transformers GPT-2 causal LM, untied head, no dropout; model_config.layers, .width, .heads, "
              ".context, .vocab", "causal_lm", frozenset({"layers", "width", "heads", "context", "vocab"}),
              estimate=gpt2_parameters, complete_init=untie_saved_head),
    ModelInfo("onnx-v1", onnx_v1,
              "the customer's ONNX graph (model_config.onnx_cid), built by onnx2torch; weights from the file; "
              "a classifier (N x C logits)", "classification", frozenset({"onnx_cid"}),
              estimate=lambda config: MAX_GRAPH_PARAMETERS, seeded=False),
)}

_CONFIG_FIELDS = tuple(f.name for f in fields(ModelConfig) if f.name != "schema")


@dataclass(frozen=True)
class Architecture:
    """A registered model name with its config: everything needed to build the same module on every node."""

    name: str
    config: ModelConfig = ModelConfig()

    @classmethod
    def of(cls, spec: JobSpec) -> Architecture:
        """The architecture a job spec names."""
        return cls(spec.model, spec.model_config)

    def __str__(self) -> str:
        used = [f"{name}={getattr(self.config, name)}" for name in _CONFIG_FIELDS if getattr(self.config, name)]
        return f"{self.name}({', '.join(used)})" if used else self.name


ModelRef = Architecture | str
"""What the training code passes around: an :class:`Architecture`, or a bare name for a model without config."""


def architecture(ref: ModelRef) -> Architecture:
    return ref if isinstance(ref, Architecture) else Architecture(ref)


def model_ref(spec: JobSpec) -> ModelRef:
    """What a job's training code builds: the bare name when the spec has no model section (so a task of such a
    job reads as before), else its :class:`Architecture`."""
    return spec.model if spec.model_config == ModelConfig() else Architecture.of(spec)


def get_model_info(ref: ModelRef) -> ModelInfo:
    """Look up a registered model; an unknown name lists the known ones."""
    name = architecture(ref).name
    try:
        return MODELS[name]
    except KeyError:
        raise TrainingError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}") from None


def task_kind(ref: ModelRef) -> TaskKind:
    """What the model's output means (and so the job's loss and metric): see :data:`TaskKind`."""
    return get_model_info(ref).task


def build_model(ref: ModelRef) -> nn.Module:
    """A fresh instance of the architecture, checked to train deterministically (see the module docstring).

    Weights come from torch's global RNG: use :func:`initial_state` for a job's seeded checkpoint. Raises
    :class:`TrainingError` naming the problem: unknown name, a config field the model does not read, a size over
    :data:`MAX_PARAMETERS`, an active dropout, a BatchNorm without momentum, a tensor that is not float32.
    """
    arch = architecture(ref)
    info = get_model_info(arch)
    for name in _CONFIG_FIELDS:
        if name not in info.config_fields and getattr(arch.config, name):
            raise TrainingError(f"model {arch.name} does not use model_config.{name}: leave it out of the job spec")
    if info.estimate is not None and info.estimate(arch.config) > MAX_PARAMETERS:
        raise TrainingError(f"model {arch}: {info.estimate(arch.config):,} parameters is over the limit of "
                            f"{MAX_PARAMETERS:,}")
    model = info.build(arch.config)
    count = sum(p.numel() for p in model.parameters())
    if count > MAX_PARAMETERS:
        raise TrainingError(f"model {arch}: {count:,} parameters is over the limit of {MAX_PARAMETERS:,}")
    _make_replayable(model, str(arch))
    return model


def _make_replayable(model: nn.Module, what: str) -> None:
    for name, module in model.named_modules():
        if isinstance(module, _DropoutNd) and module.p > 0:
            raise TrainingError(f"model {what}: {name or 'the model'} is a dropout (p={module.p}); dropout is refused "
                                "because a replay could not reproduce its random mask: remove it (p=0)")
        if isinstance(module, nn.MultiheadAttention) and module.dropout > 0:
            raise TrainingError(f"model {what}: attention {name} has dropout {module.dropout}; dropout is refused")
        if isinstance(module, _NormBase) and module.track_running_stats:
            if module.momentum is None:
                raise TrainingError(f"model {what}: BatchNorm {name} has momentum=None (a cumulative average over "
                                    "its batch counter); give it a fixed momentum such as 0.1")
            counter = module.num_batches_tracked
            if counter is not None:
                module.num_batches_tracked = counter.to(torch.float32)
    for key, tensor in model.state_dict().items():
        if tensor.dtype != torch.float32:
            raise TrainingError(f"model {what}: state tensor {key!r} is {tensor.dtype}; only float32 models are "
                                "supported")


def initial_state(ref: ModelRef, seed: int) -> State:
    """The initial checkpoint of the architecture for ``seed``: the same tensors, bit for bit, in every process
    (for a graph file's model: the file's weights, whatever the seed).

    Torch's global RNG is forked so that callers' random streams are left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(ref)
    return {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}


@cache
def state_layout(ref: ModelRef) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Name → (shape, dtype) of every tensor of the architecture's state (parameters and buffers)."""
    return {key: (tuple(value.shape), value.dtype) for key, value in initial_state(ref, 0).items()}


def check_state_fits(ref: ModelRef, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise :class:`InvalidDelta` naming the first tensor (in name order) of ``state`` that is missing, extra,
    or of another shape or dtype than the architecture's."""
    layout = state_layout(ref)
    for key in sorted(set(layout) | set(state)):
        if key not in state:
            raise InvalidDelta(f"{what}: tensor {key!r} of {architecture(ref)} is missing")
        if key not in layout:
            raise InvalidDelta(f"{what}: tensor {key!r} is not part of {architecture(ref)}")
        shape, dtype = layout[key]
        tensor = state[key]
        if tuple(tensor.shape) != shape or tensor.dtype != dtype:
            raise InvalidDelta(f"{what}: tensor {key!r} is {tensor.dtype} {tuple(tensor.shape)}, {architecture(ref)} "
                                f"expects {dtype} {shape}")


def num_parameters(ref: ModelRef) -> int:
    """Number of trainable scalars of the architecture."""
    return sum(p.numel() for p in build_model(ref).parameters())
