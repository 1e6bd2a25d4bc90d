"""The metric/loss curve of a job as a PNG, for the command line (``dtnode job status N --plot``, ``dtnode devnet``).

The same picture as the dashboard's live plot: the task's metric per round on the left axis, the loss on the right.
Drawn with matplotlib's object API on the Agg canvas (no pyplot: no global figure state, no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CurvePoint:
    round: int
    """1-based, as the pages and summaries number rounds."""
    metric_name: str
    metric: float
    loss: float | None = None


def write_curve_png(path: Path, points: Sequence[CurvePoint], *, title: str) -> Path:
    """Write the curve of ``points`` to ``path`` (PNG); blocking: call it in a worker thread from trio."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.2), dpi=110)
    ax = fig.subplots()
    rounds = [p.round for p in points]
    name = points[0].metric_name if points else "metric"
    scale = 100.0 if name == "accuracy" else 1.0
    ax.plot(rounds, [p.metric * scale for p in points], "o-", color="#2a6fdb", label=name)
    ax.set_xlabel("round")
    ax.set_ylabel(f"{name} (%)" if name == "accuracy" else name, color="#2a6fdb")
    ax.grid(alpha=0.3)
    losses = [(p.round, p.loss) for p in points if p.loss is not None]
    if losses:
        right = ax.twinx()
        right.plot([r for r, _ in losses], [v for _, v in losses], "s--", color="#e0802c", label="loss")
        right.set_ylabel("loss", color="#e0802c")
    if rounds:
        ax.set_xticks(rounds)
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


_NOT_METRICS = frozenset({"round", "leader", "checkpoint", "accuracy", "loss", "error"})


def points_from_status(history: Sequence[dict[str, object]]) -> list[CurvePoint]:
    """The measured rounds of ``dtnode job status``'s ``history`` (0-based rounds, the task's metric under its own
    name: ``accuracy``, or another such as ``perplexity``) as curve points."""
    points = []
    for entry in history:
        if entry.get("accuracy") is None:
            continue
        name = next((k for k in entry if k not in _NOT_METRICS), "accuracy")
        loss = entry.get("loss")
        points.append(CurvePoint(int(str(entry["round"])) + 1, name, float(str(entry[name])),
                                 float(str(loss)) if loss is not None else None))
    return points
