from __future__ import annotations

import pytest
import torch

from node.training.codec import state_hash
from node.training.errors import TrainingError
from node.training.models import MODELS, build_model, initial_state, num_parameters
from node.training.tasks import TaskFactory
from protocols.errors import SchemaError
from protocols.types import NodeClass


def test_registry_sizes() -> None:
    assert num_parameters("fmnist-cnn-v1") == 105_866
    assert num_parameters("fmnist-mlp-v1") == 203_530
    for name in (n for n, info in MODELS.items() if info.task == "classification" and info.seeded):
        out = build_model(name)(torch.zeros(2, 1, 28, 28))
        assert out.shape == (2, 10)


def test_initial_state_is_deterministic_and_seeded() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    a = initial_state("fmnist-cnn-v1", 7)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), before)  # the caller's RNG stream is untouched
    assert state_hash(a) == state_hash(initial_state("fmnist-cnn-v1", 7))
    assert state_hash(a) != state_hash(initial_state("fmnist-cnn-v1", 8))
    assert all(v.dtype == torch.float32 for v in a.values())


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(TrainingError, match="fmnist-cnn-v1"):
        build_model("resnet-1000")


@pytest.mark.parametrize("scale", ["batch", "steps"])
def test_tasks_take_about_the_same_time_and_weight_is_work(scale: str) -> None:
    factory = TaskFactory(base_steps=50, batch_size=32, scale=scale)  # type: ignore[arg-type]
    sizes = {c: factory.size(c) for c in NodeClass}
    times = [sizes[c].expected_seconds(c) for c in NodeClass]
    assert max(times) / min(times) < 1.1
    for size in sizes.values():
        assert size.num_samples == size.steps * size.batch_size == size.weight
    assert sizes[NodeClass.S].steps == 50 and sizes[NodeClass.S].batch_size == 32
    assert sizes[NodeClass.L].weight == 4 * sizes[NodeClass.S].weight
    if scale == "batch":
        assert len({s.steps for s in sizes.values()}) == 1
    assert NodeClass.from_code(2) is NodeClass.L
    with pytest.raises(SchemaError):
        NodeClass.from_code(3)


def test_memory_caps_batch_and_moves_work_into_steps() -> None:
    size = TaskFactory(base_steps=10, batch_size=512, max_batch_size=1024).size(NodeClass.L)
    assert size.batch_size == 1024 and size.steps == 20
