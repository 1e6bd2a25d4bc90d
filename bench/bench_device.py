"""GPU trainers (issue 15): training steps per second on the CPU and (where there is one) on a CUDA GPU, the node
class the start-up calibration gives each, and how far a GPU-trained task lands from its CPU replay.

Everything goes through the node's own code: ``train_local`` (deterministic settings, segment states copied to the
CPU and hashed), ``measure_throughput`` (the calibration), ``replay_verify`` (a CPU validator replaying a
GPU-trained update under a declared ``hardware_mismatch``) and ``state_distance`` (the replay's metric: the largest
per-tensor ``max|a − b| / max|b|`` over the whole trainer state). Per model: steps/s of one task on each device,
the relative distance between the CPU and GPU runs after each segment, and the replay verdict under the default
tolerance. Without a GPU it prints the CPU figures and says so.

    .venv/bin/python bench/bench_device.py                 # CNN and MLP, 100 steps (10 segments)
    .venv/bin/python bench/bench_device.py --steps 40 --models fmnist-mlp-v1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from node.training.calibrate import measure_throughput  # noqa: E402
from node.training.data import ArraySet, load_fashion_mnist  # noqa: E402
from node.training.device import CPU, CUDA  # noqa: E402
from node.training.local import LocalResult, train_local  # noqa: E402
from node.training.models import initial_state  # noqa: E402
from node.training.replay import DEFAULT_TOLERANCE, replay_verify, state_distance  # noqa: E402
from node.training.task import Task  # noqa: E402


def timed_task(task: Task, base: dict[str, torch.Tensor], shard: ArraySet, device: str) -> tuple[LocalResult, float]:
    train_local(Task(model_name=task.model_name, steps=task.segment_every, batch_size=task.batch_size, lr=task.lr,
                     seed=task.seed, segment_every=task.segment_every), base, shard, device=device)  # warm-up
    start = time.perf_counter()
    result = train_local(task, base, shard, device=device)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["fmnist-cnn-v1", "fmnist-mlp-v1"])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    has_gpu = torch.cuda.is_available()
    devices = [CPU, CUDA] if has_gpu else [CPU]
    print(f"torch {torch.__version__}; GPU: {torch.cuda.get_device_name(0) if has_gpu else 'none found'}")
    for device in devices:
        cal = measure_throughput(device)
        print(f"calibration on {device}: {cal.samples_per_s:,.0f} samples/s of the reference CNN "
              f"({cal.steps} steps in {cal.seconds:.2f} s) -> class {cal.measured_class.name}")
    train, _ = load_fashion_mnist()
    shard = train.subset(slice(0, 6000))
    for model in args.models:
        task = Task(model_name=model, steps=args.steps, batch_size=args.batch, lr=1e-3, seed=1, segment_every=10)
        base = initial_state(model, 0)
        runs = {device: timed_task(task, base, shard, device) for device in devices}
        print(f"\n{model}: one task of {task.steps} steps, batch {task.batch_size}, {task.n_segments} segments")
        for device, (_, seconds) in runs.items():
            print(f"  {device:>4}: {task.steps / seconds:8.1f} steps/s ({seconds:.2f} s, with the task's two loss "
                  "evaluations and state hashing)")
        if not has_gpu:
            print("  no GPU found: GPU steps/s and the GPU-vs-CPU replay distance need a machine with one")
            continue
        cpu, gpu = runs[CPU][0], runs[CUDA][0]
        print(f"  GPU speed-up: {runs[CPU][1] / runs[CUDA][1]:.1f}x")
        distances = [state_distance(c, g) for c, g in zip(cpu.segment_states, gpu.segment_states, strict=True)]
        print("  CPU run vs GPU run, relative distance after each segment: "
              + " ".join(f"{d:.2g}" for d in distances))
        verdict = replay_verify(
            task, base, shard, claimed_segment_hashes=gpu.segment_hashes,
            segment_states_fetch=gpu.segment_states.__getitem__, claimed_delta=gpu.delta,
            claimed_loss_before=gpu.loss_before, claimed_loss_after=gpu.loss_after,
            segments_to_check=list(range(task.n_segments)), hardware_mismatch=True, tolerance=DEFAULT_TOLERANCE,
            trainer_device=CUDA, device=CPU,
        )
        print(f"  CPU replay of the GPU-trained update, every segment, tolerance {DEFAULT_TOLERANCE:g}: "
              f"{verdict.reason} (largest segment distance {verdict.max_distance:.3g}) {verdict.detail}")


if __name__ == "__main__":
    main()
