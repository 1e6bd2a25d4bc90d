"""Where a devnet round's wall time goes, read from the node logs (``LABEL.log`` in the devnet's work folder).

Each node logs its steps with a wall-clock second (``HH:MM:SS label LEVEL message``). Per round, the first or last
time each step was logged by any node:

- ``lead``: the leader starts the round (``leading round N/M``);
- ``tickets``: the last of the round's tickets handed out;
- ``submitted``: the last trainer's update submitted on-chain (after training and publishing);
- ``verdicts``: the last validator's verdict from its replay (a validator logs its verdict when it signs it for
  the fast path, and again when it votes it on-chain: the first of each is the replay's);
- ``votes``: the last on-chain vote (the same verdict again, once the fast path's window closed unsettled);
- ``committed``: the leader's commit (``committed round N/M``).

The phases between them (start→tickets, tickets→submitted, submitted→verdicts, verdicts→on-chain votes,
votes→committed, committed→next lead) are the round's critical path at one-second resolution; averaged over the
steady rounds (round 2 on) they say which wait to remove first. The node-seconds by activity (``timings.json``) say
where the CPU went; this says what the round waited for.
"""

from __future__ import annotations

import re
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

LINE = re.compile(r"^(\d\d):(\d\d):(\d\d) (\S+) +\w+ +(.*)$")
LEADING = re.compile(r"job \d+: leading round (\d+)/")
COMMITTED = re.compile(r"job \d+: committed round (\d+)/")
ROUND = re.compile(r"job \d+ round (\d+): (.*)$")
TRAINED = re.compile(r"trained job \d+ round (\d+):")
SLOT = re.compile(r" in slot (\d+) ")

PHASES = ("lead→tickets", "tickets→submitted", "submitted→verdicts", "verdicts→on-chain votes",
          "votes→committed", "committed→next lead")
"""The round's critical path, in order."""


def _events(lines: Iterable[str]) -> dict[int, dict[str, list[int]]]:
    """round (0-based) → event → the seconds (of the day, unwrapped past midnight) it was logged at."""
    out: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    verdicts_seen: dict[tuple[int, str, str], int] = {}
    last = 0
    offset = 0
    for raw in lines:
        m = LINE.match(raw)
        if not m:
            continue
        t = int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3]) + offset
        if t + 12 * 3600 < last:  # past midnight
            offset += 24 * 3600
            t += 24 * 3600
        last = max(last, t)
        message = m[5]
        if lead := LEADING.search(message):
            out[int(lead[1]) - 1]["lead"].append(t)
        elif done := COMMITTED.search(message):
            out[int(done[1]) - 1]["committed"].append(t)
        elif trained := TRAINED.search(message):
            out[int(trained[1])]["trained"].append(t)
        elif step := ROUND.search(message):
            r, what = int(step[1]), step[2]
            if what.startswith("ticket for"):
                out[r]["tickets"].append(t)
            elif what.startswith("submitted update"):
                out[r]["submitted"].append(t)
            elif " is VALID" in what or " is INVALID" in what:
                # A validator logs a verdict when it signs it (fast path) and again when it votes it on-chain
                # (the first panel drawn on-chain after the fast path's window): the first of each is the replay's.
                slot = SLOT.search(what)
                seen = verdicts_seen.setdefault((r, m[4], slot[1] if slot else ""), 0)
                verdicts_seen[(r, m[4], slot[1] if slot else "")] = seen + 1
                out[r]["verdicts" if seen == 0 else "votes"].append(t)
            elif what.startswith("settled"):
                out[r]["settled"].append(t)
    return out


def _log_lines(workdir: Path) -> list[str]:
    return sorted(line for log in workdir.glob("*.log") for line in log.read_text(errors="replace").splitlines()
                  if LINE.match(line))


def commit_seconds(workdir: Path, since: float) -> dict[int, float]:
    """round (1-based) → seconds from ``since`` (a ``time.time()``) to the leader's commit log line (local clock,
    whole seconds: up to 1 s early)."""
    local = time.localtime(since)
    start = local.tm_hour * 3600 + local.tm_min * 60 + local.tm_sec + (since % 1)
    out: dict[int, float] = {}
    for r, ev in _events(_log_lines(workdir)).items():
        if ev.get("committed"):
            out[r + 1] = (max(ev["committed"]) - start) % (24 * 3600)
    return out


def round_phases(workdir: Path) -> dict[int, dict[str, float]]:
    """round (1-based) → phase → seconds, for every round whose steps were all logged."""
    events = _events(_log_lines(workdir))
    phases: dict[int, dict[str, float]] = {}
    for r in sorted(events):
        ev = events[r]
        if not all(ev.get(k) for k in ("lead", "tickets", "submitted", "verdicts", "committed")):
            continue
        lead, committed = min(ev["lead"]), max(ev["committed"])
        verdicts = max(ev["verdicts"])
        voted = max(ev["votes"]) if ev.get("votes") else verdicts  # no on-chain votes: the fast path settled
        marks = [lead, max(ev["tickets"]), max(ev["submitted"]), verdicts, voted, committed]
        row = {name: float(b - a) for name, a, b in zip(PHASES, marks, marks[1:], strict=False)}
        following = events.get(r + 1, {}).get("lead")
        if following:
            row["committed→next lead"] = float(min(following) - committed)
        phases[r + 1] = row
    return phases


def steady_phases(phases: dict[int, dict[str, float]]) -> dict[str, float]:
    """Each phase's mean over the rounds from round 2 on (round 1 carries the start-up)."""
    steady = [row for r, row in phases.items() if r >= 2]
    return {name: statistics.fmean(row[name] for row in steady if name in row)
            for name in PHASES if any(name in row for row in steady)}
