"""A round's time with and without two browsers watching the dashboard (issue 16: the server must not slow the
node's protocol work).

The same embedded devnet three times in this one invocation, on this machine: with no dashboard; with the customer's
node serving it (``--http``: the chain reads and checkpoint measurements) but nobody watching; and with it served
and two headless chromium browsers (Debian's, driven by Playwright) each
keeping the job's page open from the nodes' start to the job's end, redrawing on every change the event stream
announces. Round times are the gaps between the customer's round lines (``RoundLine.wall_s``); the first round
(start-up, first fetches) is left out.

    .venv/bin/python bench/bench_dashboard.py              # MLP, 3 trainers, 5 rounds each way
    .venv/bin/python bench/bench_dashboard.py --rounds 8

Prints each run's round times, their means and their ratios to the run without a dashboard. On a 2-core machine the
browsers' own rendering competes for the cores too: that cost is part of what a watching person adds, and is
included.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
from pathlib import Path

import trio

from node.devnet import Devnet, DevnetPlan, demo_spec, run_devnet
from node.logs import setup_logging
from protocols.p2p.hardening import install_hardening

CHROMIUM = "/usr/bin/chromium"


def plan(rounds: int, workdir: Path, *, http: str, out: list[str]) -> DevnetPlan:
    """The dashboard tests' network (one leader, three trainers, one validator, quorum 1): embedded devnets with a
    quorum of 3 can stall in round 0 since the signed-vote fast path (issue 13)."""
    spec = demo_spec(rounds=rounds, trainers=3, model="fmnist-mlp-v1", local_steps=20, lease_seconds=120, quorum=1)

    def say(line: str) -> None:
        out.append(line)
        if line.startswith("["):
            print(f"  {'watched' if http else 'plain'}: {line.strip()}", flush=True)

    return DevnetPlan(trainers=3, validators=1, leaders=1, spec=spec, embedded=True, shards=8, eval_samples=500,
                      final_eval_samples=1000, workdir=workdir, http=http, out=say)


def watch(url: str, job_id: int, stop: threading.Event, browsers: int) -> int:
    """Keep ``browsers`` chromium instances on the job's page until ``stop``; returns the redraws they made."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        opened = [pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"]) for _ in range(browsers)]
        pages = [b.new_page() for b in opened]
        for page in pages:
            page.goto(f"{url}/jobs/{job_id}")
        while not stop.is_set():
            pages[0].wait_for_timeout(1000)  # lets Playwright's connection breathe while the pages live
        drawn = sum(int(p.evaluate("document.body.dataset.drawn || 0")) for p in pages)
        for b in opened:
            b.close()
    return drawn


def round_times(lines: list[float]) -> list[float]:
    return [b - a for a, b in zip(lines, lines[1:], strict=False)]


def run(rounds: int, *, browsers: int, dashboard: bool) -> tuple[list[float], int]:
    out: list[str] = []
    stop = threading.Event()
    drawn: list[int] = []

    async def on_ready(_net: Devnet, job_id: int) -> None:
        url = next(line.split()[1] for line in out if line.startswith("dashboard: "))
        drawn.append(await trio.to_thread.run_sync(lambda: watch(url, job_id, stop, browsers)))

    async def on_finished(_net: Devnet, _job_id: int) -> None:
        stop.set()

    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        p = plan(rounds, Path(tmp), http="127.0.0.1:0" if dashboard else "", out=out)
        result = trio.run(lambda: run_devnet(p, on_ready=on_ready if browsers else None,
                                             on_finished=on_finished if browsers else None))
    return round_times([line.wall_s for line in result.rounds]), sum(drawn)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--browsers", type=int, default=2)
    args = ap.parse_args()
    setup_logging(level="ERROR")
    install_hardening()  # the nodes run in this process: patch py-libp2p as the dtnode binary does
    plain, _ = run(args.rounds, browsers=0, dashboard=False)
    served, _ = run(args.rounds, browsers=0, dashboard=True)
    watched, redraws = run(args.rounds, browsers=args.browsers, dashboard=True)
    print(f"round seconds, no dashboard:          {' '.join(f'{s:.1f}' for s in plain)}")
    print(f"round seconds, dashboard, no watcher: {' '.join(f'{s:.1f}' for s in served)}")
    print(f"round seconds, {args.browsers} browsers watching:    {' '.join(f'{s:.1f}' for s in watched)} "
          f"({redraws} page redraws)")
    a, b, c = statistics.mean(plain), statistics.mean(served), statistics.mean(watched)
    print(f"mean round: {a:.1f} s without, {b:.1f} s served ({b / a:.2f}x), {c:.1f} s watched ({c / a:.2f}x)")


if __name__ == "__main__":
    main()
