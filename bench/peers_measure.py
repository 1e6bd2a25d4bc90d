"""CPU-seconds and memory of a process tree, sampled while it runs: what each side of ``bench_peers.py`` costs.

A side runs as one child process of the benchmark (with its own children: node processes, Hardhat, Flower
clients). Every ``interval_s`` the whole tree is read through psutil: each process's CPU time (user + system, its
threads included) and resident memory, plus its proportional share (PSS, from ``/proc/PID/smaps_rollup``, which
counts a library shared by 10 processes once rather than 10 times). A process's CPU time is its last sample (up to
one interval of a short-lived process's end is missed); the tree's totals are kept as a time series, so the cost of
a window (submission to last round) can be read off it.
"""

from __future__ import annotations

import subprocess
import time
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path

import psutil

STOP_GRACE_S = 30.0
"""How long a side has to stop its processes after SIGTERM (a devnet gives each node 10 s) before SIGKILL."""


@dataclass
class ProcessSeen:
    pid: int
    cmdline: str
    cpu_s: float = 0.0
    peak_rss: int = 0
    peak_pss: int = 0


@dataclass
class TreeUsage:
    processes: dict[int, ProcessSeen] = field(default_factory=dict)
    times: list[float] = field(default_factory=list)
    """Wall-clock (``time.time()``) of each sample."""
    cpu: list[float] = field(default_factory=list)
    """CPU-seconds of the whole tree up to each sample."""
    rss: list[int] = field(default_factory=list)
    pss: list[int] = field(default_factory=list)
    exit_code: int | None = None

    def cpu_at(self, t: float) -> float:
        """CPU-seconds of the tree up to wall-clock ``t`` (the last sample at or before it)."""
        i = bisect_right(self.times, t) - 1
        return self.cpu[i] if i >= 0 else 0.0

    @property
    def cpu_total(self) -> float:
        return sum(p.cpu_s for p in self.processes.values())

    @property
    def peak_rss(self) -> int:
        return max(self.rss, default=0)

    @property
    def peak_pss(self) -> int:
        return max(self.pss, default=0)


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _sample(root: psutil.Process, usage: TreeUsage) -> None:
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        procs = []
    rss = pss = 0
    for proc in procs:
        try:
            with proc.oneshot():
                times = proc.cpu_times()
                mem = proc.memory_info().rss
                seen = usage.processes.get(proc.pid)
                if seen is None:
                    seen = usage.processes[proc.pid] = ProcessSeen(proc.pid, " ".join(proc.cmdline())[:300])
        except psutil.Error:  # gone between the listing and the read
            continue
        share = _pss(proc.pid)
        seen.cpu_s = times.user + times.system
        seen.peak_rss = max(seen.peak_rss, mem)
        seen.peak_pss = max(seen.peak_pss, share)
        rss += mem
        pss += share
    usage.times.append(time.time())
    usage.cpu.append(usage.cpu_total)
    usage.rss.append(rss)
    usage.pss.append(pss)


def run_measured(command: list[str], *, interval_s: float = 0.5, timeout_s: float = 3600.0) -> TreeUsage:
    """Run ``command`` to its end (killed after ``timeout_s``), sampling its process tree."""
    usage = TreeUsage()
    proc = subprocess.Popen(command)
    root = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout_s
    try:
        while proc.poll() is None:
            _sample(root, usage)
            if time.monotonic() > deadline:
                proc.kill()
            time.sleep(interval_s)
    finally:  # also on Ctrl-C or SIGTERM: the side stops its own children (a devnet its nodes and Hardhat)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
        usage.exit_code = proc.wait()
    return usage
