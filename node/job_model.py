"""What a new job's model starts from, settled by ``dtnode job create`` before the spec is published.

- The customer's graph file (``--model-file net.onnx``, model ``onnx-v1``) is vetted
  (:mod:`node.training.models.onnx_graph`), added to the customer's store, and its CID written into the spec's
  ``model_config.onnx_cid``; a spec that already names one must find it in the store (or the network).
- The initial checkpoint is, in order: the customer's weights (``--init model.safetensors``), the checkpoint the
  spec's ``initial_checkpoint_cid`` names (a previous job's final checkpoint, say), or one generated from the seed.
  The customer's weights are checked against the architecture, tensor by tensor, before anything is published; every
  node checks them again when it decodes the checkpoint.

This module never loads a pickle: only safetensors weights and ONNX graphs are read.
"""

from __future__ import annotations

from dataclasses import replace

import trio

from node.checkpoint import encode_checkpoint, initial_checkpoint
from node.training.models import model_ref
from node.training.models.init_weights import MAX_INIT_BYTES, read_init_weights
from node.training.models.onnx_graph import (
    MAX_GRAPH_FILE_BYTES,
    ONNX_MODEL,
    is_registered,
    load_graph_module,
    register_model_file,
)
from protocols.errors import ConfigError
from protocols.specs import JobSpec
from storage.content import ContentStore


async def prepare_job_model(store: ContentStore, spec: JobSpec, *, model_file: bytes | None = None,
                            init_weights: bytes | None = None, timeout_s: float = 60.0) -> tuple[JobSpec, bytes]:
    """The spec with its graph file's CID filled in, and the initial checkpoint's bytes to publish.

    Raises ConfigError for a spec and flags that do not go together, ModelFileRefused for an unsafe graph or weights
    file, InvalidDelta naming the first tensor of ``init_weights`` (or of the named checkpoint) that does not fit.
    """
    if model_file is not None:
        if spec.model != ONNX_MODEL:
            raise ConfigError(f"--model-file: the job spec names model {spec.model!r}; set \"model\": "
                              f"\"{ONNX_MODEL}\" to train the model of a graph file")
        await trio.to_thread.run_sync(load_graph_module, model_file)  # refused before anything is published
        published = await store.put(model_file)
        await trio.to_thread.run_sync(register_model_file, published, model_file)
        spec = replace(spec, model_config=replace(spec.model_config, onnx_cid=published))
    elif spec.model == ONNX_MODEL:
        cid = spec.model_config.onnx_cid
        if not cid:
            raise ConfigError(f"model {ONNX_MODEL}: pass --model-file net.onnx (or set model_config.onnx_cid)")
        if not is_registered(cid):
            data = await store.get(cid, max_bytes=MAX_GRAPH_FILE_BYTES, timeout_s=timeout_s)
            await trio.to_thread.run_sync(register_model_file, cid, data)
    ref = model_ref(spec)
    if init_weights is not None:
        state = await trio.to_thread.run_sync(read_init_weights, init_weights, ref)
    elif spec.initial_checkpoint_cid:
        named = spec.initial_checkpoint_cid
        data = await store.get(named, max_bytes=MAX_INIT_BYTES, timeout_s=timeout_s)
        state = await trio.to_thread.run_sync(lambda: read_init_weights(data, ref, what=f"initial checkpoint {named}"))
    else:
        return spec, await trio.to_thread.run_sync(initial_checkpoint, ref, spec.seed)
    return spec, encode_checkpoint(state, None)
