"""Reading JobManager's logs as typed events."""

from __future__ import annotations

import pytest

from protocols.chain.client import JobManagerClient

from .helpers import LEADER_BOND, MIN_STAKE, PARAMS, Chain, one_update


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


def test_a_rounds_submissions_come_from_its_own_logs(chain: Chain, manager: JobManagerClient) -> None:
    """``submissions(job, round)`` asks the node for that round's logs only (topics jobId and round)."""
    update = one_update(chain, manager, range(4, 7))
    subs = manager.submissions(update.job_id, 0)
    assert [(s.round, s.slot, s.trainer) for s in subs] == [(0, 0, update.trainer.sender)]
    assert manager.submissions(update.job_id, 1) == []
    assert manager.submissions(update.job_id + 1, 0) == []
    assert manager.submissions(update.job_id) == subs
    with pytest.raises(ValueError, match="indexed by"):
        manager.get_events(names=["JobCreated"], job_id=update.job_id, round=0)  # jobId is its only indexed topic
