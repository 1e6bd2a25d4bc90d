// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {JobManagerState} from "./JobManagerState.sol";
import {JobManagerLib} from "./JobManagerLib.sol";

/// @title JobManagerViews: JobManager's read-only views
/// @notice Reached through JobManagerExtension's fallback (DELEGATECALL, JobManager's storage). Deployed on its own
/// and passed to JobManager's constructor: JobManager's initcode (with the extension's) and the extension itself
/// would otherwise exceed the size limits (EIP-3860, EIP-170). Called directly it reads its own empty storage.
contract JobManagerViews is JobManagerState {
    using JobManagerLib for JobManagerLib.SumTree;

    constructor() JobManagerState(1, 1, 0, 0, 0, 0, 1) {}

    /// @notice See IJobManager.getJob.
    function getJob(uint256 jobId) external view returns (JobInfo memory info) {
        Job storage job = _job(jobId);
        info.customer = job.customer;
        info.params = job.params;
        info.deposit = job.deposit;
        info.spent = job.spent;
        info.refunded = job.refunded;
        info.status = job.status;
        info.committedRounds = job.committedRounds;
        info.term = job.term;
        info.leader = job.leader;
        info.leaseExpiry = job.leaseExpiry;
        info.progressAt = job.progressAt;
        info.successorAnchor = job.successorAnchor;
        info.disputed = job.disputed;
        if (job.committedRounds > 0) info.lastCheckpointCid = _checkpointOf(_rounds[jobId][job.committedRounds - 1]);
    }

    /// @notice See IJobManager.getRound.
    function getRound(uint256 jobId, uint32 round) external view returns (RoundInfo memory info) {
        Round storage r = _rounds[jobId][round];
        info.submittedMask = r.submittedMask;
        info.acceptedMask = r.acceptedMask;
        info.priced = r.priced;
        info.committer = r.committer;
        info.auditAnchor = r.auditAnchor;
        info.audit = r.audit;
        info.auditOk = r.auditOk;
        info.auditFailed = r.auditFailed;
        info.auditors = r.auditors;
        info.checkpointCid = _checkpointOf(r);
        info.auditPhase = r.auditPhase;
        info.auditDeadline = uint64(_auditDeadline(_jobs[jobId], r));
        info.auditSilentMask = r.auditSilent;
        info.auditVotedMask = r.auditVoted[0];
        info.auditEscalationPanel = r.auditEscPanel;
        info.auditEscVotedMask = r.auditVoted[1];
        info.auditEscStake = r.auditEscStake;
        info.auditEscOkStake = r.auditEscOkStake;
        info.auditEscFailedStake = r.auditEscFailedStake;
    }

    /// @notice See IJobManager.getUpdate.
    function getUpdate(uint256 jobId, uint32 round, uint32 slot) external view returns (UpdateInfo memory info) {
        Update storage u = _updates[jobId][round][slot];
        Round storage r = _rounds[jobId][round];
        info.trainer = u.trainer;
        info.status = u.status;
        info.phase = u.phase;
        info.workUnits = u.workUnits;
        info.anchorBlock = uint64(_anchorOf(u));
        info.lossReduction = u.lossReduction;
        if (r.priced && (r.acceptedMask >> slot) & 1 == 1) {
            info.amount = uint128(_payOf(_jobs[jobId].params, r, u)); // fits: see _payOf
            info.paid = r.paid;
        }
        info.votedMask = u.votedMask;
        info.validMask = u.validMask;
        info.escVotedMask = u.escVotedMask;
        info.escValidMask = u.escValidMask;
        info.escStake = u.escStake;
        info.escValidStake = u.escValidStake;
        info.escInvalidStake = u.escInvalidStake;
        info.panel = u.panel;
        info.escalationPanel = u.escPanel;
        info.voteDeadline = uint64(_voteDeadline(_jobs[jobId], u));
        info.silentMask = u.silentMask;
    }

    /// @notice See IJobManager.getCandidates.
    function getCandidates(uint256 jobId) external view returns (address[] memory list, uint256[] memory bonds) {
        list = _candidates[jobId];
        bonds = new uint256[](list.length);
        for (uint256 i; i < list.length; ++i) bonds[i] = _candidacy[jobId][list[i]].bond;
    }

    /// @notice See IJobManager.getValidators.
    function getValidators() external view returns (address[] memory) {
        return _pool.members();
    }

    /// @notice Number of validators in the draw pool.
    function validatorCount() external view returns (uint256) {
        return _pool.count;
    }

    /// @notice Sum of the draw pool's weights (each member's stake).
    function poolWeight() external view returns (uint256) {
        return _pool.total;
    }

    /// @notice A validator's draw weight (0 when it is not in the pool).
    function poolWeightOf(address validator) external view returns (uint256) {
        return _pool.weightOf(validator);
    }

    /// @notice See IJobManager.accounting.
    function accounting()
        external
        view
        returns (
            uint256 deposits,
            uint256 stakes,
            uint256 paid,
            uint256 refunded,
            uint256 slashed,
            uint256 withdrawn,
            uint256 escrow,
            uint256 locked
        )
    {
        return (totalDeposits, totalStakes, totalPaid, totalRefunded, totalSlashed, totalWithdrawn, escrowHeld, stakeHeld);
    }

    /// @notice See IJobManager.totalHeld.
    function totalHeld() external view returns (uint256) {
        return escrowHeld + stakeHeld;
    }
}
