"""The customer's own starting weights for fine-tuning (``dtnode job create --init model.safetensors``).

Safetensors only: a ``torch.save`` file or any other pickle is refused unread (unpickling runs code). The file holds
the model's state dict (the names ``state_dict()`` gives, as ``safetensors.torch.save_file`` or ``dtnode job
fetch`` write them, metadata allowed) or a dtnode checkpoint (``model.<name>`` tensors, as a job publishes them).
A GPT-2 saved by ``transformers`` (``save_pretrained``: a tied head, left out of the file) is accepted, its head
starting as a copy of the token embedding. Every name, shape and dtype is checked against the job's architecture, and
the first tensor that does not fit is named; every node checks the published checkpoint again when it decodes it
(:func:`node.checkpoint.decode_checkpoint`).
"""

from __future__ import annotations

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load

from node.training.errors import InvalidDelta
from node.training.models.onnx_graph import refuse_code_formats
from node.training.models.registry import ModelRef, State, check_state_fits, get_model_info

MAX_INIT_BYTES = 16 << 30
_CHECKPOINT_PREFIX = "model."
_COUNTER_SUFFIX = "num_batches_tracked"


def read_init_weights(data: bytes, ref: ModelRef, *, what: str = "--init file") -> State:
    """The model state in ``data``, checked against ``ref``; raises InvalidDelta (or ModelFileRefused) saying
    which tensor or which format is wrong."""
    if len(data) > MAX_INIT_BYTES:
        raise InvalidDelta(f"{what}: {len(data):,} bytes is over the limit of {MAX_INIT_BYTES:,}")
    refuse_code_formats(data, what)
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, TypeError, RuntimeError, OverflowError) as exc:
        raise InvalidDelta(f"{what}: not a safetensors file ({exc}); save the weights with "
                           "safetensors.torch.save_file(model.state_dict(), path)") from exc
    if tensors and all(key.startswith(_CHECKPOINT_PREFIX) for key in tensors):
        tensors = {key[len(_CHECKPOINT_PREFIX):]: value for key, value in tensors.items()}
    state: State = {}
    for key, tensor in sorted(tensors.items()):
        if key.endswith(_COUNTER_SUFFIX) and not tensor.is_floating_point():
            # BatchNorm's batch counter is int64 in torch and float32 here (see node.training.models.registry).
            tensor = tensor.to(torch.float32)
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise InvalidDelta(f"{what}: tensor {key!r} holds NaN or Inf")
        state[key] = tensor.contiguous()
    complete = get_model_info(ref).complete_init
    if complete is not None:
        state = complete(state)
    check_state_fits(ref, state, what)
    return state
