"""The protocol's overhead: the devnet job's wall time to a target accuracy vs the same algorithm in one process.

Both sides run in this one invocation, on this machine, with the same model, trainers, K, batch, learning rates,
aggregation and shards. The devnet side is the real network (libp2p hosts, bitswap, signed tickets, replay by a
validator quorum, a chain); the simulated side is ``node.training.simulate`` (the same deterministic local training
and aggregation, no network, no chain, no validation). Per-round breakdown of the devnet side: seconds spent in
training, content transfer, chain calls, validation (replay), aggregation and evaluation, summed over nodes.

    .venv/bin/python bench/bench_devnet.py                   # in-process network (py-evm chain)
    .venv/bin/python bench/bench_devnet.py --processes       # Hardhat node + one OS process per node
    .venv/bin/python bench/bench_devnet.py --quick           # MLP, 3 rounds: a smoke run

Default: the demo's algorithm (CNN, DiLoCo, 4 trainers, K=100), 12 rounds, target 88%.

Prints the ratio devnet / simulated wall time (the protocol's overhead factor) at the target.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import trio

from node.devnet import DevnetPlan, demo_spec, run_devnet
from node.logs import setup_logging
from node.training.aggregate import strategy_from_spec
from node.training.data import load_fashion_mnist
from node.training.evaluate import evaluate
from node.training.simulate import SimConfig, simulate
from protocols.p2p.hardening import install_hardening

EVAL_SAMPLES = 2000
"""Held-out images scored after every round, on both sides (the first 2,000 of the test set)."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", action="store_true", help="Hardhat + OS processes instead of in-process")
    ap.add_argument("--quick", action="store_true", help="MLP, 3 rounds, K=20")
    ap.add_argument("--target", type=float, default=0.88)
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args()
    setup_logging(level="ERROR")
    # Full run: the demo's algorithm (CNN, DiLoCo, K=100), which the simulation takes to 88% around round 8-11.
    model, rounds, k = ("fmnist-mlp-v1", 3, 20) if args.quick else ("fmnist-cnn-v1", 12, 100)
    rounds = args.rounds or rounds
    target = 0.75 if args.quick and args.target == 0.88 else args.target
    trainers = 4
    spec = demo_spec(rounds=rounds, trainers=trainers, model=model, local_steps=k)
    plan = DevnetPlan(trainers=trainers, validators=3, spec=spec, embedded=not args.processes, shards=16,
                      eval_samples=EVAL_SAMPLES, final_eval_samples=None, out=lambda _l: None)
    install_hardening()  # the nodes run in this process (embedded): patch py-libp2p as the dtnode binary does
    t0 = time.monotonic()
    result = trio.run(lambda: run_devnet(plan))
    devnet_wall = time.monotonic() - t0
    reach = next((line for line in result.rounds if line.accuracy >= target), None)
    # RoundLine.round counts from 0, RoundRecord.round from 1: compare 1-based round numbers.
    reach_round = reach.round + 1 if reach else None

    breakdown: dict[str, float] = defaultdict(float)
    n_nodes = 0
    for path in result.workdir.glob("*/timings.json"):  # every node leaves one in its data dir when it stops
        n_nodes += 1
        for key, value in json.loads(path.read_text()).items():
            breakdown[key] += float(value)

    train, test = load_fashion_mnist()
    cfg = SimConfig(model_name=model, n_trainers=trainers, local_steps=k, batch_size=spec.batch_size,
                    lr=float(spec.inner_lr), optimizer=spec.inner_optimizer,
                    strategy=strategy_from_spec(spec.aggregation),
                    rounds=rounds, seed=spec.seed, eval_samples=EVAL_SAMPLES)
    t1 = time.monotonic()
    sim = simulate(train, test, cfg)
    sim_wall = time.monotonic() - t1
    sim_reach = next((r for r in sim.history if r.accuracy >= target), None)
    sim_final, _ = evaluate(model, sim.final_state, test)

    print(f"model {model}, {trainers} trainers, K={k}, {rounds} rounds, target {target:.0%} on the first "
          f"{EVAL_SAMPLES} test images ({'processes + Hardhat' if args.processes else 'in-process network + py-evm'})")
    print(f"{'':<34}{'devnet':>12}{'simulated':>12}")
    print(f"{'final accuracy (10k test)':<34}{result.final_accuracy:>12.4f}{sim_final:>12.4f}")
    print(f"{'wall time, all rounds (s)':<34}{devnet_wall:>12.1f}{sim_wall:>12.1f}")
    print(f"{'local steps, all rounds':<34}{rounds * trainers * k:>12}{sim.history[-1].steps:>12}")
    pairs = zip(result.rounds, sim.history, strict=False)  # the simulation may stop early, at the target
    print("accuracy per round (devnet/simulated): " + "  ".join(
        f"{i + 1}: {line.accuracy:.3f}/{rec.accuracy:.3f}" for i, (line, rec) in enumerate(pairs)))
    if reach and sim_reach and reach_round is not None:
        # compute_s and parallel_s are cumulative: the record of the round that reached the target holds the time.
        print(f"{'round reaching target':<34}{reach_round:>12}{sim_reach.round:>12}")
        print(f"{'wall time to target (s)':<34}{reach.wall_s:>12.1f}{sim_reach.compute_s:>12.1f}")
        print(f"{'  simulated, trainers in parallel':<34}{'':>12}{sim_reach.parallel_s:>12.1f}")
        print(f"overhead ratio at target (devnet wall / simulated sequential compute): "
              f"{reach.wall_s / max(sim_reach.compute_s, 1e-9):.2f}x; "
              f"vs simulated parallel: {reach.wall_s / max(sim_reach.parallel_s, 1e-9):.2f}x")
    else:
        print("target not reached by " + ("either side" if not (reach or sim_reach) else
                                            "the devnet" if not reach else "the simulation"))
    print(f"overhead ratio, all rounds (wall / wall): {devnet_wall / max(sim_wall, 1e-9):.2f}x")
    if breakdown:
        # Every node runs for about the whole devnet; what is in no activity is waiting (for peers, tickets,
        # quorums, the chain's next block, the next round).
        busy = sum(breakdown.values())
        breakdown["waiting"] = max(0.0, n_nodes * devnet_wall - busy)
        total = sum(breakdown.values())
        print(f"devnet node-seconds by activity, summed over {n_nodes} nodes ({total:.0f} node-s in all):")
        for key, value in sorted(breakdown.items(), key=lambda kv: -kv[1]):
            print(f"  {key:<12}{value:>9.1f} s  {value / total:>6.1%}   per round {value / rounds:>7.2f} s")

if __name__ == "__main__":
    main()
