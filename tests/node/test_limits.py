"""Content limits follow the job's model (issue 14): each kind of content fits its limit with little to spare, and
a bigger model gets proportionally bigger limits and longer transfer deadlines."""

from __future__ import annotations

from dataclasses import replace

import torch

from node.checkpoint import encode_checkpoint
from node.limits import HEADER_SLACK, MIN_RATE, content_deadline_s, content_limits
from node.roles.customer import checkpoint_model
from node.training.codec import encode_delta, encode_state
from node.training.data import load_fashion_mnist
from node.training.local import train_local
from node.training.models import initial_state
from node.training.task import Task
from protocols.specs import JobSpec


def test_each_kind_of_content_fits_its_limit_and_little_more() -> None:
    spec = JobSpec(model="fmnist-mlp-v1", local_steps=4, segment_every=2)
    limits = content_limits(spec)
    weights = initial_state(spec.model, 0)
    assert limits.scalars == sum(t.numel() for t in weights.values()) == 203_530
    momentum = {"momentum/" + k: torch.zeros_like(v) for k, v in weights.items()}
    checkpoint = len(encode_checkpoint(weights, momentum))
    delta = len(encode_delta(weights, kind="f32"))
    train, _ = load_fashion_mnist()
    result = train_local(Task(model_name=spec.model, steps=2, batch_size=8, lr=1e-3, seed=0, segment_every=2),
                         weights, train.subset(slice(0, 64)))
    state = len(encode_state(result.segment_states[-1]))
    for actual, limit in ((checkpoint, limits.checkpoint_bytes), (delta, limits.delta_bytes),
                          (state, limits.state_bytes)):
        assert actual <= limit <= actual + HEADER_SLACK
    assert limits.segments_per_task == 4  # class L runs 2 x 4 steps, a state every 2
    assert limits.spill_bytes == 4 * limits.state_bytes


def test_limits_and_deadlines_grow_with_the_model() -> None:
    small, large = content_limits(JobSpec(model="fmnist-cnn-v1")), content_limits(JobSpec(model="fmnist-mlp-v1"))
    assert small.scalars < large.scalars and small.state_bytes < large.state_bytes
    assert large.transfer_s(large.state_bytes, 60.0) == 60.0 + large.state_bytes / MIN_RATE
    assert small.transfer_s(small.state_bytes, 60.0) < large.transfer_s(large.state_bytes, 60.0)
    sgd = content_limits(replace(JobSpec(model="fmnist-cnn-v1"), inner_optimizer="sgd"))
    assert sgd.state_bytes - HEADER_SLACK == (small.state_bytes - HEADER_SLACK) // 3  # no moments


def test_the_availability_deadline_covers_one_honest_transfer_of_a_check() -> None:
    small, large = content_limits(JobSpec(model="fmnist-cnn-v1")), content_limits(JobSpec(model="fmnist-mlp-v1"))
    # A check of k segments fetches the delta and at most 2k states (end states only under a hardware mismatch).
    assert large.check_bytes(3) == large.delta_bytes + 6 * large.state_bytes
    for limits in (small, large):
        deadline = limits.content_deadline_s(120.0, 3)
        assert deadline == 120.0 + limits.check_bytes(3) / MIN_RATE
        assert deadline > limits.transfer_s(limits.delta_bytes + 6 * limits.state_bytes, 0.0)
    assert small.content_deadline_s(120.0, 3) < large.content_deadline_s(120.0, 3)
    assert large.content_deadline_s(120.0, 3) < large.content_deadline_s(120.0, 6)
    # What a validator uses: the spec's k, or all of the largest class's segments when the spec says 0 (= all).
    spec = JobSpec(model="fmnist-mlp-v1", spot_check_segments=3)
    assert content_deadline_s(spec, 120.0) == large.content_deadline_s(120.0, 3)
    every = replace(spec, spot_check_segments=0)
    assert content_deadline_s(every, 120.0) == large.content_deadline_s(120.0, large.segments_per_task)


def test_a_customer_reads_a_checkpoint_larger_than_its_datasets_bound() -> None:
    """An 11M-parameter checkpoint (89 MB with its outer momentum) is past the spec's ``max_dag_bytes`` (64 MiB,
    the bound of the customer's dataset files): the customer's download and measurement are bounded by the model's
    checkpoint limit, as every other node's fetch is (the devnet's customer refused its own job's first round)."""
    spec = JobSpec(model="resnet18-small-v1")
    weights = initial_state(spec.model, 0)
    data = encode_checkpoint(weights, {"momentum/" + k: torch.zeros_like(v) for k, v in weights.items()})
    assert spec.max_dag_bytes < len(data) <= content_limits(spec).checkpoint_bytes
    model = checkpoint_model(data, spec)
    assert model.keys() == weights.keys() and all(torch.equal(model[k], weights[k]) for k in weights)
