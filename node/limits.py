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
the base being the node's ``fetch_timeout_s``. A validator's availability deadline (how long it retries an update's
content before voting ``CONTENT_UNAVAILABLE``) grows the same way with what one check may have to fetch
(:func:`content_deadline_s`): a fixed 120 s is shorter than one 1.2 GB state takes at ``MIN_RATE``, so an honest
100M-parameter trainer on a modest link would be voted unavailable. Datasets are the customer's and stay bounded
by the spec's ``max_dag_bytes``. This module decides limits; it never fetches.
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

    def check_bytes(self, challenged: int) -> int:
        """The most a validator fetches from a trainer for one check of ``challenged`` segments: the delta, and the
        start and end state of each (end states only when a replay differs: under a declared hardware mismatch)."""
        return self.delta_bytes + 2 * challenged * self.state_bytes

    def content_deadline_s(self, base_s: float, challenged: int) -> float:
        """How long a validator retries an update's content after the first failure before voting it
        ``CONTENT_UNAVAILABLE``: the node's ``content_deadline_s`` (``base_s``) plus the time :meth:`check_bytes`
        take at :data:`MIN_RATE`, so that the deadline always exceeds one honest transfer of everything a check
        needs. The job's lease must leave room for it inside the contract's vote window (half a lease)."""
        return self.transfer_s(self.check_bytes(challenged), base_s)


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


def content_deadline_s(spec: JobSpec, base_s: float) -> float:
    """How long a validator retries an update's content of job ``spec`` after the first failure: the node's
    ``content_deadline_s`` (``base_s``) plus one honest transfer of everything a check may fetch, for the spec's
    ``spot_check_segments`` (0 = all: as many as the largest class's task has)."""
    limits = content_limits(spec)
    return limits.content_deadline_s(base_s, spec.spot_check_segments or limits.segments_per_task)
