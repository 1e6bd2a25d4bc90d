"""Reading JobManager's logs as typed events."""

from __future__ import annotations

from protocols.chain.client import JobManagerClient

from .helpers import LEADER_BOND, MIN_STAKE, PARAMS, Chain


def test_get_events_filters_by_name_and_job(chain: Chain, manager: JobManagerClient) -> None:
    customer = manager.with_account(chain.accounts[1])
    leader = manager.with_account(chain.accounts[2])
    leader.register_validator(MIN_STAKE)
    first, _ = customer.create_job(PARAMS)
    second, _ = customer.create_job(PARAMS)
    leader.stand_for_leader(second, LEADER_BOND)

    assert [e.name for e in manager.get_events(job_id=second)] == ["JobCreated", "CandidateStood", "LeaderElected"]
    created = manager.get_events(names=["JobCreated"])
    assert [e.job_id for e in created] == [first, second]
    elected = manager.get_events(names=["LeaderElected", "ValidatorRegistered"])
    assert [e.name for e in elected] == ["ValidatorRegistered", "LeaderElected"]
    assert manager.get_events(names=["LeaderElected"], job_id=first) == []
