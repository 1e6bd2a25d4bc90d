"""The devnet demos' jobs trained in one process: the reference for ``dtnode devnet --task finetune|lm``.

The same spec (model, K, batch, inner optimizer, DiLoCo outer step, tasks per round, rounds), the same data and the
same held-out samples as the demo, through :func:`node.training.simulate.simulate` (the node's own deterministic
local training and aggregation; no network, no chain, no validation). ``finetune`` runs twice: from the customer's
checkpoint (:mod:`node.devnet.pretrain`, made here) and from the seed, so the two can be compared round by round.

    .venv/bin/python bench/bench_demo_tasks.py finetune     # ~3 min on 2 shared cores
    .venv/bin/python bench/bench_demo_tasks.py lm
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from safetensors.torch import load as st_load  # noqa: E402

from node.devnet.demos import get_demo  # noqa: E402
from node.roles.dataset_publish import DEFAULT_EVAL_FRACTION, eval_subset  # noqa: E402
from node.training.aggregate import strategy_from_spec  # noqa: E402
from node.training.data import hold_out  # noqa: E402
from node.training.models import State, model_ref  # noqa: E402
from node.training.objective import headline  # noqa: E402
from node.training.simulate import RoundRecord, SimConfig, simulate  # noqa: E402


def run(name: str, rounds: int | None) -> None:
    demo = get_demo(name)
    spec = demo.spec(rounds=rounds)
    loaded = demo.load_data(spec.seed)
    train, test = loaded.train, loaded.test
    if test is None:  # as `dtnode dataset add` holds out samples for a dataset without a test split
        train, test = hold_out(train, DEFAULT_EVAL_FRACTION, seed=spec.seed)
    held_out = eval_subset(test, demo.eval_samples)  # the job's evaluation shard
    config = SimConfig(model_name=model_ref(spec), task_type=spec.task, n_trainers=spec.tasks_per_round,
                       local_steps=spec.local_steps, batch_size=spec.batch_size, lr=float(spec.inner_lr),
                       optimizer=spec.inner_optimizer, strategy=strategy_from_spec(spec.aggregation),
                       rounds=spec.rounds, seed=spec.seed, segment_every=spec.segment_every)
    starts: dict[str, State | None] = {"from the seed": None}
    if demo.init_weights is not None:
        with tempfile.TemporaryDirectory() as tmp:
            began = time.monotonic()
            starts = {"from the customer's checkpoint": st_load(demo.init_weights(Path(tmp))), **starts}
            print(f"pre-training: {time.monotonic() - began:.1f} s")
    for label, start in starts.items():
        def line(r: RoundRecord) -> None:
            metric, value = headline(spec.task, r.accuracy, r.loss)
            shown = f"{value * 100:.1f}%" if metric == "accuracy" else f"{value:.2f}"
            print(f"  round {r.round:>2}: {metric} {shown}  (compute {r.compute_s:.1f} s, "
                  f"parallel {r.parallel_s:.1f} s)", flush=True)

        print(f"{name}, {label}: {spec.rounds} rounds x {spec.tasks_per_round} tasks of K={spec.local_steps}, "
              f"{len(held_out)} held-out samples")
        simulate(train, held_out, config, start_state=start, on_round=line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=["finetune", "lm", "fmnist"])
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    run(args.task, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
