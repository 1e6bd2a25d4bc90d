"""Bounded retry around RPC calls: a dead or unreachable node becomes :class:`ChainUnavailable`, never a hang.

Each attempt is bounded by the provider's request timeout (see ``backends.connect_http``); this module bounds the
number of attempts and the backoff between them, so the worst-case wait is known from the configuration.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import requests
from web3.exceptions import ProviderConnectionError, RequestTimedOut

from protocols.chain.errors import ChainUnavailable

T = TypeVar("T")

# What "the node did not answer" looks like from requests/urllib3/web3; anything else is an answer (maybe an error).
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    ConnectionError,
    TimeoutError,
    ProviderConnectionError,
    RequestTimedOut,
)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try before declaring the chain unavailable.

    Worst case before :class:`ChainUnavailable`: ``attempts * request_timeout + sum of backoffs``.
    """

    attempts: int = 3
    backoff_s: float = 0.25
    backoff_multiplier: float = 2.0
    max_backoff_s: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be >= 1")
        if self.backoff_s < 0 or self.backoff_multiplier < 1:
            raise ValueError("RetryPolicy.backoff_s must be >= 0 and backoff_multiplier >= 1")

    def delays(self) -> list[float]:
        """Sleeps between attempts (one fewer than ``attempts``)."""
        out, delay = [], self.backoff_s
        for _ in range(self.attempts - 1):
            out.append(min(delay, self.max_backoff_s))
            delay *= self.backoff_multiplier
        return out


def call_with_retry(fn: Callable[[], T], policy: RetryPolicy, *, what: str) -> T:
    """Run ``fn``; on a transport error retry per ``policy``, then raise :class:`ChainUnavailable`.

    Errors the node answered with (reverts, invalid params) pass through untouched on the first attempt.
    Blocking: call from a worker thread in trio code.
    """
    delays = policy.delays()
    last: BaseException | None = None
    for attempt in range(policy.attempts):
        try:
            return fn()
        except TRANSPORT_ERRORS as exc:
            last = exc
        if attempt < len(delays):
            time.sleep(delays[attempt])  # backoff between attempts; bounded by the policy
    raise ChainUnavailable(
        f"chain RPC unreachable during {what} after {policy.attempts} attempts ({type(last).__name__}: {last}); "
        "check that the Ethereum node is running and the RPC URL is right"
    ) from last
