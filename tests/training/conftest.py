"""Shared fixtures: Fashion-MNIST loaded once per session, and small subsets so tests stay fast."""

from __future__ import annotations

import pytest

from node.training.data import ArraySet, load_fashion_mnist


@pytest.fixture(scope="session")
def fmnist() -> tuple[ArraySet, ArraySet]:
    return load_fashion_mnist()


@pytest.fixture(scope="session")
def small_train(fmnist: tuple[ArraySet, ArraySet]) -> ArraySet:
    return fmnist[0].subset(slice(0, 6000))


@pytest.fixture(scope="session")
def small_test(fmnist: tuple[ArraySet, ArraySet]) -> ArraySet:
    return fmnist[1].subset(slice(0, 2000))
