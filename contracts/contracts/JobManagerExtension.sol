// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {JobManagerState} from "./JobManagerState.sol";
import {JobManagerLib} from "./JobManagerLib.sol";
import {JobManagerVotes} from "./JobManagerVotes.sol";

/// @title JobManagerExtension: leader candidacy, audits, the signed-vote fast path and views of JobManager
/// @notice Runs only through JobManager's fallback (DELEGATECALL): it reads and writes JobManager's storage, and
/// its state-changing functions refuse a direct call (JobManagerNotDelegated), so no ether or state can land in
/// the extension's own account.
// slither-disable-next-line locked-ether
contract JobManagerExtension is JobManagerVotes {
    using JobManagerLib for JobManagerLib.SumTree;

    address private immutable _self;

    /// @dev The same configuration as the JobManager that deploys it (immutables are not shared by DELEGATECALL).
    constructor(
        uint256 minTrainerStake_,
        uint256 minValidatorStake_,
        uint256 minUpdateBond_,
        uint256 validatorSlash_,
        uint256 minLeaderBond_,
        uint64 deregistrationDelay_,
        uint8 minQuorum_
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
        _self = address(this);
    }

    modifier onlyDelegated() {
        if (address(this) == _self) revert JobManagerNotDelegated();
        _;
    }

    /// @notice See IJobManager.standForLeader.
    function standForLeader(uint256 jobId) external payable onlyDelegated {
        Job storage job = _activeJob(jobId);
        if (!_isActiveNode(msg.sender)) revert JobManagerNotRegistered(msg.sender);
        Candidate storage c = _candidacy[jobId][msg.sender];
        if (c.standing) revert JobManagerAlreadyCandidate(jobId, msg.sender);
        if (msg.value < minLeaderBond) revert JobManagerInsufficientBond(minLeaderBond, msg.value);
        address[] storage list = _candidates[jobId];
        if (list.length == MAX_CANDIDATES) {
            // Full: the newcomer must outbid the smallest bond that is not the leader's, which leaves.
            (uint256 index, uint256 smallest) = _smallestNonLeader(jobId, job.leader);
            if (msg.value <= smallest) revert JobManagerInsufficientBond(smallest + 1, msg.value);
            _endCandidacy(jobId, list[index]);
        }
        list.push(msg.sender);
        c.standing = true;
        c.bond = uint128(msg.value);
        _addStake(msg.value);
        emit CandidateStood(jobId, msg.sender, msg.value);
        if (job.leader == address(0)) {
            job.progressAt = uint64(block.timestamp);
            _elect(jobId, job, msg.sender);
        }
    }

    /// @notice See IJobManager.withdrawCandidacy.
    function withdrawCandidacy(uint256 jobId) external onlyDelegated {
        Job storage job = _job(jobId);
        Candidate storage c = _candidacy[jobId][msg.sender];
        if (!c.standing) revert JobManagerNotCandidate(jobId, msg.sender);
        if (job.status == JobStatus.Active && job.leader == msg.sender) {
            revert JobManagerCandidateIsLeader(jobId, msg.sender);
        }
        if (c.lastCommitAt != 0) {
            // A committer keeps its bond at stake for one lease after its last commit: its audit window.
            uint256 availableAt = uint256(c.lastCommitAt) + job.params.leaseSeconds;
            if (block.timestamp <= availableAt) revert JobManagerBondInAuditWindow(jobId, msg.sender, availableAt);
        }
        _endCandidacy(jobId, msg.sender);
    }

    /// @notice See IJobManager.drawSuccessor.
    function drawSuccessor(uint256 jobId) external onlyDelegated {
        Job storage job = _activeJob(jobId);
        if (block.timestamp <= job.leaseExpiry) revert JobManagerLeaseNotExpired(jobId, job.leaseExpiry);
        uint64 anchor = job.successorAnchor;
        if (anchor != 0) {
            (bool ready, bytes32 hash) = JobManagerLib.seedAt(anchor, DRAW_DELAY);
            if (!ready || hash != bytes32(0)) revert JobManagerSuccessorDrawPending(jobId, anchor);
        }
        anchor = uint64(block.number);
        job.successorAnchor = anchor;
        emit SuccessorDrawRequested(jobId, job.term, anchor);
    }

    /// @notice See IJobManager.claimLeadership.
    function claimLeadership(uint256 jobId) external onlyDelegated {
        Job storage job = _activeJob(jobId);
        if (!_candidacy[jobId][msg.sender].standing) revert JobManagerNotCandidate(jobId, msg.sender);
        if (!_isActiveNode(msg.sender)) revert JobManagerNotRegistered(msg.sender);
        if (block.timestamp <= job.leaseExpiry) revert JobManagerLeaseNotExpired(jobId, job.leaseExpiry);
        uint256 graceEnd = uint256(job.leaseExpiry) + job.params.leaseSeconds;
        if (block.timestamp <= graceEnd) {
            address next = _successor(jobId, job);
            if (msg.sender != next) revert JobManagerNotSuccessor(jobId, next, graceEnd);
        }
        address lapsed = job.leader;
        _forfeit(jobId, lapsed, LAPSE_FORFEIT_BPS);
        if (lapsed != msg.sender && _candidacy[jobId][lapsed].standing) _endCandidacy(jobId, lapsed);
        _elect(jobId, job, msg.sender);
    }

    /// @notice See IJobManager.escalateUpdate.
    function escalateUpdate(uint256 jobId, uint32 round, uint32 slot) external onlyDelegated {
        Job storage job = _activeJob(jobId);
        Update storage u = _updates[jobId][round][slot];
        uint256 deadline = _voteDeadline(job, u);
        if (u.status != UpdateStatus.Pending || u.phase != Phase.Voting || block.timestamp <= deadline) {
            revert JobManagerVoteWindowOpen(jobId, round, slot, deadline);
        }
        u.silentMask = uint16(((1 << u.panel.length) - 1) & ~uint256(u.votedMask));
        _escalate(jobId, round, slot, u);
    }

    /// @notice See IJobManager.drawAuditors.
    function drawAuditors(uint256 jobId, uint32 round) external onlyDelegated {
        Job storage job = _job(jobId);
        if (round >= job.committedRounds) revert JobManagerRoundNotCommitted(jobId, round);
        Round storage r = _rounds[jobId][round];
        if (r.auditors.length != 0) revert JobManagerNothingToDraw(jobId, round, AUDIT_SLOT);
        (bool ready, bytes32 hash) = JobManagerLib.seedAt(r.auditAnchor, DRAW_DELAY);
        if (!ready) revert JobManagerDrawNotReady(uint256(r.auditAnchor) + DRAW_DELAY + 1);
        if (hash == bytes32(0) || r.auditPoolVersion != uint32(_pool.version)) {
            r.auditAnchor = uint64(block.number);
            r.auditPoolVersion = uint32(_pool.version);
            emit DrawRescheduled(jobId, round, AUDIT_SLOT, uint64(block.number));
            return;
        }
        address[] memory panel = _pool.draw(
            keccak256(abi.encode(hash, jobId, round, "audit")),
            job.params.quorum,
            r.committer
        );
        r.auditors = panel;
        emit AuditorsDrawn(jobId, round, panel);
    }

    /// @notice See IJobManager.auditRound.
    function auditRound(uint256 jobId, uint32 round, bool ok) external onlyDelegated {
        Job storage job = _job(jobId);
        Round storage r = _rounds[jobId][round];
        if (round >= job.committedRounds) revert JobManagerRoundNotCommitted(jobId, round);
        if (r.audit != AuditOutcome.Open) revert JobManagerAuditClosed(jobId, round);
        uint256 index = _indexOf(r.auditors, msg.sender);
        if (index == type(uint256).max) revert JobManagerNotAuditor(jobId, round, msg.sender);
        uint16 bit = uint16(1 << index);
        if (r.auditVoted & bit != 0) revert JobManagerAlreadyAudited(jobId, round, msg.sender);
        r.auditVoted |= bit;
        emit RoundAudited(jobId, round, msg.sender, ok);
        uint256 majority = r.auditors.length / 2 + 1;
        if (ok) {
            if (++r.auditOk == majority) {
                r.audit = AuditOutcome.Passed;
                emit RoundAuditPassed(jobId, round, r.auditOk);
            }
        } else if (++r.auditFailed == majority) {
            r.audit = AuditOutcome.Disputed;
            job.disputed = true;
            emit RoundDisputed(jobId, round, r.auditFailed);
            _forfeit(jobId, r.committer, 10000);
        }
    }

    /// @notice See IJobManager.updateBond.
    function updateBond(uint256 jobId) external view returns (uint256) {
        return _updateBond(_job(jobId).params);
    }

    /// @notice See IJobManager.challengeSeed.
    function challengeSeed(uint256 jobId, uint32 round, uint32 slot) external view returns (bytes32) {
        Update storage u = _updates[jobId][round][slot];
        uint64 challenge = u.challenge;
        if (u.panel.length == 0) {
            // Not drawn on-chain: the fast path's panel, recomputed from the same seed, fixes the same challenge.
            bytes32 hash = _drawSeed(u.anchorBlock, u.poolVersion);
            if (u.status != UpdateStatus.Pending || hash == bytes32(0)) {
                revert JobManagerDrawNotReady(block.number + DRAW_DELAY + 1);
            }
            challenge = _challengeOf(keccak256(abi.encode(hash, jobId, round, slot, Phase.AwaitingPanel)));
        }
        return keccak256(abi.encode(challenge, jobId, round, slot));
    }

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
        if (job.committedRounds > 0) info.lastCheckpointCid = _rounds[jobId][job.committedRounds - 1].checkpointCid;
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
        info.checkpointCid = r.checkpointCid;
    }

    /// @notice See IJobManager.getUpdate.
    function getUpdate(uint256 jobId, uint32 round, uint32 slot) external view returns (UpdateInfo memory info) {
        Update storage u = _updates[jobId][round][slot];
        info.trainer = u.trainer;
        info.status = u.status;
        info.phase = u.phase;
        info.workUnits = u.workUnits;
        info.anchorBlock = u.anchorBlock;
        info.lossReduction = u.lossReduction;
        info.amount = u.amount;
        info.paid = u.paid;
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

    /// @notice See IJobManager.successor.
    function successor(uint256 jobId) external view returns (address) {
        return _successor(jobId, _jobs[jobId]);
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

    /// @dev Half a lease after the first panel's draw (0 before it).
    function _voteDeadline(Job storage job, Update storage u) private view returns (uint256) {
        uint256 drawnAt = u.drawnAt;
        return drawnAt == 0 ? 0 : drawnAt + job.params.leaseSeconds / 2;
    }

    /// @notice See IJobManager.totalHeld.
    function totalHeld() external view returns (uint256) {
        return escrowHeld + stakeHeld;
    }

    function _smallestNonLeader(uint256 jobId, address leader) private view returns (uint256 index, uint256 bond) {
        address[] storage list = _candidates[jobId];
        bond = type(uint256).max;
        for (uint256 i; i < list.length; ++i) {
            uint256 b = _candidacy[jobId][list[i]].bond;
            if (list[i] != leader && b < bond) {
                bond = b;
                index = i;
            }
        }
    }
}
