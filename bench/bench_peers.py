"""A customer's comparison: the same job run as one process, as Flower with long-lived clients, and on dtnode.

One command, three sides, one after another on this machine, each a child process whose whole process tree is
measured (:mod:`peers_measure`):

- **one process**: the job's tasks one after another, aggregation and scoring in the same process (the reference);
- **Flower 1.42** (optional): its gRPC server and 4 long-lived client processes (:mod:`peers_flower`); it runs in its
  own venv, made once by ``bash bench/setup_flower.sh`` (``bench/requirements-flower.txt``; not a dependency of
  dtnode or of its tests); without it this side is skipped and said so;
- **dtnode**: the devnet in processes (Hardhat, 2 leader candidates, 4 trainers, 3 validators; :mod:`peers_devnet`).

The same job on all three (:mod:`peers_job`): ``fmnist-cnn-v1`` (or ``--model``), 4 tasks of K=100 a round, 12
rounds, mean + Nesterov outer step, the devnet's 16 shards, its tickets' shards and seeds. So every round's
checkpoint must be the same bytes on every side: the benchmark compares each round's checkpoint CID, accuracy and
loss and reports any difference as a bug (exit status 1).

    .venv/bin/python bench/bench_peers.py                               # the demo job, ~5-10 min on 2 cores
    .venv/bin/python bench/bench_peers.py --model resnet18-small-v1     # 11.2 M parameters (long on a CPU)
    .venv/bin/python bench/bench_peers.py --rounds 3 --sides one,dtnode

Prints per side: time from submission to 88% on the 2,000 held-out images (the network already running: from
``createJob`` for dtnode, from the first round's hand-out with every client connected for Flower, from the first
task for one process), steady seconds per round, CPU-seconds of all the side's processes (from submission to the
last round, and for the whole run with start-up), peak memory of all of them (PSS and RSS) and of the largest
trainer/client process, compute utilization (training seconds ÷ busy seconds) and the dtnode ÷ Flower ratios;
then dtnode's node-seconds by activity and a steady round's critical path (:mod:`peers_timeline`).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from peers_job import TARGET, RoundMetric  # noqa: E402
from peers_measure import TreeUsage, run_measured  # noqa: E402
from peers_report import SideResult, as_json, from_json, report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FLOWER_PYTHON = ROOT / ".venv-flower" / "bin" / "python"
SIDES = ("one", "flower", "dtnode")
TITLES = {"one": "one process", "flower": "Flower 1.42", "dtnode": "dtnode devnet"}
TRAINING_PROCESS = {"one": "--side one", "flower": "peers_flower.py client", "dtnode": "trainer-"}
"""How the side's training processes show in their command line (for the largest trainer's memory)."""


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- the sides, each in a child process -----------------------------------------------------------------------------


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_side_here(side: str, args: argparse.Namespace) -> None:
    """The child process: run one side (one process or dtnode) and write its JSON to ``args.out``."""
    from peers_job import Busy, load_job, peer_spec, run_one_process

    spec = peer_spec(model=args.model, rounds=args.rounds, local_steps=args.local_steps)
    out = Path(args.out)
    if side == "one":
        job = load_job(spec)
        busy = Busy()
        submitted_at = time.time()
        rounds = run_one_process(job, busy=busy, on_round=lambda m: print(
            f"one process: round {m.round} accuracy {m.accuracy:.4f} t={m.t_s:.1f}s", flush=True))
        out.write_text(json.dumps({"rounds": [asdict(m) for m in rounds], "busy": busy.seconds,
                                   "submitted_at": submitted_at, "finished_at": time.time()}))
    else:
        import trio
        from peers_devnet import run_devnet_side

        from protocols.p2p.hardening import install_hardening

        install_hardening()  # the customer's node runs in this process: as the dtnode binary does
        trio.run(run_devnet_side, spec, out)


def measure_side(side: str, args: argparse.Namespace, folder: Path) -> SideResult | None:
    out = folder / f"{side}.json"
    common = ["--model", args.model, "--rounds", str(args.rounds), "--local-steps", str(args.local_steps)]
    if side == "flower":
        if not Path(args.flower_python).exists():
            print(f"Flower side skipped: {args.flower_python} not found (bash bench/setup_flower.sh installs it)")
            return None
        command = [args.flower_python, str(ROOT / "bench" / "peers_flower.py"), "server", "--out", str(out), *common]
    else:
        command = [sys.executable, __file__, "--side", side, "--out", str(out), *common]
    before = loadavg()
    print(f"--- {TITLES[side]} (load average {before})", flush=True)
    usage = run_measured(command)
    after = loadavg()
    if usage.exit_code != 0 or not out.exists():
        print(f"{TITLES[side]}: exited with {usage.exit_code}, no result")
        return None
    data = json.loads(out.read_text())
    rounds = [RoundMetric(**m) for m in data["rounds"]]
    finished_at = data.get("finished_at") or (data["submitted_at"] + (rounds[-1].t_s if rounds else 0.0))
    busy = data.get("busy") or _node_seconds(data.get("timings", {}))
    needle = TRAINING_PROCESS[side]
    trainers = [p.peak_rss for p in usage.processes.values() if needle in p.cmdline]
    return SideResult(
        name=side, rounds=rounds, submitted_at=data["submitted_at"], finished_at=finished_at, busy=busy,
        cpu_window_s=usage.cpu_at(finished_at) - usage.cpu_at(data["submitted_at"]), cpu_total_s=usage.cpu_total,
        peak_pss=usage.peak_pss, peak_rss=usage.peak_rss, trainer_rss=max(trainers, default=0),
        loadavg=(before, after), extra={k: v for k, v in data.items() if k in ("timings", "chain_calls", "workdir",
                                                                              "node_started_at", "stopped_at")}
        | _per_label(usage, data))


def _node_seconds(timings: dict[str, dict[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for node in timings.values():
        for key, value in node.items():
            total[key] = total.get(key, 0.0) + float(value)
    return total


def _per_label(usage: TreeUsage, data: dict[str, Any]) -> dict[str, Any]:
    labels: dict[str, str] = data.get("labels", {})
    return {"processes": {labels.get(str(pid), p.cmdline[:60]): {"cpu_s": round(p.cpu_s, 1),
                                                                   "peak_rss_mb": p.peak_rss >> 20}
                          for pid, p in usage.processes.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="fmnist-cnn-v1", help="a registry model (resnet18-small-v1: 11.2 M params)")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--local-steps", type=int, default=100, help="K, each task's local steps")
    ap.add_argument("--sides", default=",".join(SIDES), help=f"which sides, comma-separated ({', '.join(SIDES)})")
    ap.add_argument("--target", type=float, default=TARGET)
    ap.add_argument("--flower-python", default=str(FLOWER_PYTHON), help="the Flower venv's Python")
    ap.add_argument("--results", default=None, help="folder for each side's JSON and report.json (default: a temp)")
    ap.add_argument("--merge", nargs="+", metavar="REPORT_JSON", help="print one report from the report.json of "
                    "earlier runs (sides measured separately; a later file's side replaces an earlier one's)")
    ap.add_argument("--side", choices=["one", "dtnode"], help=argparse.SUPPRESS)  # a child: run one side here
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM unwinds like Ctrl-C: every side stops what it started
    if args.side:
        run_side_here(args.side, args)
        return 0
    if args.merge:
        merged = {}
        for path in args.merge:
            merged.update(from_json(json.loads(Path(path).read_text())))
        lines, problems = report(dict(sorted(merged.items(), key=lambda kv: SIDES.index(kv[0]))), target=args.target)
        print("\n".join(lines))
        return 1 if problems else 0
    wanted = [s for s in args.sides.split(",") if s]
    unknown = set(wanted) - set(SIDES)
    if unknown:
        ap.error(f"--sides: unknown {', '.join(sorted(unknown))}; choose from {', '.join(SIDES)}")
    folder = Path(args.results or tempfile.mkdtemp(prefix="bench-peers-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"model {args.model}, 4 tasks of K={args.local_steps} a round, {args.rounds} rounds, target "
          f"{args.target:.0%} on the first 2,000 test images; load average {loadavg()}; results in {folder}")
    sides = {}
    for side in (s for s in SIDES if s in wanted):
        result = measure_side(side, args, folder)
        if result is not None:
            sides[side] = result
    if not sides:
        return 1
    lines, problems = report(sides, target=args.target)
    print("\n".join(["", *lines]))
    (folder / "report.json").write_text(json.dumps(as_json(sides), indent=1, default=str))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
