"""The customer's own architecture as an ONNX graph: built from the file alone, and every unsafe file refused."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from node.training.errors import ModelFileRefused, TrainingError
from node.training.models import Architecture, build_model, initial_state, task_kind
from node.training.models.init_weights import read_init_weights
from node.training.models.onnx_graph import (
    MAX_GRAPH_NODES,
    MAX_GRAPH_PARAMETERS,
    load_graph_module,
    register_model_file,
)
from protocols.specs import ModelConfig
from storage.cid import RAW, cid_to_str, make_cid
from tests.training.model_files import hostile_pickle, hostile_torch_save, onnx_bytes, small_classifier


def _cid(data: bytes) -> str:
    return str(cid_to_str(make_cid(RAW, data)))


def _graph(nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto] = (), *,  # type: ignore[assignment]
           opsets: tuple[tuple[str, int], ...] = (("", 17),), batch: str | int = "batch") -> bytes:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    return model.SerializeToString()


def test_an_exported_model_round_trips_and_trains() -> None:
    original = small_classifier()
    data = onnx_bytes(original, torch.zeros(1, 1, 8, 8))
    module = load_graph_module(data)
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(module(x), original(x), atol=1e-5)
    assert sorted(p.numel() for p in module.parameters()) == sorted(p.numel() for p in original.parameters())

    cid = _cid(data)
    register_model_file(cid, data)
    arch = Architecture("onnx-v1", ModelConfig(onnx_cid=cid))
    assert task_kind(arch) == "classification"
    # The file's weights are the initial checkpoint, whatever the seed.
    first, second = initial_state(arch, 0), initial_state(arch, 99)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    built = build_model(arch)
    built.train()
    built(x).sum().backward()
    assert all(p.grad is not None for p in built.parameters())
    # A build is a fresh copy: training one never changes the next.
    with torch.no_grad():
        next(built.parameters()).add_(1.0)
    assert all(torch.equal(v, initial_state(arch, 0)[k]) for k, v in first.items())


def test_a_graph_file_not_fetched_on_this_node_is_a_clear_error() -> None:
    arch = Architecture("onnx-v1", ModelConfig(onnx_cid=_cid(b"never registered")))
    with pytest.raises(TrainingError, match="has not been fetched"):
        build_model(arch)


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_a_pickle_that_runs_code_on_load_is_refused_unread(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "marker"
    crafted = hostile_pickle(marker, protocol)
    with pytest.raises(ModelFileRefused):
        load_graph_module(crafted)
    with pytest.raises(ModelFileRefused):
        register_model_file(_cid(crafted), crafted)
    with pytest.raises((ModelFileRefused, ValueError)):
        read_init_weights(crafted, "fmnist-mlp-v1")
    assert not marker.exists()
    # The control: the same bytes do run code when unpickled, so the refusal above is what kept the marker away.
    control = tmp_path / "control"
    pickle.loads(hostile_pickle(control, protocol))  # noqa: S301 - the point of the test
    assert control.read_text() == "code ran"


def test_torch_save_and_torch_export_files_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    saved = hostile_torch_save(marker)
    with pytest.raises(ModelFileRefused, match="zip archive"):
        load_graph_module(saved)
    with pytest.raises(ModelFileRefused, match="zip archive"):
        read_init_weights(saved, "fmnist-mlp-v1")
    program = torch.export.export(small_classifier(), (torch.zeros(1, 1, 8, 8),))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    with pytest.raises(ModelFileRefused, match="torch.export"):
        load_graph_module(buffer.getvalue())
    assert not marker.exists()


def test_external_data_is_refused() -> None:
    weight = numpy_helper.from_array(torch.ones(4).numpy(), "w")
    weight.data_location = TensorProto.EXTERNAL
    weight.ClearField("raw_data")
    weight.external_data.add(key="location", value="../../etc/passwd")
    with pytest.raises(ModelFileRefused, match="external data"):
        load_graph_module(_graph([helper.make_node("Add", ["x", "w"], ["y"])], [weight]))


def test_unsupported_operators_and_domains_are_refused() -> None:
    with pytest.raises(ModelFileRefused, match="domain 'com.example'"):
        load_graph_module(_graph([helper.make_node("Run", ["x"], ["y"], domain="com.example")],
                                 opsets=(("", 17), ("com.example", 1))))
    # A standard operator onnx2torch has no converter for.
    with pytest.raises(ModelFileRefused, match="cannot be trained here|cannot be converted"):
        load_graph_module(_graph([helper.make_node("Hardmax", ["x"], ["y"])]))
    with pytest.raises(ModelFileRefused, match="checker"):
        load_graph_module(_graph([helper.make_node("NoSuchOp", ["x"], ["y"])]))


def test_a_fixed_batch_size_is_refused() -> None:
    assert load_graph_module(_graph([helper.make_node("Relu", ["x"], ["y"])]))(torch.ones(3, 4)).shape == (3, 4)
    with pytest.raises(ModelFileRefused, match="fixed batch size of 1"):
        load_graph_module(_graph([helper.make_node("Relu", ["x"], ["y"])], batch=1))


def test_absurd_sizes_and_garbage_are_refused() -> None:
    many = [helper.make_node("Identity", ["x" if i == 0 else f"t{i}"], [f"t{i + 1}" if i < MAX_GRAPH_NODES else "y"])
            for i in range(MAX_GRAPH_NODES + 1)]
    with pytest.raises(ModelFileRefused, match="operators, over the limit"):
        load_graph_module(_graph(many))
    side = int(MAX_GRAPH_PARAMETERS ** 0.5) + 1
    huge = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[side, side])  # declared, never allocated
    with pytest.raises(ModelFileRefused, match="over the limit"):
        load_graph_module(_graph([helper.make_node("Identity", ["x"], ["y"])], [huge]))
    with pytest.raises(ModelFileRefused, match="not an ONNX model"):
        load_graph_module(b"\x08\x07garbage that is not a protobuf \xff\xff\xff")


def test_a_graph_with_dropout_is_refused_with_a_clear_error() -> None:
    data = _graph([helper.make_node("Dropout", ["x"], ["y"], ratio=0.5)], opsets=(("", 11),))
    cid = _cid(data)
    register_model_file(cid, data)
    with pytest.raises(TrainingError, match="dropout"):
        build_model(Architecture("onnx-v1", ModelConfig(onnx_cid=cid)))
