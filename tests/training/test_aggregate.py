from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from node.training.aggregate import (
    CenteredClip,
    FedAvg,
    FedMedian,
    FedTrimmedAvg,
    Krum,
    OuterOptimizer,
    Strategy,
    aggregate_centered_clip,
    aggregate_krum,
    aggregate_mean,
    aggregate_median,
    aggregate_trimmed_mean,
    strategy_from_spec,
)
from node.training.codec import decode_state, encode_state
from node.training.errors import TrainingError
from protocols.specs import AggregationSpec

SHAPES = {"w": (3, 4), "b": (5,)}
STRATEGIES = [
    FedAvg(),
    FedMedian(),
    FedTrimmedAvg(beta=0.2),
    Krum(f=1, m=2),
    CenteredClip(tau=0.5, iters=2),
    FedAvg(outer=OuterOptimizer()),
]
floats = st.floats(-10, 10, width=32, allow_subnormal=False)


def delta_from(values: list[float]) -> dict[str, torch.Tensor]:
    t = torch.tensor(values, dtype=torch.float32)
    return {"w": t[:12].reshape(3, 4).clone(), "b": t[12:].clone()}


deltas = st.lists(floats, min_size=17, max_size=17).map(delta_from)
weighted = st.lists(st.tuples(deltas, st.integers(1, 1000).map(float)), min_size=1, max_size=6)


@settings(max_examples=30, deadline=None)
@given(weighted, st.randoms(use_true_random=False), st.sampled_from(range(len(STRATEGIES))))
def test_any_order_gives_bitwise_the_same_checkpoint(items, rnd, which) -> None:  # type: ignore[no-untyped-def]
    strategy = STRATEGIES[which]
    base = delta_from([0.5] * 17)
    outer = {"momentum/" + k: torch.full(v.shape, 0.25) for k, v in base.items()}
    shuffled = list(items)
    rnd.shuffle(shuffled)
    a, oa = strategy.apply(base, items, outer)
    b, ob = strategy.apply(base, shuffled, outer)
    assert encode_state(a) == encode_state(b) and encode_state(oa) == encode_state(ob)


@settings(max_examples=30, deadline=None)
@given(deltas, st.lists(st.integers(1, 100).map(float), min_size=1, max_size=5))
def test_identical_deltas_aggregate_to_themselves(delta, weights) -> None:  # type: ignore[no-untyped-def]
    items = [(delta, w) for w in weights]
    for strategy in STRATEGIES[:5]:
        out = strategy.aggregate(items)
        assert all(torch.equal(out[k], delta[k]) for k in SHAPES), strategy.name  # (-0.0 may come back as 0.0)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(deltas, min_size=5, max_size=7),
    st.lists(st.lists(st.floats(-1e6, 1e6, width=32), min_size=17, max_size=17).map(delta_from), min_size=1,
             max_size=2),
)
def test_median_and_trimmed_mean_stay_in_the_honest_range(honest, attackers) -> None:  # type: ignore[no-untyped-def]
    # f attackers with f < n/2 (median) and f <= floor(beta * n) (trimmed mean): every output coordinate lies
    # between the smallest and the largest honest value.
    items = [(d, 1.0) for d in honest + attackers]
    n, f = len(items), len(attackers)
    beta = (f + 0.5) / n
    for out in (aggregate_median(items), aggregate_trimmed_mean(items, beta)):
        for key in SHAPES:
            stack = torch.stack([d[key] for d in honest])
            assert bool((out[key] >= stack.min(0).values).all()) and bool((out[key] <= stack.max(0).values).all())


@settings(max_examples=30, deadline=None)
@given(st.lists(deltas, min_size=5, max_size=7), st.integers(1, 2), st.floats(1e3, 1e5))
def test_krum_picks_an_honest_delta_when_attackers_are_far(honest, f, shift) -> None:  # type: ignore[no-untyped-def]
    # n >= 2f + 3 and the f attackers far from every honest delta (and heavily weighted): Krum's choice is one
    # of the honest deltas, so every coordinate stays inside the honest range.
    attackers = [{k: v + shift for k, v in d.items()} for d in honest[:f]]
    items = [(d, 1.0) for d in honest] + [(d, 1000.0) for d in attackers]
    out = Krum(f=f).aggregate(items)
    assert any(all(torch.equal(out[k], d[k]) for k in SHAPES) for d in honest)


@settings(max_examples=20, deadline=None)
@given(weighted)
def test_a_strategy_is_its_pure_function(items) -> None:  # type: ignore[no-untyped-def]
    # The classes only carry settings: the same bits as the functions they wrap, in the spec's units.
    spec = AggregationSpec(strategy="trimmed_mean", trim_ratio="0.2", outer="none")
    assert encode_state(strategy_from_spec(spec).aggregate(items)) == encode_state(aggregate_trimmed_mean(items, 0.2))
    clip = AggregationSpec(strategy="centered_clip", clip_tau="0.5", outer="none")
    assert encode_state(strategy_from_spec(clip).aggregate(items)) == encode_state(
        aggregate_centered_clip(items, 0.5, 3))


def test_weighted_mean_and_krum_pick_the_honest_cluster() -> None:
    a, b = delta_from([1.0] * 17), delta_from([3.0] * 17)
    assert torch.allclose(aggregate_mean([(a, 1.0), (b, 3.0)])["w"], torch.full((3, 4), 2.5))
    honest = [delta_from([1.0 + 0.01 * i] * 17) for i in range(5)]
    evil = delta_from([-100.0] * 17)
    out = aggregate_krum([(d, 1.0) for d in honest] + [(evil, 1000.0)], f=1, m=3)
    assert float(out["w"].min()) > 0.99
    clipped = aggregate_centered_clip([(d, 1.0) for d in honest] + [(evil, 1.0)], tau=0.1, iters=3)
    assert float((clipped["w"] - 1.02).abs().max()) < 0.1


def test_diloco_matches_torch_nesterov_sgd() -> None:
    strategy = strategy_from_spec(AggregationSpec())  # the spec's default is DiLoCo
    base = delta_from([0.5 + 0.01 * i for i in range(17)])
    param = torch.nn.Parameter(torch.cat([base["b"], base["w"].reshape(-1)]).clone())
    opt = torch.optim.SGD([param], lr=0.7, momentum=0.9, nesterov=True)
    state: dict[str, torch.Tensor] = base
    outer: dict[str, torch.Tensor] = {}
    for r in range(3):
        delta = delta_from([0.1 * (r + 1) - 0.03 * i for i in range(17)])
        state, outer = strategy.apply(state, [(delta, 1.0)], decode_state(encode_state(outer)) if outer else {})
        opt.zero_grad()
        param.grad = -torch.cat([delta["b"], delta["w"].reshape(-1)])
        opt.step()
    ours = torch.cat([state["b"], state["w"].reshape(-1)])
    assert torch.allclose(ours, param.detach(), atol=1e-6)


def test_strategies_from_specs_and_errors() -> None:
    nesterov = OuterOptimizer(lr=0.5, momentum=0.8)
    for spec, expected in [
        (AggregationSpec(strategy="mean", outer="none"), FedAvg()),
        (AggregationSpec(strategy="median", outer_lr="0.5", outer_momentum="0.8"), FedMedian(outer=nesterov)),
        (AggregationSpec(strategy="trimmed_mean", trim_ratio="0.25", outer="none"), FedTrimmedAvg(beta=0.25)),
        (AggregationSpec(strategy="krum", krum_f=2, outer="none"), Krum(f=2, m=1)),
        (AggregationSpec(strategy="centered_clip", clip_tau="0.5", outer="none"), CenteredClip(tau=0.5, iters=3)),
    ]:
        assert strategy_from_spec(spec) == expected, spec
    diloco = strategy_from_spec(AggregationSpec())
    assert isinstance(diloco, FedAvg) and diloco.outer == OuterOptimizer(lr=0.7, momentum=0.9)
    # One table of defaults: a rule built without a setting gets the spec's default.
    spec = AggregationSpec()
    assert FedTrimmedAvg().beta == float(spec.trim_ratio) and CenteredClip().tau == float(spec.clip_tau)
    assert Krum().f == spec.krum_f and OuterOptimizer() == OuterOptimizer(lr=float(spec.outer_lr),
                                                                           momentum=float(spec.outer_momentum))
    for bad in (lambda: strategy_from_spec(AggregationSpec(strategy="avg")), lambda: Krum(f=-1),
                lambda: FedTrimmedAvg(beta=0.5), lambda: strategy_from_spec(AggregationSpec(outer="adam")),
                lambda: strategy_from_spec(AggregationSpec(strategy="centered_clip", clip_tau="x")),
                lambda: CenteredClip(tau=0.0), lambda: OuterOptimizer(momentum=1.0),
                lambda: FedAvg().apply(delta_from([0.0] * 17), [])):
        with pytest.raises(TrainingError):
            bad()


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: f"{type(s).__name__}{'+outer' if s.outer else ''}")
def test_scalar_tensors_aggregate_with_every_strategy(strategy: Strategy) -> None:
    """A 0-d tensor (BatchNorm's ``num_batches_tracked``, as in ``resnet18-small-v1``) keeps its shape through the
    aggregate and the outer step: NumPy arithmetic on a 0-d array gives a scalar, which crashed the outer step."""
    base = {"w": torch.ones(2, 2), "n": torch.tensor(3.0)}
    deltas = [({"w": torch.full((2, 2), 0.5), "n": torch.tensor(100.0)}, 1.0) for _ in range(5)]
    state, outer = strategy.apply(base, deltas)
    assert state["n"].shape == () and state["n"].dtype == torch.float32 and state["w"].shape == (2, 2)
    step = 1.0 if strategy.outer is None else strategy.outer.lr * (1 + strategy.outer.momentum)
    assert state["n"].item() == pytest.approx(3.0 + 100.0 * step)
    assert all(t.shape == base[k.removeprefix("momentum/")].shape for k, t in outer.items())
