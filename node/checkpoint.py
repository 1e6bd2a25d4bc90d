"""The committed checkpoint: model weights plus the outer optimizer's state, in one content-addressed file.

A new leader resumes from the chain's last committed checkpoint CID alone, so everything aggregation carries from
round to round (DiLoCo's Nesterov momentum) lives in that same file: tensors ``model.<name>`` and ``outer.<name>``.
The bytes are deterministic (sorted safetensors), so anyone who recomputes an aggregate gets the same CID.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from node.limits import content_limits
from node.training.aggregate import strategy_from_spec
from node.training.codec import decode_delta, decode_state, encode_state
from node.training.errors import InvalidDelta
from node.training.models import ModelRef, check_state_fits, initial_state, model_ref, state_layout
from protocols.specs import JobSpec

MODEL = "model."
OUTER = "outer."
MOMENTUM = "momentum/"
"""The outer optimizer's key prefix (node.training.aggregate.OuterOptimizer)."""

State = dict[str, torch.Tensor]


def encode_checkpoint(model_state: Mapping[str, torch.Tensor], outer_state: Mapping[str, torch.Tensor] | None) -> bytes:
    tensors: State = {MODEL + k: v for k, v in model_state.items()}
    for k, v in (outer_state or {}).items():
        tensors[OUTER + k] = v
    return encode_state(tensors)


def decode_checkpoint(data: bytes, model_name: ModelRef, *, max_bytes: int) -> tuple[State, State | None]:
    """Split and check a checkpoint against the model's architecture (every tensor's name, shape and dtype: the
    customer's fine-tuning checkpoint is checked here by every node that trains on it or validates it); raises
    InvalidDelta naming the first tensor that does not fit."""
    tensors = decode_state(data, max_bytes=max_bytes)
    shapes = state_layout(model_name)
    model: State = {}
    outer: State = {}
    for key, tensor in tensors.items():
        if key.startswith(MODEL):
            model[key[len(MODEL):]] = tensor
        elif key.startswith(OUTER):
            outer[key[len(OUTER):]] = tensor
        else:
            raise InvalidDelta(f"checkpoint: unexpected tensor {key!r}")
    if not model:
        raise InvalidDelta(f"checkpoint: no model tensors for {model_name}")
    check_state_fits(model_name, model, "checkpoint")
    if outer and set(outer) != {MOMENTUM + k for k in shapes}:
        raise InvalidDelta(f"checkpoint: outer-optimizer tensors do not match {model_name}'s parameters")
    for key, tensor in ((k[len(MOMENTUM):], v) for k, v in outer.items()):
        shape, dtype = shapes[key]
        if tuple(tensor.shape) != shape or tensor.dtype != dtype:
            raise InvalidDelta(f"checkpoint: tensor {key} is {tuple(tensor.shape)}, expected {shape}")
    return model, (outer or None)


def initial_checkpoint(model_name: ModelRef, seed: int) -> bytes:
    return encode_checkpoint(initial_state(model_name, seed), None)


def aggregate_checkpoint(spec: JobSpec, base_bytes: bytes, deltas: list[tuple[bytes, int]]) -> bytes:
    """The next checkpoint's bytes from the base checkpoint and the accepted (delta bytes, weight) pairs.

    Pure and deterministic: the same inputs in any order give the same bytes, so anyone can audit a commit (the
    leader builds the round's checkpoint with it, the auditors recompute it).
    """
    limits = content_limits(spec)
    base_model, base_outer = decode_checkpoint(base_bytes, model_ref(spec), max_bytes=limits.checkpoint_bytes)
    if not deltas:
        return base_bytes
    weighted = [(decode_delta(d, like=base_model, max_bytes=limits.delta_bytes), float(w)) for d, w in deltas]
    new_model, new_outer = strategy_from_spec(spec.aggregation).apply(base_model, weighted, base_outer)
    return encode_checkpoint(new_model, new_outer or None)
