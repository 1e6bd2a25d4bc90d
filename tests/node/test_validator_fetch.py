"""The validator's concurrent fetches: results in order, the first failure raised as itself (the validator retries
unavailable content and votes on malformed content by the exception's type), and no sibling cut off mid-transfer."""

from __future__ import annotations

import pytest
import trio

from node.roles.validator import _first_error_unwrapped
from protocols.p2p.errors import P2PError
from storage.errors import StorageError


async def _after(seconds: float, value: object) -> object:
    await trio.sleep(seconds)
    return value


async def _fail(seconds: float, exc: Exception) -> None:
    await trio.sleep(seconds)
    raise exc


async def test_results_come_back_in_call_order_and_run_at_once() -> None:
    start = trio.current_time()
    got = await _first_error_unwrapped(_after(0.5, "base"), _after(0.1, "shard"), _after(0.5, 3))
    assert got == ["base", "shard", 3]
    assert trio.current_time() - start < 0.9  # one after another: 1.1 s


async def test_the_first_failure_is_raised_unwrapped_after_the_others_finished() -> None:
    finished: list[str] = []

    async def transfer() -> None:
        await trio.sleep(0.3)
        finished.append("state")

    with pytest.raises(P2PError, match="refused"):  # not an ExceptionGroup: `except P2PError` still catches it
        await _first_error_unwrapped(_fail(0.1, P2PError("refused")), transfer(), _fail(0.2, StorageError("gone")))
    assert finished == ["state"]  # not cancelled mid-way: its partial file is removed by the transfer itself
