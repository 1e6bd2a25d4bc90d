"""The customer's own architecture as an ONNX graph file: checked, then turned into a trainable module by onnx2torch.

A graph file describes operators and weights, not code, so a trainer or validator can build the customer's model
without running anything the customer wrote. This module must never unpickle: no ``torch.load``, no
``torch.export.load`` (which falls back to ``torch.load(weights_only=False)`` when its safe path fails), no
``pickle``. A file is refused with :class:`~node.training.errors.ModelFileRefused` when it is

- a zip archive (``torch.save`` checkpoints, ``torch.export`` ``.pt2`` programs) or a pickle, recognised by their
  first bytes, or anything else that does not parse as an ONNX ``ModelProto``;
- over :data:`MAX_GRAPH_FILE_BYTES`, or with more than :data:`MAX_GRAPH_PARAMETERS` weights or
  :data:`MAX_GRAPH_NODES` operators;
- a graph whose tensors point at external data (a path outside the file: the file alone must define the model), or
  whose inputs have a fixed batch size;
- rejected by ``onnx.checker``, or using an operator domain other than the standard one, or an operator onnx2torch
  cannot convert.

Files are registered by CID once fetched (the fetch checks the CID), then :func:`onnx_v1` builds copies of the
converted module for the registry's ``onnx-v1`` model: its initial weights are the file's. onnx2torch 1.5 converts
operator sets up to 17 (export with ``opset_version=17``); a ``BatchNormalization`` kept in the graph runs in its
inference form (fixed statistics, scale and shift held as buffers), so export in eval mode, where torch folds it into
the convolution before it.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Awaitable, Callable, Iterator

import trio
from torch import nn

from node.training.errors import ModelFileRefused, TrainingError
from protocols.specs import JobSpec, ModelConfig

MAX_GRAPH_FILE_BYTES = 1 << 30
"""A graph file's size limit (1 GiB; protobuf itself stops at 2 GiB)."""
MAX_GRAPH_PARAMETERS = 250_000_000
"""The most weights (initializer elements) a graph file may hold."""
MAX_GRAPH_NODES = 100_000
"""The most operators a graph may have (ResNet-50 has ~120, GPT-2 XL ~5,000 once exported)."""
ONNX_MODEL = "onnx-v1"
_STANDARD_DOMAINS = ("", "ai.onnx")
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOLS = range(2, 6)

_modules: dict[str, nn.Module] = {}
"""Converted graphs by CID: process-wide because every role of a node builds the same job's model."""
_modules_lock = threading.Lock()


def refuse_code_formats(data: bytes, what: str = "model file") -> None:
    """Refuse, unread, the formats whose loading can run code: zip archives (``torch.save``, ``torch.export``
    ``.pt2``) and pickles. Recognised by their first bytes; nothing is parsed."""
    if data[:4] == _ZIP_MAGIC:
        raise ModelFileRefused(f"{what} is a zip archive (a torch.save checkpoint or a torch.export .pt2 program): "
                               "loading one can run code, so it is refused; publish an ONNX graph "
                               "(torch.onnx.export) or safetensors weights (safetensors.torch.save_file)")
    if len(data) >= 2 and data[0] == 0x80 and data[1] in _PICKLE_PROTOCOLS:
        raise ModelFileRefused(f"{what} is a Python pickle: unpickling runs code, so it is refused; publish an ONNX "
                               "graph (torch.onnx.export) or safetensors weights (safetensors.torch.save_file)")


def _tensors(graph: object) -> Iterator[object]:
    """Every TensorProto of a graph: initializers, sparse initializers, and node attributes, subgraphs included."""
    from onnx import AttributeProto

    yield from graph.initializer  # type: ignore[attr-defined]
    for sparse in graph.sparse_initializer:  # type: ignore[attr-defined]
        yield sparse.values
        yield sparse.indices
    for node in graph.node:  # type: ignore[attr-defined]
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == AttributeProto.TENSORS:
                yield from attr.tensors
            elif attr.type == AttributeProto.GRAPH:
                yield from _tensors(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _tensors(sub)


def load_graph_module(data: bytes) -> nn.Module:
    """A trainable module from an ONNX file's bytes, or :class:`ModelFileRefused` saying why not."""
    if len(data) > MAX_GRAPH_FILE_BYTES:
        raise ModelFileRefused(f"model file is {len(data):,} bytes, over the limit of {MAX_GRAPH_FILE_BYTES:,}")
    refuse_code_formats(data)
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ModelFileRefused(f"model file is not an ONNX model ({exc.__class__.__name__}: {exc})") from exc
    if not model.HasField("graph") or not model.graph.node:
        raise ModelFileRefused("model file is not an ONNX model (no graph)")
    if len(model.graph.node) > MAX_GRAPH_NODES:
        raise ModelFileRefused(f"model file has {len(model.graph.node):,} operators, over the limit of "
                               f"{MAX_GRAPH_NODES:,}")
    weights = 0
    for tensor in _tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):  # type: ignore[attr-defined]
            raise ModelFileRefused(f"model file: tensor {tensor.name!r} keeps its data outside the file "  # type: ignore[attr-defined]
                                   "(external data); save the model with all weights inside the .onnx file")
        weights += math.prod(tensor.dims)  # type: ignore[attr-defined]
    if weights > MAX_GRAPH_PARAMETERS:
        raise ModelFileRefused(f"model file holds {weights:,} weights, over the limit of {MAX_GRAPH_PARAMETERS:,}")
    initializers = {tensor.name for tensor in model.graph.initializer}
    for graph_input in model.graph.input:
        dims = graph_input.type.tensor_type.shape.dim
        if graph_input.name not in initializers and dims and dims[0].HasField("dim_value"):
            raise ModelFileRefused(f"model file: input {graph_input.name!r} has a fixed batch size of "
                                   f"{dims[0].dim_value}; export with dynamic_axes={{{graph_input.name!r}: "
                                   "{0: 'batch'}} so that tasks can train on batches of any size")
    for opset in model.opset_import:
        if opset.domain not in _STANDARD_DOMAINS:
            raise ModelFileRefused(f"model file uses operator domain {opset.domain!r}; only the standard ONNX "
                                   "operators are supported")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelFileRefused(f"model file fails the ONNX checker: {exc}") from exc
    from onnx2torch import convert

    try:
        module: nn.Module = convert(model)
    except NotImplementedError as exc:
        raise ModelFileRefused(f"model file uses an operator that cannot be trained here: {exc}") from exc
    except Exception as exc:  # onnx2torch raises many types for graphs it cannot convert; all mean "refused"
        raise ModelFileRefused(f"model file cannot be converted to a torch module "
                               f"({exc.__class__.__name__}: {exc})") from exc
    return module


def register_model_file(cid: str, data: bytes) -> None:
    """Check and convert the graph file ``data`` whose CID the caller has verified; raises ModelFileRefused."""
    with _modules_lock:
        if cid in _modules:
            return
    module = load_graph_module(data)
    with _modules_lock:
        _modules.setdefault(cid, module)


def is_registered(cid: str) -> bool:
    with _modules_lock:
        return cid in _modules


def onnx_v1(config: ModelConfig) -> nn.Module:
    """The registry's builder for ``onnx-v1``: a fresh copy of the registered graph ``config.onnx_cid``."""
    if not config.onnx_cid:
        raise TrainingError(f"model {ONNX_MODEL}: set model_config.onnx_cid to the CID of the .onnx file")
    with _modules_lock:
        template = _modules.get(config.onnx_cid)
    if template is None:
        raise TrainingError(f"model {ONNX_MODEL}: the graph file {config.onnx_cid} has not been fetched on this "
                            "node (see load_model_files)")
    return copy.deepcopy(template)


async def load_model_files(spec: JobSpec, fetch: Callable[[str, int], Awaitable[bytes]]) -> None:
    """Fetch and register the job's graph file, if its model has one: ``fetch(cid, max_bytes)`` must verify the
    CID (a node's content fetch does). Raises ModelFileRefused for a file that is not a safe graph."""
    cid = spec.model_config.onnx_cid
    if spec.model != ONNX_MODEL or not cid or is_registered(cid):
        return
    data = await fetch(cid, MAX_GRAPH_FILE_BYTES)
    await trio.to_thread.run_sync(register_model_file, cid, data)
