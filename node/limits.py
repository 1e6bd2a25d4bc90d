"""Size limits and transfer deadlines of a job's model content, derived from its model, not fixed constants.

A 100M-parameter job moves 400 MB deltas, 800 MB checkpoints and 1.2 GB segment states; a fashion-MNIST CNN moves
under 2 MB. One fixed limit is either too small for the first or an open door for the second (a trainer may
send anything up to the limit, and a receiver must wait for it). So every node bounds each kind of model content
by what the job's model makes it, from the parameter count and the bytes per parameter of each kind:

==================  ==========================================  ========================================
content             bytes per model scalar                      who fetches it
==================  ==========================================  ========================================
delta               4 (float32; int8 is smaller)                validators, the leader, auditors
checkpoint          8 (weights + the outer optimizer's momentum)  everyone, once per round
segment state       4 + 8 with AdamW (two moments), 4 with SGD  validators (challenged segments only)
==================  ==========================================  ========================================

plus :data:`HEADER_SLACK` for the safetensors header. A fetch of ``n`` bytes gets ``base + n / MIN_RATE`` seconds,
the base being the node's ``fetch_timeout_s``. Datasets are the customer's and stay bounded by the spec's
``max_dag_bytes``. This module decides limits; it never fetches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

from node.training.models import model_ref, state_layout
from protocols.specs import JobSpec

HEADER_SLACK = 1 << 20
"""Room for a safetensors header (~150 B per tensor: ~7,000 tensors) and the delta codec's per-tensor scales."""
MIN_RATE = 8 * 1024 * 1024
"""Bytes per second a transfer may not fall below before its deadline (~64 Mbit/s, a modest link)."""
STATE_BYTES_PER_SCALAR = {"adamw": 12, "sgd": 4}
"""Trainer state per model scalar: the weights, plus AdamW's two moments (SGD runs without momentum)."""


@dataclass(frozen=True)
class ContentLimits:
    """The largest bytes of each kind of model content a node accepts for one job, and the waits for them."""

    scalars: int
    """Float32 scalars of the model's state (parameters and buffers)."""
    delta_bytes: int
    checkpoint_bytes: int
    state_bytes: int
    """One segment state (the whole trainer state after a segment)."""
    segments_per_task: int
    """Segment states a trainer keeps per task of the largest node class (for its spill budget)."""

    @property
    def spill_bytes(self) -> int:
        """Disk a trainer needs to keep one task's committed segment states until the round is decided."""
        return self.segments_per_task * self.state_bytes

    def transfer_s(self, nbytes: int, base_s: float) -> float:
        """The deadline for fetching ``nbytes``: ``base_s`` plus the time at :data:`MIN_RATE`."""
        return base_s + nbytes / MIN_RATE


def content_limits(spec: JobSpec) -> ContentLimits:
    """:class:`ContentLimits` of ``spec``'s model (built once per spec on this node to count its scalars)."""
    return _limits(spec)


@cache
def _limits(spec: JobSpec) -> ContentLimits:
    # The registry's cached layout (decode_checkpoint reads it too): the model is built once per architecture.
    scalars = sum(math.prod(shape) for shape, _dtype in state_layout(model_ref(spec)).values())
    per_state = STATE_BYTES_PER_SCALAR.get(spec.inner_optimizer, max(STATE_BYTES_PER_SCALAR.values()))
    # The largest class (L) runs twice the spec's steps (node.training.task); one state per segment.
    segments = math.ceil(2 * spec.local_steps / spec.segment_every)
    return ContentLimits(
        scalars=scalars, delta_bytes=4 * scalars + HEADER_SLACK, checkpoint_bytes=8 * scalars + HEADER_SLACK,
        state_bytes=per_state * scalars + HEADER_SLACK, segments_per_task=segments,
    )
