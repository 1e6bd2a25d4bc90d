from __future__ import annotations

from node.training.aggregate import FedAvg, FedTrimmedAvg, OuterOptimizer
from node.training.data import ArraySet
from node.training.evaluate import evaluate
from node.training.models import initial_state
from node.training.simulate import SimConfig, simulate


def test_federated_mlp_learns_in_a_few_rounds(small_train: ArraySet, small_test: ArraySet) -> None:
    config = SimConfig(model_name="fmnist-mlp-v1", n_trainers=4, local_steps=20, rounds=4, batch_size=32,
                       strategy=FedAvg(outer=OuterOptimizer()), target_accuracy=0.75, seed=1)
    result = simulate(small_train, small_test, config)
    first = evaluate("fmnist-mlp-v1", initial_state("fmnist-mlp-v1", 1), small_test)[0]
    assert first < 0.3
    assert result.reached is not None, result.history
    assert result.history[-1].steps == 80 * len(result.history)
    assert result.history[-1].parallel_s <= result.history[-1].compute_s


def test_non_iid_robust_run_learns(small_train: ArraySet, small_test: ArraySet) -> None:
    config = SimConfig(model_name="fmnist-mlp-v1", n_trainers=5, local_steps=15, rounds=3, iid=False, alpha=0.5,
                       strategy=FedTrimmedAvg(beta=0.2))
    result = simulate(small_train, small_test, config)
    assert result.history[-1].accuracy > 0.6
