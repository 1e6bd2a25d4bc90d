"""EventPoller: confirmed events in order, exactly once across restarts, sync and as a trio service."""

from __future__ import annotations

from pathlib import Path

import trio

from protocols.chain.backends import mine_blocks
from protocols.chain.client import JobManagerClient
from protocols.chain.events import ChainEvent, EventPoller, PollerConfig, event_class
from protocols.chain.models import NodeClass

from .helpers import MIN_STAKE, PARAMS, Chain

DEADLINE_S = 60  # generous: other test suites load the machine


def _poller(chain: Chain, manager: JobManagerClient, cursor: Path, confirmations: int) -> EventPoller:
    assert manager.deploy_block is not None
    return EventPoller(
        chain.w3,
        manager.address,
        cursor_path=cursor,
        config=PollerConfig(confirmations=confirmations, start_block=manager.deploy_block, poll_interval_s=0.05),
    )


def test_poll_once_is_ordered_and_survives_restarts(chain: Chain, manager: JobManagerClient, tmp_path: Path) -> None:
    cursor = tmp_path / "cursor.json"
    nodes = [manager.with_account(chain.accounts[i]) for i in (4, 5, 6)]
    for node in nodes[:2]:
        node.register_validator(MIN_STAKE)

    first = _poller(chain, manager, cursor, confirmations=0)
    got = first.poll_once()
    assert [e.name for e in got] == ["ValidatorRegistered", "ValidatorRegistered"]
    assert [e.args["validator"] for e in got] == [nodes[0].sender, nodes[1].sender]
    assert all(isinstance(e, event_class("ValidatorRegistered")) for e in got)
    assert first.poll_once() == []

    # A restarted poller (same cursor file) sees only what happened since.
    nodes[2].register_trainer(NodeClass.S, MIN_STAKE)
    restarted = _poller(chain, manager, cursor, confirmations=0)
    again = restarted.poll_once()
    assert [(e.name, e.args["trainer"]) for e in again] == [("TrainerRegistered", nodes[2].sender)]
    assert again[0].position > got[-1].position


def test_confirmation_depth_holds_back_recent_blocks(chain: Chain, manager: JobManagerClient, tmp_path: Path) -> None:
    poller = _poller(chain, manager, tmp_path / "c.json", confirmations=2)
    poller.poll_once()  # past the deployment
    manager.with_account(chain.accounts[7]).register_validator(MIN_STAKE)
    assert poller.poll_once() == []
    mine_blocks(chain.w3, 2)
    assert [e.name for e in poller.poll_once()] == ["ValidatorRegistered"]


async def test_run_hands_out_events_as_a_trio_service(chain: Chain, manager: JobManagerClient, tmp_path: Path) -> None:
    cursor = tmp_path / "cursor.json"
    customer = manager.with_account(chain.accounts[1])
    leader = manager.with_account(chain.accounts[2])
    poller = _poller(chain, manager, cursor, confirmations=0)
    send, receive = trio.open_memory_channel[ChainEvent](0)
    seen: list[ChainEvent] = []
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(poller.run, send)
            job_id, _ = await trio.to_thread.run_sync(customer.create_job, PARAMS)
            await trio.to_thread.run_sync(leader.register_validator, MIN_STAKE)
            await trio.to_thread.run_sync(leader.stand_for_leader, job_id)
            async for ev in receive:
                seen.append(ev)
                if ev.name == "LeaderElected":
                    nursery.cancel_scope.cancel()
    names = [e.name for e in seen]
    assert names == ["JobCreated", "ValidatorRegistered", "CandidateStood", "LeaderElected"]
    assert seen[0].job_id == job_id and seen[0].args["specCid"] == PARAMS.spec_cid
    positions = [e.position for e in seen]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)

    # Everything handed out is recorded: a new poller on the same cursor starts after LeaderElected.
    more = _poller(chain, manager, cursor, confirmations=0).poll_once()
    assert all(e.position > seen[-1].position for e in more)
    assert "LeaderElected" not in [e.name for e in more]


def test_get_events_filters_by_name_and_job(chain: Chain, manager: JobManagerClient) -> None:
    customer = manager.with_account(chain.accounts[1])
    leader = manager.with_account(chain.accounts[2])
    leader.register_validator(MIN_STAKE)
    first, _ = customer.create_job(PARAMS)
    second, _ = customer.create_job(PARAMS)
    leader.stand_for_leader(second)

    assert [e.name for e in manager.get_events(job_id=second)] == ["JobCreated", "CandidateStood", "LeaderElected"]
    created = manager.get_events(names=["JobCreated"])
    assert [e.job_id for e in created] == [first, second]
    elected = manager.get_events(names=["LeaderElected", "ValidatorRegistered"])
    assert [e.name for e in elected] == ["ValidatorRegistered", "LeaderElected"]
    assert manager.get_events(names=["LeaderElected"], job_id=first) == []
