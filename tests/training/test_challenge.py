from __future__ import annotations

from math import comb

import pytest

from node.training.challenge import catch_probability, catch_probability_uniform, choose_segments
from node.training.errors import TrainingError


def test_uniform_formula() -> None:
    # 1 - C(n - fn, k) / C(n, k): half of 10 segments faked, 2 challenged.
    assert catch_probability_uniform(10, 2, 0.5) == pytest.approx(1 - comb(5, 2) / comb(10, 2))
    assert catch_probability_uniform(10, 2, 0.5, updates=5) == pytest.approx(1 - (comb(5, 2) / comb(10, 2)) ** 5)
    assert catch_probability_uniform(10, 2, 0.0) == 0.0
    assert catch_probability_uniform(10, 10, 0.1) == 1.0


def test_pinned_last_segment() -> None:
    assert catch_probability(10, 2, 1, last_faked=True) == 1.0
    # Avoiding the last segment leaves one uniform draw over the other 9.
    assert catch_probability(10, 2, 4) == pytest.approx(4 / 9)
    assert catch_probability(10, 3, 4, updates=5) == pytest.approx(1 - (comb(5, 2) / comb(9, 2)) ** 5)
    with pytest.raises(TrainingError):
        catch_probability(10, 2, 10)


def test_empirical_rate_matches_the_formula() -> None:
    faked = {1, 3, 5, 7}  # 4 of 10, the last honest
    trials = 2000
    caught = sum(bool(faked & set(choose_segments(i.to_bytes(32, "big"), 10, 3))) for i in range(trials))
    assert abs(caught / trials - catch_probability(10, 3, 4)) < 0.04
