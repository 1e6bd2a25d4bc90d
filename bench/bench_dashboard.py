"""A round's time with and without watchers on the dashboard (issue 16: the server must not slow the node's
protocol work), with the node's own cost of being watched separated from the browsers' rendering.

The same embedded devnet four times in this one invocation, on this machine:

  (a) no dashboard;
  (b) the customer's node serving it (``--http``: chain reads every 2 s, each checkpoint measured once), nobody
      watching;
  (c) two watchers that make exactly the HTTP requests the job page makes (node/http/static/app.js): the page, its
      style sheet and script and the favicon, the ``/events`` stream, and one ``GET /api/jobs/N`` at the start and
      after every ``change`` event, one after another and at most one waiting, as the page's draw chain does; no
      rendering. This is the node's cost of being watched;
  (d) two headless chromiums (Debian's, driven by Playwright) on the job's page, run at ``nice 19`` so that their
      rendering yields to the nodes, as it would on a viewer's own machine.

The watchers run in a child process (this script with ``--watch``) from the nodes' start to the job's end, so this
process's CPU time is the nodes' (all of them, the in-process chain and the dashboard server) and theirs is
counted apart. Round times are the gaps between the customer's round lines (``RoundLine.wall_s``); the first round
(start-up, first fetches) is left out.

    .venv/bin/python bench/bench_dashboard.py              # MLP, 3 trainers, 4 rounds each way (rounds 2-4 timed)
    .venv/bin/python bench/bench_dashboard.py --rounds 6

Prints each run's round times, mean round and its ratio to (a), the median round (one slow round, a lapsed lease
say, moves the mean a lot), this process's CPU seconds per round, the dashboard's own ``/metrics`` counters, and what
the watchers did and cost.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import select
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from node.devnet import Devnet, DevnetPlan

CHROMIUM = "/usr/bin/chromium"
STOP_TIMEOUT_S = 60.0
"""How long the watchers get to close and report once the job has finished."""
SSE_RETRY_S = 2.0
"""The stream's ``retry:`` (node/http/sse.py): how long a page waits before reconnecting."""
SSE_READ_TIMEOUT_S = 45.0
"""Longer than the stream's 15 s keep-alive: a silent stream this long is broken."""
DASHBOARD_COUNTERS = ("dtnode_dashboard_refresh_seconds_total", "dtnode_dashboard_measure_seconds_total",
                      "dtnode_dashboard_chain_calls_total")


@dataclass(frozen=True)
class Setup:
    label: str
    dashboard: bool
    watch: str = ""
    """"" (nobody), "http" (requests only) or "chromium" (real browsers at nice 19)."""


SETUPS = (Setup("(a) no dashboard", dashboard=False),
          Setup("(b) served, nobody watching", dashboard=True),
          Setup("(c) HTTP watchers, no rendering", dashboard=True, watch="http"),
          Setup("(d) chromiums at nice 19", dashboard=True, watch="chromium"))


@dataclass
class Outcome:
    rounds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    """This process's CPU seconds over each timed round."""
    dashboard: dict[str, float] = field(default_factory=dict)
    watchers: dict[str, float] = field(default_factory=dict)
    """What the watcher process reported: its counts, and ``cpu_s``, its CPU seconds and its children's."""


def cpu_s(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def plan(rounds: int, workdir: Path, *, http: str, say: Callable[[str], None]) -> DevnetPlan:
    """The dashboard tests' network (one leader, three trainers, one validator, quorum 1): embedded devnets with a
    quorum of 3 can stall in round 0 since the signed-vote fast path (issue 13)."""
    from node.devnet import DevnetPlan, demo_spec

    spec = demo_spec(rounds=rounds, trainers=3, model="fmnist-mlp-v1", local_steps=20, lease_seconds=120, quorum=1)
    return DevnetPlan(trainers=3, validators=1, leaders=1, spec=spec, embedded=True, shards=8, eval_samples=500,
                      final_eval_samples=1000, workdir=workdir, http=http, out=say)


def gaps(values: list[float]) -> list[float]:
    return [b - a for a, b in zip(values, values[1:], strict=False)]


def run(setup: Setup, rounds: int, watchers: int) -> Outcome:
    from node.devnet import run_devnet

    out: list[str] = []
    cpu_at_round: list[float] = []  # this process's CPU seconds at each round line
    outcome = Outcome()
    procs: list[trio.Process] = []

    def say(line: str) -> None:
        out.append(line)
        if line.startswith("["):
            cpu_at_round.append(cpu_s(resource.RUSAGE_SELF))
            print(f"  {setup.label}: {line.strip()}", flush=True)

    def url() -> str:
        return next(line.split()[1] for line in out if line.startswith("dashboard: "))

    async def on_ready(_net: Devnet, job_id: int) -> None:
        # The child's priority is inherited by Playwright's driver and every chromium process it starts.
        nice = (lambda: os.setpriority(os.PRIO_PROCESS, 0, 19)) if setup.watch == "chromium" else None
        procs.append(await trio.lowlevel.open_process(
            [sys.executable, __file__, "--watch", setup.watch, "--url", url(), "--job", str(job_id),
             "--watchers", str(watchers)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=nice))

    async def on_finished(_net: Devnet, _job_id: int) -> None:
        for proc in procs:  # closing its stdin tells the watcher process to stop and report
            assert proc.stdin is not None and proc.stdout is not None
            await proc.stdin.aclose()
            with trio.fail_after(STOP_TIMEOUT_S):
                report = b""
                while chunk := await proc.stdout.receive_some():
                    report += chunk
                await proc.wait()
            if proc.returncode != 0 or not report.strip():
                raise RuntimeError(f"the {setup.watch} watchers failed (exit {proc.returncode}); see their stderr")
            outcome.watchers = json.loads(report.decode().strip().splitlines()[-1])
        if setup.dashboard:
            with trio.fail_after(STOP_TIMEOUT_S):
                text = await trio.to_thread.run_sync(
                    lambda: httpx.get(f"{url()}/metrics", timeout=STOP_TIMEOUT_S).text)
            outcome.dashboard = {s.name: s.value for family in text_string_to_metric_families(text)
                                 for s in family.samples if s.name in DASHBOARD_COUNTERS}

    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        p = plan(rounds, Path(tmp), http="127.0.0.1:0" if setup.dashboard else "", say=say)
        result = trio.run(lambda: run_devnet(p, on_ready=on_ready if setup.watch else None,
                                             on_finished=on_finished))
    outcome.rounds = gaps([line.wall_s for line in result.rounds])
    outcome.cpu = gaps(cpu_at_round)
    return outcome


def report(setup: Setup, o: Outcome, base: float) -> None:
    mean = statistics.mean(o.rounds)
    print(f"{setup.label:<34} {mean:6.1f} s {mean / base:5.2f}x  {statistics.median(o.rounds):6.1f} s  "
          f"{statistics.mean(o.cpu):6.1f}   {' '.join(f'{s:.1f}' for s in o.rounds)}")
    if o.dashboard:
        d = o.dashboard
        print(f"{'':<36}dashboard's own counters over the run: chain reads "
              f"{d.get('dtnode_dashboard_refresh_seconds_total', 0):.1f} s "
              f"({d.get('dtnode_dashboard_chain_calls_total', 0):.0f} calls), checkpoint measurements "
              f"{d.get('dtnode_dashboard_measure_seconds_total', 0):.1f} s (wall seconds; the HTTP answers are "
              f"not counted)")
    if o.watchers:
        did = ", ".join(f"{v:.0f} {k}" for k, v in o.watchers.items() if k != "cpu_s")
        print(f"{'':<36}watchers: {did}; their own CPU {o.watchers.get('cpu_s', 0):.1f} s over the run")


# --- the watchers (the child process) ---------------------------------------------------------------------------


def tree_cpu_s() -> float:
    """CPU seconds of this process, its reaped children and its live descendants (chromium's many processes)."""
    import psutil

    me = psutil.Process()
    own = me.cpu_times()
    total = float(own.user + own.system + own.children_user + own.children_system)
    for child in me.children(recursive=True):
        try:
            t = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


async def watch_http(url: str, job_id: int, watchers: int) -> dict[str, int]:
    """``watchers`` clients making the job page's requests, each on its own connections, until stdin closes."""
    counts = {"events": 0, "api_reads": 0, "api_read_ms": 0, "other_requests": 0, "reconnects": 0}
    """``api_read_ms``: the API reads' total time as this client saw it (the node's answer, mostly)."""

    async def get(client: httpx.AsyncClient, path: str) -> httpx.Response:
        response = await client.get(path, headers={"Cache-Control": "no-store"})
        if path != "/favicon.ico":  # a browser asks for it; the node has none (404)
            response.raise_for_status()
        return response

    async def follow_events(client: httpx.AsyncClient, redraw: trio.MemorySendChannel[None]) -> None:
        timeout = httpx.Timeout(10.0, read=SSE_READ_TIMEOUT_S)
        while True:
            try:
                async with client.stream("GET", "/events", timeout=timeout,
                                         headers={"Accept": "text/event-stream"}) as stream:
                    async for line in stream.aiter_lines():
                        if line == "event: change":
                            counts["events"] += 1
                            with contextlib.suppress(trio.WouldBlock):  # a draw waits already
                                redraw.send_nowait(None)
            except httpx.TransportError:  # a page's EventSource reconnects after the stream's retry
                pass
            counts["reconnects"] += 1
            await trio.sleep(SSE_RETRY_S)

    async def watcher() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
            for path in (f"/jobs/{job_id}", "/static/style.css", "/static/app.js", "/favicon.ico"):
                await get(client, path)
                counts["other_requests"] += 1
            redraw, redraws = trio.open_memory_channel[None](1)
            redraw.send_nowait(None)  # the page draws once on load
            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow_events, client, redraw)
                async for _ in redraws:  # one draw after another, at most one waiting, as app.js's draw()
                    start = trio.current_time()
                    (await get(client, f"/api/jobs/{job_id}")).json()
                    counts["api_read_ms"] += round(1000 * (trio.current_time() - start))
                    counts["api_reads"] += 1

    async with trio.open_nursery() as nursery:
        for _ in range(watchers):
            nursery.start_soon(watcher)
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        while await stdin.receive_some():
            pass
        nursery.cancel_scope.cancel()
    return counts


def watch_chromium(url: str, job_id: int, watchers: int) -> dict[str, float]:
    """``watchers`` chromium instances on the job's page until stdin closes; returns the redraws they made."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        opened = [pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"]) for _ in range(watchers)]
        pages = [b.new_page() for b in opened]
        for page in pages:
            page.goto(f"{url}/jobs/{job_id}")
        while not select.select([sys.stdin], [], [], 0)[0]:  # readable: closed by the bench
            pages[0].wait_for_timeout(1000)  # lets Playwright's connection breathe while the pages live
        drawn = sum(int(p.evaluate("document.body.dataset.drawn || 0")) for p in pages)
        cpu = tree_cpu_s()
        for b in opened:
            b.close()
    return {"page_redraws": drawn, "cpu_s": cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--watchers", type=int, default=2)
    ap.add_argument("--runs", default="abcd", help="which runs, by letter (default: all four; (a) is the baseline)")
    ap.add_argument("--watch", choices=["http", "chromium"], help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--job", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.watch:  # the child process: watch, then report on stdout
        if args.watch == "http":
            counts: dict[str, float] = {**trio.run(watch_http, args.url, args.job, args.watchers),
                                        "cpu_s": tree_cpu_s()}
        else:
            counts = watch_chromium(args.url, args.job, args.watchers)
        print(json.dumps(counts), flush=True)
        return
    # The nodes' imports (torch, libp2p) only here: the watcher process must not pay for them while the nodes run.
    from node.logs import setup_logging
    from protocols.p2p.hardening import install_hardening

    setup_logging(level="ERROR")
    install_hardening()  # the nodes run in this process: patch py-libp2p as the dtnode binary does
    chosen = [s for s in SETUPS if s.label[1] in args.runs]
    outcomes = [run(s, args.rounds, args.watchers) for s in chosen]
    base = statistics.mean(outcomes[0].rounds)
    print(f"\nrounds 2-{args.rounds}, {args.watchers} watchers     mean round  vs {chosen[0].label[:3]}  median  "
          f"CPU s/round  round times (s)")
    for setup, o in zip(chosen, outcomes, strict=True):
        report(setup, o, base)


if __name__ == "__main__":
    main()
