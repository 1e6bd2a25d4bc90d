"""Model files a customer could publish, made in-process for the tests: ONNX graphs exported by torch's own
exporter (offline), and files crafted to run code when loaded the unsafe way."""

from __future__ import annotations

import io
import pickle
import warnings
from pathlib import Path

import torch
from torch import nn


def small_classifier() -> nn.Module:
    """A 1×8×8-image, 10-class convnet (what a customer might design), seeded."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))


def onnx_bytes(model: nn.Module, example: torch.Tensor) -> bytes:
    """``model`` exported to ONNX by torch's TorchScript exporter (no network, no onnxscript), batch axis dynamic."""
    buffer = io.BytesIO()
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    return buffer.getvalue()


class WritesMarker:
    """Unpickling this runs ``Path(marker).write_text(...)``: what a hostile model file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path, str]]:
        return (Path.write_text, (self.marker, "code ran"))


def hostile_pickle(marker: Path, protocol: int = pickle.HIGHEST_PROTOCOL) -> bytes:
    return pickle.dumps(WritesMarker(marker), protocol=protocol)


def hostile_torch_save(marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save({"weights": torch.zeros(2), "payload": WritesMarker(marker)}, buffer)
    return buffer.getvalue()
