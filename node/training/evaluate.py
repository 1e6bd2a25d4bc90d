"""Accuracy and loss of a checkpoint on a held-out set, scored by the task's objective (:mod:`objective`)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from node.training.data import ArraySet
from node.training.local import EVAL_CHUNK, deterministic_torch
from node.training.models import ModelRef, build_model
from node.training.objective import CLASSIFICATION, objective_for


def evaluate(
    model_name: ModelRef, state: Mapping[str, torch.Tensor], test: ArraySet, *, max_samples: int | None = None,
    task: str = CLASSIFICATION,
) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` of ``state`` on the first ``max_samples`` samples of ``test``.

    For ``causal_lm`` both are per next token (top-1 accuracy; perplexity is ``exp`` of the loss:
    :func:`~node.training.objective.headline`).
    """
    model = build_model(model_name)
    model.load_state_dict(dict(state), strict=True)
    model.eval()
    n = len(test) if max_samples is None else min(len(test), max_samples)
    with deterministic_torch(), torch.no_grad():
        score = objective_for(task).score(model, test, n, EVAL_CHUNK)
    return score.accuracy, score.mean_loss
