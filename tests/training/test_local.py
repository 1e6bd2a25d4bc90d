from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from node.training.codec import state_hash, state_sub
from node.training.data import ArraySet
from node.training.errors import TrainingError
from node.training.local import BatchSchedule, loss_to_micro, micro_to_loss, model_part, train_local
from node.training.models import initial_state
from node.training.task import Task

MLP = "fmnist-mlp-v1"


def test_training_is_bitwise_deterministic_and_learns(small_train: ArraySet) -> None:
    base = initial_state(MLP, 0)
    task = Task(model_name=MLP, steps=25, batch_size=32, lr=1e-3, seed=4, segment_every=10)
    a = train_local(task, base, small_train)
    b = train_local(task, base, small_train)
    assert a.segment_hashes == b.segment_hashes and len(a.segment_hashes) == 3
    assert state_hash(a.delta) == state_hash(b.delta)
    assert state_hash(a.delta) == state_hash(state_sub(model_part(a.segment_states[-1]), base))
    assert state_hash(a.final_state) == state_hash(model_part(a.segment_states[-1]))
    assert [state_hash(s) for s in a.segment_states] == a.segment_hashes
    assert a.loss_after < a.loss_before - 0.5
    # AdamW moments are part of every segment state, so a segment can be replayed from it.
    assert any(k.startswith("optim/") and k.endswith("/exp_avg") for k in a.segment_states[0])
    c = train_local(replace(task, seed=5), base, small_train)
    assert c.segment_hashes[0] != a.segment_hashes[0]


def test_sample_range_equals_training_on_that_slice(small_train: ArraySet) -> None:
    base = initial_state(MLP, 1)
    task = Task(model_name=MLP, steps=5, batch_size=16, lr=1e-3, seed=2, optimizer="sgd")
    ranged = train_local(replace(task, sample_range=(100, 400)), base, small_train)
    sliced = train_local(task, base, small_train.subset(slice(100, 400)))
    assert ranged.segment_hashes == sliced.segment_hashes
    with pytest.raises(TrainingError, match="outside"):
        train_local(replace(task, sample_range=(0, 10**6)), base, small_train)


def test_training_restores_thread_settings(small_train: ArraySet) -> None:
    threads = torch.get_num_threads()
    train_local(Task(model_name=MLP, steps=1, batch_size=8, lr=1e-3, seed=0), initial_state(MLP, 0), small_train)
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()


def test_batch_schedule_covers_each_epoch_once() -> None:
    schedule = BatchSchedule(n=10, batch_size=4, seed=3)
    first = [int(i) for step in range(5) for i in schedule.indices(step)]  # 20 positions = 2 epochs
    assert sorted(first[:10]) == list(range(10)) and sorted(first[10:]) == list(range(10))
    assert [int(i) for i in BatchSchedule(n=10, batch_size=4, seed=3).indices(3)] == first[12:16]


def test_bad_task_parameters() -> None:
    with pytest.raises(TrainingError, match="segment_every"):
        train_local(Task(model_name=MLP, steps=5, batch_size=2, lr=1e-3, seed=0, segment_every=11),
                    initial_state(MLP, 0), ArraySet(*_tiny()))
    with pytest.raises(TrainingError, match="optimizer"):
        train_local(Task(model_name=MLP, steps=5, batch_size=2, lr=1e-3, seed=0, optimizer="lion"),
                    initial_state(MLP, 0), ArraySet(*_tiny()))


def test_loss_micro_units() -> None:
    assert loss_to_micro(2.302585) == 2_302_585
    assert abs(micro_to_loss(loss_to_micro(0.1234567)) - 0.1234567) <= 5e-7
    with pytest.raises(TrainingError):
        loss_to_micro(float("nan"))


def _tiny() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((4, 28, 28), dtype=np.uint8), np.zeros(4, dtype=np.uint8)
