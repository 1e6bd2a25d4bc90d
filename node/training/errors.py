"""Errors of the training core (the tree lives in :mod:`protocols.errors`)::

    TrainingError
    ├── InvalidDelta(TrainingError, ValueError)     a delta or checkpoint's bytes fail validation
    ├── DatasetError(TrainingError, ValueError)     dataset files missing, corrupt, or a shard is malformed
    ├── ModelFileRefused(TrainingError, ValueError) a customer's model or weights file is not a safe format
    ├── ReplayMismatch(TrainingError)               a replay disagrees with what a trainer claimed
    ├── UpdateWithheld(TrainingError)               a trainer's own result its validators would reject
    └── TicketRejected(TrainingError, ValueError)   a task ticket fails a check; ``code`` says which
"""

from __future__ import annotations

from protocols.errors import DtnodeError
from protocols.types import RejectCode


class TrainingError(DtnodeError):
    """Something in the training core failed; the message says what to do about it."""


class InvalidDelta(TrainingError, ValueError):
    """Delta or checkpoint bytes are malformed: wrong tensors, shapes, dtypes, NaN/Inf, or too large."""


class DatasetError(TrainingError, ValueError):
    """The dataset is missing or corrupt, or a shard's bytes do not hold a valid shard."""


class ModelFileRefused(TrainingError, ValueError):
    """A customer's model graph or weights file is refused: a format that can run code on load (pickle,
    ``torch.save``, ``torch.export``), external data, an unsupported operator, or an absurd size."""


class UpdateWithheld(TrainingError):
    """A trainer's honest result that its validators would reject whatever it claims (the spec's hyperparameters
    raised the loss past ``max_loss_rise_ppm``): not submitted, so no update bond is put at stake for it."""


class ReplayMismatch(TrainingError):
    """A replay of a trainer's task did not reproduce what the trainer claimed.

    :func:`node.training.replay.replay_verify` reports mismatches as a :class:`Verdict`; this error is for callers
    that prefer to raise (``Verdict.raise_if_rejected``).
    """


class TicketRejected(TrainingError, ValueError):
    """A task ticket fails a check (:func:`node.training.ticket_check.check_ticket`); ``code`` says which, for the
    trainer's log and the validator's verdict alike."""

    def __init__(self, code: RejectCode, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
