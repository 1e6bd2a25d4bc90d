"""Task types: loss and metric values against hand computation, the spec/model agreement check, and a causal LM
trained and replayed bit for bit through the same code path as the classifiers."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from node.training.data import ArraySet
from node.training.errors import TrainingError
from node.training.local import train_local
from node.training.models import MODELS, ModelInfo
from node.training.objective import (
    CAUSAL_LM,
    CLASSIFICATION,
    channels_last_pooling,
    check_spec_task,
    format_metric,
    headline,
    objective_for,
)
from node.training.replay import replay_verify
from node.training.task import Task
from protocols.errors import SchemaError
from protocols.specs import JobSpec

TINY_LM = "test-tiny-lm"
VOCAB = 7


class TinyLM(nn.Module):
    """Per-position logits from an embedding and a linear head: the shape contract of a causal LM."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 8)
        self.head = nn.Linear(8, VOCAB)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        hidden: torch.Tensor = torch.tanh(self.embed(ids))
        # Mix in the previous position so the model has context (a causal shift, nothing from the future).
        hidden = hidden + nn.functional.pad(hidden, (0, 0, 1, 0))[:, :-1]
        out: torch.Tensor = self.head(hidden)
        return out


@pytest.fixture
def tiny_lm(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setitem(MODELS, TINY_LM, ModelInfo(TINY_LM, lambda config: TinyLM(), "test LM", "causal_lm"))
    yield TINY_LM


class Fixed(nn.Module):
    """Returns its inputs as logits (so the test knows them)."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_classification_loss_and_accuracy_by_hand() -> None:
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0], [1.0, 1.0, 1.0]], dtype=np.float32)
    labels = np.array([0, 1, 2], dtype=np.uint8)
    data = ArraySet(logits, labels)
    objective = objective_for(CLASSIFICATION)
    expected = [-(2 - math.log(math.exp(2) + 2)), -(1 - math.log(1 + math.e + math.exp(3))), math.log(3)]
    with torch.no_grad():
        score = objective.score(Fixed(), data, 3, chunk=2)
        inputs, targets = objective.batch(data, slice(0, 3))
        mean = float(objective.loss(Fixed(), inputs, targets))
    assert score.count == 3 and score.correct == 1  # row 2 ties: argmax is class 0, not 2
    assert score.loss_sum == pytest.approx(sum(expected), rel=1e-6)
    assert mean == pytest.approx(sum(expected) / 3, rel=1e-6)
    assert headline(CLASSIFICATION, score.accuracy, score.mean_loss) == ("accuracy", pytest.approx(1 / 3))
    assert format_metric("accuracy", 0.8916) == "accuracy 89.16%"


def test_uint8_pixels_are_standardised_as_before() -> None:
    from node.training.objective import to_inputs

    pixels = np.array([[[0, 255]]], dtype=np.uint8)
    x = to_inputs(pixels)
    assert x.shape == (1, 1, 1, 2) and x.dtype == torch.float32
    # The very float32 operations of the Fashion-MNIST-only code this replaced, so old checkpoints see the same inputs.
    before = torch.from_numpy(pixels).to(torch.float32).div_(255.0).sub_(0.2860).div_(0.3530).unsqueeze(1)
    assert torch.equal(x, before)
    assert to_inputs(np.zeros((2, 3, 4, 4), dtype=np.uint8)).shape == (2, 3, 4, 4)  # channels kept
    assert to_inputs(np.zeros((2, 5), dtype=np.int32)).dtype == torch.int64  # ids for an embedding


def test_causal_lm_next_token_loss_and_perplexity_by_hand() -> None:
    class Table(nn.Module):  # logits of position t depend only on the token at t
        def __init__(self) -> None:
            super().__init__()
            self.table = nn.Parameter(torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.table[ids]

    tokens = np.array([[0, 1, 2], [2, 0, 0]], dtype=np.int32)
    data = ArraySet(tokens, None)
    objective = objective_for(CAUSAL_LM)

    def nll(row: list[float], target: int) -> float:
        return -(row[target] - math.log(sum(math.exp(v) for v in row)))

    table = [[0.0, 2.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    # Predictions: 0→1, 1→2 (row 0); 2→0, 0→0 (row 1).
    expected = [nll(table[0], 1), nll(table[1], 2), nll(table[2], 0), nll(table[0], 0)]
    with torch.no_grad():
        score = objective.score(Table(), data, 2, chunk=1)
    assert score.count == 4 and score.correct == 3
    assert score.mean_loss == pytest.approx(sum(expected) / 4, rel=1e-6)
    name, value = headline(CAUSAL_LM, score.accuracy, score.mean_loss)
    assert name == "perplexity" and value == pytest.approx(math.exp(sum(expected) / 4), rel=1e-6)
    assert format_metric(name, 12.3456) == "perplexity 12.35"


def test_data_and_model_that_do_not_fit_are_training_errors(tiny_lm: str) -> None:
    with pytest.raises(TrainingError, match="label 3 is out of range for a model with 3 outputs"):
        objective_for(CLASSIFICATION).score(Fixed(), ArraySet(np.zeros((2, 3), np.float32),
                                                              np.array([0, 3], np.uint8)), 2, 2)
    with pytest.raises(TrainingError, match="needs token sequences"):
        objective_for(CAUSAL_LM).batch(ArraySet(np.zeros((2, 3), np.float32), np.array([0, 1], np.uint8)), [0])
    with pytest.raises(TrainingError, match="needs labelled samples"):
        objective_for(CLASSIFICATION).batch(ArraySet(np.zeros((2, 3), np.int32), None), slice(0, 1))
    with pytest.raises(TrainingError, match="does not fit the model"):
        objective_for(CAUSAL_LM).score(TinyLM(), ArraySet(np.full((1, 3), VOCAB, np.int32), None), 1, 1)
    with pytest.raises(TrainingError, match="unknown task type 'regression'"):
        objective_for("regression")


def test_spec_task_must_be_the_models(tiny_lm: str) -> None:
    check_spec_task(CLASSIFICATION, "fmnist-cnn-v1")
    check_spec_task(CAUSAL_LM, tiny_lm)
    with pytest.raises(TrainingError, match="task 'causal_lm' does not fit model 'fmnist-cnn-v1', a classification"):
        check_spec_task(CAUSAL_LM, "fmnist-cnn-v1")
    with pytest.raises(TrainingError, match="a causal_lm model"):
        check_spec_task(CLASSIFICATION, tiny_lm)
    cid = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    spec = JobSpec(task=CAUSAL_LM).with_content(dataset_cid=cid, eval_cid=cid, initial_checkpoint_cid=cid)
    assert JobSpec.from_bytes(spec.to_bytes()).task == CAUSAL_LM
    assert b'"task"' not in replace(spec, task=CLASSIFICATION).to_bytes()  # classification specs keep their bytes
    with pytest.raises(SchemaError, match="'task'"):
        JobSpec.from_bytes(spec.to_bytes().replace(b'"causal_lm"', b'"regression"'))


def corpus(n: int = 48, length: int = 9) -> ArraySet:
    rng = np.random.default_rng(5)
    # A learnable pattern (token t+1 follows t) with noise.
    starts = rng.integers(0, VOCAB, n)
    rows = (starts[:, None] + np.arange(length)[None, :]) % VOCAB
    noise = rng.random(rows.shape) < 0.1
    rows[noise] = rng.integers(0, VOCAB, int(noise.sum()))
    return ArraySet(rows.astype(np.int32), None)


def test_causal_lm_trains_and_replays_bitwise(tiny_lm: str) -> None:
    from node.training.models import initial_state

    data = corpus()
    task = Task(model_name=tiny_lm, steps=12, batch_size=8, lr=0.05, seed=4, segment_every=4, task_type=CAUSAL_LM,
                sample_range=(0, 40))
    base = initial_state(tiny_lm, 1)
    result = train_local(task, base, data)
    again = train_local(task, base, data)
    assert result.segment_hashes == again.segment_hashes  # bit for bit, run to run
    assert result.loss_after < result.loss_before  # it learns the pattern
    verdict = replay_verify(task, base, data, claimed_segment_hashes=result.segment_hashes,
                            segment_states_fetch=lambda i: result.segment_states[i], claimed_delta=result.delta,
                            claimed_loss_before=result.loss_before, claimed_loss_after=result.loss_after,
                            segments_to_check=[0, 1, 2])
    assert verdict.ok and verdict.max_distance == 0.0 and verdict.checked_segments == (0, 1, 2), verdict
    # The loss is the task's: the same run taken as a classification task cannot even read the data.
    with pytest.raises(TrainingError, match="needs labelled samples"):
        replay_verify(replace(task, task_type=CLASSIFICATION), base, data,
                      claimed_segment_hashes=result.segment_hashes,
                      segment_states_fetch=lambda i: result.segment_states[i], claimed_delta=result.delta,
                      claimed_loss_before=result.loss_before, claimed_loss_after=result.loss_after,
                      segments_to_check=[0])


def test_task_from_ticket_takes_the_specs_task_and_checks_the_model(tiny_lm: str) -> None:
    from protocols.specs import TaskTicket
    from protocols.types import NodeClass

    cid, address = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", "0x" + "11" * 20
    ticket = TaskTicket(job_id=1, round=0, term=0, slot=0, base_cid=cid, shard_cid=cid, sample_start=0,
                        sample_count=10, steps=4, batch_size=2, seed=0, node_class=NodeClass.M, weight=8, work_units=1,
                        trainer=address, leader=address, expires_at=0)
    assert Task.from_ticket(JobSpec(model=tiny_lm, task=CAUSAL_LM), ticket).task_type == CAUSAL_LM
    assert Task.from_ticket(JobSpec(), ticket).task_type == CLASSIFICATION
    # The spec's loss sample count reaches the task its losses are measured by (trainer and replay alike).
    assert Task.from_ticket(JobSpec(), ticket).loss_samples == JobSpec().loss_samples == 512
    assert Task.from_ticket(JobSpec(loss_samples=64), ticket).loss_samples == 64
    with pytest.raises(TrainingError, match="does not fit model"):
        Task.from_ticket(JobSpec(task=CAUSAL_LM), ticket)


def test_gpt2_from_the_registry_trains_replays_and_evaluates_as_a_causal_lm() -> None:
    from node.training.evaluate import evaluate
    from node.training.models import Architecture, initial_state
    from protocols.specs import ModelConfig

    ref = Architecture("gpt2-lm-v1", ModelConfig(layers=1, width=16, heads=2, context=8, vocab=VOCAB))
    data = corpus(n=32)
    task = Task(model_name=ref, steps=6, batch_size=4, lr=0.01, seed=1, segment_every=2, task_type=CAUSAL_LM,
                sample_range=(0, 32))
    base = initial_state(ref, 0)
    result = train_local(task, base, data)
    verdict = replay_verify(task, base, data, claimed_segment_hashes=result.segment_hashes,
                            segment_states_fetch=lambda i: result.segment_states[i], claimed_delta=result.delta,
                            claimed_loss_before=result.loss_before, claimed_loss_after=result.loss_after,
                            segments_to_check=[0, 1, 2])
    assert verdict.ok and verdict.max_distance == 0.0, verdict
    accuracy, loss = evaluate(ref, result.final_state, data, task=CAUSAL_LM)
    assert loss == pytest.approx(result.loss_after, rel=1e-6) and loss < result.loss_before
    assert 0 <= accuracy <= 1 and headline(CAUSAL_LM, accuracy, loss)[1] == pytest.approx(math.exp(loss))


@pytest.mark.parametrize("pool", [nn.MaxPool2d(2), nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
                                  nn.MaxPool2d(2, dilation=2)])
def test_channels_last_pooling_gives_the_same_bits(pool: nn.MaxPool2d) -> None:
    """Scoring pools in channels-last order for speed: every output bit must be the default layout's, ties, signed
    zeros, infinities and NaN included, and the next layer gets the default (contiguous) layout."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(8, 6, 15, 15, generator=gen).round(decimals=1)  # rounding makes ties common
    x[0, 0, 0, :4] = torch.tensor([float("nan"), -0.0, float("inf"), float("-inf")])
    x[1, 2] = 0.0
    model = nn.Sequential(nn.Conv2d(6, 6, 1), pool, nn.Flatten())
    with torch.no_grad():
        plain = model[1](model[0](x))
        with channels_last_pooling(model):
            fast = model[1](model[0](x))
            assert fast.is_contiguous()
            assert torch.equal(model(x).view(torch.int32), nn.Flatten()(plain).view(torch.int32))
    assert plain.shape == fast.shape
    assert torch.equal(plain.view(torch.int32), fast.view(torch.int32))
    assert bool(plain.isnan().any()) and bool(plain.isinf().any())
    assert not pool._forward_hooks and not pool._forward_pre_hooks  # removed on exit
