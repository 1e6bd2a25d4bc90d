// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {JobManagerState} from "./JobManagerState.sol";
import {JobManagerExtension} from "./JobManagerExtension.sol";
import {JobManagerLib} from "./JobManagerLib.sol";

/// @title JobManager: escrow, ticketed updates, stake-weighted verdicts, commits and payouts for dtnode
/// @notice A customer escrows a job's worst-case cost. Trainers submit work only under a ticket the job's current
/// leader signed (EIP-712), locking a bond per pending update. Validators drawn in proportion to stake from a block
/// after the submission vote; a split first panel escalates to a larger panel decided by stake; every loser loses
/// stake. The leader commits exactly the accepted set. Every wei leaving the contract is credited first and
/// withdrawn by its owner. The whole surface is IJobManager: leader candidacy, audits and views run in
/// JobManagerExtension, reached through this contract's fallback (DELEGATECALL, same storage).
/// @dev Rules and reasoning: docs/economy.md. Deployed in two transactions: JobManagerViews, then JobManager (whose constructor deploys the extension).
contract JobManager is JobManagerState {
    using JobManagerLib for JobManagerLib.SumTree;

    /// @notice The contract the fallback delegates to (leader candidacy, audits, views).
    address public immutable extension;

    /// @param minTrainerStake_ Minimum trainer stake (wei).
    /// @param minValidatorStake_ Minimum validator stake (wei, > 0: it is the draw weight).
    /// @param minUpdateBond_ Floor of the per-update bond (wei).
    /// @param validatorSlash_ Stake a losing voter loses (wei).
    /// @param minLeaderBond_ Minimum candidate bond (wei).
    /// @param deregistrationDelay_ Seconds between requesting and completing deregistration.
    /// @param minQuorum_ Smallest quorum of a job (1 .. MAX_QUORUM; 5 on a network: see docs/economy.md).
    /// @param views_ A deployed JobManagerViews (the read-only views, reached through the extension).
    constructor(
        uint256 minTrainerStake_,
        uint256 minValidatorStake_,
        uint256 minUpdateBond_,
        uint256 validatorSlash_,
        uint256 minLeaderBond_,
        uint64 deregistrationDelay_,
        uint8 minQuorum_,
        address views_
    )
        JobManagerState(
            minTrainerStake_,
            minValidatorStake_,
            minUpdateBond_,
            validatorSlash_,
            minLeaderBond_,
            deregistrationDelay_,
            minQuorum_
        )
    {
        extension = address(
            new JobManagerExtension(
                minTrainerStake_,
                minValidatorStake_,
                minUpdateBond_,
                validatorSlash_,
                minLeaderBond_,
                deregistrationDelay_,
                minQuorum_,
                views_
            )
        );
    }

    /// @notice Serves the rest of IJobManager (leader candidacy, audits, views) from the extension, in this
    /// contract's storage.
    fallback() external payable {
        _delegate(extension);
    }

    /// @notice See IJobManager.registerTrainer.
    function registerTrainer(uint8 nodeClass) external payable {
        if (nodeClass > 2) revert JobManagerInvalidNodeClass(nodeClass);
        if (trainers[msg.sender].registered) revert JobManagerAlreadyRegistered(msg.sender);
        if (msg.value < minTrainerStake) revert JobManagerInsufficientStake(minTrainerStake, msg.value);
        trainers[msg.sender] = TrainerInfo({
            registered: true,
            nodeClass: nodeClass,
            pending: 0,
            stake: SafeCast.toUint96(msg.value),
            locked: 0
        });
        _addStake(msg.value);
        emit TrainerRegistered(msg.sender, nodeClass, msg.value);
    }

    /// @notice See IJobManager.addTrainerStake.
    function addTrainerStake() external payable {
        TrainerInfo storage t = trainers[msg.sender];
        if (!t.registered || exitAvailableAt[msg.sender] != 0) revert JobManagerNotTrainer(msg.sender);
        t.stake = SafeCast.toUint96(t.stake + msg.value);
        _addStake(msg.value);
        emit TrainerStakeAdded(msg.sender, msg.value, t.stake);
    }

    /// @notice See IJobManager.registerValidator.
    function registerValidator() external payable {
        if (validators[msg.sender].registered) revert JobManagerAlreadyRegistered(msg.sender);
        if (msg.value < minValidatorStake) revert JobManagerInsufficientStake(minValidatorStake, msg.value);
        if (_pool.count >= MAX_VALIDATORS) revert JobManagerPoolFull(MAX_VALIDATORS);
        validators[msg.sender] = ValidatorInfo({registered: true, openVotes: 0, stake: msg.value});
        _addStake(msg.value);
        // The only way into the pool: registered, staked >= minimum, not leaving (a leaving account is still
        // registered, so it cannot come back here before completeDeregistration deletes it).
        _pool.add(msg.sender, msg.value);
        emit ValidatorRegistered(msg.sender, msg.value);
    }

    /// @notice See IJobManager.requestDeregistration.
    function requestDeregistration() external {
        if (!trainers[msg.sender].registered && !validators[msg.sender].registered) {
            revert JobManagerNotRegistered(msg.sender);
        }
        uint64 pending = exitAvailableAt[msg.sender];
        if (pending != 0) revert JobManagerDeregistrationAlreadyRequested(msg.sender, pending);
        uint64 availableAt = uint64(block.timestamp) + deregistrationDelay;
        exitAvailableAt[msg.sender] = availableAt;
        _leavePool(msg.sender);
        emit DeregistrationRequested(msg.sender, availableAt);
    }

    /// @notice See IJobManager.completeDeregistration.
    function completeDeregistration() external nonReentrant {
        uint64 availableAt = exitAvailableAt[msg.sender];
        if (availableAt == 0) revert JobManagerDeregistrationNotRequested(msg.sender);
        if (block.timestamp < availableAt) revert JobManagerDeregistrationNotReady(msg.sender, availableAt);
        TrainerInfo storage t = trainers[msg.sender];
        ValidatorInfo storage v = validators[msg.sender];
        if (t.locked != 0 || v.openVotes != 0) revert JobManagerObligationsOpen(msg.sender, t.locked, v.openVotes);
        uint256 amount = uint256(t.stake) + v.stake;
        delete trainers[msg.sender];
        delete validators[msg.sender];
        delete exitAvailableAt[msg.sender];
        _release(msg.sender, amount);
        emit Deregistered(msg.sender, amount);
    }

    /// @notice See IJobManager.createJob.
    function createJob(JobParams calldata p) external payable returns (uint256 jobId) {
        _checkParams(p);
        uint256 required = requiredDeposit(p);
        if (msg.value < required) revert JobManagerInsufficientDeposit(required, msg.value);
        jobId = ++jobCount;
        Job storage job = _jobs[jobId];
        job.params = p;
        job.customer = msg.sender;
        job.status = JobStatus.Active;
        job.deposit = msg.value;
        totalDeposits += msg.value;
        escrowHeld += msg.value;
        emit JobCreated(jobId, msg.sender, p.specCid, msg.value);
    }

    /// @notice See IJobManager.submitUpdate.
    function submitUpdate(
        Ticket calldata ticket,
        bytes calldata updateCid,
        uint64 lossReduction,
        bytes calldata leaderSignature
    ) external {
        uint256 jobId = ticket.jobId;
        Job storage job = _activeJob(jobId);
        _checkCid(updateCid);
        if (lossReduction > MAX_LOSS_REDUCTION) revert JobManagerLossReductionTooLarge(lossReduction, MAX_LOSS_REDUCTION);
        bytes32 digest = _admit(jobId, job, ticket, leaderSignature);
        Round storage r = _rounds[jobId][ticket.round];
        uint64 bit = uint64(1) << ticket.slot;
        if (r.submittedMask & bit != 0) revert JobManagerSlotTaken(jobId, ticket.round, ticket.slot);
        r.submittedMask |= bit;
        _lockBond(msg.sender, _updateBond(job.params));
        _record(ticket, updateCid, lossReduction, digest);
    }

    /// @dev Stores a newly admitted update and announces it.
    function _record(Ticket calldata ticket, bytes calldata updateCid, uint64 lossReduction, bytes32 digest) private {
        // One new slot: the whole record a submission writes (sizes checked by _admit and submitUpdate).
        Update storage u = _updates[ticket.jobId][ticket.round][ticket.slot];
        u.trainer = msg.sender;
        u.status = UpdateStatus.Pending;
        u.workUnits = uint16(ticket.workUnits);
        u.anchorBlock = uint32(block.number);
        u.lossReduction = uint32(lossReduction);
        emit UpdateSubmitted(
            ticket.jobId,
            ticket.round,
            msg.sender,
            ticket.slot,
            ticket.workUnits,
            lossReduction,
            updateCid,
            digest
        );
    }

    /// @notice See IJobManager.validateUpdate.
    function validateUpdate(uint256 jobId, uint32 round, uint32 slot, bool isValid) external nonReentrant {
        Job storage job = _activeJob(jobId);
        Update storage u = _updates[jobId][round][slot];
        if (u.status == UpdateStatus.None) revert JobManagerUnknownUpdate(jobId, round, slot);
        Phase phase = u.phase;
        if (u.status != UpdateStatus.Pending || (phase != Phase.Voting && phase != Phase.Escalated)) {
            revert JobManagerUpdateNotVoting(jobId, round, slot);
        }
        ValidatorInfo storage v = validators[msg.sender];
        if (!v.registered) revert JobManagerNotDrawnValidator(jobId, round, slot, msg.sender);
        if (phase == Phase.Voting) {
            uint256 index = _indexOf(u.panel, msg.sender);
            if (index == type(uint256).max) revert JobManagerNotDrawnValidator(jobId, round, slot, msg.sender);
            uint16 bit = uint16(1 << index);
            uint16 voted = u.votedMask;
            if (voted & bit != 0) revert JobManagerAlreadyVoted(jobId, round, slot, msg.sender);
            uint16 valid = u.validMask;
            ++v.openVotes;
            bool agrees = voted == 0 || ((valid != 0) == isValid);
            voted |= bit;
            if (isValid) valid |= bit;
            u.votedMask = voted;
            u.validMask = valid;
            emit UpdateVoted(jobId, round, slot, msg.sender, phase, isValid);
            if (!agrees) {
                _escalate(jobId, round, slot, u);
            } else if (voted == uint16((1 << u.panel.length) - 1)) {
                _settle(jobId, job, round, slot, u, isValid);
            }
        } else {
            uint256 index = _indexOf(u.escPanel, msg.sender);
            if (index == type(uint256).max) revert JobManagerNotDrawnValidator(jobId, round, slot, msg.sender);
            uint64 bit = uint64(1) << uint64(index);
            if (u.escVotedMask & bit != 0) revert JobManagerAlreadyVoted(jobId, round, slot, msg.sender);
            ++v.openVotes;
            u.escVotedMask |= bit;
            emit UpdateVoted(jobId, round, slot, msg.sender, phase, isValid);
            uint256 half = uint256(u.escStake) / 2;
            if (isValid) {
                u.escValidMask |= bit;
                uint128 s = u.escValidStake + uint128(v.stake);
                u.escValidStake = s;
                if (s > half) _settle(jobId, job, round, slot, u, true);
            } else {
                uint128 s = u.escInvalidStake + uint128(v.stake);
                u.escInvalidStake = s;
                if (s > half) _settle(jobId, job, round, slot, u, false);
            }
        }
    }

    /// @notice See IJobManager.commitRound.
    function commitRound(
        uint256 jobId,
        uint32 round,
        bytes calldata checkpointCid,
        uint64 acceptedMask
    ) external nonReentrant {
        Job storage job = _activeJob(jobId);
        address leader = job.leader;
        if (msg.sender != leader) revert JobManagerNotLeader(jobId, msg.sender, leader);
        if (!_isActiveNode(leader)) revert JobManagerLeaderInactive(jobId, leader);
        if (block.timestamp > job.leaseExpiry) revert JobManagerLeaseExpired(jobId, job.leaseExpiry);
        if (round != job.committedRounds) revert JobManagerWrongRound(jobId, job.committedRounds, round);
        _checkCid(checkpointCid);
        Round storage r = _rounds[jobId][round];
        if (acceptedMask != r.acceptedMask) revert JobManagerWrongAcceptedSet(jobId, round, r.acceptedMask, acceptedMask);
        if (acceptedMask == 0) revert JobManagerNoAcceptedUpdates(jobId, round);

        _storeCheckpoint(r, checkpointCid);
        r.committer = leader;
        r.auditAnchor = uint64(block.number);
        _candidacy[jobId][leader].lastCommitAt = uint64(block.timestamp);
        job.spent += _priceRound(jobId, round, job.params, r);
        uint32 committed = round + 1;
        job.committedRounds = committed;
        job.progressAt = uint64(block.timestamp);
        bool finished = committed >= job.params.rounds;
        uint64 leaseExpiry = job.leaseExpiry;
        if (!finished) {
            leaseExpiry = uint64(block.timestamp) + job.params.leaseSeconds;
            job.leaseExpiry = leaseExpiry;
        }
        emit RoundCommitted(jobId, round, leader, checkpointCid, acceptedMask, leaseExpiry);
        _creditFee(jobId, job, leader, job.params.leaderFee);
        if (finished) {
            job.status = JobStatus.Finished;
            uint256 refund = _refund(job);
            emit JobFinished(jobId, checkpointCid, refund);
        }
    }

    /// @notice See IJobManager.payout.
    function payout(uint256 jobId, uint32 round) external nonReentrant {
        JobParams storage p = _job(jobId).params;
        Round storage r = _rounds[jobId][round];
        uint256 accepted = r.priced && !r.paid ? r.acceptedMask : 0;
        uint256 total = 0;
        // One call credits every accepted update of the round: the 21k base and the totals' writes are shared, and
        // one flag marks the round paid (its accepted set is fixed once priced).
        for (uint32 slot; accepted >> slot != 0; ++slot) {
            if (accepted & (1 << slot) == 0) continue;
            Update storage u = _updates[jobId][round][slot];
            uint256 amount = _payOf(p, r, u);
            address trainer = u.trainer;
            total += amount;
            balanceOf[trainer] += amount;
            emit PaidOut(jobId, trainer, amount);
        }
        if (total == 0) revert JobManagerNothingToPay(jobId, round);
        r.paid = true;
        escrowHeld -= total;
        totalPaid += total;
    }

    /// @notice See IJobManager.cancelJob.
    function cancelJob(uint256 jobId) external nonReentrant {
        Job storage job = _activeJob(jobId);
        if (msg.sender != job.customer) revert JobManagerNotCustomer(jobId, msg.sender);
        address leader = job.leader;
        if (leader != address(0) && !job.disputed) {
            uint256 cancellableAfter = _cancellableAfter(job);
            if (block.timestamp <= cancellableAfter) revert JobManagerJobStillServed(jobId, leader, cancellableAfter);
        }
        job.status = JobStatus.Cancelled;
        if (leader != address(0) && block.timestamp > job.leaseExpiry) _forfeit(jobId, leader, LAPSE_FORFEIT_BPS);
        // Work accepted in the open round is owed like committed work: a cancel cannot take it back.
        uint32 round = job.committedRounds;
        job.spent += _priceRound(jobId, round, job.params, _rounds[jobId][round]);
        uint256 refund = _refund(job);
        emit JobCancelled(jobId, refund);
    }

    /// @notice See IJobManager.withdraw.
    function withdraw() external nonReentrant {
        uint256 amount = balanceOf[msg.sender];
        if (amount == 0) revert JobManagerNothingToWithdraw(msg.sender);
        balanceOf[msg.sender] = 0;
        totalWithdrawn += amount;
        emit Withdrawn(msg.sender, amount);
        (bool ok, ) = payable(msg.sender).call{value: amount}("");
        if (!ok) revert JobManagerTransferFailed(msg.sender, amount);
    }

    /// @notice See IJobManager.requiredDeposit.
    function requiredDeposit(JobParams calldata p) public pure returns (uint256) {
        uint256 perUpdate = uint256(p.maxWorkUnits) * (uint256(p.baseRate) + p.bonusRate) +
            uint256(p.quorum) * p.validatorFee;
        return uint256(p.rounds) * (uint256(p.tasksPerRound) * perUpdate + p.leaderFee);
    }

    /// @notice See IJobManager.ticketDigest.
    function ticketDigest(Ticket calldata ticket) external view returns (bytes32) {
        return _hashTypedDataV4(JobManagerLib.hashTicket(ticket));
    }

    function _checkParams(JobParams calldata p) private view {
        if (p.specCid.length == 0 || p.specCid.length > MAX_CID_LENGTH) revert JobManagerInvalidCid(p.specCid.length);
        if (p.rounds == 0 || p.rounds > MAX_ROUNDS) revert JobManagerInvalidJobParam("rounds");
        if (p.tasksPerRound == 0 || p.tasksPerRound > MAX_TASKS_PER_ROUND) {
            revert JobManagerInvalidJobParam("tasksPerRound");
        }
        if (p.localSteps == 0) revert JobManagerInvalidJobParam("localSteps");
        if (p.maxWorkUnits == 0 || p.maxWorkUnits > MAX_WORK_UNITS) revert JobManagerInvalidJobParam("maxWorkUnits");
        if (p.quorum == 0 || p.quorum > MAX_QUORUM) revert JobManagerInvalidJobParam("quorum");
        if (p.quorum < minQuorum) revert JobManagerQuorumBelowMinimum(p.quorum, minQuorum);
        if (p.leaseSeconds == 0 || p.leaseSeconds > MAX_LEASE_SECONDS) revert JobManagerInvalidJobParam("leaseSeconds");
        if (_maxUpdatePay(p.maxWorkUnits, p.baseRate, p.bonusRate, p.tasksPerRound) > type(uint128).max) {
            revert JobManagerInvalidJobParam("rates");
        }
    }

    /// @dev Checks that a ticket admits the caller's work now: signed by the job's current, active leader for the
    /// current term and round, naming the caller, a valid slot and work units, not expired.
    /// @return digest The ticket's EIP-712 digest.
    function _admit(
        uint256 jobId,
        Job storage job,
        Ticket calldata ticket,
        bytes calldata signature
    ) private view returns (bytes32 digest) {
        if (ticket.trainer != msg.sender) revert JobManagerNotTicketHolder(ticket.trainer, msg.sender);
        if (ticket.term != job.term) revert JobManagerWrongTerm(jobId, job.term, ticket.term);
        if (ticket.round != job.committedRounds) revert JobManagerWrongRound(jobId, job.committedRounds, ticket.round);
        if (block.timestamp > ticket.expiry) revert JobManagerTicketExpired(ticket.expiry);
        if (ticket.slot >= job.params.tasksPerRound) revert JobManagerInvalidSlot(jobId, ticket.slot);
        uint32 maxUnits = job.params.maxWorkUnits; // <= MAX_WORK_UNITS (_checkParams)
        if (ticket.workUnits == 0 || ticket.workUnits > maxUnits) {
            revert JobManagerInvalidWorkUnits(ticket.workUnits, maxUnits);
        }
        address leader = job.leader;
        if (!_isActiveNode(leader)) revert JobManagerLeaderInactive(jobId, leader);
        digest = _hashTypedDataV4(JobManagerLib.hashTicket(ticket));
        // slither-disable-next-line unused-return
        (address signer, ECDSA.RecoverError err, ) = ECDSA.tryRecover(digest, signature); // the error's argument adds nothing
        if (err != ECDSA.RecoverError.NoError || signer != leader) {
            revert JobManagerBadTicketSignature(jobId, signer, leader);
        }
    }

    /// @dev Locks `bond` of an active trainer's free stake for one pending update.
    function _lockBond(address trainer, uint256 bond) private {
        TrainerInfo storage t = trainers[trainer];
        if (!t.registered || exitAvailableAt[trainer] != 0) revert JobManagerNotTrainer(trainer);
        uint256 free = t.stake - t.locked;
        if (free < bond || t.stake < minTrainerStake) revert JobManagerInsufficientFreeStake(trainer, free, bond);
        t.locked += uint96(bond); // bond <= free < 2^96
        ++t.pending;
    }

    /// @dev Closes a round's pending updates (Expired: bond unlocked, votes released, unpaid) and fixes the pay of
    /// its accepted ones (`_payOf`): the round's accepted work units and claims are stored, not each update's pay.
    /// @return owed The round's total trainer pay, now owed from the deposit.
    function _priceRound(uint256 jobId, uint32 round, JobParams storage p, Round storage r) private returns (uint256 owed) {
        uint256 submitted = r.submittedMask;
        uint256 accepted = r.acceptedMask;
        uint256 units = 0;
        uint256 totalLoss = 0;
        for (uint32 slot; submitted >> slot != 0; ++slot) {
            if (submitted & (1 << slot) == 0) continue;
            Update storage u = _updates[jobId][round][slot];
            if (accepted & (1 << slot) != 0) {
                units += u.workUnits;
                totalLoss += u.lossReduction;
            } else if (u.status == UpdateStatus.Pending) {
                _expire(jobId, round, slot, p, u);
            }
        }
        // Fit: at most MAX_TASKS_PER_ROUND updates of <= 2^16 units and <= 2^32 micro-units each.
        r.priced = true;
        r.units = uint32(units);
        r.totalLoss = uint64(totalLoss);
        for (uint32 slot; accepted >> slot != 0; ++slot) {
            if (accepted & (1 << slot) != 0) owed += _payOf(p, r, _updates[jobId][round][slot]);
        }
    }

    /// @dev Stores a checkpoint CID: the usual 36-byte CIDv1 (4-byte header, 32-byte digest) in the commit's slot
    /// and one more, any other as bytes.
    function _storeCheckpoint(Round storage r, bytes calldata cid) private {
        bytes32 digest = cid.length == 36 ? bytes32(cid[4:36]) : bytes32(0);
        if (digest == bytes32(0)) {
            r.checkpointCid = cid;
        } else {
            r.checkpointHead = bytes4(cid[0:4]);
            r.checkpointDigest = digest;
        }
    }

    function _expire(uint256 jobId, uint32 round, uint32 slot, JobParams storage p, Update storage u) private {
        u.status = UpdateStatus.Expired;
        TrainerInfo storage t = trainers[u.trainer];
        t.locked -= uint96(_updateBond(p)); // locked at submission: fits
        --t.pending;
        _releaseVotes(u.panel, u.votedMask);
        _releaseVotes(u.escPanel, u.escVotedMask);
        emit UpdateExpired(jobId, round, slot, u.trainer);
    }

    function _releaseVotes(address[] storage panel, uint256 voted) private {
        uint256 n = panel.length;
        for (uint256 i; i < n; ++i) {
            if (voted & (1 << i) != 0) --validators[panel[i]].openVotes;
        }
    }
}
