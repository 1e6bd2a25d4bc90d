"""The model registry: every registered architecture builds, seeds, and replays bit for bit; bad configs are refused."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from node.checkpoint import decode_checkpoint, initial_checkpoint
from node.training.codec import state_hash
from node.training.data import ArraySet
from node.training.errors import TrainingError
from node.training.local import train_local
from node.training.models import (
    MODELS,
    Architecture,
    ModelRef,
    State,
    build_model,
    initial_state,
    model_ref,
    num_parameters,
    state_layout,
    task_kind,
)
from node.training.models.language import gpt2_parameters, sample_tokens
from node.training.models.onnx_graph import register_model_file
from node.training.replay import BAD_SEGMENT_STATE, Verdict, replay_verify
from node.training.task import Task
from protocols.specs import JobSpec, ModelConfig
from storage.cid import RAW, cid_to_str, make_cid
from tests.training.model_files import onnx_bytes, small_classifier

ROOT = Path(__file__).resolve().parents[2]
TINY_LM = ModelConfig(layers=2, width=32, heads=2, context=16, vocab=64)


def _onnx_arch() -> Architecture:
    data = onnx_bytes(small_classifier(), torch.zeros(1, 1, 8, 8))
    cid = str(cid_to_str(make_cid(RAW, data)))
    register_model_file(cid, data)
    return Architecture("onnx-v1", ModelConfig(onnx_cid=cid))


def _images(n: int, side: int, seed: int = 0) -> ArraySet:
    rng = np.random.default_rng(seed)
    return ArraySet(rng.integers(0, 256, (n, side, side), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8))


def _tokens(n: int, seed: int = 0) -> ArraySet:
    return ArraySet(np.random.default_rng(seed).integers(0, TINY_LM.vocab, (n, TINY_LM.context + 1), dtype=np.int32),
                    None)


# One case per registered model: (architecture, tiny data, task type).
CASES = {
    "fmnist-cnn-v1": lambda: ("fmnist-cnn-v1", _images(12, 28), "classification"),
    "fmnist-mlp-v1": lambda: ("fmnist-mlp-v1", _images(12, 28), "classification"),
    "resnet18-small-v1": lambda: ("resnet18-small-v1", _images(8, 8), "classification"),
    "gpt2-lm-v1": lambda: (Architecture("gpt2-lm-v1", TINY_LM), _tokens(12), "causal_lm"),
    "onnx-v1": lambda: (_onnx_arch(), _images(12, 8), "classification"),
}


def test_every_registered_model_has_a_replay_case() -> None:
    assert set(CASES) == set(MODELS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_training_replays_bit_for_bit(name: str) -> None:
    """A short train, then the validator's replay of every segment from its committed start: the whole trainer
    state (weights, BatchNorm buffers, optimizer moments) hashes the same, and a tampered buffer is caught."""
    ref, data, task_type = CASES[name]()
    assert task_kind(ref) == task_type
    task = Task(model_name=ref, steps=4, batch_size=4, lr=1e-3, seed=3, segment_every=2, task_type=task_type)
    base = initial_state(ref, 5)
    result = train_local(task, base, data)

    def replay(states: list[State], segments: list[int] | None = None) -> Verdict:
        return replay_verify(task, base, data, claimed_segment_hashes=result.segment_hashes,
                             segment_states_fetch=lambda i: states[i], claimed_delta=result.delta,
                             claimed_loss_before=result.loss_before, claimed_loss_after=result.loss_after,
                             segments_to_check=list(range(task.n_segments)) if segments is None else segments)

    verdict = replay(result.segment_states)
    assert verdict.ok and verdict.max_distance == 0.0, verdict
    if name == "resnet18-small-v1":
        first = dict(result.segment_states[0])
        first["model/bn1.running_mean"] = first["model/bn1.running_mean"] + 1e-6
        # Served as the start of the challenged last segment (a state replay reproduces is never fetched).
        assert replay([first, *result.segment_states[1:]], [1]).reason == BAD_SEGMENT_STATE
    moved = [k for k in base if not torch.equal(base[k], result.final_state[k])]
    assert moved, "training changed nothing"
    if name == "resnet18-small-v1":  # BatchNorm running statistics are trained state too
        assert "bn1.running_mean" in moved and "bn1.num_batches_tracked" in moved
        assert float(result.final_state["bn1.num_batches_tracked"]) == 4.0


@pytest.mark.parametrize("name", sorted(CASES))
def test_initial_checkpoints_round_trip_and_are_float32(name: str) -> None:
    ref = CASES[name]()[0]
    state = initial_state(ref, 7)
    assert all(v.dtype == torch.float32 for v in state.values())
    assert {k: (tuple(v.shape), v.dtype) for k, v in state.items()} == state_layout(ref)
    model, outer = decode_checkpoint(initial_checkpoint(ref, 7), ref, max_bytes=1 << 30)
    assert outer is None and state_hash(model) == state_hash(state)
    if MODELS[name].seeded:
        assert state_hash(initial_state(ref, 8)) != state_hash(state)


def test_resnet_small_takes_classes_and_channels() -> None:
    arch = Architecture("resnet18-small-v1", ModelConfig(classes=100, channels=3))
    assert build_model(arch)(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    assert num_parameters("resnet18-small-v1") == 11_172_810


def test_gpt2_is_sized_by_the_spec_and_counted_before_building() -> None:
    model = build_model(Architecture("gpt2-lm-v1", TINY_LM))
    assert sum(p.numel() for p in model.parameters()) == gpt2_parameters(TINY_LM) == 30_080
    logits = model(torch.zeros(3, TINY_LM.context, dtype=torch.int64))
    assert logits.shape == (3, TINY_LM.context, TINY_LM.vocab)
    assert not any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())


def test_sampling_text_is_seeded_and_stays_in_the_window() -> None:
    model = build_model(Architecture("gpt2-lm-v1", TINY_LM))
    first = sample_tokens(model, [1, 2, 3], 20, context=TINY_LM.context, temperature=1.0, seed=4)
    assert first[:3] == [1, 2, 3] and len(first) == 23 and all(0 <= t < TINY_LM.vocab for t in first)
    assert sample_tokens(model, [1, 2, 3], 20, context=TINY_LM.context, temperature=1.0, seed=4) == first
    greedy = sample_tokens(model, [1, 2, 3], 5, context=TINY_LM.context, temperature=0)
    assert greedy == sample_tokens(model, [1, 2, 3], 5, context=TINY_LM.context, temperature=0, seed=99)


def test_initial_states_are_the_same_in_another_process() -> None:
    """The seed's checkpoint of the library models, bit for bit, in a fresh interpreter with another hash seed, and
    the Hugging Face libraries are offline there."""
    script = (
        "import os\n"
        "from node.training.models import Architecture, initial_state\n"
        "from node.training.codec import state_hash\n"
        "from protocols.specs import ModelConfig\n"
        "lm = Architecture('gpt2-lm-v1', ModelConfig(layers=2, width=32, heads=2, context=16, vocab=64))\n"
        "print(state_hash(initial_state(lm, 3)), state_hash(initial_state('resnet18-small-v1', 3)),"
        " os.environ['HF_HUB_OFFLINE'])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True,
                         timeout=300, env={**os.environ, "PYTHONHASHSEED": "4321", "HF_HUB_OFFLINE": "0"})
    lm_hash, resnet_hash, offline = out.stdout.split()
    assert lm_hash == state_hash(initial_state(Architecture("gpt2-lm-v1", TINY_LM), 3))
    assert resnet_hash == state_hash(initial_state("resnet18-small-v1", 3))
    assert offline == "1"


@pytest.mark.parametrize(("config", "problem"), [
    (ModelConfig(layers=2, width=32, heads=2, context=16), "model_config.vocab"),
    (ModelConfig(layers=2, width=30, heads=4, context=16, vocab=64), "not a multiple"),
    (ModelConfig(layers=2, width=32, heads=2, context=16, vocab=64, classes=10), "does not use model_config.classes"),
])
def test_bad_model_configs_are_refused_naming_the_field(config: ModelConfig, problem: str) -> None:
    with pytest.raises(TrainingError, match=problem):
        build_model(Architecture("gpt2-lm-v1", config))


def test_absurd_sizes_are_refused_before_allocating() -> None:
    started = time.monotonic()
    with pytest.raises(TrainingError, match="over the limit"):
        build_model(Architecture("gpt2-lm-v1", ModelConfig(layers=96, width=8192, heads=64, context=32768,
                                                           vocab=1 << 20)))
    assert time.monotonic() - started < 5


def test_unknown_model_and_model_ref() -> None:
    with pytest.raises(TrainingError, match="resnet18-small-v1"):
        build_model("resnet-1000")
    spec = JobSpec()
    assert model_ref(spec) == "fmnist-cnn-v1"
    lm: ModelRef = model_ref(JobSpec(model="gpt2-lm-v1", model_config=TINY_LM))
    assert lm == Architecture("gpt2-lm-v1", TINY_LM)
    assert str(lm) == "gpt2-lm-v1(layers=2, width=32, heads=2, context=16, vocab=64)"
