"""How precise the bonus split is at each ``loss_samples`` (issue 18; docs/protocol.md, "Loss claims").

Runs the demo job (``bench_peers``'s, 12 rounds) in one process. In each round it trains every slot's task, then
measures the task's loss reduction on the first n samples of its range for each n, and on the whole range (the
"truth"); each update's bonus share is its reduction over the round's sum. Prints, per n, the mean and worst absolute
difference between a share at n and at the whole range, and the seconds the two loss passes of one task take at n
(one thread). No network, no chain: ~2 minutes on 2 cores.

    .venv/bin/python bench/bench_loss_samples.py [--rounds 12]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from bench.peers_job import aggregate, initial_model, load_job, peer_spec
from node.training.local import deterministic_torch, task_loss, task_view, train_local

COUNTS = (128, 256, 512, 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = peer_spec(rounds=args.rounds)
    job = load_job(spec)
    model, outer = initial_model(spec), None
    errors: dict[int, list[float]] = {n: [] for n in COUNTS}
    pass_s: dict[int, float] = {n: 0.0 for n in COUNTS}
    for r in range(spec.rounds):
        deltas, truth = [], []
        at: dict[int, list[float]] = {n: [] for n in COUNTS}
        for slot in range(spec.tasks_per_round):
            task, shard = job.slot_task(r, slot)
            result = train_local(task, model, shard)
            deltas.append(result.delta)
            data = task_view(shard, task.sample_range)
            with deterministic_torch():
                whole = replace(task, loss_samples=len(data))
                truth.append(max(0.0, task_loss(whole, model, data) - task_loss(whole, result.final_state, data)))
                for n in COUNTS:
                    began = time.perf_counter()
                    counted = replace(task, loss_samples=n)
                    at[n].append(max(0.0, task_loss(counted, model, data)
                                     - task_loss(counted, result.final_state, data)))
                    pass_s[n] += time.perf_counter() - began
        total = sum(truth)
        for n in COUNTS:
            share_sum = sum(at[n])
            errors[n].extend(abs(c / share_sum - t / total) for c, t in zip(at[n], truth, strict=True))
        print(f"round {r + 1}: whole-range loss reductions " + " ".join(f"{t:.4f}" for t in truth), flush=True)
        model, outer = aggregate(job, model, deltas, outer)
    tasks = spec.rounds * spec.tasks_per_round
    print(f"\n{'loss_samples':>12} {'mean |share error|':>19} {'worst':>7} {'two passes, s':>14}")
    for n in COUNTS:
        print(f"{n:>12} {sum(errors[n]) / len(errors[n]):>19.3f} {max(errors[n]):>7.3f} {pass_s[n] / tasks:>14.3f}")


if __name__ == "__main__":
    main()
