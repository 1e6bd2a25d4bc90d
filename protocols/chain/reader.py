"""``JobManagerReader``: the plumbing every JobManager call shares, and one typed method per view function.

:class:`~protocols.chain.client.JobManagerClient` (the sends) builds on it. Views return frozen dataclasses
(:mod:`protocols.chain.models`); CIDs cross this boundary as strings. Blocking (web3.py's sync ``Web3``).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Literal

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.types import FilterParams, TxParams

from protocols.chain.abi import load_artifact
from protocols.chain.events import ChainEvent, EventDecoder, LogKey, event_topic, indexes_round, log_key
from protocols.chain.models import (
    Candidate,
    ContractSettings,
    Eip712Domain,
    JobInfo,
    JobParams,
    NodeClass,
    RoundCommit,
    RoundInfo,
    Submission,
    Totals,
    TrainerInfo,
    UpdateInfo,
    ValidatorInfo,
    address,
    optional_address,
    to_named,
)
from protocols.chain.ticket import ChainTicket, ChainVote, TicketDomain
from protocols.chain.tx import ClientConfig, Transactor
from protocols.chain.views import ViewCodec
from protocols.types import Address, Cid, JobId

LOG_CHUNK_BLOCKS = 5_000
"""Most blocks one ``eth_getLogs`` asks for (public endpoints refuse longer ranges: Infura 10,000, others less)."""


class JobManagerReader:
    """Typed reads of one JobManager deployment, made as ``account``."""

    def __init__(
        self,
        w3: Web3,
        contract_address: str,
        account: LocalAccount,
        *,
        config: ClientConfig | None = None,
        deploy_block: int | None = None,
    ) -> None:
        self.w3 = w3
        self.deploy_block = deploy_block
        """Block of the deployment when known (where :meth:`get_events` starts reading)."""
        self.address = Address(to_checksum_address(contract_address))
        self.account = account
        self.config = config or ClientConfig()
        self._tx = Transactor(w3, account, self.config)
        self._contract = w3.eth.contract(address=to_checksum_address(self.address), abi=load_artifact().abi_list())
        self._decoder = EventDecoder(w3, self.address)
        self._functions = {str(e["name"]): e for e in load_artifact().entries("function")}
        self._views: dict[str, ViewCodec] = {}

    @property
    def sender(self) -> Address:
        """The address this client sends from."""
        return Address(self.account.address)

    # ------------------------------------------------------------------ plumbing

    def _call(self, fn_name: str, *args: Any) -> Any:
        """One view call, encoded and decoded here (:class:`~protocols.chain.views.ViewCodec`) around a plain
        ``eth_call``: web3's contract-function path costs ~8 ms of CPU a call against ~2 ms (measured on Hardhat,
        2026-12), and the roles make several view calls a poll. Same values, same reverts (``tests/chain``)."""
        codec = self._views.get(fn_name)
        if codec is None:
            codec = self._views[fn_name] = ViewCodec.of(self._functions[fn_name])
        tx: TxParams = {"from": self.account.address, "to": self.address, "data": codec.encode(args)}
        return self._tx.rpc(lambda: codec.decode(bytes(self.w3.eth.call(tx))), fn_name)

    def _struct(self, fn_name: str, *args: Any) -> Any:
        """A view returning one struct, as a dict keyed by the ABI's field names."""
        return to_named(self._functions[fn_name]["outputs"][0], self._call(fn_name, *args))

    def _int(self, fn_name: str, *args: Any) -> int:
        return int(self._call(fn_name, *args))

    def block_number(self) -> int:
        """The latest block's number."""
        return int(self._tx.rpc(lambda: self.w3.eth.block_number, "eth_blockNumber"))

    def chain_id(self) -> int:
        return self._tx.chain_id

    def ticket_domain(self) -> TicketDomain:
        """Where this deployment's tickets are valid (chain id and contract address)."""
        return TicketDomain(chain_id=self.chain_id(), contract=self.address)

    # ------------------------------------------------------------------ events

    def get_events(
        self,
        *,
        names: Collection[str] | None = None,
        job_id: int | None = None,
        round: int | None = None,
        from_block: int | None = None,
        to_block: int | Literal["latest"] = "latest",
        chunk_blocks: int = LOG_CHUNK_BLOCKS,
    ) -> list[ChainEvent]:
        """This deployment's events in chain order, filtered on the node by event name, (indexed) job id and round.

        ``round`` needs ``names``, each an event whose indexed arguments start with ``jobId, round``
        (:func:`~protocols.chain.events.indexes_round`): the node then returns only that round's logs, so reading one
        round costs the same in round 1 and in round 1,000 (decoding every round's logs to keep one was what a
        polling role spent most of its chain time on).

        ``from_block`` defaults to the deployment block when known, else 0; ``to_block`` ``"latest"`` is read as
        the latest block's number first. One ``eth_getLogs`` call per ``chunk_blocks`` blocks of the range: public RPC
        endpoints refuse long ranges (a few thousand blocks), and a chain's history only grows.
        """
        if chunk_blocks < 1:
            raise ValueError(f"chunk_blocks must be at least 1, got {chunk_blocks}")
        if round is not None and (job_id is None or not names or not all(indexes_round(n) for n in names)):
            raise ValueError("get_events(round=...) needs job_id and names of events indexed by (jobId, round), got "
                             f"{sorted(names or [])}")
        topics: list[Any] = [
            [event_topic(n) for n in names] if names else None,
            "0x" + job_id.to_bytes(32, "big").hex() if job_id is not None else None,
            "0x" + round.to_bytes(32, "big").hex() if round is not None else None,
        ]
        while topics and topics[-1] is None:
            topics.pop()
        first = from_block if from_block is not None else (self.deploy_block or 0)
        last = to_block if isinstance(to_block, int) else self.block_number()
        events: list[ChainEvent] = []
        for start in range(first, last + 1, chunk_blocks):
            params: FilterParams = {
                "address": to_checksum_address(self.address),
                "fromBlock": start,
                "toBlock": min(start + chunk_blocks - 1, last),
                "topics": topics,
            }
            logs = self._tx.rpc(lambda: self.w3.eth.get_logs(params), "eth_getLogs")  # noqa: B023 (called at once)
            events += self._decoder.decode_all(logs)
        # jobId is topic1 of every job event; other events put an address there, so check the decoded argument too.
        return [ev for ev in events if job_id is None or ev.job_id == job_id]

    def logged_events(self, first_block: int) -> list[tuple[int, str, LogKey]]:
        """(block, event name, (jobId, round, slot)) of each event this deployment emitted from ``first_block`` to
        the latest block, read from its topics alone (nothing else decoded; "" for a topic the ABI does not know;
        :func:`~protocols.chain.events.log_key`). One ``eth_getLogs``: the caller keeps the range short, as the
        node's chain watch does."""
        params: FilterParams = {"address": to_checksum_address(self.address), "fromBlock": first_block,
                                "toBlock": "latest"}
        logs = self._tx.rpc(lambda: self.w3.eth.get_logs(params), "eth_getLogs")
        return [(int(log["blockNumber"]), *log_key(log["topics"])) for log in logs]

    def submissions(self, job_id: int, round: int | None = None) -> list[Submission]:
        """The job's ``UpdateSubmitted`` events (of one round when given), in chain order: the updates' CIDs."""
        out = []
        for ev in self.get_events(names=["UpdateSubmitted"], job_id=job_id, round=round):
            a = ev.args
            out.append(Submission(round=int(a["round"]), slot=int(a["slot"]), trainer=address(a["trainer"]),
                                  work_units=int(a["workUnits"]), loss_reduction=int(a["lossReduction"]),
                                  update_cid=Cid(str(a["updateCid"])), ticket_hash=bytes(a["ticketHash"])))
        return out

    def round_commits(self, job_id: int) -> list[RoundCommit]:
        """Every committed round of the job, in chain order (its ``RoundCommitted`` events)."""
        return [RoundCommit(int(ev.args["round"]), str(ev.args["leader"]).lower(), str(ev.args["checkpointCid"]),
                            int(ev.args["acceptedMask"]))
                for ev in self.get_events(names=["RoundCommitted"], job_id=job_id)]

    # ------------------------------------------------------------------ views: jobs, rounds, updates

    def job_count(self) -> int:
        return self._int("jobCount")

    def get_job(self, job_id: int) -> JobInfo:
        return JobInfo.from_fields(job_id, self._struct("getJob", job_id))

    def current_round(self, job_id: int) -> int:
        """The round trainers work on now (= committed rounds)."""
        return self.get_job(job_id).committed_rounds

    def get_round(self, job_id: int, round: int) -> RoundInfo:
        return RoundInfo.from_fields(self._struct("getRound", job_id, round))

    def get_update(self, job_id: int, round: int, slot: int) -> UpdateInfo:
        return UpdateInfo.from_fields(self._struct("getUpdate", job_id, round, slot))

    def get_candidates(self, job_id: int) -> tuple[Candidate, ...]:
        accounts, bonds = self._call("getCandidates", job_id)
        return tuple(Candidate(address(a), int(b)) for a, b in zip(accounts, bonds, strict=True))

    def successor(self, job_id: int) -> Address | None:
        """Who may claim during the grace window (None until the successor draw's block is mined)."""
        return optional_address(self._call("successor", job_id))

    def required_deposit(self, params: JobParams) -> int:
        """``requiredDeposit(p)`` as the contract computes it."""
        return self._int("requiredDeposit", params.to_abi())

    def update_bond(self, job_id: int) -> int:
        """Stake a trainer locks per pending update of the job."""
        return self._int("updateBond", job_id)

    def ticket_digest(self, ticket: ChainTicket) -> bytes:
        """The EIP-712 digest the contract computes for ``ticket`` (what the leader signs)."""
        return bytes(self._call("ticketDigest", ticket.to_abi()))

    def vote_digest(self, vote: ChainVote) -> bytes:
        """The EIP-712 digest the contract computes for ``vote`` (what a first-panel member signs)."""
        return bytes(self._call("voteDigest", vote.to_abi()))

    def vote_panel(self, job_id: int, round: int, slot: int) -> tuple[tuple[Address, ...], int]:
        """``votePanel``: the first panel the fast path would draw now (draw order) and the anchor block its votes
        must name. The panel is empty when the fast path is closed (drawn on-chain, settled) or the draw must
        re-anchor (pool changed, hash gone); reverts ``JobManagerDrawNotReady`` before the seed block."""
        panel, anchor = self._call("votePanel", job_id, round, slot)
        return tuple(address(a) for a in panel), int(anchor)

    def challenge_seed(self, job_id: int, round: int, slot: int) -> bytes:
        """The seed validators choose the replayed segments from (the first panel's, drawn on-chain or recomputed;
        reverts ``DrawNotReady`` before the seed block or while the draw must re-anchor)."""
        return bytes(self._call("challengeSeed", job_id, round, slot))

    def eip712_domain(self) -> Eip712Domain:
        _fields, name, version, chain_id, contract, _salt, _ext = self._call("eip712Domain")
        return Eip712Domain(str(name), str(version), int(chain_id), address(contract))

    # ------------------------------------------------------------------ views: accounts

    def balance_of(self, account: str) -> int:
        """Withdrawable balance credited to ``account`` (wei)."""
        return self._int("balanceOf", to_checksum_address(account))

    def trainers(self, account: str) -> TrainerInfo:
        registered, node_class, pending, stake, locked = self._call("trainers", to_checksum_address(account))
        return TrainerInfo(bool(registered), NodeClass(node_class), int(pending), int(stake), int(locked))

    def validators(self, account: str) -> ValidatorInfo:
        registered, open_votes, stake = self._call("validators", to_checksum_address(account))
        return ValidatorInfo(bool(registered), int(open_votes), int(stake))

    def exit_available_at(self, account: str) -> int:
        """When ``account`` may complete its deregistration (0: not requested)."""
        return self._int("exitAvailableAt", to_checksum_address(account))

    def validator_count(self) -> int:
        return self._int("validatorCount")

    def get_validators(self) -> tuple[Address, ...]:
        return tuple(address(a) for a in self._call("getValidators"))

    def pool_weight(self) -> int:
        return self._int("poolWeight")

    def pool_weight_of(self, validator: str) -> int:
        return self._int("poolWeightOf", to_checksum_address(validator))

    # ------------------------------------------------------------------ views: money

    def total_deposits(self) -> int:
        return self._int("totalDeposits")

    def total_stakes(self) -> int:
        return self._int("totalStakes")

    def total_paid(self) -> int:
        return self._int("totalPaid")

    def total_refunded(self) -> int:
        return self._int("totalRefunded")

    def total_slashed(self) -> int:
        return self._int("totalSlashed")

    def total_withdrawn(self) -> int:
        return self._int("totalWithdrawn")

    def escrow_held(self) -> int:
        return self._int("escrowHeld")

    def stake_held(self) -> int:
        return self._int("stakeHeld")

    def total_held(self) -> int:
        return self._int("totalHeld")

    def accounting(self) -> Totals:
        """All money counters from one call, so they are consistent with each other."""
        return Totals(*(int(v) for v in self._call("accounting")))

    def totals(self) -> Totals:
        """Alias of :meth:`accounting` (the ledger checks' name for it)."""
        return self.accounting()

    # ------------------------------------------------------------------ views: settings

    def min_trainer_stake(self) -> int:
        return self._int("minTrainerStake")

    def min_validator_stake(self) -> int:
        return self._int("minValidatorStake")

    def min_update_bond(self) -> int:
        return self._int("minUpdateBond")

    def validator_slash(self) -> int:
        return self._int("validatorSlash")

    def min_leader_bond(self) -> int:
        return self._int("minLeaderBond")

    def deregistration_delay(self) -> int:
        return self._int("deregistrationDelay")

    def min_quorum(self) -> int:
        return self._int("minQuorum")

    def extension(self) -> Address:
        return address(self._call("extension"))

    def draw_delay(self) -> int:
        return self._int("DRAW_DELAY")

    def slash_multiple(self) -> int:
        return self._int("SLASH_MULTIPLE")

    def escalation_panel(self) -> int:
        return self._int("ESCALATION_PANEL")

    def audit_panel(self) -> int:
        """Size of a round's first audit panel (capped by the pool)."""
        return self._int("AUDIT_PANEL")

    def lapse_forfeit_bps(self) -> int:
        return self._int("LAPSE_FORFEIT_BPS")

    def max_tasks_per_round(self) -> int:
        return self._int("MAX_TASKS_PER_ROUND")

    def max_quorum(self) -> int:
        return self._int("MAX_QUORUM")

    def max_work_units(self) -> int:
        """Upper bound on a job's ``maxWorkUnits`` (an update's work units are stored in 16 bits)."""
        return self._int("MAX_WORK_UNITS")

    def max_loss_reduction(self) -> int:
        """Upper bound on a claimed loss reduction (micro-units; :data:`~protocols.chain.models.MAX_LOSS_REDUCTION`)."""
        return self._int("MAX_LOSS_REDUCTION")

    def max_rounds(self) -> int:
        return self._int("MAX_ROUNDS")

    def max_candidates(self) -> int:
        return self._int("MAX_CANDIDATES")

    def max_validators(self) -> int:
        return self._int("MAX_VALIDATORS")

    def max_cid_length(self) -> int:
        return self._int("MAX_CID_LENGTH")

    def max_lease_seconds(self) -> int:
        return self._int("MAX_LEASE_SECONDS")

    def stall_leases(self) -> int:
        """Leases without progress after which the customer may cancel a job even with a leader."""
        return self._int("STALL_LEASES")

    def settings(self) -> ContractSettings:
        return ContractSettings(
            min_trainer_stake=self.min_trainer_stake(),
            min_validator_stake=self.min_validator_stake(),
            min_update_bond=self.min_update_bond(),
            validator_slash=self.validator_slash(),
            min_leader_bond=self.min_leader_bond(),
            deregistration_delay=self.deregistration_delay(),
            min_quorum=self.min_quorum(),
            draw_delay=self.draw_delay(),
            slash_multiple=self.slash_multiple(),
            escalation_panel=self.escalation_panel(),
            lapse_forfeit_bps=self.lapse_forfeit_bps(),
            max_tasks_per_round=self.max_tasks_per_round(),
            max_quorum=self.max_quorum(),
            max_work_units=self.max_work_units(),
            max_loss_reduction=self.max_loss_reduction(),
            max_rounds=self.max_rounds(),
            max_candidates=self.max_candidates(),
            max_validators=self.max_validators(),
            max_cid_length=self.max_cid_length(),
            max_lease_seconds=self.max_lease_seconds(),
            stall_leases=self.stall_leases(),
        )


__all__ = ["JobId", "JobManagerReader"]
