"""Verification cost at scale (issue 14): one task on an MLP of ~1M, ~10M or ~100M parameters and its validation by
a quorum of validators, in this process, through the real formats and code paths: the trainer spills each segment
state as it is computed (``SegmentSpill.keep_state``), the validators fetch what ``states_to_fetch`` names (the
start states of their challenged segments) chunk by chunk over the ``/dtnode/segment/1.0.0`` handler
(``fetch_segment``, called in-process instead of over libp2p) and replay with ``replay_verify``, which fetches an
end state only if a replay differs, as the validator role does; the trainer runs ``train_local`` with the spill as
its ``keep``, as ``TrainerRole.train`` does.

Per size: bytes published per update (the delta's UnixFS DAG and the manifest), bytes fetched per validator (the
delta and the states it asked for), validator CPU ÷ trainer CPU (each validator, and summed over the quorum), peak
RSS of the whole run (ru_maxrss; each size in a fresh subprocess), and the streaming paths' peak over one state: a
state spilled, imported into a block store (``put_file``), exported (``get_file``) and fetched in chunks
(``fetch_segment``), peak RSS above the runtime's own ÷ the state's bytes. Goals are printed next to the figures.

MLPs, not the registry's GPT-2: an MLP's cost per parameter is the same at every size, so the three rows compare.
A 100M task of the 1M/10M length (400 steps, 40 segments) spills 48 GB, so the 100M run is short by default (10
steps, 10 segments: its CPU ratio is dominated by the fixed costs, loss evaluations and hashing, not the replay);
``--spill-challenged-only`` removes each state no validator of the run asks for once the trainer has written and
hashed it (disk only), which lets the full length run on a smaller disk (~1 h of one core). ``--compression``
measures lossless compression of states and deltas instead.

    .venv/bin/python bench/bench_verify.py                  # 1M, 10M, 100M
    .venv/bin/python bench/bench_verify.py --sizes 1m 10m
    .venv/bin/python bench/bench_verify.py --sizes 100m --steps 400 --segment-every 10 --spill-challenged-only
    .venv/bin/python bench/bench_verify.py --compression
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import trio  # noqa: E402
from torch import nn  # noqa: E402

from node.segments import SegmentSpill, fetch_segment  # noqa: E402
from node.training.challenge import catch_probability, choose_segments, replay_share  # noqa: E402
from node.training.codec import State, decode_delta, encode_delta, encode_state, state_hash  # noqa: E402
from node.training.data import load_fashion_mnist  # noqa: E402
from node.training.local import train_local  # noqa: E402
from node.training.models import MODELS, ModelInfo, initial_state  # noqa: E402
from node.training.replay import CommittedState, replay_verify, states_to_fetch  # noqa: E402
from node.training.task import Task  # noqa: E402
from storage.blockstore import FilesystemBlockStore  # noqa: E402
from storage.content import LocalContentStore  # noqa: E402
from storage.unixfs import import_chunks, rechunk  # noqa: E402

HIDDEN = {"1m": 690, "10m": 2780, "100m": 9600}
"""784-h-h-10 MLPs: 1.02M, 9.9M and 99.8M parameters."""
DEFAULT_STEPS = {"1m": (400, 10), "10m": (400, 10), "100m": (10, 1)}
"""(K, S) per size: n = 40 segments at 1M and 10M; 10 at 100M (time and spill disk, see the module docstring)."""
MANIFEST_FIXED = 1200
"""A manifest's bytes besides its hash list (ticket with signature, CIDs, losses), measured: ~1.1 kB."""


def _mlp(h: int) -> nn.Module:
    return nn.Sequential(OrderedDict(flatten=nn.Flatten(), fc1=nn.Linear(784, h), relu1=nn.ReLU(),
                                     fc2=nn.Linear(h, h), relu2=nn.ReLU(), fc3=nn.Linear(h, 10)))


def register(size: str) -> str:
    name = f"bench-mlp-{size}"
    h = HIDDEN[size]
    info = ModelInfo(name, lambda config: _mlp(h), f"784-{h}-{h}-10 MLP (benchmark only)", "classification")
    MODELS[name] = info
    return name


def _rss_now() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _challenge(size: str, v: int, n: int, k: int) -> list[int]:
    """Validator ``v``'s challenged segments: its own 32-byte seed (the contract's ``challengeSeed`` stands in)."""
    return choose_segments(hashlib.sha256(f"challengeSeed:{size}:{v}".encode()).digest(), n, k)


def run_task(size: str, *, steps: int, every: int, k: int, quorum: int, work: Path,
             spill_challenged_only: bool = False) -> dict[str, Any]:
    name = register(size)
    train, _ = load_fashion_mnist()
    shard = train.subset(slice(0, 4096))
    base = initial_state(name, 0)
    # lr 1e-4: at 1e-3 the 100M MLP's loss rises 3x in two AdamW steps, which the validators rightly reject
    # (LOSS_RISE); the compute per step is the same.
    task = Task(model_name=name, steps=steps, batch_size=32, lr=1e-4, seed=1, segment_every=every)
    n = task.n_segments
    spill = SegmentSpill(work / "spill", max_bytes=1 << 40)
    # Disk only: the states no validator of this run will ask for, removed once written and hashed (the trainer's
    # CPU is unchanged); a 400-step 100M task would otherwise spill 40 x 1.2 GB.
    asked = {i for v in range(quorum) for i in states_to_fetch(_challenge(size, v, n, k), n)}
    state_sizes: list[int] = []

    def keep(state: State) -> str:
        digest = spill.keep_state(1, 0, state)
        path = spill.path(1, 0, digest)
        state_sizes.append(path.stat().st_size)
        if spill_challenged_only and len(state_sizes) - 1 not in asked:
            path.unlink()
        return digest

    # The trainer (TrainerRole.train): train, spill each segment state as it is computed, publish the delta.
    cpu = time.process_time()
    result = train_local(task, base, shard, keep=keep)
    hashes, loss_before, loss_after = result.segment_hashes, result.loss_before, result.loss_after
    delta_bytes = encode_delta(result.delta, kind="f32")
    delta_dag = import_chunks(rechunk([delta_bytes]), lambda c, b: None)
    trainer_cpu = time.process_time() - cpu
    state_bytes = state_sizes[-1]
    del result
    peak_trainer = _peak()
    manifest_bytes = MANIFEST_FIXED + n * 67  # one quoted 64-hex hash and a comma per segment
    published_before = delta_dag.dag_size + n * state_bytes + manifest_bytes + n * 64  # + one CID per segment

    async def request(peer: Any, protocol: Any, payload: bytes) -> bytes:
        return await spill.handle(payload, peer)

    async def fetch_one(i: int, workdir: Path) -> CommittedState:
        return await fetch_segment(request, "trainer", job_id=1, round_=0, index=i, state_hash=hashes[i],
                                   max_bytes=state_bytes, workdir=workdir)

    def validate(v: int) -> tuple[float, int]:
        """One validator with its own seed, as the validator role does it: the start states of the challenged
        segments before the replay, an end state only if a replay differs. Its CPU seconds and bytes fetched."""
        chosen = _challenge(size, v, n, k)
        cpu = time.process_time()
        got = len(delta_bytes)

        def fetch(i: int) -> CommittedState:
            nonlocal got
            got += state_bytes
            return trio.run(fetch_one, i, work / f"fetched-{v}")

        states = {i: fetch(i) for i in states_to_fetch(chosen, n)}

        def fetch_state(i: int) -> CommittedState:
            return states.pop(i) if i in states else fetch(i)

        claimed = decode_delta(delta_bytes, like=base, max_bytes=len(delta_bytes))
        verdict = replay_verify(
            task, base, shard, claimed_segment_hashes=hashes, segment_states_fetch=fetch_state,
            claimed_delta=claimed, claimed_loss_before=loss_before, claimed_loss_after=loss_after,
            segments_to_check=chosen,
        )
        assert verdict.ok, verdict
        return time.process_time() - cpu, got

    runs = [validate(v) for v in range(quorum)]
    validator_cpu = [cpu for cpu, _ in runs]
    fetched = max(got for _, got in runs)
    return {
        "params": sum(t.numel() for t in base.values()), "steps": steps, "segments": n, "k": k, "quorum": quorum,
        "state_bytes": state_bytes, "delta_bytes": len(delta_bytes), "delta_dag_bytes": delta_dag.dag_size,
        "manifest_bytes": manifest_bytes, "published_before": published_before,
        "published_now": delta_dag.dag_size + manifest_bytes, "fetched_per_validator": fetched,
        "fetched_states": (fetched - len(delta_bytes)) // state_bytes,
        "trainer_cpu_s": trainer_cpu, "validator_cpu_s": validator_cpu,
        "peak_rss_trainer": peak_trainer, "peak_rss": _peak(),
    }


def run_stream(size: str, *, work: Path) -> dict[str, Any]:
    """Peak memory of the streaming paths over one trainer state (the MLP's AdamW state layout, random values,
    made tensor by tensor so that making it leaves no high-water mark of its own)."""
    h = HIDDEN[size]
    runtime = _rss_now()
    shapes = {"fc1.weight": (h, 784), "fc1.bias": (h,), "fc2.weight": (h, h), "fc2.bias": (h,),
              "fc3.weight": (10, h), "fc3.bias": (10,)}
    gen = torch.Generator().manual_seed(0)
    state: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        state[f"model/{key}"] = torch.randn(shape, generator=gen)
        state[f"optim/{key}/exp_avg"] = torch.randn(shape, generator=gen)
        state[f"optim/{key}/exp_avg_sq"] = torch.rand(shape, generator=gen)
        state[f"optim/{key}/step"] = torch.tensor(1.0)
    spill = SegmentSpill(work / "spill", max_bytes=1 << 40)
    digest = spill.keep_state(1, 0, state)
    path = spill.path(1, 0, digest)
    state_bytes = path.stat().st_size

    async def paths() -> None:
        store = LocalContentStore(FilesystemBlockStore(work / "blocks", max_bytes=1 << 40, durable=False))
        cid = await store.put_file(path)
        await store.get_file(cid, work / "exported", max_bytes=state_bytes, timeout_s=600)

        async def request(peer: Any, protocol: Any, payload: bytes) -> bytes:
            return await spill.handle(payload, peer)

        fetched = await fetch_segment(request, "trainer", job_id=1, round_=0, index=0, state_hash=digest,
                                      max_bytes=state_bytes, workdir=work / "fetched")
        assert state_hash(fetched.tensors) == fetched.sha256 == digest

    trio.run(paths)
    return {"state_bytes": state_bytes, "runtime_rss": runtime, "peak_rss": _peak()}


def _planes(data: bytes) -> bytes:
    """The bytes of each float32 split into four planes (all first bytes, then all second...): the exponent bytes
    of trained weights repeat, which a byte-oriented codec then finds."""
    whole = len(data) // 4 * 4
    return np.frombuffer(data[:whole], dtype=np.uint8).reshape(-1, 4).T.tobytes() + data[whole:]


def run_compression() -> None:
    """Lossless compression of trainer states and deltas (issue 14: "compress states losslessly where it pays"):
    zlib (standard library) and, when the ``zstandard`` package is importable (not a dependency: install it aside
    to measure), zstd; each on the bytes as they are and split into float32 byte planes. Compressed size ÷
    original, and MB/s on one core (``process_time``)."""
    codecs: list[tuple[str, Any, Any]] = [("zlib 1", lambda d: zlib.compress(d, 1), zlib.decompress),
                                          ("zlib 6", lambda d: zlib.compress(d, 6), zlib.decompress)]
    try:
        import zstandard  # type: ignore[import-not-found]  # noqa: PLC0415 (optional, measurement only)

        for level in (1, 3):
            codecs.append((f"zstd {level}", zstandard.ZstdCompressor(level=level).compress,
                           zstandard.ZstdDecompressor().decompress))
    except ImportError:
        print("zstandard not importable: zlib only")
    train, _ = load_fashion_mnist()
    shard = train.subset(slice(0, 4096))
    for model in ("fmnist-cnn-v1", "fmnist-mlp-v1"):
        task = Task(model_name=model, steps=100, batch_size=32, lr=1e-3, seed=1, segment_every=10)
        result = train_local(task, initial_state(model, 0), shard)
        for label, data in ((f"{model} trainer state", encode_state(result.segment_states[-1])),
                            (f"{model} delta f32", encode_delta(result.delta, kind="f32")),
                            (f"{model} delta int8", encode_delta(result.delta, kind="int8"))):
            for planes in (False, True):
                source = _planes(data) if planes else data
                for name, compress, decompress in codecs:
                    cpu = time.process_time()
                    packed = compress(source)
                    mid = time.process_time()
                    assert decompress(packed) == source
                    end = time.process_time()
                    print(f"{label:32s} {name + (' + planes' if planes else ''):16s} {len(data) / 1e6:6.2f} MB -> "
                          f"{len(packed) / len(data):6.1%}   compress {len(data) / 1e6 / max(mid - cpu, 1e-9):6.0f} "
                          f"MB/s, decompress {len(data) / 1e6 / max(end - mid, 1e-9):6.0f} MB/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(HIDDEN), choices=list(HIDDEN))
    parser.add_argument("--steps", type=int, help="K for every size (default: per size, see DEFAULT_STEPS)")
    parser.add_argument("--segment-every", type=int, help="S for every size (default: per size)")
    parser.add_argument("--k", type=int, default=3, help="challenged segments per update (the last included)")
    parser.add_argument("--quorum", type=int, default=3)
    parser.add_argument("--spill-challenged-only", action="store_true",
                        help="remove each spilled state no validator of the run asks for once it is written and "
                             "hashed (disk only; the trainer's work is unchanged): for long 100M runs")
    parser.add_argument("--compression", action="store_true",
                        help="measure lossless compression of states and deltas instead (zlib; zstd if installed)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.compression:
        print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        run_compression()
        return
    if args.child:
        work = Path(tempfile.mkdtemp(prefix="bench-verify-", dir=os.environ.get("BENCH_TMP")))
        try:
            if args.stream:
                out = run_stream(args.child, work=work)
            else:
                out = run_task(args.child, steps=args.steps, every=args.segment_every, k=args.k,
                               quorum=args.quorum, work=work, spill_challenged_only=args.spill_challenged_only)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(json.dumps(out))
        return
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"batch 32, AdamW lr 1e-4, one torch thread; each of {args.quorum} validators challenges k={args.k} segments "
          "(the last always)")
    for size in args.sizes:
        steps, every = DEFAULT_STEPS[size]
        steps, every = args.steps or steps, args.segment_every or every

        def child(*extra: str, size: str = size, steps: int = steps, every: int = every) -> dict[str, Any]:
            done = subprocess.run(
                [sys.executable, __file__, "--child", size, "--steps", str(steps), "--segment-every", str(every),
                 "--k", str(args.k), "--quorum", str(args.quorum),
                 *(["--spill-challenged-only"] if args.spill_challenged_only else []), *extra],
                check=True, capture_output=True, text=True,
            )
            return dict(json.loads(done.stdout.strip().splitlines()[-1]))

        r = child()
        s = child("--stream")
        report(size, r, s)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def report(size: str, r: dict[str, Any], s: dict[str, Any]) -> None:
    mb = 1e6
    n, k, q = r["segments"], r["k"], r["quorum"]
    per_validator = [v / r["trainer_cpu_s"] for v in r["validator_cpu_s"]]
    summed = sum(per_validator)
    pub_goal = 1.1 * r["delta_bytes"] + 64 * 1024
    fetch_goal = k * r["state_bytes"] + r["delta_bytes"]
    stream_ratio = (s["peak_rss"] - s["runtime_rss"]) / s["state_bytes"]
    half = catch_probability(n, k, n // 2, updates=5)
    ok = {True: "meets", False: "MISSES"}
    print(f"\n{size}: {r['params'] / 1e6:.2f}M params, K={r['steps']} steps, n={n} segments, k={k}, quorum {q}; "
          f"one state {r['state_bytes'] / mb:.1f} MB, delta {r['delta_bytes'] / mb:.2f} MB")
    print(f"  published per update: {r['published_now'] / mb:.2f} MB (delta DAG {r['delta_dag_bytes'] / mb:.2f} + "
          f"manifest {r['manifest_bytes'] / 1e3:.1f} kB; all states published: {r['published_before'] / mb:.1f} MB)"
          f"   goal <= 1.1 x delta + 64 KiB = {pub_goal / mb:.2f} MB: {ok[r['published_now'] <= pub_goal]}")
    print(f"  fetched per validator (the most of the quorum): {r['fetched_per_validator'] / mb:.1f} MB "
          f"({r['fetched_states']} states + the "
          f"delta)   goal <= k x state + delta = {fetch_goal / mb:.1f} MB: "
          f"{ok[r['fetched_per_validator'] <= fetch_goal]}")
    print(f"  CPU: trainer {r['trainer_cpu_s']:.1f} s, validators "
          f"{', '.join(f'{v:.1f}' for v in r['validator_cpu_s'])} s = "
          f"{', '.join(f'{p:.0%}' for p in per_validator)} of the trainer's; summed over the quorum {summed:.0%} "
          f"(replay alone {replay_share(n, k, q):.0%})   goal <= 50%: {ok[summed <= 0.5]}")
    print(f"  half the steps faked (last spared): caught {catch_probability(n, k, n // 2):.1%} per update, "
          f"{half:.2%} over 5   goal >= 99%: {ok[half >= 0.99]}")
    print(f"  peak RSS: {r['peak_rss'] / 1e9:.2f} GB (after training {r['peak_rss_trainer'] / 1e9:.2f} GB)   "
          f"goal <= 24 GB: {ok[r['peak_rss'] <= 24e9]}")
    print(f"  streaming (spill, put_file, get_file, chunked fetch + decode) peak over the runtime's "
          f"{s['runtime_rss'] / 1e9:.2f} GB: {(s['peak_rss'] - s['runtime_rss']) / 1e9:.2f} GB = "
          f"{stream_ratio:.2f} x one state   goal <= 3: {ok[stream_ratio <= 3]}")


if __name__ == "__main__":
    main()
