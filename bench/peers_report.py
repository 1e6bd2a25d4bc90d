"""What ``bench_peers.py`` prints: the three sides side by side, the ratios dtnode ÷ Flower, the per-round check, and
where dtnode's time goes (node-seconds by activity and role, and a steady round's critical path from the logs)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peers_job import TARGET, RoundMetric, divergences, steady_round_s, time_to_target
from peers_timeline import round_phases, steady_phases

TITLES = {"one": "one process", "flower": "Flower 1.42", "dtnode": "dtnode devnet"}
GB = 1 << 30

@dataclass(frozen=True)
class SideResult:
    name: str
    rounds: list[RoundMetric]
    submitted_at: float
    finished_at: float
    busy: dict[str, float]
    """Seconds per activity summed over the side's processes (dtnode: its nodes' timings.json)."""
    cpu_window_s: float
    cpu_total_s: float
    peak_pss: int
    peak_rss: int
    trainer_rss: int
    """Peak RSS of the largest training process (a devnet trainer, a Flower client, the one process)."""
    loadavg: tuple[str, str]
    extra: dict[str, Any]

    @property
    def utilization(self) -> float | None:
        busy = sum(self.busy.values())
        return self.busy.get("training", 0.0) / busy if busy > 0 else None



Figure = Callable[[SideResult], float | None]


def _figures(target: float) -> list[tuple[str, Figure, str]]:
    def reach(s: SideResult) -> float | None:
        hit = time_to_target(s.rounds, target)
        return hit[1] if hit else None

    def reach_round(s: SideResult) -> float | None:
        hit = time_to_target(s.rounds, target)
        return float(hit[0]) if hit else None

    return [
        ("round reaching the target", reach_round, "{:.0f}"),
        ("time to target from submission (s)", reach, "{:.1f}"),
        ("all rounds from submission (s)", lambda s: s.rounds[-1].t_s if s.rounds else None, "{:.1f}"),
        ("steady seconds per round (median)", lambda s: steady_round_s(s.rounds), "{:.2f}"),
        ("CPU-s, submission to last round", lambda s: s.cpu_window_s, "{:.0f}"),
        ("CPU-s, whole run with start-up", lambda s: s.cpu_total_s, "{:.0f}"),
        ("peak memory, all processes, PSS (GB)", lambda s: s.peak_pss / GB, "{:.2f}"),
        ("peak memory, all processes, RSS (GB)", lambda s: s.peak_rss / GB, "{:.2f}"),
        ("largest training process, RSS (GB)", lambda s: s.trainer_rss / GB, "{:.2f}"),
        ("compute utilization (training/busy)", lambda s: s.utilization, "{:.1%}"),
    ]


def report(sides: dict[str, SideResult], *, target: float = TARGET) -> tuple[list[str], list[str]]:
    """(lines to print, divergences): the table, the ratios, the per-round check and dtnode's breakdown."""
    names = [n for n in TITLES if n in sides]
    lines = [f"{'':<40}" + "".join(f"{TITLES[n]:>16}" for n in names)
             + (f"{'dtnode/Flower':>15}" if {"dtnode", "flower"} <= set(names) else "")]
    for label, figure, fmt in _figures(target):
        values = {n: figure(sides[n]) for n in names}
        row = f"{label:<40}" + "".join(f"{fmt.format(v) if v is not None else '-':>16}" for v in values.values())
        d, f = values.get("dtnode"), values.get("flower")
        if d is not None and f and label != "round reaching the target":
            row += f"{d / f:>14.2f}x"
        lines.append(row)
    loads = [f"{sides[n].loadavg[0].split()[0]} / {sides[n].loadavg[1].split()[0]}" for n in names]
    lines.append(f"{'load average (1 min) before / after':<40}" + "".join(f"{v:>16}" for v in loads))
    lines.append("accuracy per round: " + "  ".join(
        f"{m.round}: {m.accuracy * 100:.2f}" for m in sides[names[0]].rounds))
    reference = "one" if "one" in sides else names[0]
    problems = divergences({n: sides[n].rounds for n in names}, reference=reference)
    if problems:
        lines += ["BUG: the sides did not train the same job bit for bit:", *[f"  {p}" for p in problems]]
    else:
        last = sides[reference].rounds[-1].cid if sides[reference].rounds else "-"
        together = ", ".join(TITLES[n] for n in names)
        lines.append(f"every round's checkpoint CID, accuracy and loss identical on {together} (final checkpoint "
                     f"{last})")
    if "dtnode" in sides:
        lines += devnet_breakdown(sides["dtnode"])
    return lines, problems


def chain_call_lines(calls: dict[str, dict[str, int]], rounds: int) -> list[str]:
    """Chain calls per round by role, the most frequent functions first (each node's ``chain_calls.json``: every
    call over its whole run, start-up included)."""
    by_role: dict[str, dict[str, int]] = {}
    for label, node in calls.items():
        role = by_role.setdefault(label.split("-")[0], {})
        for what, n in node.items():
            role[what] = role.get(what, 0) + n
    if not by_role:
        return []
    lines = [f"dtnode chain calls per round ({rounds} rounds, start-up included), summed over each role's nodes:"]
    for role, counts in sorted(by_role.items()):
        top = sorted(counts.items(), key=lambda kv: -kv[1])
        lines.append(f"  {role} {sum(counts.values()) / rounds:.1f}: " + ", ".join(
            f"{what} {n / rounds:.1f}" for what, n in top[:8]))
    return lines


def devnet_breakdown(side: SideResult) -> list[str]:
    """dtnode's node-seconds by activity (waiting: a node's wall time in no activity) and by role; then the
    critical path of a steady round from the node logs."""
    timings: dict[str, dict[str, float]] = side.extra.get("timings", {})
    started: dict[str, float] = side.extra.get("node_started_at", {})
    stopped = float(side.extra.get("stopped_at", side.finished_at))
    rounds = max(1, len(side.rounds))
    by_activity: dict[str, float] = {}
    by_role: dict[str, dict[str, float]] = {}
    wall = 0.0
    for label, node in timings.items():
        role = label.split("-")[0]
        wall += stopped - started.get(label, side.submitted_at)
        for key, value in node.items():
            by_activity[key] = by_activity.get(key, 0.0) + value
            by_role.setdefault(role, {})[key] = by_role.setdefault(role, {}).get(key, 0.0) + value
    busy = sum(by_activity.values())
    by_activity["waiting"] = max(0.0, wall - busy)
    total = sum(by_activity.values()) or 1.0
    lines = [f"dtnode node-seconds by activity, {len(timings)} nodes from each one's start to the end "
             f"({total:.0f} node-s):"]
    for key, value in sorted(by_activity.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {key:<12}{value:>9.1f} s {value / total:>7.1%}   per round {value / rounds:>7.2f} s")
    lines.append("  by role (node-s): " + "; ".join(
        f"{role} " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(acts.items(), key=lambda kv: -kv[1]))
        for role, acts in sorted(by_role.items())))
    lines.extend(chain_call_lines(side.extra.get("chain_calls", {}), rounds))
    workdir = side.extra.get("workdir")
    if workdir:
        phases = round_phases(Path(workdir))
        steady = steady_phases(phases)
        if steady:
            lines.append(f"dtnode critical path of a round, mean of rounds 2-{max(phases)} from the node logs (1 s "
                         "resolution): " + ", ".join(f"{k} {v:.1f} s" for k, v in steady.items())
                         + f" = {sum(steady.values()):.1f} s")
            first = phases.get(1)
            if first:
                lines.append("  round 1: " + ", ".join(f"{k} {v:.0f} s" for k, v in first.items()))
    return lines


def as_json(sides: dict[str, SideResult]) -> dict[str, Any]:
    """The sides as ``report.json`` holds them (read back by :func:`from_json`)."""
    return {n: {"rounds": [vars(m) for m in s.rounds], "busy": s.busy, "cpu_window_s": s.cpu_window_s,
                "cpu_total_s": s.cpu_total_s, "peak_pss": s.peak_pss, "peak_rss": s.peak_rss,
                "trainer_rss": s.trainer_rss, "loadavg": s.loadavg, "extra": s.extra,
                "submitted_at": s.submitted_at, "finished_at": s.finished_at} for n, s in sides.items()}


def from_json(data: dict[str, Any]) -> dict[str, SideResult]:
    """The sides of a ``report.json`` (``bench_peers.py --merge``: sides measured in separate runs, one report)."""
    return {n: SideResult(name=n, rounds=[RoundMetric(**m) for m in d["rounds"]],
                          submitted_at=float(d.get("submitted_at", 0.0)), finished_at=float(d.get("finished_at", 0.0)),
                          busy=d["busy"], cpu_window_s=d["cpu_window_s"], cpu_total_s=d["cpu_total_s"],
                          peak_pss=d["peak_pss"], peak_rss=d["peak_rss"], trainer_rss=d["trainer_rss"],
                          loadavg=tuple(d["loadavg"]), extra=d["extra"]) for n, d in data.items()}
