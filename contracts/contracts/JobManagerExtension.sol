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
    /// @dev The views (getJob, getRound, ...), reached through this contract's fallback, still in JobManager's
    /// storage: the extension and the views together exceed one contract's size limit (EIP-170).
    address public immutable views;

    /// @dev The same configuration as the JobManager that deploys it (immutables are not shared by DELEGATECALL).
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
        _self = address(this);
        views = views_;
    }

    /// @notice Serves IJobManager's views from JobManagerViews (DELEGATECALL: JobManager's storage).
    fallback() external payable {
        _delegate(views);
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
            // A committer keeps its bond at stake for one lease after its last commit (its audit window), renewed
            // when an audit of a round it committed escalates and when the escalation panel is drawn.
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
        Phase phase = r.auditPhase;
        if (r.audit != AuditOutcome.Open || (phase != Phase.AwaitingPanel && phase != Phase.AwaitingEscalation)) {
            revert JobManagerNothingToDraw(jobId, round, AUDIT_SLOT);
        }
        // A pool changed after the seed block was known could steer the draw: start over from a new anchor.
        (bool fresh, bytes32 hash) = _drawSeed(r.auditAnchor);
        if (!fresh) {
            r.auditAnchor = uint64(block.number);
            emit DrawRescheduled(jobId, round, AUDIT_SLOT, uint64(block.number));
            return;
        }
        address committer = r.committer;
        uint256 available = _pool.count - (_pool.contains(committer) ? 1 : 0);
        uint256 size = phase == Phase.AwaitingPanel ? AUDIT_PANEL_SIZE : ESCALATION_PANEL;
        if (available < size) size = available == 0 ? 1 : available; // an empty pool makes the draw revert
        address[] memory panel = _pool.draw(keccak256(abi.encode(hash, jobId, round, "audit", phase)), size, committer);
        r.auditDrawnAt = uint64(block.timestamp);
        if (phase == Phase.AwaitingPanel) {
            r.auditors = panel;
            phase = Phase.Voting;
        } else {
            r.auditEscPanel = panel;
            r.auditEscStake = _pool.weightOfAll(panel);
            phase = Phase.Escalated;
            _holdCommitterBond(jobId, committer); // until the escalation can lapse
        }
        r.auditPhase = phase;
        emit AuditorsDrawn(jobId, round, phase, panel);
    }

    /// @notice See IJobManager.auditRound.
    function auditRound(uint256 jobId, uint32 round, bool ok) external onlyDelegated {
        Job storage job = _job(jobId);
        if (round >= job.committedRounds) revert JobManagerRoundNotCommitted(jobId, round);
        Round storage r = _rounds[jobId][round];
        if (r.audit != AuditOutcome.Open) revert JobManagerAuditClosed(jobId, round);
        Phase phase = r.auditPhase;
        if (phase != Phase.Voting && phase != Phase.Escalated) revert JobManagerAuditNotVoting(jobId, round, phase);
        uint256 stage = phase == Phase.Voting ? 0 : 1;
        ValidatorInfo storage v = validators[msg.sender];
        uint256 index = _indexOf(stage == 0 ? r.auditors : r.auditEscPanel, msg.sender);
        if (index == type(uint256).max || !v.registered) revert JobManagerNotAuditor(jobId, round, msg.sender);
        uint64 bit = uint64(1) << uint64(index);
        uint64 voted = r.auditVoted[stage];
        if (voted & bit != 0) revert JobManagerAlreadyAudited(jobId, round, msg.sender);
        uint64 okMask = r.auditOkMask[stage];
        ++v.openVotes;
        r.auditVoted[stage] = voted | bit;
        if (ok) r.auditOkMask[stage] = okMask | bit;
        emit RoundAudited(jobId, round, msg.sender, ok);
        if (stage == 0) {
            if (ok) ++r.auditOk;
            else ++r.auditFailed;
            // Every earlier vote agreed (a disagreement escalates at once), so the ok mask says which way they went.
            if (voted != 0 && (okMask != 0) != ok) _escalateAudit(jobId, round, r);
            else if (voted | bit == uint64((1 << r.auditors.length) - 1)) _settleAudit(jobId, job, round, r, ok);
        } else {
            // Stake-weighted: the side holding more than half of the panel's stake (at its draw) settles.
            uint256 tally = (ok ? r.auditEscOkStake : r.auditEscFailedStake) + v.stake;
            if (ok) r.auditEscOkStake = tally;
            else r.auditEscFailedStake = tally;
            if (tally > r.auditEscStake / 2) _settleAudit(jobId, job, round, r, ok);
        }
    }

    /// @notice See IJobManager.escalateAudit.
    function escalateAudit(uint256 jobId, uint32 round) external onlyDelegated {
        Round storage r = _stalledAudit(jobId, round, Phase.Voting);
        r.auditSilent = uint16(((1 << r.auditors.length) - 1) & ~uint256(r.auditVoted[0]));
        _escalateAudit(jobId, round, r);
    }

    /// @notice See IJobManager.lapseAudit.
    function lapseAudit(uint256 jobId, uint32 round) external onlyDelegated {
        Round storage r = _stalledAudit(jobId, round, Phase.Escalated);
        r.audit = AuditOutcome.Lapsed;
        // Judged as if every voter agreed with the outcome: votes released, nobody slashed.
        _judgeAudit(jobId, r.auditors, r.auditVoted[0], r.auditVoted[0], 0);
        _judgeAudit(jobId, r.auditEscPanel, r.auditVoted[1], r.auditVoted[1], 0);
        emit RoundAuditLapsed(jobId, round);
    }

    /// @notice See IJobManager.AUDIT_PANEL.
    function AUDIT_PANEL() external pure returns (uint256) {
        return AUDIT_PANEL_SIZE;
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
            (bool fresh, bytes32 hash) = _drawSeed(_anchorOf(u));
            if (u.status != UpdateStatus.Pending || !fresh) {
                revert JobManagerDrawNotReady(block.number + DRAW_DELAY + 1);
            }
            challenge = _challengeOf(keccak256(abi.encode(hash, jobId, round, slot, Phase.AwaitingPanel)));
        }
        return keccak256(abi.encode(challenge, jobId, round, slot));
    }





    /// @notice See IJobManager.successor.
    function successor(uint256 jobId) external view returns (address) {
        return _successor(jobId, _jobs[jobId]);
    }






    function _escalateAudit(uint256 jobId, uint32 round, Round storage r) private {
        r.auditPhase = Phase.AwaitingEscalation;
        r.auditAnchor = uint64(block.number);
        _holdCommitterBond(jobId, r.committer);
        emit AuditEscalated(jobId, round, uint64(block.number));
    }

    /// @dev Keeps a standing committer's bond at stake for one more lease from now (withdrawCandidacy), so a
    /// dispute that an escalation settles still finds it.
    function _holdCommitterBond(uint256 jobId, address committer) private {
        Candidate storage c = _candidacy[jobId][committer];
        if (c.standing) c.lastCommitAt = uint64(block.timestamp);
    }

    /// @dev The round's audit, open in `phase` with that panel's window over (else AuditWindowOpen).
    function _stalledAudit(uint256 jobId, uint32 round, Phase phase) private view returns (Round storage r) {
        r = _rounds[jobId][round];
        uint256 deadline = _auditDeadline(_job(jobId), r);
        if (r.audit != AuditOutcome.Open || r.auditPhase != phase || block.timestamp <= deadline) {
            revert JobManagerAuditWindowOpen(jobId, round, deadline);
        }
    }

    /// @dev Settles a round's audit: the losers of both panels (and first-panel members silent past the window)
    /// are slashed, and the escalation's winners (at least one: the settling side holds more than half of its
    /// stake) share what they lost, the remainder burnt. Without an escalation the first panel was complete and
    /// unanimous: nobody lost. A failed verdict disputes the round and burns the committer's bond.
    function _settleAudit(uint256 jobId, Job storage job, uint32 round, Round storage r, bool ok) private {
        r.audit = ok ? AuditOutcome.Passed : AuditOutcome.Disputed;
        (uint256 slashed, uint256 votes) = _judgeAudit(jobId, r.auditors, r.auditVoted[0], _agreeing(r, 0, ok), r.auditSilent);
        address[] storage esc = r.auditEscPanel;
        if (esc.length != 0) {
            uint256 agree = _agreeing(r, 1, ok);
            uint256 lost;
            (lost, votes) = _judgeAudit(jobId, esc, r.auditVoted[1], agree, 0);
            slashed += lost;
            uint256 share = slashed / votes;
            _burn(slashed % votes);
            for (uint256 i; share != 0 && i < esc.length; ++i) {
                if (agree & (1 << i) == 0) continue;
                stakeHeld -= share;
                totalPaid += share;
                balanceOf[esc[i]] += share;
                emit SlashRewardPaid(jobId, esc[i], share);
            }
        }
        if (ok) {
            emit RoundAuditPassed(jobId, round, uint8(votes));
        } else {
            job.disputed = true;
            emit RoundDisputed(jobId, round, uint8(votes));
            _forfeit(jobId, r.committer, 10000);
        }
    }

    /// @dev The members of panel `stage` (0 first, 1 escalation) that voted `ok`.
    function _agreeing(Round storage r, uint256 stage, bool ok) private view returns (uint256) {
        uint256 okMask = r.auditOkMask[stage];
        return ok ? okMask : r.auditVoted[stage] & ~okMask;
    }

    /// @dev Releases a panel's votes and slashes its voters outside `agree` and its members in `silent`.
    /// @return slashed Stake taken (not yet burnt or paid). @return winners Voters in `agree`.
    function _judgeAudit(
        uint256 jobId,
        address[] storage panel,
        uint256 voted,
        uint256 agree,
        uint256 silent
    ) private returns (uint256 slashed, uint256 winners) {
        uint256 n = panel.length;
        for (uint256 i; i < n; ++i) {
            uint256 bit = 1 << i;
            address v = panel[i];
            if (voted & bit == 0) {
                if (silent & bit != 0) slashed += _slashValidator(jobId, v);
                continue;
            }
            --validators[v].openVotes;
            if (agree & bit != 0) ++winners;
            else slashed += _slashValidator(jobId, v);
        }
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
