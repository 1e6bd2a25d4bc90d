"""``dtnode job create`` with the customer's own model: ``--init`` weights checked tensor by tensor and published as
the initial checkpoint, a spec naming a checkpoint CID, and an ONNX ``--model-file`` published by CID."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import trio
from safetensors.torch import save as st_save

from node.checkpoint import decode_checkpoint, initial_checkpoint
from node.job_model import prepare_job_model
from node.training.data import ArraySet
from node.training.errors import InvalidDelta, ModelFileRefused
from node.training.local import task_loss, train_local
from node.training.models import Architecture, State, build_model, initial_state, model_ref
from node.training.task import Task
from protocols.errors import ConfigError
from protocols.specs import JobSpec, ModelConfig
from storage.blockstore import FilesystemBlockStore
from storage.content import LocalContentStore
from tests.training.model_files import hostile_pickle, onnx_bytes, small_classifier

MLP = "fmnist-mlp-v1"
SPEC = JobSpec(model=MLP, seed=1)


def _store(root: Path) -> LocalContentStore:
    return LocalContentStore(FilesystemBlockStore(root, max_bytes=1 << 30, durable=False))


def _prepare(root: Path, spec: JobSpec = SPEC, **files: bytes) -> tuple[JobSpec, bytes]:
    async def run() -> tuple[JobSpec, bytes]:
        return await prepare_job_model(_store(root), spec, timeout_s=10, **files)

    return trio.run(run)


def _customer_weights() -> State:
    """A customer's pre-trained weights: what a training script saves with ``safetensors.torch.save_file``."""
    return {k: v * 0.5 + 0.01 for k, v in initial_state(MLP, 123).items()}


def test_init_weights_become_the_initial_checkpoint_every_node_decodes(tmp_path: Path) -> None:
    weights = _customer_weights()
    spec, initial = _prepare(tmp_path, init_weights=st_save(weights, metadata={"format": "pt"}))
    assert spec == SPEC
    model, outer = decode_checkpoint(initial, model_ref(spec), max_bytes=spec.max_dag_bytes)
    assert outer is None and all(torch.equal(model[k], weights[k]) for k in weights)
    assert initial != initial_checkpoint(MLP, SPEC.seed)
    # A trainer's task starts from the customer's weights, not from the seed's.
    rng = np.random.default_rng(0)
    data = ArraySet(rng.integers(0, 256, (64, 28, 28), dtype=np.uint8), rng.integers(0, 10, 64).astype(np.uint8))
    task = Task(model_name=model_ref(spec), steps=3, batch_size=16, lr=1e-3, seed=0)
    result = train_local(task, model, data)
    assert result.loss_before == task_loss(task, weights, data)
    assert result.loss_before != task_loss(task, initial_state(MLP, SPEC.seed), data)


def test_a_spec_can_name_the_initial_checkpoint_by_cid(tmp_path: Path) -> None:
    weights = _customer_weights()

    async def run() -> tuple[JobSpec, bytes]:
        store = _store(tmp_path)
        cid = await store.put(st_save(weights))
        return await prepare_job_model(store, replace(SPEC, initial_checkpoint_cid=cid), timeout_s=10)

    _, initial = trio.run(run)
    model, _ = decode_checkpoint(initial, MLP, max_bytes=1 << 30)
    assert all(torch.equal(model[k], weights[k]) for k in weights)


def test_without_init_the_checkpoint_comes_from_the_seed(tmp_path: Path) -> None:
    assert _prepare(tmp_path)[1] == initial_checkpoint(MLP, SPEC.seed)


@pytest.mark.parametrize(("change", "message"), [
    (lambda w: w.update({"fc2.weight": torch.zeros(9, 256)}),
     r"tensor 'fc2.weight' is torch.float32 \(9, 256\), fmnist-mlp-v1 expects torch.float32 \(10, 256\)"),
    (lambda w: w.pop("fc1.bias"), r"tensor 'fc1.bias' of fmnist-mlp-v1 is missing"),
    (lambda w: w.update({"fc0.weight": torch.zeros(1)}), r"tensor 'fc0.weight' is not part of fmnist-mlp-v1"),
    (lambda w: w.update({"fc1.weight": w["fc1.weight"].double()}), r"'fc1.weight' is torch.float64"),
])
def test_init_weights_that_do_not_fit_name_the_first_bad_tensor(tmp_path: Path, change: object,
                                                                 message: str) -> None:
    weights = _customer_weights()
    change(weights)  # type: ignore[operator]
    with pytest.raises(InvalidDelta, match=message):
        _prepare(tmp_path, init_weights=st_save(weights))


def test_init_weights_must_be_safetensors(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    with pytest.raises(ModelFileRefused, match="pickle"):
        _prepare(tmp_path, init_weights=hostile_pickle(marker))
    with pytest.raises(InvalidDelta, match="not a safetensors file"):
        _prepare(tmp_path, init_weights=b"{\"weights\": [1, 2, 3]}")
    assert not marker.exists()


def test_batchnorm_counters_saved_by_torch_as_int64_are_accepted(tmp_path: Path) -> None:
    spec = JobSpec(model="resnet18-small-v1")
    weights = initial_state("resnet18-small-v1", 4)
    weights["bn1.num_batches_tracked"] = torch.tensor(17, dtype=torch.int64)
    _, initial = _prepare(tmp_path, spec, init_weights=st_save(weights))
    model, _ = decode_checkpoint(initial, "resnet18-small-v1", max_bytes=1 << 30)
    assert float(model["bn1.num_batches_tracked"]) == 17.0


def test_a_model_file_is_published_and_named_in_the_spec(tmp_path: Path) -> None:
    data = onnx_bytes(small_classifier(), torch.zeros(1, 1, 8, 8))
    spec, initial = _prepare(tmp_path, JobSpec(model="onnx-v1"), model_file=data)
    assert spec.model_config.onnx_cid.startswith("b")
    arch = model_ref(spec)
    assert arch == Architecture("onnx-v1", spec.model_config)
    model, _ = decode_checkpoint(initial, arch, max_bytes=1 << 30)
    assert sum(v.numel() for v in model.values()) == sum(p.numel() for p in small_classifier().parameters())
    with pytest.raises(ConfigError, match="onnx-v1"):
        _prepare(tmp_path, SPEC, model_file=data)
    with pytest.raises(ModelFileRefused, match="pickle"):
        _prepare(tmp_path, JobSpec(model="onnx-v1"), model_file=hostile_pickle(tmp_path / "marker"))
    assert not (tmp_path / "marker").exists()


def test_a_gpt2_saved_by_transformers_can_be_fine_tuned(tmp_path: Path) -> None:
    """A customer's GPT-2 as ``save_pretrained`` writes it (tied head left out of the file, format metadata) is
    accepted for a job of the same size and computes the same logits as the customer's model."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    theirs = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2,
                                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    theirs.save_pretrained(tmp_path / "hf")
    spec = JobSpec(model="gpt2-lm-v1", task="causal_lm",
                   model_config=ModelConfig(layers=2, width=32, heads=2, context=16, vocab=64))
    _, initial = _prepare(tmp_path / "store", spec, init_weights=(tmp_path / "hf" / "model.safetensors").read_bytes())
    arch = model_ref(spec)
    model = build_model(arch)
    model.load_state_dict(decode_checkpoint(initial, arch, max_bytes=1 << 30)[0], strict=True)
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    theirs.eval()
    with torch.no_grad():
        assert torch.allclose(model(ids), theirs(input_ids=ids).logits, atol=1e-5)
