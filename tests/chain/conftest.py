"""Fixtures: the same tests run on an in-process py-evm chain and on a real ``hardhat node`` process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from node.roles.chain_view import JOB_STATE_EVENTS, UPDATE_STATE_EVENTS
from protocols.chain.backends import HardhatNode, dev_accounts, hardhat_available, in_process_chain
from protocols.chain.client import JobManagerClient, TxResult, deploy
from protocols.chain.errors import ContractRevert
from protocols.chain.events import KEY_ARGS, keys_overlap

from .helpers import SETTINGS, Chain


@pytest.fixture(scope="session")
def hardhat_node() -> Iterator[HardhatNode]:
    if not hardhat_available():
        pytest.skip("contracts/node_modules is missing (run `npm ci` in contracts/): Hardhat backend not tested")
    with HardhatNode() as node:
        yield node


@pytest.fixture(params=["pyevm", pytest.param("hardhat", marks=pytest.mark.hardhat)])
def chain(request: pytest.FixtureRequest) -> Chain:
    if request.param == "pyevm":
        return Chain("pyevm", in_process_chain(), dev_accounts(20))
    node: HardhatNode = request.getfixturevalue("hardhat_node")
    return Chain("hardhat", node.web3(), dev_accounts(20))


@pytest.fixture
def manager(chain: Chain) -> JobManagerClient:
    """A fresh JobManager deployed by dev account 0 (each test gets its own contract, so state never leaks)."""
    return deploy(chain.w3, chain.accounts[0], SETTINGS)


def _chain_state(client: JobManagerClient) -> dict[tuple[int, ...], Any]:
    """Every job (``getJob``) and every update slot of each job's open and last committed round (``getUpdate``)."""
    state: dict[tuple[int, ...], Any] = {}
    for job_id in range(1, client.job_count() + 1):
        job = state[(job_id,)] = client.get_job(job_id)
        for r in {max(0, job.committed_rounds - 1), job.committed_rounds}:
            for slot in range(job.params.tasks_per_round):
                try:
                    state[(job_id, r, slot)] = client.get_update(job_id, r, slot)
                except ContractRevert:  # a round past the job's last
                    pass
    return state


@pytest.fixture(autouse=True)
def every_change_is_logged(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Around every transaction a test of a ``chain`` sends (on py-evm: the check reads the chain before and after
    each), a job whose ``getJob`` changed must have been changed by a transaction that logged a
    :data:`JOB_STATE_EVENTS` event for it, and an update whose ``getUpdate`` changed an :data:`UPDATE_STATE_EVENTS`
    one: what the roles' event-gated reads (:class:`~node.roles.chain_view.GatedRead`) rely on to be exact."""
    if "chain" not in request.fixturenames or request.getfixturevalue("chain").name != "pyevm":
        return
    send = JobManagerClient._send

    def checked(self: JobManagerClient, fn_name: str, args: list[Any], **kw: Any) -> TxResult:
        before = _chain_state(self)
        result = send(self, fn_name, args, **kw)
        after = _chain_state(self)
        for key in before.keys() & after.keys():
            if before[key] == after[key]:
                continue
            gate = JOB_STATE_EVENTS if len(key) == 1 else UPDATE_STATE_EVENTS
            target = (key[0], None, None) if len(key) == 1 else (key[0], key[1], key[2])
            # Keyed as the watch keys them, or more narrowly: (jobId, round, slot) wherever the event carries them.
            logged = {ev.name for ev in result.events
                      if keys_overlap(tuple(ev.args.get(a) for a in KEY_ARGS), target)}  # type: ignore[arg-type]
            assert logged & gate, (f"{fn_name} changed {'job' if len(key) == 1 else 'update'} {key} and logged only "
                                   f"{sorted(logged)} for it: a role's cached read would miss the change")
        return result

    monkeypatch.setattr(JobManagerClient, "_send", checked)
