"""The chain watch on a real (in-process) chain: an idle role's full scan waits for an event of the contract, an
empty block is no news, and a role that was skipping scans again at the tenth poll whatever happened."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from web3.types import RPCEndpoint

from node.chainio import AsyncChain
from node.roles.auditor import Auditor
from node.roles.chain_view import (
    AUDIT_EVENTS,
    ELECTION_EVENTS,
    JOB_COUNT_EVENTS,
    JOB_STATE_EVENTS,
    LEADERSHIP_EVENTS,
    ROUND_CHANGE_EVENTS,
    UPDATE_STATE_EVENTS,
    ChainView,
    ChainWatch,
    JobScanner,
    RoundReads,
    ScanGate,
)
from node.roles.decisions import MAX_SKIPPED_POLLS
from node.roles.validator import ValidatorRole
from protocols.chain.backends import dev_accounts, in_process_chain, mine_blocks
from protocols.chain.client import deploy
from protocols.chain.errors import ChainError
from protocols.chain.events import event_names
from protocols.chain.models import JobInfo, RoundInfo, Submission, UpdateInfo, UpdateStatus
from protocols.types import NodeClass
from tests.chain.helpers import (
    DRAW_DELAY,
    LEADER_BOND,
    MIN_STAKE,
    PARAMS,
    SETTINGS,
    Chain,
    cid_of,
    draw,
    one_update,
    submit,
)


async def _no_window(_job_id: int) -> int:
    return 0


async def test_an_idle_role_scans_again_only_when_the_contract_logs_an_event() -> None:
    w3, acc = in_process_chain(), dev_accounts(3)
    client = deploy(w3, acc[0], SETTINGS)
    view = ChainView(client=client, chain=AsyncChain(timeout_s=30.0), address=acc[0].address,
                     signing_window=_no_window)
    watch = ChainWatch(view, poll_s=0.0)  # no sharing window: every call searches the chain again
    gate = ScanGate(watch)

    first = await gate.due(busy=False)
    assert first is not None  # nothing read yet: a full scan
    gate.scanned(first)
    assert await gate.due(busy=False) is None  # nothing mined
    w3.provider.make_request(RPCEndpoint("evm_mine"), [])
    assert await gate.due(busy=False) is None  # an empty block is no news
    assert await gate.due(busy=True) is not None  # a pending update moves with every block: scan anyway

    client.with_account(acc[1]).register_validator(MIN_STAKE)  # ValidatorRegistered
    stamp = await gate.due(busy=False)
    assert stamp is not None and stamp != first
    gate.scanned(stamp)
    assert await gate.due(busy=False) is None  # the event is not news twice

    client.with_account(acc[2]).register_validator(MIN_STAKE)
    w3.provider.make_request(RPCEndpoint("evm_mine"), [])
    again = await gate.due(busy=False)
    assert again is not None and again != stamp  # an event a block before the head still counts
    gate.scanned(again)
    skipped = [await gate.due(busy=False) for _ in range(MAX_SKIPPED_POLLS)]
    assert skipped == [None] * MAX_SKIPPED_POLLS
    assert await gate.due(busy=False) == again  # the safety net: a full scan every tenth poll


async def test_roles_polling_together_share_one_search() -> None:
    w3, acc = in_process_chain(), dev_accounts(2)
    client = deploy(w3, acc[0], SETTINGS)
    view = ChainView(client=client, chain=AsyncChain(timeout_s=30.0), address=acc[0].address,
                     signing_window=_no_window)
    watch = ChainWatch(view, poll_s=60.0)
    assert await watch.refresh() == 0
    client.with_account(acc[1]).register_validator(MIN_STAKE)
    assert await watch.refresh() == 0  # within the same half poll: the search already made is the answer
    watch._refreshed_at -= 31.0  # half a poll later
    assert await watch.refresh() == 1


async def test_a_gate_for_some_events_ignores_the_others() -> None:
    """A trainer waiting for the next round reads the job only after an event that moves a round: the round's
    submissions, votes and registrations are not news to it."""
    w3, acc = in_process_chain(), dev_accounts(3)
    client = deploy(w3, acc[0], SETTINGS)
    view = ChainView(client=client, chain=AsyncChain(timeout_s=30.0), address=acc[0].address,
                     signing_window=_no_window)
    watch = ChainWatch(view, poll_s=0.0)
    rounds = ScanGate(watch, events=frozenset({"ValidatorRegistered"}))
    other = ScanGate(watch, events=frozenset({"RoundCommitted"}))
    for gate in (rounds, other):
        stamp = await gate.due(busy=False)
        assert stamp is not None
        gate.scanned(stamp)

    client.with_account(acc[1]).register_trainer(NodeClass.M, MIN_STAKE)  # TrainerRegistered: news to neither
    assert await rounds.due(busy=False) is None
    assert await other.due(busy=False) is None
    client.with_account(acc[2]).register_validator(MIN_STAKE)  # ValidatorRegistered: news to the first only
    assert await rounds.due(busy=False) is not None
    assert await other.due(busy=False) is None
    assert watch.seen.keys() == {"TrainerRegistered", "ValidatorRegistered"}


class CountingView(ChainView):
    """The real view, counting its ``jobCount`` reads."""

    job_count_reads: int = 0
    round_reads: int = 0
    job_reads: int = 0

    update_reads: int = 0
    submission_reads: int = 0
    history_reads: int = 0

    async def job(self, job_id: int) -> JobInfo:
        self.job_reads += 1
        return await super().job(job_id)

    async def update(self, job_id: int, r: int, slot: int) -> UpdateInfo:
        self.update_reads += 1
        return await super().update(job_id, r, slot)

    async def leader_history(self, job_id: int) -> set[str]:
        self.history_reads += 1
        return await super().leader_history(job_id)

    async def submissions(self, job_id: int, r: int) -> list[Submission]:
        self.submission_reads += 1
        return await super().submissions(job_id, r)

    async def job_count(self) -> int:
        self.job_count_reads += 1
        return await super().job_count()

    async def round_info(self, job_id: int, r: int) -> RoundInfo:
        self.round_reads += 1
        return await super().round_info(job_id, r)


async def test_the_job_count_is_read_again_only_after_a_job_is_created() -> None:
    w3, acc = in_process_chain(), dev_accounts(3)
    client = deploy(w3, acc[0], SETTINGS)
    view = CountingView(client=client, chain=AsyncChain(timeout_s=30.0), address=acc[0].address,
                        signing_window=_no_window)
    scanner = JobScanner(view, watch=ChainWatch(view, poll_s=0.0))
    unwatched = JobScanner(view)
    assert await scanner.job_ids() == [] and view.job_count_reads == 1
    client.with_account(acc[1]).register_validator(MIN_STAKE)  # an event, but not one that adds a job
    assert await scanner.job_ids() == [] and view.job_count_reads == 1
    first, _ = client.with_account(acc[2]).create_job(PARAMS)
    assert await scanner.job_ids() == [first] and view.job_count_reads == 2
    assert await scanner.job_ids() == [first] and view.job_count_reads == 2
    second, _ = client.with_account(acc[2]).create_job(PARAMS)
    scanner.finished.add(first)
    assert await scanner.job_ids() == [second] and view.job_count_reads == 3
    assert await unwatched.job_ids() == [first, second] and view.job_count_reads == 4  # no watch: every call
    for _ in range(MAX_SKIPPED_POLLS):
        assert await scanner.job_ids() == [second]
    assert view.job_count_reads == 4
    assert await scanner.job_ids() == [second] and view.job_count_reads == 5  # the gate's tenth-call safety net


async def test_a_scanned_job_is_read_again_only_after_one_of_its_state_events() -> None:
    """A busy validator scans every poll; the job it scans is read again only once a :data:`JOB_STATE_EVENTS` event
    was logged (every change of ``getJob`` logs one: tests/chain/conftest.py), and then shows the change."""
    w3, acc = in_process_chain(), dev_accounts(8)
    manager = deploy(w3, acc[0], SETTINGS)
    setup = one_update(Chain("py-evm", w3, list(acc)), manager, (4, 5, 6, 7))
    view = CountingView(client=manager, chain=AsyncChain(timeout_s=30.0), address=acc[0].address,
                        signing_window=_no_window)
    scanner = JobScanner(view, watch=ChainWatch(view, poll_s=0.0))
    [job] = await scanner.scan()
    assert view.job_reads == 1 and job.committed_rounds == 0
    mine_blocks(w3, DRAW_DELAY + 1)
    panel = draw(manager, setup.job_id, 0, 0)  # ValidatorsDrawn: the update's news, not the job's
    assert await scanner.scan() == [job] and view.job_reads == 1
    for address in panel:
        setup.validators[address].validate_update(setup.job_id, 0, 0, True)  # fees paid: FeePaid, spent moved
    [paid] = await scanner.scan()
    assert view.job_reads == 2 and paid.spent > job.spent
    setup.leader.commit_round(setup.job_id, 0, cid_of(b"checkpoint 0"), 0b1)
    [committed] = await scanner.scan()
    assert view.job_reads == 3 and committed.committed_rounds == 1
    for _ in range(MAX_SKIPPED_POLLS):
        await scanner.scan()
    assert view.job_reads == 3
    await scanner.scan()
    assert view.job_reads == 4  # the gate's tenth-call safety net


async def test_a_rounds_submissions_and_updates_are_read_again_only_after_their_events() -> None:
    """What a validator and a leader read every poll while verdicts are pending: the submissions again only after
    ``UpdateSubmitted``, an update only after one of its :data:`UPDATE_STATE_EVENTS` (or when asked ``fresh``)."""
    w3, acc = in_process_chain(), dev_accounts(8)
    manager = deploy(w3, acc[0], SETTINGS)
    setup = one_update(Chain("py-evm", w3, list(acc)), manager, (4, 5, 6, 7))
    view = CountingView(client=manager, chain=AsyncChain(timeout_s=30.0), address=acc[0].address,
                        signing_window=_no_window)
    reads = RoundReads(view, ChainWatch(view, poll_s=0.0), setup.job_id, 0)
    assert not reads.known(0) and reads.last(0) is None
    [sub] = await reads.submissions()
    pending = await reads.update(sub.slot)
    assert reads.known(0) and reads.last(0) == pending and pending.status == UpdateStatus.PENDING
    mine_blocks(w3, DRAW_DELAY + 1)
    manager.register_trainer(NodeClass.M, MIN_STAKE)  # an event, neither a submission's nor an update's
    assert await reads.submissions() == [sub] and await reads.update(0) == pending
    assert (view.submission_reads, view.update_reads) == (1, 1)
    assert await reads.update(0, fresh=True) == pending and view.update_reads == 2
    panel = draw(manager, setup.job_id, 0, 0)
    assert (await reads.update(0)).validators == panel and view.update_reads == 3
    for address in panel:
        setup.validators[address].validate_update(setup.job_id, 0, 0, True)
    assert (await reads.update(0)).status == UpdateStatus.ACCEPTED and view.update_reads == 4
    assert view.submission_reads == 1
    submit(manager, setup.leader.account, setup.leader, setup.job_id, 0, 1, 5)  # the leader is a trainer too
    assert [s.slot for s in await reads.submissions()] == [0, 1] and view.submission_reads == 2


async def test_a_validator_reads_the_leader_history_again_after_an_election_or_for_a_signer_it_lacks() -> None:
    """The leaders a ticket may be signed by: read once, again after ``LeaderElected``, and at once for a signer
    not in the history as last read (an election the watch has not seen yet must not reject its first tickets)."""
    w3, acc = in_process_chain(), dev_accounts(8)
    manager = deploy(w3, acc[0], SETTINGS)
    setup = one_update(Chain("py-evm", w3, list(acc)), manager, (4, 5, 6, 7))
    view = CountingView(client=manager, chain=AsyncChain(timeout_s=30.0), address=acc[0].address,
                        signing_window=_no_window)
    validator = ValidatorRole(SimpleNamespace(jobs=view, watch=ChainWatch(view, poll_s=0.0)))  # type: ignore[arg-type]
    leader = setup.leader.sender.lower()
    assert await validator._leader_history(setup.job_id, leader) == {leader} and view.history_reads == 1
    manager.register_trainer(NodeClass.M, MIN_STAKE)  # an event, not an election
    assert await validator._leader_history(setup.job_id, leader) == {leader} and view.history_reads == 1
    stranger = acc[6].address
    assert await validator._leader_history(setup.job_id, stranger) == {leader} and view.history_reads == 2


async def test_an_update_is_read_again_only_after_an_event_for_its_own_slot() -> None:
    """The watch keys each log by its indexed (jobId, round, slot): another slot's draw, or another job's events, do
    not make an update's gate due; an event that does not index the slot (the round's commit) does."""
    w3, acc = in_process_chain(), dev_accounts(10)
    manager = deploy(w3, acc[0], SETTINGS)
    setup = one_update(Chain("py-evm", w3, list(acc)), manager, (4, 5, 6, 7))
    submit(manager, setup.leader.account, setup.leader, setup.job_id, 0, 1, 5)  # slot 1: the leader trains too
    view = CountingView(client=manager, chain=AsyncChain(timeout_s=30.0), address=acc[0].address,
                        signing_window=_no_window)
    reads = RoundReads(view, ChainWatch(view, poll_s=0.0), setup.job_id, 0)
    first, second = await reads.update(0), await reads.update(1)
    assert view.update_reads == 2
    panel = draw(manager, setup.job_id, 0, 1)  # ValidatorsDrawn for slot 1 only
    assert await reads.update(0) == first and view.update_reads == 2
    assert (await reads.update(1)).validators == panel and view.update_reads == 3
    other, _ = setup.customer.create_job(PARAMS)
    candidate = manager.with_account(acc[8])
    candidate.register_trainer(NodeClass.L, MIN_STAKE)
    candidate.stand_for_leader(other, LEADER_BOND)  # LeaderElected, CandidateStood: job 2's
    assert await reads.update(0) == first and view.update_reads == 3
    assert second.status == UpdateStatus.PENDING
    for address in draw(manager, setup.job_id, 0, 0):
        setup.validators[address].validate_update(setup.job_id, 0, 0, True)
    assert (await reads.update(0)).status == UpdateStatus.ACCEPTED and view.update_reads == 4


async def test_a_committed_checkpoint_is_read_once() -> None:
    """Round r starts from round r-1's committed checkpoint, which never changes: one ``getRound`` for it."""
    w3, acc = in_process_chain(), dev_accounts(8)
    manager = deploy(w3, acc[0], SETTINGS)
    setup = one_update(Chain("py-evm", w3, list(acc)), manager, (4, 5, 6, 7))
    view = CountingView(client=manager, chain=AsyncChain(timeout_s=30.0), address=acc[0].address,
                        signing_window=_no_window)
    spec = SimpleNamespace(initial_checkpoint_cid="bafy-initial")
    assert await view.base_checkpoint(spec, setup.job_id, 0) == "bafy-initial"  # type: ignore[arg-type]
    with pytest.raises(ChainError, match="no committed checkpoint"):
        await view.base_checkpoint(spec, setup.job_id, 1)  # type: ignore[arg-type]
    for address in draw(manager, setup.job_id, 0, 0):
        setup.validators[address].validate_update(setup.job_id, 0, 0, True)
    committed = cid_of(b"checkpoint 0")
    setup.leader.commit_round(setup.job_id, 0, committed, 0b1)
    reads = view.round_reads
    assert await view.base_checkpoint(spec, setup.job_id, 1) == str(committed)  # type: ignore[arg-type]
    assert await view.base_checkpoint(spec, setup.job_id, 1) == str(committed)  # type: ignore[arg-type]
    assert view.round_reads == reads + 1


def test_every_gate_names_events_the_contract_emits() -> None:
    """A misspelt name would make a gate wait for an event that never comes (until its tenth-poll safety net)."""
    for events in (JOB_COUNT_EVENTS, LEADERSHIP_EVENTS, ROUND_CHANGE_EVENTS, AUDIT_EVENTS, JOB_STATE_EVENTS,
                   UPDATE_STATE_EVENTS, ELECTION_EVENTS):
        assert events <= event_names(), events - event_names()


async def test_an_auditor_reads_an_open_audit_again_only_after_an_audit_event() -> None:
    """An auditor waiting on another panel's reports reads the round again only once an audit event was logged (or
    at the gate's tenth call); the panel drawn, a report and the outcome each show at the next read."""
    w3, acc = in_process_chain(), dev_accounts(8)
    manager = deploy(w3, acc[0], SETTINGS)
    setup = one_update(Chain("py-evm", w3, list(acc)), manager, (4, 5, 6, 7))
    for address in draw(manager, setup.job_id, 0, 0):
        setup.validators[address].validate_update(setup.job_id, 0, 0, True)
    setup.leader.commit_round(setup.job_id, 0, cid_of(b"checkpoint 0"), 0b1)
    view = CountingView(client=manager, chain=AsyncChain(timeout_s=30.0), address=acc[0].address,
                        signing_window=_no_window)
    auditor = Auditor(SimpleNamespace(jobs=view, watch=ChainWatch(view, poll_s=0.0)))  # type: ignore[arg-type]
    job_id = setup.job_id

    assert (await auditor._round(job_id, 0)).auditors == () and view.round_reads == 1
    mine_blocks(w3, DRAW_DELAY + 1)  # blocks, no event: the draw becoming ready is the head's news, not the round's
    manager.register_trainer(NodeClass.M, MIN_STAKE)  # an event, not an audit's (a new validator would move the draw)
    assert (await auditor._round(job_id, 0)).auditors == () and view.round_reads == 1
    auditors = next(iter(setup.validators.values())).draw_auditors(job_id, 0).event("AuditorsDrawn").args["auditors"]
    info = await auditor._round(job_id, 0)
    assert info.auditors == tuple(auditors) and view.round_reads == 2
    assert await auditor._round(job_id, 0) == info and view.round_reads == 2
    reporter = setup.validators[auditors[0]]
    reporter.audit_round(job_id, 0, True)
    assert (await auditor._round(job_id, 0)).has_audited(reporter.sender) and view.round_reads == 3
    assert await auditor._round(job_id, 0, fresh=True) == await auditor._round(job_id, 0)
    assert view.round_reads == 4
    for _ in range(MAX_SKIPPED_POLLS - 1):
        await auditor._round(job_id, 0)
    assert view.round_reads == 4
    await auditor._round(job_id, 0)
    assert view.round_reads == 5  # the gate's tenth-call safety net
