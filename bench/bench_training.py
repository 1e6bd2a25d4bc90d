"""Training benchmark: single-process training to a target test accuracy vs the federated algorithm.

In one run, for Fashion-MNIST and the chosen model: steps, compute (CPU seconds, all trainers added up) and
simulated parallel wall time (slowest trainer per round + aggregation) to reach the target, for N trainers,
K local steps, FedAvg vs DiLoCo, IID vs non-IID shards; then the cost of replay verification as a share of the
training cost for the chosen segment sampling. Everything runs in this process on one thread.

    .venv/bin/python bench/bench_training.py --quick          # ~10-15 min on 2 cores: a representative subset
    .venv/bin/python bench/bench_training.py                  # the full grid (N=4,8 × K=10,50,200 × 2 × 2)
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from node.training.aggregate import FedAvg, OuterOptimizer  # noqa: E402
from node.training.data import ArraySet, load_fashion_mnist  # noqa: E402
from node.training.evaluate import evaluate  # noqa: E402
from node.training.local import BatchSchedule, deterministic_torch, train_local  # noqa: E402
from node.training.models import build_model, initial_state  # noqa: E402
from node.training.objective import to_inputs, to_targets  # noqa: E402
from node.training.replay import choose_segments, replay_verify  # noqa: E402
from node.training.simulate import SimConfig, simulate  # noqa: E402
from node.training.task import Task  # noqa: E402


def single_process(model_name: str, train: ArraySet, test: ArraySet, *, target: float, batch: int, lr: float,
                   max_steps: int, eval_every: int, eval_samples: int | None) -> tuple[int | None, float, float]:
    """Plain AdamW training on the whole set; returns (steps to target or None, train seconds, final accuracy)."""
    model = build_model(model_name)
    model.load_state_dict(initial_state(model_name, 0))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, foreach=False)
    schedule = BatchSchedule(len(train), batch, 0)
    spent = 0.0
    acc = 0.0
    for step in range(max_steps):
        start = time.perf_counter()
        with deterministic_torch():
            model.train()
            idx = schedule.indices(step)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(to_inputs(train.inputs[idx])), to_targets(train.labels[idx]))
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
        spent += time.perf_counter() - start
        if (step + 1) % eval_every == 0:
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            acc, _ = evaluate(model_name, state, test, max_samples=eval_samples)
            if acc >= target:
                return step + 1, spent, acc
    return None, spent, acc


def replay_share(model_name: str, train: ArraySet, *, steps: int, batch: int, k_values: list[int]) -> None:
    """Training one task vs replaying k of its segments (the devnet's validators check 2 of 10 at K=100)."""
    base = initial_state(model_name, 0)
    shard = train.subset(slice(0, 7500))
    start = time.perf_counter()
    task = Task(model_name=model_name, steps=steps, batch_size=batch, lr=1e-3, seed=1, segment_every=10)
    result = train_local(task, base, shard)
    train_s = time.perf_counter() - start
    n = len(result.segment_hashes)
    print(f"\nreplay cost, {model_name}, task K={steps} batch={batch}, S=10 ({n} segments); training {train_s:.2f} s")
    print(f"{'segments checked':>18} {'replay s':>9} {'share of training':>18}")
    for k in k_values:
        picks = choose_segments(hashlib.sha256(b"bench-seed").digest(), n, k)
        start = time.perf_counter()
        verdict = replay_verify(
            task, base, shard,
            claimed_segment_hashes=result.segment_hashes, segment_states_fetch=lambda i: result.segment_states[i],
            claimed_delta=result.delta, claimed_loss_before=result.loss_before,
            claimed_loss_after=result.loss_after, segments_to_check=picks,
        )
        took = time.perf_counter() - start
        assert verdict.ok, verdict
        print(f"{f'{len(picks)} of {n}':>18} {took:9.2f} {took / train_s:17.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fmnist-cnn-v1")
    parser.add_argument("--target", type=float, default=0.88)
    parser.add_argument("--quick", action="store_true", help="a representative subset (~10-15 min on 2 cores)")
    parser.add_argument("--trainers", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--local-steps", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--strategies", nargs="+", default=["fedavg", "diloco"])
    parser.add_argument("--shards", nargs="+", default=["iid", "noniid"], choices=["iid", "noniid"])
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet alpha of the non-IID shards")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-steps", type=int, default=9600, help="cap on total local steps per federated run")
    parser.add_argument("--max-rounds", type=int, default=80, help="cap on rounds per federated run")
    parser.add_argument("--eval-samples", type=int, default=None, help="test samples per evaluation (all 10k)")
    parser.add_argument("--skip-single", action="store_true")
    parser.add_argument("--skip-replay", action="store_true")
    parser.add_argument("--skip-grid", action="store_true", help="only the single-process and replay figures")
    parser.add_argument("--replay-steps", type=int, default=100, help="K of the task whose replay is timed")
    args = parser.parse_args()

    train, test = load_fashion_mnist()
    torch.set_num_threads(1)
    print(f"model {args.model}, target {args.target:.0%} test accuracy, batch {args.batch}, inner AdamW lr {args.lr}")

    single_steps: int | None = None
    single_s = float("nan")
    if not args.skip_single:
        single_steps, single_s, acc = single_process(
            args.model, train, test, target=args.target, batch=args.batch, lr=args.lr, max_steps=args.max_steps,
            eval_every=100, eval_samples=args.eval_samples)
        print(f"single process: {single_steps} steps, {single_s:.1f} s training to {acc:.2%}")

    if not args.skip_replay:
        replay_share(args.model, train, steps=args.replay_steps, batch=args.batch,
                     k_values=sorted({1, 2, 5, -(-args.replay_steps // 10)}))

    if args.skip_grid:
        return
    if args.quick:
        # Most informative first: the devnet default, then one axis changed at a time.
        grid = [(4, 50, "diloco", "iid"), (4, 50, "fedavg", "iid"), (8, 50, "diloco", "iid"),
                (4, 200, "diloco", "iid"), (4, 50, "diloco", "noniid"), (4, 10, "diloco", "iid"),
                (4, 50, "fedavg", "noniid")]
    else:
        grid = list(itertools.product(args.trainers, args.local_steps, args.strategies, args.shards))
    # "path steps" (rounds x K) are the local steps on the critical path when the N trainers run at once: the
    # load-independent twin of "parallel s", to compare with the single process's steps.
    header = (f"{'N':>2} {'K':>4} {'strategy':>8} {'shards':>7} {'rounds':>6} {'steps':>6} {'path steps':>10} "
              f"{'compute s':>9} {'parallel s':>10} {'vs single':>9} {'final acc':>9}")
    print("\n" + header)
    for n, k, strategy, shards in grid:
        rounds = max(1, min(args.max_rounds, args.max_steps // (n * k)))
        config = SimConfig(model_name=args.model, n_trainers=n, local_steps=k, batch_size=args.batch, lr=args.lr,
                           strategy=FedAvg(outer=OuterOptimizer() if strategy == "diloco" else None),
                           iid=shards == "iid", alpha=args.alpha, rounds=rounds,
                           target_accuracy=args.target, eval_samples=args.eval_samples)
        result = simulate(train, test, config)
        last = result.history[-1]
        hit = result.reached
        mark = "" if hit else " (not reached)"
        ratio = f"{last.parallel_s / single_s:8.2f}x" if hit and single_steps else f"{'-':>9}"
        print(f"{n:>2} {k:>4} {strategy:>8} {shards:>7} {last.round:>6} {last.steps:>6} {last.round * k:>10} "
              f"{last.compute_s:9.1f} "
              f"{last.parallel_s:10.1f} {ratio} {last.accuracy:9.2%}{mark}", flush=True)


if __name__ == "__main__":
    main()
