"""``JobManagerClient``: one typed Python method per JobManager function, the only code that sends to the chain.

Sends return a :class:`TxResult` with the receipt's decoded events; the views (inherited from
:class:`~protocols.chain.reader.JobManagerReader`) return frozen dataclasses (:mod:`protocols.chain.models`). CIDs
cross this boundary as strings and are stored on-chain as raw CID bytes.

Blocking (web3.py's sync ``Web3``): from trio, call through ``trio.to_thread.run_sync``. A client may be shared by
several worker threads; nonces of one account are shared process-wide per endpoint (see ``tx.nonce_manager_for``).

Errors: :class:`ContractRevert` subclasses named after the contract's custom errors (``errors.revert_class``:
``JobManagerWrongAcceptedSet``, ...), :class:`TransactionFailed`, :class:`ChainUnavailable`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.types import TxParams, TxReceipt, Wei

from protocols.chain.abi import load_artifact
from protocols.chain.cids import cid_to_bytes
from protocols.chain.errors import TransactionFailed
from protocols.chain.events import ChainEvent
from protocols.chain.models import MAX_LOSS_REDUCTION, JobParams, NodeClass
from protocols.chain.reader import JobManagerReader
from protocols.chain.ticket import ChainTicket, VoteSet
from protocols.chain.tx import ClientConfig, Transactor
from protocols.types import JobId


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

    def emitted(self, name: str) -> bool:
        return any(ev.name == name for ev in self.events)


SETTLE_GAS = 3_000_000
"""Gas floor of a vote: enough to settle an escalation panel of ESCALATION_PANEL (63) validators (unused gas is not
charged; the sender's balance must cover the limit at the fee cap)."""


class JobManagerClient(JobManagerReader):
    """Typed access to one JobManager deployment, sending as ``account`` (signed locally, never by the node)."""

    def with_account(self, account: LocalAccount) -> JobManagerClient:
        """A client for the same deployment sending as another account."""
        return JobManagerClient(self.w3, self.address, account, config=self.config, deploy_block=self.deploy_block)

    def _send(self, fn_name: str, args: list[Any], *, value: int = 0, min_gas: int = 0) -> TxResult:
        tx: TxParams = {
            "to": self.address,
            "data": self._contract.encode_abi(fn_name, args=args),
            "value": Wei(value),
        }
        return _result(self._decoder.decode_all, self._tx.send(tx, fn_name, min_gas=min_gas))

    # ------------------------------------------------------------------ roles and stake

    def register_trainer(self, node_class: NodeClass, stake_wei: int) -> TxResult:
        """``registerTrainer(nodeClass)`` staking ``stake_wei`` (>= ``minTrainerStake``)."""
        return self._send("registerTrainer", [int(node_class)], value=stake_wei)

    def add_trainer_stake(self, amount_wei: int) -> TxResult:
        """``addTrainerStake()``: top up the trainer stake (free stake must cover ``updateBond`` per update)."""
        return self._send("addTrainerStake", [], value=amount_wei)

    def register_validator(self, stake_wei: int) -> TxResult:
        """``registerValidator()`` staking ``stake_wei``; enters the draw pool with weight ``stake_wei``."""
        return self._send("registerValidator", [], value=stake_wei)

    def request_deregistration(self) -> TxResult:
        """``requestDeregistration()``: leave every role; stake returns after ``deregistrationDelay``."""
        return self._send("requestDeregistration", [])

    def complete_deregistration(self) -> TxResult:
        """``completeDeregistration()``: credit the remaining stake to the withdrawable balance."""
        return self._send("completeDeregistration", [])

    # ------------------------------------------------------------------ jobs and leaders

    def create_job(self, params: JobParams, deposit_wei: int | None = None) -> tuple[JobId, TxResult]:
        """``createJob(p)`` with ``deposit_wei`` (default: exactly ``params.required_deposit()``)."""
        value = params.required_deposit() if deposit_wei is None else deposit_wei
        result = self._send("createJob", [params.to_abi()], value=value)
        try:
            job_id = int(result.event("JobCreated").args["jobId"])
        except KeyError as exc:
            raise TransactionFailed(f"createJob mined without a JobCreated event ({exc})") from exc
        return JobId(job_id), result

    def stand_for_leader(self, job_id: int, bond_wei: int) -> TxResult:
        """``standForLeader(jobId)`` bonding ``bond_wei`` (>= ``minLeaderBond``); the first candidate leads."""
        return self._send("standForLeader", [job_id], value=bond_wei)

    def withdraw_candidacy(self, job_id: int) -> TxResult:
        """``withdrawCandidacy(jobId)``: end the candidacy, bond credited back."""
        return self._send("withdrawCandidacy", [job_id])

    def draw_successor(self, job_id: int) -> TxResult:
        """``drawSuccessor(jobId)`` after the lease expired: fixes the block whose hash draws the successor."""
        return self._send("drawSuccessor", [job_id])

    def claim_leadership(self, job_id: int) -> TxResult:
        """``claimLeadership(jobId)`` after the lease expired (the drawn successor first, then any candidate)."""
        return self._send("claimLeadership", [job_id])

    # ------------------------------------------------------------------ updates

    def submit_update(self, ticket: ChainTicket, update_cid: str, loss_reduction: int,
                      leader_signature: bytes) -> TxResult:
        """``submitUpdate(ticket, cid, lossReduction, sig)``: ``loss_reduction`` = (before - after) * 1e6, clipped to
        0 .. ``MAX_LOSS_REDUCTION``."""
        if not 0 <= loss_reduction <= MAX_LOSS_REDUCTION:
            raise ValueError(f"submit_update: loss_reduction {loss_reduction} is clipped to 0 .. {MAX_LOSS_REDUCTION} "
                             "by protocol; pass min(max(0, value), MAX_LOSS_REDUCTION)")
        return self._send("submitUpdate", [ticket.to_abi(), cid_to_bytes(update_cid), loss_reduction,
                                           leader_signature])

    def draw_validators(self, job_id: int, round: int, slot: int) -> TxResult:
        """``drawValidators(jobId, round, slot)``: anyone, once ``block.number > anchorBlock + DRAW_DELAY``."""
        return self._send("drawValidators", [job_id, round, slot])

    def validate_update(self, job_id: int, round: int, slot: int, is_valid: bool) -> TxResult:
        """``validateUpdate(jobId, round, slot, isValid)`` by a member of the update's current panel. Sent with at least
        ``SETTLE_GAS`` of gas: votes race, and the one that lands last settles (fees, slashes, maybe an escalation
        panel's rewards), which costs far more than the estimate made before the others landed."""
        return self._send("validateUpdate", [job_id, round, slot, is_valid], min_gas=SETTLE_GAS)

    def settle_updates(self, job_id: int, round: int, vote_sets: list[VoteSet]) -> TxResult:
        """``settleUpdates(jobId, round, sets)``: anyone posts whole first panels' signed votes, many updates in one
        transaction. Unanimous sets settle; split sets are recorded as on-chain votes and escalate; a set whose draw
        went stale re-anchors its update (``DrawRescheduled``) and the panel signs again. Reverts as a whole on a
        closed update (``JobManagerFastPathClosed``) or a bad signature. Sent with at least ``SETTLE_GAS``: the
        estimate made before a concurrent re-anchor or settlement landed can fall short."""
        return self._send("settleUpdates", [job_id, round, [v.to_abi() for v in vote_sets]], min_gas=SETTLE_GAS)

    def escalate_update(self, job_id: int, round: int, slot: int) -> TxResult:
        """``escalateUpdate(jobId, round, slot)``: anyone, once the first panel's vote window (``vote_deadline``)
        passed without a verdict; the silent members are slashed when the verdict settles."""
        return self._send("escalateUpdate", [job_id, round, slot])

    def commit_round(self, job_id: int, round: int, checkpoint_cid: str, accepted_mask: int) -> TxResult:
        """``commitRound(...)`` by the leader; reverts ``JobManagerWrongAcceptedSet`` unless ``accepted_mask`` is
        the round's accepted set now. The last round's commit finishes the job."""
        return self._send("commitRound", [job_id, round, cid_to_bytes(checkpoint_cid), accepted_mask])

    def payout(self, job_id: int, round: int) -> TxResult:
        """``payout(jobId, round)``: anyone credits every accepted, unpaid update of a priced round to its trainer
        (one ``PaidOut`` each); ``JobManagerNothingToPay`` when the round is not priced or is paid already."""
        return self._send("payout", [job_id, round])

    def draw_auditors(self, job_id: int, round: int) -> TxResult:
        """``drawAuditors(jobId, round)``: anyone, ``DRAW_DELAY`` blocks after the commit."""
        return self._send("drawAuditors", [job_id, round])

    def audit_round(self, job_id: int, round: int, ok: bool) -> TxResult:
        """``auditRound(jobId, round, ok)`` by a member of the round's current audit panel. Sent with at least
        ``SETTLE_GAS``: the vote that lands last settles (slashes, an escalation panel's rewards, a dispute)."""
        return self._send("auditRound", [job_id, round, ok], min_gas=SETTLE_GAS)

    def escalate_audit(self, job_id: int, round: int) -> TxResult:
        """``escalateAudit(jobId, round)``: anyone, once the first audit panel's window (``audit_deadline``)
        passed without a verdict; its silent members are slashed when the escalation settles."""
        return self._send("escalateAudit", [job_id, round])

    def lapse_audit(self, job_id: int, round: int) -> TxResult:
        """``lapseAudit(jobId, round)``: anyone, once the escalation panel's window passed without a stake
        majority; the audit closes LAPSED (nothing disputed, nobody slashed)."""
        return self._send("lapseAudit", [job_id, round])

    def cancel_job(self, job_id: int) -> TxResult:
        """``cancelJob(jobId)`` by the customer of an unserved, stalled or disputed job."""
        return self._send("cancelJob", [job_id])

    def withdraw(self) -> TxResult:
        """``withdraw()``: send this account's whole balance to it."""
        return self._send("withdraw", [])


def _result(decode_all: Any, receipt: TxReceipt) -> TxResult:
    return TxResult(
        tx_hash=receipt["transactionHash"].to_0x_hex(),
        block_number=int(receipt["blockNumber"]),
        gas_used=int(receipt["gasUsed"]),
        fee_wei=int(receipt["gasUsed"]) * int(receipt.get("effectiveGasPrice", 0)),
        events=tuple(decode_all(receipt["logs"])),
    )


@dataclass(frozen=True)
class DeploySettings:
    """JobManager's constructor arguments (wei, seconds), in its order; the defaults suit a local devnet."""

    min_trainer_stake: int = 10**15
    min_validator_stake: int = 10**15
    min_update_bond: int = 10**14
    validator_slash: int = 4 * 10**14
    min_leader_bond: int = 10**15
    deregistration_delay: int = 3_600
    min_quorum: int = 5
    """The smallest quorum a job may choose: at 1/3 of the pool's stake an attacker fills a whole first panel of 5
    with probability <= (1/3)^5 = 0.41 % (docs/economy.md). A 3-validator devnet deploys with 3."""


def deploy(w3: Web3, account: LocalAccount, settings: DeploySettings | None = None, *,
           config: ClientConfig | None = None) -> JobManagerClient:
    """Deploy JobManager from the shipped bytecode and return a client sending as ``account``.

    Two transactions: JobManagerViews, then JobManager with the views' address as its last constructor argument (its
    constructor deploys the extension; the three together exceed one initcode's size limit, EIP-3860)."""
    cfg = config or ClientConfig()
    artifact = load_artifact()
    ctor: dict[str, Any] = next((e for e in artifact.abi if e.get("type") == "constructor"), {"inputs": []})
    types = [str(i["type"]) for i in ctor["inputs"]]
    args: list[Any] = list(asdict(settings or DeploySettings()).values())
    if len(types) != len(args) + 1:
        raise TransactionFailed(f"JobManager's constructor takes {types}; the adapter is older than the ABI export")
    tx = Transactor(w3, account, cfg)
    views = tx.send({"data": artifact.views_bytecode, "value": Wei(0)}, "deploy JobManagerViews")["contractAddress"]
    if views is None:
        raise TransactionFailed("deploy JobManagerViews: receipt has no contract address")
    data = artifact.bytecode + abi_encode(types, [*args, views])
    receipt = tx.send({"data": data, "value": Wei(0)}, "deploy JobManager")
    contract_address = receipt["contractAddress"]
    if contract_address is None:
        raise TransactionFailed("deploy JobManager: receipt has no contract address")
    return JobManagerClient(w3, contract_address, account, config=cfg, deploy_block=int(receipt["blockNumber"]))
