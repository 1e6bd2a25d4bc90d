"""Verification cost at scale (issue 14): one task on an MLP of ~1M, ~10M or ~100M parameters and its validation by
a quorum of validators, in this process (no network: bytes are counted as the formats encode them).

Per size: bytes published per update (before: delta + every segment state + manifest; now: delta + manifest),
bytes fetched per validator (delta + the challenged segments' start and end states), validator CPU ÷ trainer CPU,
and peak memory (ru_maxrss of a fresh child process per size). Each size runs in its own subprocess so the peaks
do not mix.

    .venv/bin/python bench/bench_verify.py                  # 1M, 10M, 100M; K=8, S=2, k=2, quorum 3
    .venv/bin/python bench/bench_verify.py --sizes 1m 10m
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from node.training.challenge import catch_probability, choose_segments  # noqa: E402
from node.training.codec import decode_state, encode_delta, encode_state  # noqa: E402
from node.training.data import load_fashion_mnist  # noqa: E402
from node.training.local import train_local  # noqa: E402
from node.training.models import MODELS, ModelInfo, initial_state, num_parameters  # noqa: E402
from node.training.replay import replay_verify  # noqa: E402
from node.training.task import Task  # noqa: E402

HIDDEN = {"1m": 690, "10m": 2780, "100m": 9600}
"""784-h-h-10 MLPs: 1.02M, 9.9M and 99.8M parameters."""
MANIFEST_OVERHEAD = 1024
"""The manifest besides its hash list (ticket, CIDs, losses): under 1 KiB in canonical JSON."""


def _mlp(h: int) -> nn.Module:
    return nn.Sequential(OrderedDict(flatten=nn.Flatten(), fc1=nn.Linear(784, h), relu1=nn.ReLU(),
                                     fc2=nn.Linear(h, h), relu2=nn.ReLU(), fc3=nn.Linear(h, 10)))


def register(size: str) -> str:
    name = f"bench-mlp-{size}"
    h = HIDDEN[size]
    MODELS[name] = ModelInfo(name, lambda: _mlp(h), f"784-{h}-{h}-10 MLP (benchmark only)")
    return name


def run_one(size: str, *, steps: int, every: int, k: int, quorum: int) -> dict[str, float]:
    name = register(size)
    train, _ = load_fashion_mnist()
    shard = train.subset(slice(0, 4096))
    base = initial_state(name, 0)
    task = Task(model_name=name, steps=steps, batch_size=32, lr=1e-3, seed=1, segment_every=every)

    cpu = time.process_time()
    result = train_local(task, base, shard)
    delta_bytes = len(encode_delta(result.delta, kind="f32"))
    trainer_cpu = time.process_time() - cpu
    state_bytes = [len(encode_state(s)) for s in result.segment_states]
    n = len(state_bytes)
    manifest_bytes = MANIFEST_OVERHEAD + n * 67  # one quoted 64-hex hash and a comma per segment
    published_before = delta_bytes + sum(state_bytes) + manifest_bytes + n * 64  # + one CID per segment
    published_now = delta_bytes + manifest_bytes

    validator_cpu = 0.0
    fetched = 0
    for v in range(quorum):
        seed = hashlib.sha256(f"challengeSeed:{size}:{v}".encode()).digest()
        chosen = choose_segments(seed, n, k)
        needed = sorted({j for i in chosen for j in (i - 1, i) if j >= 0})
        cpu = time.process_time()
        served = {i: decode_state(encode_state(result.segment_states[i]), max_bytes=1 << 34) for i in needed}
        verdict = replay_verify(
            task, base, shard, claimed_segment_hashes=result.segment_hashes,
            segment_states_fetch=served.__getitem__, claimed_delta=result.delta,
            claimed_loss_before=result.loss_before, claimed_loss_after=result.loss_after, segments_to_check=chosen,
        )
        validator_cpu += time.process_time() - cpu
        assert verdict.ok, verdict
        fetched = max(fetched, delta_bytes + sum(state_bytes[i] for i in needed))
        served.clear()
    return {
        "params": num_parameters(name), "segments": n, "k": k, "state_bytes": state_bytes[-1],
        "delta_bytes": delta_bytes, "published_before": published_before, "published_now": published_now,
        "fetched_per_validator": fetched, "trainer_cpu_s": trainer_cpu,
        "validator_cpu_s": validator_cpu / quorum, "quorum": quorum,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(HIDDEN), choices=list(HIDDEN))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--segment-every", type=int, default=2)
    parser.add_argument("--k", type=int, default=2, help="challenged segments per validator (the last included)")
    parser.add_argument("--quorum", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.child:
        out = run_one(args.child, steps=args.steps, every=args.segment_every, k=args.k, quorum=args.quorum)
        print(json.dumps(out))
        return
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"task K={args.steps}, S={args.segment_every}, batch 32, AdamW; each of {args.quorum} validators "
          f"challenges k={args.k} (the last segment always)")
    header = ("params", "state MB", "pub. before MB", "pub. now MB", "fetched/val MB", "val/trainer CPU",
              "quorum/trainer", "peak RSS GB")
    print(" | ".join(header))
    for size in args.sizes:
        child = subprocess.run(
            [sys.executable, __file__, "--child", size, "--steps", str(args.steps), "--segment-every",
             str(args.segment_every), "--k", str(args.k), "--quorum", str(args.quorum)],
            check=True, capture_output=True, text=True,
        )
        r = json.loads(child.stdout.strip().splitlines()[-1])
        ratio = r["validator_cpu_s"] / r["trainer_cpu_s"]
        print(" | ".join((
            f"{r['params'] / 1e6:.1f}M", f"{r['state_bytes'] / 1e6:.1f}", f"{r['published_before'] / 1e6:.1f}",
            f"{r['published_now'] / 1e6:.2f}", f"{r['fetched_per_validator'] / 1e6:.1f}", f"{ratio:.0%}",
            f"{ratio * r['quorum']:.0%}", f"{r['peak_rss_bytes'] / 1e9:.2f}",
        )) + f"   (trainer {r['trainer_cpu_s']:.1f} s CPU, validator {r['validator_cpu_s']:.1f} s)")
    n = args.steps // args.segment_every
    print(f"\nP(caught), {n} segments, k={args.k}: faking the last segment 100%; faking half the others "
          f"{catch_probability(n, args.k, (n - 1) // 2 or 1):.0%} per update, "
          f"{catch_probability(n, args.k, (n - 1) // 2 or 1, updates=5):.1%} over 5 updates")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
