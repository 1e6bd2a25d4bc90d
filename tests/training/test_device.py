"""Training devices (issue 15, GPU trainers): device resolution, the replay rule across device kinds, the manifest's
device field, the calibration's class mapping; on a machine with a GPU also a real GPU run replayed on the CPU."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from node.training.calibrate import measure_throughput, settle_class
from node.training.codec import State, state_hash, state_sub
from node.training.data import ArraySet, make_shards
from node.training.device import (
    CPU,
    CUBLAS_WORKSPACE,
    CUDA,
    DEVICE_KINDS,
    DeviceUnavailable,
    ReplayRule,
    replay_device,
    replay_rule,
    resolve_device,
    to_cpu,
    training_device,
)
from node.training.local import LocalResult, deterministic_torch, model_part, task_loss, task_view, train_local
from node.training.models import initial_state
from node.training.replay import REPLAY_MISMATCH, Verdict, replay_verify, state_distance
from node.training.task import Task
from node.training.tasks import capacity, class_for_throughput
from protocols import specs
from protocols.errors import SchemaError
from protocols.types import NodeClass

MLP = "fmnist-mlp-v1"
TASK = Task(model_name=MLP, steps=20, batch_size=32, lr=1e-3, seed=5, segment_every=10)
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# --- device resolution -----------------------------------------------------------------------------------------

def test_auto_is_cuda_only_where_torch_sees_a_gpu() -> None:
    assert resolve_device("auto", cuda_available=False) == CPU
    assert resolve_device("auto", cuda_available=True) == CUDA
    assert resolve_device("cpu", cuda_available=True) == CPU
    assert resolve_device("auto") == (CUDA if torch.cuda.is_available() else CPU)  # this machine, for real


def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(DeviceUnavailable, match=r"setting 'device': cuda was requested.*--device cpu"):
        resolve_device("cuda", cuda_available=False)
    with pytest.raises(DeviceUnavailable, match="'tpu' is not one of cpu, cuda, auto"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_on_this_cpu_machine_is_refused() -> None:
    with pytest.raises(DeviceUnavailable, match="no usable CUDA GPU"):
        resolve_device("cuda")


def test_device_kinds_agree_across_layers() -> None:
    from node.config import DEVICES
    from node.training.device import DEVICE_CHOICES

    assert specs.DEVICE_KINDS == DEVICE_KINDS and DEVICES == DEVICE_CHOICES


def test_cuda_settings_are_set_for_the_body_and_restored_after(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA half of deterministic_torch, checked where it can be without a GPU: the flags are process-wide."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul  # (matmul's flags defeat monkeypatch)
    saved = (cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32, matmul.allow_tf32)
    try:
        cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32, matmul.allow_tf32 = True, False, True, True
        with deterministic_torch(device=CUDA):
            assert torch.are_deterministic_algorithms_enabled() and torch.get_num_threads() == 1
            assert (cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32, matmul.allow_tf32) == (False, True,
                                                                                                   False, False)
            assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
        assert (cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32, matmul.allow_tf32) == (True, False, True,
                                                                                               True)
    finally:
        cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32, matmul.allow_tf32 = saved


def test_published_tensors_are_cpu_copies() -> None:
    t = torch.arange(4, dtype=torch.float32)
    copy = to_cpu(t)
    assert copy.device.type == CPU and torch.equal(copy, t) and copy.data_ptr() != t.data_ptr()


# --- the replay rule ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("trainer", "validator", "mismatch", "rule"), [
    (CPU, CPU, False, ReplayRule.BITWISE),
    (CUDA, CUDA, False, ReplayRule.BITWISE),
    (CUDA, CPU, False, ReplayRule.REFUSED),
    (CPU, CUDA, False, ReplayRule.REFUSED),
    (CUDA, CPU, True, ReplayRule.TOLERANCE),
    (CPU, CPU, True, ReplayRule.TOLERANCE),
])
def test_replay_rule_matrix(trainer: str, validator: str, mismatch: bool, rule: ReplayRule) -> None:
    assert replay_rule(trainer, validator, hardware_mismatch=mismatch) == rule


def test_gpu_trainers_train_bitwise_jobs_on_the_cpu_and_validators_replay_on_the_trainers_kind() -> None:
    assert training_device(CUDA, hardware_mismatch=False) == CPU
    assert training_device(CUDA, hardware_mismatch=True) == CUDA
    assert training_device(CPU, hardware_mismatch=True) == CPU
    assert replay_device(CPU, CUDA) == CPU  # a GPU validator replays a CPU update on its CPU: bitwise possible
    assert replay_device(CUDA, CUDA) == CUDA
    assert replay_device(CUDA, CPU) == CPU  # no GPU: its own CPU, under the tolerance or refused


# --- the manifest's device field ---------------------------------------------------------------------------------

def _manifest(**kw: Any) -> specs.UpdateManifest:
    cid = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    addr = "0x" + "11" * 20
    ticket = specs.TaskTicket(job_id=1, round=0, term=1, slot=0, base_cid=cid, shard_cid=cid, sample_start=0,
                              sample_count=100, steps=20, batch_size=32, seed=7, node_class=NodeClass.M, weight=20,
                              work_units=2, trainer=addr, leader=addr, expires_at=10**9)
    return specs.UpdateManifest(ticket=ticket, trainer=addr, delta_cid=cid, delta_encoding="f32",
                                loss_before_micro=2, loss_after_micro=1, segment_every=10,
                                segment_hashes=["ab" * 32] * 2, **kw)


def test_manifest_device_round_trips_and_is_omitted_on_cpu() -> None:
    cpu = _manifest()
    assert cpu.device == CPU and "device" not in json.loads(cpu.to_bytes())  # CPU manifests keep their bytes
    gpu = _manifest(device=CUDA)
    assert json.loads(gpu.to_bytes())["device"] == CUDA
    assert specs.UpdateManifest.from_bytes(gpu.to_bytes()) == gpu
    assert gpu.to_bytes() != cpu.to_bytes()
    bad = json.loads(gpu.to_bytes())
    bad["device"] = "tpu"
    with pytest.raises(SchemaError, match="device"):
        specs.UpdateManifest.from_dict(bad)
    explicit = json.loads(cpu.to_bytes())
    explicit["device"] = CPU  # a second byte form of the same manifest: refused
    with pytest.raises(SchemaError, match="device"):
        specs.UpdateManifest.from_dict(explicit)


# --- replay decisions on real training ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Setup:
    base: State
    shard: ArraySet
    honest: LocalResult


@pytest.fixture(scope="module")
def setup(small_train: ArraySet) -> Setup:
    shard, _ = make_shards(small_train.subset(slice(0, 1000)), 2, seed=0)
    base = initial_state(MLP, 4)
    return Setup(base, shard, train_local(TASK, base, shard, device=CPU))


def _as_other_hardware_would_publish(s: Setup, eps: float) -> LocalResult:
    """The honest run with the last state's weights off by ``eps`` of each tensor's scale (what another device's
    rounding looks like), republished consistently: hashes, delta and loss all match the changed state."""
    states = list(s.honest.segment_states)
    states[-1] = {k: v + eps * v.abs().max() if k.startswith("model/") else v for k, v in states[-1].items()}
    final = model_part(states[-1])
    with deterministic_torch():
        after = task_loss(TASK, final, task_view(s.shard, TASK.sample_range))
    return LocalResult(state_sub(final, s.base), final, s.honest.loss_before, after,
                       [state_hash(x) for x in states], states)


def _verify(s: Setup, result: LocalResult, **kw: Any) -> Verdict:
    return replay_verify(TASK, s.base, s.shard, claimed_segment_hashes=result.segment_hashes,
                         segment_states_fetch=lambda i: result.segment_states[i], claimed_delta=result.delta,
                         claimed_loss_before=result.loss_before, claimed_loss_after=result.loss_after,
                         segments_to_check=[0, 1], **kw)


def test_explicit_cpu_device_gives_the_bytes_of_before(setup: Setup) -> None:
    again = train_local(TASK, setup.base, setup.shard)  # no device argument: the code path before devices
    assert again.segment_hashes == setup.honest.segment_hashes
    assert all(t.device.type == CPU and t.dtype == torch.float32 for t in setup.honest.delta.values())


def test_same_kind_replays_bitwise(setup: Setup) -> None:
    verdict = _verify(setup, setup.honest, trainer_device=CPU, device=CPU)
    assert verdict.ok and verdict.max_distance == 0.0 and verdict.checked_segments == (0, 1)
    off = _verify(setup, _as_other_hardware_would_publish(setup, 1e-7), trainer_device=CPU, device=CPU)
    assert off.reason == REPLAY_MISMATCH and "bitwise required" in off.detail


def test_other_kind_without_hardware_mismatch_is_rejected_before_any_replay(setup: Setup) -> None:
    # Even work that happens to replay bitwise: the rule is the job's, decided before replaying.
    verdict = _verify(setup, setup.honest, trainer_device=CUDA, device=CPU)
    assert verdict.reason == REPLAY_MISMATCH and verdict.checked_segments == ()
    assert "trained on cuda, replayed on cpu" in verdict.detail and "hardware_mismatch" in verdict.detail


def test_other_kind_under_hardware_mismatch_takes_the_tolerance_path(setup: Setup) -> None:
    close = _as_other_hardware_would_publish(setup, 1e-6)
    verdict = _verify(setup, close, trainer_device=CUDA, device=CPU, hardware_mismatch=True)
    assert verdict.ok and 0 < verdict.max_distance <= 2e-6
    far = _as_other_hardware_would_publish(setup, 1e-3)
    verdict = _verify(setup, far, trainer_device=CUDA, device=CPU, hardware_mismatch=True)
    assert verdict.reason == REPLAY_MISMATCH and verdict.max_distance > 5e-4


# --- calibration -------------------------------------------------------------------------------------------------

def test_throughput_maps_to_the_largest_class_it_reaches() -> None:
    s, m, big = (capacity(c).samples_per_s for c in NodeClass)
    assert class_for_throughput(0.0) == NodeClass.S  # slower than S's promise: still S, the smallest class
    assert class_for_throughput(s - 1) == NodeClass.S
    assert class_for_throughput(m - 1) == NodeClass.S
    assert class_for_throughput(m) == NodeClass.M
    assert class_for_throughput(big - 1) == NodeClass.M
    assert class_for_throughput(big) == NodeClass.L
    assert class_for_throughput(100 * big) == NodeClass.L


def test_a_declared_class_is_capped_at_the_measured_one() -> None:
    assert settle_class(NodeClass.M, None) == NodeClass.M
    assert settle_class(NodeClass.M, NodeClass.L) == NodeClass.M  # promises more than it measured: capped
    assert settle_class(NodeClass.M, NodeClass.S) == NodeClass.S  # less: the operator's choice
    assert settle_class(NodeClass.L, NodeClass.L) == NodeClass.L


def test_calibration_measures_the_reference_workload_on_this_machine() -> None:
    cal = measure_throughput(CPU, seconds=0.3)
    assert cal.device == CPU and cal.steps >= 10 and cal.seconds >= 0.3
    assert cal.samples_per_s == pytest.approx(cal.steps * 32 / cal.seconds)
    assert cal.measured_class == class_for_throughput(cal.samples_per_s)


# --- a real GPU (skipped without one) ----------------------------------------------------------------------------

@needs_gpu
def test_gpu_training_is_repeatable_and_publishes_cpu_float32(setup: Setup) -> None:
    a = train_local(TASK, setup.base, setup.shard, device=CUDA)
    b = train_local(TASK, setup.base, setup.shard, device=CUDA)
    assert a.segment_hashes == b.segment_hashes  # deterministic settings: bitwise on one GPU
    for state in (a.delta, a.final_state, *a.segment_states):
        assert all(t.device.type == CPU for t in state.values())
    assert all(t.dtype == torch.float32 for t in a.delta.values())
    assert set(a.segment_states[-1]) == set(setup.honest.segment_states[-1])  # the CPU run's layout


@needs_gpu
def test_gpu_segment_replayed_on_cpu_distance(setup: Setup) -> None:
    """The figure for docs/BENCHMARKS.md: how far a CPU replay lands from a GPU-trained segment."""
    gpu = train_local(TASK, setup.base, setup.shard, device=CUDA)
    distances = [state_distance(cpu_state, gpu_state)
                 for cpu_state, gpu_state in zip(setup.honest.segment_states, gpu.segment_states, strict=True)]
    verdict = _verify(setup, gpu, trainer_device=CUDA, device=CPU, hardware_mismatch=True)
    print(f"\nGPU-trained {MLP}, {TASK.steps} steps: CPU replay distance per segment {distances}; "
          f"verdict under the default tolerance: {verdict.reason} (max {verdict.max_distance:.3g})")
    # The same computation, rounded differently: AdamW's sign-like first steps can flip tiny-gradient coordinates
    # (2·lr each), so this bounds only gross errors (another model or data would be ~1).
    assert all(math.isfinite(d) and d < 0.5 for d in distances)
    refused = _verify(setup, gpu, trainer_device=CUDA, device=CPU)
    assert refused.reason == REPLAY_MISMATCH and refused.checked_segments == ()
