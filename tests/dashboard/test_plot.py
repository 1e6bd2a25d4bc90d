"""The metric/loss picture of ``dtnode job status --plot`` and ``dtnode devnet`` (node/http/plot.py)."""

from __future__ import annotations

from pathlib import Path

from node.http.plot import CurvePoint, points_from_status, write_curve_png

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_status_history_becomes_points_in_the_tasks_own_metric() -> None:
    history: list[dict[str, object]] = [
        {"round": 0, "leader": "0xa", "checkpoint": "bafy0", "accuracy": 0.7, "loss": 0.8},
        {"round": 1, "leader": "0xa", "checkpoint": "bafy1", "accuracy": None, "loss": None, "error": "gone"},
        {"round": 2, "leader": "0xa", "checkpoint": "bafy2", "accuracy": 0.2, "loss": 2.0, "perplexity": 7.39},
    ]
    assert points_from_status(history) == [CurvePoint(1, "accuracy", 0.7, 0.8), CurvePoint(3, "perplexity", 7.39, 2.0)]


def test_writes_a_png(tmp_path: Path) -> None:
    out = write_curve_png(tmp_path / "sub" / "curve.png",
                          [CurvePoint(1, "accuracy", 0.7, 0.8), CurvePoint(2, "accuracy", 0.75, None)], title="job 1")
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (825, 462)
