"""Accuracy and loss of a checkpoint on the held-out set (Fashion-MNIST's 10k test images)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from node.training.data import ArraySet
from node.training.local import EVAL_CHUNK, deterministic_torch, to_inputs, to_targets
from node.training.models import build_model


def evaluate(
    model_name: str, state: Mapping[str, torch.Tensor], test: ArraySet, *, max_samples: int | None = None
) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` of ``state`` on the first ``max_samples`` samples of ``test``."""
    model = build_model(model_name)
    model.load_state_dict(dict(state), strict=True)
    model.eval()
    n = len(test) if max_samples is None else min(len(test), max_samples)
    correct = 0
    total_loss = 0.0
    with deterministic_torch(), torch.no_grad():
        for lo in range(0, n, EVAL_CHUNK):
            hi = min(n, lo + EVAL_CHUNK)
            logits = model(to_inputs(test.images[lo:hi]))
            targets = to_targets(test.labels[lo:hi])
            total_loss += float(nn.functional.cross_entropy(logits, targets, reduction="sum"))
            correct += int((logits.argmax(dim=1) == targets).sum())
    return correct / n, total_loss / n
