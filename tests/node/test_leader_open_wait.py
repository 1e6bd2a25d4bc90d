"""A task request for the round about to open waits for it at the leader (a trainer hears a commit as it is mined,
before the leader has opened the next round), and only for that round and only for ``OPEN_WAIT_S``."""

from __future__ import annotations

from types import SimpleNamespace

import trio
import trio.testing

from node.roles.decisions import RoundState
from node.roles.leader import OPEN_WAIT_S, LeaderRole
from protocols.types import RejectCode
from protocols.wire import TaskRequest


def _leader() -> LeaderRole:
    ctx = SimpleNamespace(config=SimpleNamespace(task_timeout_s=60.0))
    return LeaderRole(ctx, 1)  # type: ignore[arg-type]


def _round(r: int) -> RoundState:
    return RoundState(round=r, base_cid="bafy", term=1, deadline=1e9, hard_deadline=1e9)


async def test_a_request_for_the_next_round_gets_it_as_it_opens(autojump_clock: trio.testing.MockClock) -> None:
    leader = _leader()
    leader._open(_round(3))
    got: list[RoundState | None] = []

    async def ask() -> None:
        got.append(await leader._round_for(4))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        await trio.sleep(0.5)
        assert got == []  # round 3 is still being committed
        leader.current = None
        await trio.sleep(0.5)
        leader._open(_round(4))
    assert [st.round if st else None for st in got] == [4]
    assert trio.current_time() < OPEN_WAIT_S


async def test_other_rounds_are_answered_at_once_and_a_round_that_never_opens_is_refused(
        autojump_clock: trio.testing.MockClock) -> None:
    leader = _leader()
    leader._open(_round(3))
    assert (await leader._round_for(3)) is leader.current  # the open round: no wait
    start = trio.current_time()
    assert (await leader._round_for(7)) is leader.current  # not the next one: no wait (refused as BAD_ROUND)
    assert trio.current_time() == start
    leader.current = None
    response = await leader.handle_task_request(TaskRequest(job_id=1, round=4, node_class="M"), "0x" + "11" * 20)
    assert response.reject == RejectCode.NOT_LEADER
    assert trio.current_time() - start == OPEN_WAIT_S  # waited the bound, then refused
