// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {JobManagerState} from "./JobManagerState.sol";
import {JobManagerLib} from "./JobManagerLib.sol";

/// @title JobManagerVotes: the draws of update panels and the fast path of a verdict from signed votes
/// @notice Validators sign their votes off-chain (EIP-712 `Vote`, the tickets' domain); anyone posts a whole first
/// panel's signatures, many updates per call. The panel is recomputed inside the call from the update's draw seed
/// (the same stake-weighted draw as `drawValidators`) and never stored. Unanimous signatures settle the update
/// as the last on-chain vote would; signatures that disagree are recorded as on-chain votes and escalate. Once
/// the first panel is drawn on-chain (or anything was voted), only the on-chain path remains.
/// @dev Part of JobManagerExtension (reached through JobManager's fallback, DELEGATECALL, JobManager's storage).
abstract contract JobManagerVotes is JobManagerState {
    using JobManagerLib for JobManagerLib.SumTree;

    // The account this code was deployed at: a direct call (not delegated) is refused.
    address private immutable _votesHome = address(this);

    /// @notice See IJobManager.drawValidators.
    function drawValidators(uint256 jobId, uint32 round, uint32 slot) external {
        if (address(this) == _votesHome) revert JobManagerNotDelegated();
        Job storage job = _activeJob(jobId);
        Update storage u = _updates[jobId][round][slot];
        Phase phase = u.phase;
        if (u.status != UpdateStatus.Pending || (phase != Phase.AwaitingPanel && phase != Phase.AwaitingEscalation)) {
            revert JobManagerNothingToDraw(jobId, round, slot);
        }
        (bool fresh, bytes32 hash) = _drawSeed(_anchorOf(u));
        if (!fresh) {
            _reanchorUpdate(jobId, round, slot, u);
            return;
        }
        address[] memory panel;
        if (phase == Phase.AwaitingPanel) {
            bytes32 seed;
            (panel, seed) = _firstPanel(jobId, round, slot, hash, job.params.quorum, u.trainer);
            u.panel = panel;
            u.challenge = _challengeOf(seed);
            u.drawnAt = uint32(block.timestamp);
            u.phase = Phase.Voting;
        } else {
            bytes32 seed = keccak256(abi.encode(hash, jobId, round, slot, phase));
            uint256 available = _pool.count - (_pool.contains(u.trainer) ? 1 : 0);
            uint256 size = available < ESCALATION_PANEL ? available : ESCALATION_PANEL;
            panel = _pool.draw(seed, size == 0 ? 1 : size, u.trainer);
            u.escPanel = panel;
            u.escStake = uint128(_pool.weightOfAll(panel));
            u.phase = Phase.Escalated;
        }
        emit ValidatorsDrawn(jobId, round, slot, u.phase, panel);
    }

    /// @notice See IJobManager.settleUpdates.
    function settleUpdates(uint256 jobId, uint32 round, VoteSet[] calldata sets) external nonReentrant {
        if (address(this) == _votesHome) revert JobManagerNotDelegated();
        Job storage job = _activeJob(jobId);
        uint8 quorum = job.params.quorum;
        uint256 n = sets.length;
        for (uint256 i; i < n; ++i) _settleSigned(jobId, job, round, quorum, sets[i]);
    }

    /// @notice See IJobManager.votePanel.
    function votePanel(
        uint256 jobId,
        uint32 round,
        uint32 slot
    ) external view returns (address[] memory panel, uint64 anchorBlock) {
        Update storage u = _updates[jobId][round][slot];
        anchorBlock = uint64(_anchorOf(u));
        if (u.status != UpdateStatus.Pending || u.phase != Phase.AwaitingPanel) return (panel, anchorBlock);
        (bool fresh, bytes32 hash) = _drawSeed(anchorBlock);
        if (fresh) (panel, ) = _firstPanel(jobId, round, slot, hash, _jobs[jobId].params.quorum, u.trainer);
    }

    /// @notice See IJobManager.voteDigest.
    function voteDigest(Vote calldata vote) external view returns (bytes32) {
        return _hashTypedDataV4(JobManagerLib.hashVote(vote.jobId, vote.round, vote.slot, vote.anchorBlock, vote.valid));
    }

    /// @dev One update of a settleUpdates batch: checks every panel member's signature over its vote, then settles
    /// (unanimous) or records the votes and escalates (split). A draw whose seed went stale re-anchors instead (the
    /// signatures named the old anchor: the panel signs again for the new one).
    function _settleSigned(uint256 jobId, Job storage job, uint32 round, uint8 quorum, VoteSet calldata set) private {
        uint32 slot = set.slot;
        Update storage u = _updates[jobId][round][slot];
        if (u.status != UpdateStatus.Pending || u.phase != Phase.AwaitingPanel) {
            revert JobManagerFastPathClosed(jobId, round, slot);
        }
        uint48 anchor = uint48(_anchorOf(u));
        (bool fresh, bytes32 hash) = _drawSeed(anchor);
        if (!fresh) {
            _reanchorUpdate(jobId, round, slot, u);
            return;
        }
        (address[] memory panel, bytes32 seed) = _firstPanel(jobId, round, slot, hash, quorum, u.trainer);
        _checkVotes(jobId, round, slot, anchor, panel, set);
        _decide(jobId, job, round, slot, u, panel, seed, set.validMask);
    }

    /// @dev Reverts unless `set` holds one valid signature per panel member, in draw order.
    function _checkVotes(
        uint256 jobId,
        uint32 round,
        uint32 slot,
        uint48 anchor,
        address[] memory panel,
        VoteSet calldata set
    ) private view {
        uint256 q = panel.length;
        uint256 validMask = set.validMask;
        if (set.signatures.length != 65 * q || validMask >> q != 0) revert JobManagerInvalidVoteSet(jobId, round, slot, q);
        // Two possible votes, so at most two digests, hashed once per update rather than once per member (a
        // unanimous set needs one).
        bytes32 yes = validMask != 0 ? _hashTypedDataV4(JobManagerLib.hashVote(jobId, round, slot, anchor, true)) : bytes32(0);
        bytes32 no = validMask != (uint256(1) << q) - 1
            ? _hashTypedDataV4(JobManagerLib.hashVote(jobId, round, slot, anchor, false))
            : bytes32(0);
        for (uint256 k; k < q; ++k) {
            bytes32 digest = (validMask >> k) & 1 == 1 ? yes : no;
            _checkVote(jobId, round, slot, digest, set.signatures[65 * k:65 * k + 65], panel[k]);
        }
    }

    /// @dev Unanimous votes settle as the last of q agreeing on-chain votes would (every member earns the fee,
    /// nothing to slash), without storing the panel or the votes; split votes are recorded and escalate.
    function _decide(
        uint256 jobId,
        Job storage job,
        uint32 round,
        uint32 slot,
        Update storage u,
        address[] memory panel,
        bytes32 seed,
        uint256 validMask
    ) private {
        uint256 q = panel.length;
        if (validMask != 0 && validMask != (uint256(1) << q) - 1) {
            _recordSplit(jobId, round, slot, u, panel, seed, validMask);
            return;
        }
        _settleTrainer(jobId, job, round, slot, u, validMask != 0);
        uint256 fee = job.params.validatorFee;
        if (fee == 0) return;
        for (uint256 k; k < q; ++k) {
            balanceOf[panel[k]] += fee;
            emit FeePaid(jobId, panel[k], fee);
        }
        // _creditFee's bookkeeping, once for the whole panel.
        uint256 total = fee * q;
        job.spent += total;
        escrowHeld -= total;
        totalPaid += total;
    }

    /// @dev Reverts unless `sig` (65 bytes: r, s, v) is panel member `member`'s signature over `digest`.
    function _checkVote(
        uint256 jobId,
        uint32 round,
        uint32 slot,
        bytes32 digest,
        bytes calldata sig,
        address member
    ) private pure {
        // slither-disable-next-line unused-return
        (address signer, ECDSA.RecoverError err, ) = ECDSA.tryRecover(
            digest,
            uint8(sig[64]),
            bytes32(sig[0:32]),
            bytes32(sig[32:64])
        ); // the error's argument adds nothing to ours
        if (err != ECDSA.RecoverError.NoError || signer != member) {
            revert JobManagerBadVoteSignature(jobId, round, slot, signer, member);
        }
    }

    /// @dev A split first panel: its votes become on-chain votes (panel stored, each member's vote open until the
    /// escalation settles, as if each had called validateUpdate) and the update escalates.
    function _recordSplit(
        uint256 jobId,
        uint32 round,
        uint32 slot,
        Update storage u,
        address[] memory panel,
        bytes32 seed,
        uint256 validMask
    ) private {
        uint256 q = panel.length;
        u.panel = panel;
        u.challenge = _challengeOf(seed);
        u.drawnAt = uint32(block.timestamp);
        u.votedMask = uint16((uint256(1) << q) - 1);
        u.validMask = uint16(validMask);
        emit ValidatorsDrawn(jobId, round, slot, Phase.Voting, panel);
        for (uint256 k; k < q; ++k) {
            ++validators[panel[k]].openVotes;
            emit UpdateVoted(jobId, round, slot, panel[k], Phase.Voting, (validMask >> k) & 1 == 1);
        }
        _escalate(jobId, round, slot, u);
    }
}
