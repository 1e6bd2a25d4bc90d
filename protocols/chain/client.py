"""``JobManagerClient``: one typed Python method per JobManager function, the only code that sends to the chain.

Sends return a :class:`TxResult` with the receipt's decoded events; views return frozen dataclasses
(:mod:`protocols.chain.models`). CIDs cross this boundary as strings and are stored on-chain as raw CID bytes.

Blocking (web3.py's sync ``Web3``): from trio, call through ``trio.to_thread.run_sync``. A client may be shared by
several worker threads; nonces of one account are shared process-wide per endpoint (see ``tx.nonce_manager_for``).

Errors: :class:`ContractRevert` subclasses named after the contract's custom errors (``errors.revert_class``),
:class:`TransactionFailed`, :class:`ChainUnavailable`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.types import FilterParams, TxParams, TxReceipt, Wei

from protocols.chain.abi import load_artifact
from protocols.chain.cids import cid_from_bytes, cid_to_bytes
from protocols.chain.errors import TransactionFailed
from protocols.chain.events import ChainEvent, EventDecoder, event_topic
from protocols.chain.models import (
    ContractSettings,
    JobInfo,
    JobParams,
    NodeClass,
    RoundAudits,
    RoundCommit,
    Totals,
    TrainerInfo,
    UpdateInfo,
    ValidatorInfo,
    address,
    optional_address,
    to_named,
)
from protocols.chain.tx import ClientConfig, Transactor
from protocols.types import Address, Cid, JobId


@dataclass(frozen=True)
class TxResult:
    """A mined, successful transaction and the JobManager events it emitted, in log order."""

    tx_hash: str
    block_number: int
    gas_used: int
    fee_wei: int
    """What the sender paid for gas (gasUsed * effectiveGasPrice)."""
    events: tuple[ChainEvent, ...]

    def event(self, name: str) -> ChainEvent:
        """The first event called ``name`` (KeyError when the transaction emitted none)."""
        for ev in self.events:
            if ev.name == name:
                return ev
        raise KeyError(f"transaction {self.tx_hash} emitted no {name}; it emitted {[e.name for e in self.events]}")


class JobManagerClient:
    """Typed access to one JobManager deployment, sending as ``account`` (signed locally, never by the node)."""

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
        self._outputs = {str(e["name"]): e["outputs"] for e in load_artifact().entries("function")}

    @property
    def sender(self) -> Address:
        """The address this client sends from."""
        return Address(self.account.address)

    def with_account(self, account: LocalAccount) -> JobManagerClient:
        """A client for the same deployment sending as another account."""
        return JobManagerClient(self.w3, self.address, account, config=self.config, deploy_block=self.deploy_block)

    # ------------------------------------------------------------------ plumbing

    def _send(self, fn_name: str, args: list[Any], *, value: int = 0) -> TxResult:
        tx: TxParams = {
            "to": self.address,
            "data": self._contract.encode_abi(fn_name, args=args),
            "value": Wei(value),
        }
        receipt = self._tx.send(tx, fn_name)
        return self._result(receipt)

    def _result(self, receipt: TxReceipt) -> TxResult:
        return TxResult(
            tx_hash=receipt["transactionHash"].to_0x_hex(),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            fee_wei=int(receipt["gasUsed"]) * int(receipt.get("effectiveGasPrice", 0)),
            events=tuple(self._decoder.decode_all(receipt["logs"])),
        )

    def _call(self, fn_name: str, *args: Any) -> Any:
        fn = self._contract.functions[fn_name](*args)
        return self._tx.rpc(lambda: fn.call({"from": self.account.address}), fn_name)

    def _struct(self, fn_name: str, *args: Any) -> Any:
        """A view returning one struct, as a dict keyed by the ABI's field names."""
        return to_named(self._outputs[fn_name][0], self._call(fn_name, *args))

    # ------------------------------------------------------------------ roles and stake

    def register_trainer(self, node_class: NodeClass, stake_wei: int) -> TxResult:
        """``registerTrainer(nodeClass)`` staking ``stake_wei``."""
        return self._send("registerTrainer", [int(node_class)], value=stake_wei)

    def register_validator(self, stake_wei: int) -> TxResult:
        """``registerValidator()`` staking ``stake_wei``; enters the pool updates draw validators from."""
        return self._send("registerValidator", [], value=stake_wei)

    def request_deregistration(self) -> TxResult:
        """``requestDeregistration()``: leave every role; stake returns after ``deregistrationDelay``."""
        return self._send("requestDeregistration", [])

    def complete_deregistration(self) -> TxResult:
        """``completeDeregistration()``: credit the remaining stake to the withdrawable balance."""
        return self._send("completeDeregistration", [])

    # ------------------------------------------------------------------ jobs

    def create_job(self, params: JobParams, deposit_wei: int | None = None) -> tuple[JobId, TxResult]:
        """``createJob(p)`` with ``deposit_wei`` (default: exactly ``params.required_deposit()``)."""
        value = params.required_deposit() if deposit_wei is None else deposit_wei
        result = self._send("createJob", [params.to_abi()], value=value)
        try:
            job_id = int(result.event("JobCreated").args["jobId"])
        except KeyError as exc:
            raise TransactionFailed(f"createJob mined without a JobCreated event ({exc})") from exc
        return JobId(job_id), result

    def stand_for_leader(self, job_id: int) -> TxResult:
        """``standForLeader(jobId)``; the first candidate of a leaderless job becomes leader at once."""
        return self._send("standForLeader", [job_id])

    def claim_leadership(self, job_id: int) -> TxResult:
        """``claimLeadership(jobId)`` after the lease expired (successor first, then any candidate)."""
        return self._send("claimLeadership", [job_id])

    def submit_update(self, job_id: int, round: int, update_cid: str) -> TxResult:
        """``submitUpdate(jobId, round, cid)``; the ``UpdateSubmitted`` event names the drawn validators."""
        return self._send("submitUpdate", [job_id, round, cid_to_bytes(update_cid)])

    def validate_update(
        self, job_id: int, round: int, trainer: str, is_valid: bool, loss_reduction: int = 0
    ) -> TxResult:
        """``validateUpdate(...)`` by a drawn validator; ``loss_reduction`` = (before - after) * 1e6, >= 0."""
        if loss_reduction < 0:
            raise ValueError("validate_update: loss_reduction is clipped at 0 by protocol; pass max(0, value)")
        return self._send("validateUpdate", [job_id, round, to_checksum_address(trainer), is_valid, loss_reduction])

    def commit_round(self, job_id: int, round: int, checkpoint_cid: str) -> TxResult:
        """``commitRound(jobId, round, cid)`` by the leader; the last round's commit finishes the job."""
        return self._send("commitRound", [job_id, round, cid_to_bytes(checkpoint_cid)])

    def audit_round(self, job_id: int, round: int, ok: bool) -> TxResult:
        """``auditRound(jobId, round, ok)`` by a registered validator, once per committed round: whether it
        recomputed the committed checkpoint's CID. ``RoundDisputed`` comes with the audit that brings the round's
        failures to the quorum."""
        return self._send("auditRound", [job_id, round, ok])

    def payout(self, job_id: int, trainer: str) -> TxResult:
        """``payout(jobId, trainer)``: anyone may credit a trainer's pay for committed rounds."""
        return self._send("payout", [job_id, to_checksum_address(trainer)])

    def cancel_job(self, job_id: int) -> TxResult:
        """``cancelJob(jobId)`` by the customer of a job nobody serves."""
        return self._send("cancelJob", [job_id])

    def withdraw(self) -> TxResult:
        """``withdraw()``: send this account's whole balance to it."""
        return self._send("withdraw", [])

    # ------------------------------------------------------------------ events

    def get_events(
        self,
        *,
        names: Collection[str] | None = None,
        job_id: int | None = None,
        from_block: int | None = None,
        to_block: int | str = "latest",
    ) -> list[ChainEvent]:
        """This deployment's events in chain order, filtered on the node by event name and (indexed) job id.

        ``from_block`` defaults to the deployment block when known, else 0. One ``eth_getLogs`` call (public RPC
        endpoints may refuse a long range: narrow it with ``from_block``/``to_block``).
        """
        topics: list[Any] = [
            [event_topic(n) for n in names] if names else None,
            "0x" + job_id.to_bytes(32, "big").hex() if job_id is not None else None,
        ]
        while topics and topics[-1] is None:
            topics.pop()
        params: FilterParams = {
            "address": to_checksum_address(self.address),
            "fromBlock": from_block if from_block is not None else (self.deploy_block or 0),
            "toBlock": to_block,  # type: ignore[typeddict-item]
            "topics": topics,
        }
        logs = self._tx.rpc(lambda: self.w3.eth.get_logs(params), "eth_getLogs")
        events = self._decoder.decode_all(logs)
        # jobId is topic1 of every job event; other events put an address there, so check the decoded argument too.
        return [ev for ev in events if job_id is None or ev.job_id == job_id]

    # ------------------------------------------------------------------ views: jobs

    def get_job(self, job_id: int) -> JobInfo:
        return JobInfo.from_fields(job_id, self._struct("getJob", job_id))

    def current_round(self, job_id: int) -> int:
        """The round trainers work on now (= committed rounds)."""
        return self.get_job(job_id).committed_rounds

    def get_round_checkpoint(self, job_id: int, round: int) -> Cid:
        return cid_from_bytes(bytes(self._call("getRoundCheckpoint", job_id, round)))

    def round_commits(self, job_id: int) -> list[RoundCommit]:
        """Every committed round of the job, in chain order (its ``RoundCommitted`` events)."""
        return [RoundCommit(int(ev.args["round"]), str(ev.args["leader"]).lower(), str(ev.args["checkpointCid"]))
                for ev in self.get_events(names=["RoundCommitted"], job_id=job_id)]

    def get_round_audits(self, job_id: int, round: int) -> RoundAudits:
        """Audit verdicts recorded so far for a round (zero and zero for a round nobody audited)."""
        ok, failed = self._call("getRoundAudits", job_id, round)
        return RoundAudits(ok=int(ok), failed=int(failed))

    def has_audited(self, job_id: int, round: int, validator: str) -> bool:
        return bool(self._call("hasAudited", job_id, round, to_checksum_address(validator)))

    def get_candidates(self, job_id: int) -> tuple[Address, ...]:
        return tuple(address(a) for a in self._call("getCandidates", job_id))

    def is_candidate(self, job_id: int, account: str) -> bool:
        return bool(self._call("isCandidate", job_id, to_checksum_address(account)))

    def successor(self, job_id: int) -> Address | None:
        return optional_address(self._call("successor", job_id))

    def get_update(self, job_id: int, round: int, trainer: str) -> UpdateInfo:
        return UpdateInfo.from_fields(self._struct("getUpdate", job_id, round, to_checksum_address(trainer)))

    def has_voted(self, job_id: int, round: int, trainer: str, validator: str) -> bool:
        return bool(self._call("hasVoted", job_id, round, to_checksum_address(trainer), to_checksum_address(validator)))

    def get_round_updates(self, job_id: int, round: int) -> tuple[Address, ...]:
        return tuple(address(a) for a in self._call("getRoundUpdates", job_id, round))

    def accepted_count(self, job_id: int, round: int) -> int:
        return int(self._call("acceptedCount", job_id, round))

    def job_count(self) -> int:
        return int(self._call("jobCount"))

    def required_deposit(self, params: JobParams) -> int:
        """``requiredDeposit(p)`` as the contract computes it."""
        return int(self._call("requiredDeposit", params.to_abi()))

    # ------------------------------------------------------------------ views: accounts

    def balance_of(self, account: str) -> int:
        """Withdrawable balance credited to ``account`` (wei)."""
        return int(self._call("balanceOf", to_checksum_address(account)))

    def trainers(self, account: str) -> TrainerInfo:
        registered, node_class, stake = self._call("trainers", to_checksum_address(account))
        return TrainerInfo(bool(registered), NodeClass(node_class), int(stake))

    def validators(self, account: str) -> ValidatorInfo:
        registered, stake = self._call("validators", to_checksum_address(account))
        return ValidatorInfo(bool(registered), int(stake))

    def exit_available_at(self, account: str) -> int:
        """When ``account`` may complete its deregistration (0: not requested)."""
        return int(self._call("exitAvailableAt", to_checksum_address(account)))

    def pending_updates(self, trainer: str) -> int:
        return int(self._call("pendingUpdates", to_checksum_address(trainer)))

    def validator_count(self) -> int:
        return int(self._call("validatorCount"))

    def get_validators(self) -> tuple[Address, ...]:
        return tuple(address(a) for a in self._call("getValidators"))

    # ------------------------------------------------------------------ views: money

    def total_deposits(self) -> int:
        return int(self._call("totalDeposits"))

    def total_stakes(self) -> int:
        return int(self._call("totalStakes"))

    def total_paid(self) -> int:
        return int(self._call("totalPaid"))

    def total_refunded(self) -> int:
        return int(self._call("totalRefunded"))

    def total_slashed(self) -> int:
        return int(self._call("totalSlashed"))

    def total_withdrawn(self) -> int:
        return int(self._call("totalWithdrawn"))

    def escrow_held(self) -> int:
        return int(self._call("escrowHeld"))

    def stake_held(self) -> int:
        return int(self._call("stakeHeld"))

    def total_held(self) -> int:
        return int(self._call("totalHeld"))

    def totals(self) -> Totals:
        """All money counters, read at one block so they are consistent with each other."""
        block = self._tx.rpc(lambda: self.w3.eth.block_number, "eth_blockNumber")
        names = (
            "totalDeposits",
            "totalStakes",
            "totalPaid",
            "totalRefunded",
            "totalSlashed",
            "totalWithdrawn",
            "escrowHeld",
            "stakeHeld",
        )
        values = []
        for name in names:

            def read(name: str = name) -> Any:
                return self._contract.functions[name]().call({"from": self.account.address}, block)

            values.append(int(self._tx.rpc(read, name)))
        return Totals(*values)

    # ------------------------------------------------------------------ views: settings

    def min_trainer_stake(self) -> int:
        return int(self._call("minTrainerStake"))

    def min_validator_stake(self) -> int:
        return int(self._call("minValidatorStake"))

    def slash_amount(self) -> int:
        return int(self._call("slashAmount"))

    def deregistration_delay(self) -> int:
        return int(self._call("deregistrationDelay"))

    def max_tasks_per_round(self) -> int:
        return int(self._call("MAX_TASKS_PER_ROUND"))

    def max_quorum(self) -> int:
        return int(self._call("MAX_QUORUM"))

    def max_rounds(self) -> int:
        return int(self._call("MAX_ROUNDS"))

    def max_candidates(self) -> int:
        return int(self._call("MAX_CANDIDATES"))

    def max_cid_length(self) -> int:
        return int(self._call("MAX_CID_LENGTH"))

    def max_lease_seconds(self) -> int:
        return int(self._call("MAX_LEASE_SECONDS"))

    def stall_leases(self) -> int:
        """Leases without progress after which the customer may cancel a job even with a leader."""
        return int(self._call("STALL_LEASES"))

    def settings(self) -> ContractSettings:
        return ContractSettings(
            min_trainer_stake=self.min_trainer_stake(),
            min_validator_stake=self.min_validator_stake(),
            slash_amount=self.slash_amount(),
            deregistration_delay=self.deregistration_delay(),
            max_tasks_per_round=self.max_tasks_per_round(),
            max_quorum=self.max_quorum(),
            max_rounds=self.max_rounds(),
            max_candidates=self.max_candidates(),
            max_cid_length=self.max_cid_length(),
            max_lease_seconds=self.max_lease_seconds(),
            stall_leases=self.stall_leases(),
        )


def deploy(
    w3: Web3,
    account: LocalAccount,
    *,
    min_trainer_stake: int,
    min_validator_stake: int,
    slash_amount: int,
    deregistration_delay: int,
    config: ClientConfig | None = None,
) -> JobManagerClient:
    """Deploy JobManager from the shipped bytecode and return a client sending as ``account``."""
    cfg = config or ClientConfig()
    artifact = load_artifact()
    ctor: dict[str, Any] = next((e for e in artifact.abi if e.get("type") == "constructor"), {"inputs": []})
    types = [str(i["type"]) for i in ctor["inputs"]]
    args = [min_trainer_stake, min_validator_stake, slash_amount, deregistration_delay]
    if len(types) != len(args):
        raise TransactionFailed(f"JobManager's constructor takes {types}; the adapter is older than the ABI export")
    data = artifact.bytecode + abi_encode(types, args)
    receipt = Transactor(w3, account, cfg).send({"data": data, "value": Wei(0)}, "deploy JobManager")
    contract_address = receipt["contractAddress"]
    if contract_address is None:
        raise TransactionFailed("deploy JobManager: receipt has no contract address")
    return JobManagerClient(w3, contract_address, account, config=cfg, deploy_block=int(receipt["blockNumber"]))
