"""``dtnode devnet --task NAME``: each demo's plan and job spec build from its embedded defaults and are what every
node accepts (spec schema, task and model, data that fits the spec); the fine-tuning demo's customer checkpoint is
reproducible and goes through ``--init``'s checks; the LM demo's corpus publishes and its text sampling is seeded.

No demo runs here (each takes minutes on this machine): docs/BENCHMARKS.md has the measured runs.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import trio

from node.checkpoint import decode_checkpoint
from node.cli import DEVNET_DEMOS, build_parser
from node.devnet import demos
from node.devnet.demos import DEMOS, demo_plan, finetune_data, lm_corpus, sample_text
from node.devnet.pretrain import SPLIT, checkpoint_bytes, finetune_split, pretrain_split, pretrain_state, transposed
from node.job_model import prepare_job_model
from node.roles.dataset_publish import check_spec_data, publish_loaded
from node.training.data import ArraySet, load_fashion_mnist
from node.training.models import build_model, initial_state, model_ref
from node.training.objective import check_spec_task
from protocols.errors import ConfigError
from protocols.specs import JobSpec
from storage.blockstore import FilesystemBlockStore
from storage.content import LocalContentStore
from storage.dataset import fetch_dataset_manifest

CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
"""Stands for the dataset's, evaluation shard's and checkpoint's CIDs, known once the customer publishes them."""


def _store(root: Path) -> LocalContentStore:
    return LocalContentStore(FilesystemBlockStore(root, max_bytes=1 << 31, durable=False))


def test_the_cli_offers_every_demo_and_each_needs_no_other_flag() -> None:
    assert DEVNET_DEMOS == tuple(DEMOS)
    for name in DEMOS:
        args = build_parser().parse_args(["devnet", "--task", name])
        assert args.task == name and args.trainers is None and args.rounds is None
    assert build_parser().parse_args(["devnet"]).task == "fmnist"  # make demo stays Fashion-MNIST
    with pytest.raises(ConfigError, match="expected one of fmnist, finetune, lm"):
        demo_plan("imagenet")


@pytest.mark.parametrize("name", list(DEMOS))
def test_each_demo_plan_has_a_valid_spec_from_its_defaults(name: str) -> None:
    demo = DEMOS[name]
    plan = demo_plan(name)
    spec = plan.spec
    assert plan.demo == name and plan.trainers == demo.trainers == spec.tasks_per_round
    assert spec.rounds == demo.rounds and plan.eval_samples == demo.eval_samples
    posted = spec.with_content(dataset_cid=CID, eval_cid=CID, initial_checkpoint_cid=CID)
    assert JobSpec.from_bytes(posted.to_bytes()) == posted  # the validation every node applies
    check_spec_task(spec.task, model_ref(spec))
    build_model(model_ref(spec))
    assert plan.validators >= spec.payment.quorum
    overridden = demo_plan(name, trainers=2, rounds=3, embedded=True)
    assert (overridden.trainers, overridden.spec.tasks_per_round, overridden.spec.rounds) == (2, 2, 3)
    assert overridden.embedded


def test_the_default_demo_is_make_demos_job() -> None:
    from node.devnet.plan import DevnetPlan

    assert demo_plan("fmnist") == DevnetPlan()


def test_finetune_data_is_the_other_half_transposed_and_fits_the_spec() -> None:
    train, test = load_fashion_mnist(None)
    loaded = finetune_data(0)
    assert loaded.test is not None and (len(loaded.train), len(loaded.test)) == (30_000, 10_000)
    assert np.array_equal(loaded.train.inputs[0], train.inputs[SPLIT].T)
    assert np.array_equal(loaded.train.labels, train.labels[SPLIT:])  # type: ignore[arg-type,index]
    assert np.array_equal(loaded.test.inputs, test.inputs.transpose(0, 2, 1))
    assert len(pretrain_split(train)) == SPLIT and np.array_equal(pretrain_split(train).inputs, train.inputs[:SPLIT])
    check_spec_data(DEMOS["finetune"].spec(), loaded.info)


def test_the_customer_checkpoint_is_reproducible_and_passes_init_checks(tmp_path: Path) -> None:
    train, _ = load_fashion_mnist(None)
    first = checkpoint_bytes(pretrain_state(train, steps=3))
    assert checkpoint_bytes(pretrain_state(train, steps=3)) == first  # same steps and seed: same file
    assert checkpoint_bytes(pretrain_state(train, steps=3, seed=1)) != first
    spec = replace(DEMOS["finetune"].spec(), dataset_cid="", eval_cid="")

    async def prepare() -> tuple[JobSpec, bytes]:
        return await prepare_job_model(_store(tmp_path), spec, init_weights=first, timeout_s=10)

    _, initial = trio.run(prepare)  # the path `dtnode job create --init` takes
    weights, _ = decode_checkpoint(initial, model_ref(spec), max_bytes=spec.max_dag_bytes)
    seeded = initial_state(model_ref(spec), spec.seed)
    assert any(not torch.equal(weights[k], seeded[k]) for k in seeded)
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(checkpoint_bytes(weights)).hexdigest()


def test_transposed_swaps_rows_and_columns_and_keeps_labels() -> None:
    data = ArraySet(np.arange(12, dtype=np.uint8).reshape(2, 2, 3), np.array([3, 7], dtype=np.uint8))
    out = transposed(data)
    assert out.inputs.shape == (2, 3, 2) and out.inputs[1, 2, 0] == data.inputs[1, 0, 2]
    assert np.array_equal(out.labels, data.labels)  # type: ignore[arg-type]
    assert len(finetune_split(ArraySet(np.zeros((SPLIT + 5, 2, 2), np.uint8), np.zeros(SPLIT + 5, np.uint8)))) == 5


def test_lm_corpus_publishes_within_the_limits_and_fits_the_spec(tmp_path: Path) -> None:
    corpus, licence = lm_corpus()
    assert corpus.is_dir() and licence
    demo = DEMOS["lm"]
    spec = demo.spec()

    async def publish() -> None:
        store = _store(tmp_path)
        data = await publish_loaded(store, demo.load_data(0), shards=demo.shards, eval_samples=demo.eval_samples)
        manifest = await fetch_dataset_manifest(store, data.dataset_cid)
        assert manifest.info.tokenizer == "bytes" and manifest.info.input_shape == (spec.model_config.context + 1,)
        assert data.eval_samples == demo.eval_samples and data.train_samples > 50_000
        check_spec_data(spec, manifest.info)

    trio.run(publish)


def test_lm_corpus_falls_back_to_the_licence_texts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(demos, "VIM_DOCS", tmp_path / "absent")
    assert lm_corpus() == (demos.FALLBACK_CORPUS, demos.FALLBACK_LICENCE)
    monkeypatch.setattr(demos, "FALLBACK_CORPUS", tmp_path / "absent-too")
    with pytest.raises(ConfigError, match="vim-runtime"):
        lm_corpus()


def test_sampled_text_is_seeded_and_starts_with_the_prompt() -> None:
    from storage.dataset import DatasetInfo

    spec = DEMOS["lm"].spec()
    weights = initial_state(model_ref(spec), 0)
    info = DatasetInfo(format="text", task="causal_lm", licence="test", input_shape=(65,), input_dtype="int32",
                       vocab_size=256, tokenizer="bytes")
    text = sample_text(spec, weights, info, prompt="abc", new_tokens=12)
    assert text.startswith("abc") and text == sample_text(spec, weights, info, prompt="abc", new_tokens=12)
    assert text != sample_text(spec, weights, info, prompt="abc", new_tokens=12, seed=1)
