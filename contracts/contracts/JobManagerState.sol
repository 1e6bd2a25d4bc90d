// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {IJobManagerTypes} from "./IJobManager.sol";
import {JobManagerLib} from "./JobManagerLib.sol";

/// @title JobManagerState: the storage, configuration and shared rules of JobManager and its extension
/// @notice JobManager runs the hot paths (registration, jobs, updates, verdicts, commits, money) and delegates
/// the rest (leader candidacy, audits, views) to JobManagerExtension with DELEGATECALL, so both halves must see
/// one storage layout: both inherit this contract and declare no state of their own (immutables only).
/// @dev Accounting, exact at every step: escrowHeld + stakeHeld + totalPaid + totalRefunded + totalSlashed ==
///      totalDeposits + totalStakes (stakes include leader bonds). Loops are bounded by MAX_TASKS_PER_ROUND,
///      ESCALATION_PANEL, MAX_CANDIDATES, log2(MAX_VALIDATORS) and a trainer's own submissions.
abstract contract JobManagerState is IJobManagerTypes, ReentrancyGuard, EIP712 {
    using JobManagerLib for JobManagerLib.SumTree;

    // ------------------------------------------------------------------ constants

    /// @notice Upper bound on tasksPerRound (a slot mask is 64 bits).
    uint32 public constant MAX_TASKS_PER_ROUND = 64;
    /// @notice Upper bound on quorum (first-panel masks are 16 bits).
    uint8 public constant MAX_QUORUM = 15;
    /// @notice Size of an escalation panel (capped by the pool).
    uint256 public constant ESCALATION_PANEL = 63;
    /// @dev Size of a round's first audit panel (capped by the pool): a third of the stake fills a panel of 7 with
    /// probability (1/3)^7 = 0.05 % (docs/economy.md). Served by the extension as AUDIT_PANEL() (one getter less
    /// in JobManager's bytecode).
    uint256 internal constant AUDIT_PANEL_SIZE = 7;
    /// @notice Upper bound on maxWorkUnits (an update's work units are stored in 16 bits).
    uint32 public constant MAX_WORK_UNITS = type(uint16).max;
    /// @notice Upper bound on a claimed loss reduction (micro-units, stored in 32 bits: 4294.967295 loss units);
    /// a trainer claims min(reduction, MAX_LOSS_REDUCTION) and validators check the same clipped claim.
    uint64 public constant MAX_LOSS_REDUCTION = type(uint32).max;
    /// @notice Upper bound on rounds (bounds a trainer's payout walk).
    uint32 public constant MAX_ROUNDS = 1000;
    /// @notice Upper bound on the candidates of one job.
    uint256 public constant MAX_CANDIDATES = 16;
    /// @notice Upper bound on the validator pool.
    uint256 public constant MAX_VALIDATORS = 1024;
    /// @notice Upper bound on a CID's byte length.
    uint256 public constant MAX_CID_LENGTH = 128;
    /// @notice Upper bound on leaseSeconds.
    uint64 public constant MAX_LEASE_SECONDS = 7 days;
    /// @notice A job without progress for this many leases can be cancelled.
    uint64 public constant STALL_LEASES = 4;
    /// @notice Blocks between the act that fixes a draw's inputs and the block whose hash draws.
    uint256 public constant DRAW_DELAY = 2;
    /// @notice A trainer's bond per pending update is this multiple of the most the update can earn.
    uint256 public constant SLASH_MULTIPLE = 3;
    /// @notice Share of a lapsed leader's bond that is burnt, in basis points.
    uint256 public constant LAPSE_FORFEIT_BPS = 5000;

    uint32 internal constant AUDIT_SLOT = type(uint32).max;

    // ------------------------------------------------------------------ storage types

    struct Job {
        JobParams params;
        address customer;
        JobStatus status;
        uint32 committedRounds;
        uint32 term;
        bool disputed;
        address leader;
        uint64 leaseExpiry;
        uint64 progressAt;
        uint64 successorAnchor;
        uint256 deposit;
        uint256 spent;
        uint256 refunded;
    }

    struct Candidate {
        uint128 bond;
        uint64 lastCommitAt; // its bond stays one lease past this: its last commit, or an audit of one escalating
        bool standing;
    }

    /// @dev Slot 0 is written by submissions, verdicts, the commit (pricing) and the payout; slot 1 by the commit
    /// (with the head of a checkpoint CID of the usual 36-byte form, its digest in `checkpointDigest`).
    struct Round {
        uint64 submittedMask;
        uint64 acceptedMask;
        bool priced;
        bool paid; // every accepted update's pay credited (one payout call credits the whole round)
        uint32 units; // accepted work units (set by pricing)
        uint64 totalLoss; // accepted claims of loss reduction (set by pricing)
        // slot 1
        address committer;
        uint64 auditAnchor; // the block whose hash (+ DRAW_DELAY) draws the audit panel of the current phase
        bytes4 checkpointHead; // a 36-byte checkpoint CID's first 4 bytes (multibase-free CIDv1 header)
        bytes32 checkpointDigest; // ... and its last 32 (the multihash digest); zero: the CID is in checkpointCid
        AuditOutcome audit;
        Phase auditPhase; // AwaitingPanel, Voting (first panel), AwaitingEscalation, Escalated
        uint8 auditOk; // first-panel votes
        uint8 auditFailed;
        uint16 auditSilent; // first-panel members that had not voted when its window closed
        uint64 auditDrawnAt; // when the current panel was drawn (its window starts)
        uint64[2] auditVoted; // [first panel, escalation panel]: bit i is panel member i
        uint64[2] auditOkMask;
        uint256 auditEscStake; // the escalation panel's stake at its draw
        uint256 auditEscOkStake;
        uint256 auditEscFailedStake;
        address[] auditors;
        address[] auditEscPanel;
        bytes checkpointCid;
    }

    /// @dev Packed so that a submission writes one new slot (trainer .. lossReduction) and a fast-path settlement
    /// rewrites it; the rest is written only by the on-chain vote path. Pay is not stored: it follows from the
    /// round's totals (`_payOf`), and the round says whether it was paid.
    struct Update {
        address trainer;
        UpdateStatus status;
        Phase phase;
        uint16 workUnits; // <= maxWorkUnits <= MAX_WORK_UNITS
        uint32 anchorBlock; // the low 32 bits of the anchor's block number (`_anchorOf`)
        uint32 lossReduction; // <= MAX_LOSS_REDUCTION
        // slot 1
        uint32 drawnAt; // when the first panel was drawn on-chain (its vote window starts)
        uint16 votedMask;
        uint16 validMask;
        uint64 escVotedMask;
        uint64 escValidMask;
        uint64 challenge;
        // slot 2
        uint16 silentMask; // first-panel members that had not voted when the window closed
        uint128 escStake;
        uint128 escValidStake;
        uint128 escInvalidStake;
        address[] panel;
        address[] escPanel;
    }

    // ------------------------------------------------------------------ configuration

    /// @notice Minimum stake of a trainer (wei).
    uint256 public immutable minTrainerStake;
    /// @notice Minimum stake of a validator (wei); a validator slashed below it leaves the pool.
    uint256 public immutable minValidatorStake;
    /// @notice Floor of a job's update bond (wei).
    uint256 public immutable minUpdateBond;
    /// @notice Stake a voter on the losing side of a settled verdict loses (capped at its stake).
    uint256 public immutable validatorSlash;
    /// @notice Minimum bond of a leader candidate (wei).
    uint256 public immutable minLeaderBond;
    /// @notice Seconds between requestDeregistration and completeDeregistration.
    uint64 public immutable deregistrationDelay;
    /// @notice The smallest quorum a job may choose: an attacker holding a share s of the pool's stake fills a whole
    /// first panel with probability at most s^quorum (5 at s = 1/3: 0.41 %).
    uint8 public immutable minQuorum;

    // ------------------------------------------------------------------ state
    // Slither's uninitialized-state and constable-states findings on these variables are false positives: the
    // extension only reads them, JobManager writes them, and both run on JobManager's storage (DELEGATECALL).

    /// @notice Number of jobs created; ids are 1 .. jobCount.
    // slither-disable-next-line uninitialized-state,constable-states
    uint256 public jobCount;
    /// @notice Withdrawable balance of an account (wei).
    mapping(address account => uint256) public balanceOf;
    /// @notice Trainer registrations.
    // slither-disable-next-line uninitialized-state,constable-states
    mapping(address account => TrainerInfo) public trainers;
    /// @notice Validator registrations.
    mapping(address account => ValidatorInfo) public validators;
    /// @notice When an account may complete its deregistration; 0 while it is not leaving.
    // slither-disable-next-line uninitialized-state,constable-states
    mapping(address account => uint64) public exitAvailableAt;

    /// @notice Sum of all deposits received.
    // slither-disable-next-line uninitialized-state,constable-states
    uint256 public totalDeposits;
    /// @notice Sum of all stakes and leader bonds received.
    uint256 public totalStakes;
    /// @notice Earnings credited (trainer pay, fees, slash rewards).
    uint256 public totalPaid;
    /// @notice Deposit refunds, returned stakes and bonds credited.
    uint256 public totalRefunded;
    /// @notice Stake and bonds burnt (locked in this contract forever).
    uint256 public totalSlashed;
    /// @notice Ether sent out by withdraw.
    // slither-disable-next-line uninitialized-state,constable-states
    uint256 public totalWithdrawn;
    /// @notice Deposits not yet credited or refunded (includes owed, uncollected trainer pay).
    uint256 public escrowHeld;
    /// @notice Stakes and bonds still locked.
    uint256 public stakeHeld;

    JobManagerLib.SumTree internal _pool;
    mapping(uint256 jobId => Job) internal _jobs;
    // slither-disable-next-line uninitialized-state,constable-states
    mapping(uint256 jobId => address[]) internal _candidates;
    mapping(uint256 jobId => mapping(address account => Candidate)) internal _candidacy;
    mapping(uint256 jobId => mapping(uint32 round => Round)) internal _rounds;
    // slither-disable-next-line uninitialized-state,constable-states
    mapping(uint256 jobId => mapping(uint32 round => mapping(uint32 slot => Update))) internal _updates;

    // ------------------------------------------------------------------ constructor

    /// @param minTrainerStake_ Minimum trainer stake (wei).
    /// @param minValidatorStake_ Minimum validator stake (wei, > 0: it is the draw weight).
    /// @param minUpdateBond_ Floor of the per-update bond (wei).
    /// @param validatorSlash_ Stake a losing voter loses (wei).
    /// @param minLeaderBond_ Minimum candidate bond (wei).
    /// @param deregistrationDelay_ Seconds between requesting and completing deregistration.
    /// @param minQuorum_ Smallest quorum of a job (1 .. MAX_QUORUM).
    constructor(
        uint256 minTrainerStake_,
        uint256 minValidatorStake_,
        uint256 minUpdateBond_,
        uint256 validatorSlash_,
        uint256 minLeaderBond_,
        uint64 deregistrationDelay_,
        uint8 minQuorum_
    ) EIP712("dtnode JobManager", "2") {
        if (minValidatorStake_ == 0) revert JobManagerInvalidJobParam("minValidatorStake");
        if (minQuorum_ == 0 || minQuorum_ > MAX_QUORUM) revert JobManagerInvalidJobParam("minQuorum");
        minQuorum = minQuorum_;
        minTrainerStake = minTrainerStake_;
        minValidatorStake = minValidatorStake_;
        minUpdateBond = minUpdateBond_;
        validatorSlash = validatorSlash_;
        minLeaderBond = minLeaderBond_;
        deregistrationDelay = deregistrationDelay_;
    }

    // ------------------------------------------------------------------ shared rules

    function _job(uint256 jobId) internal view returns (Job storage job) {
        job = _jobs[jobId];
        if (job.status == JobStatus.None) revert JobManagerUnknownJob(jobId);
    }

    function _activeJob(uint256 jobId) internal view returns (Job storage job) {
        job = _job(jobId);
        if (job.status != JobStatus.Active) revert JobManagerJobNotActive(jobId, job.status);
    }

    function _cancellableAfter(Job storage job) internal view returns (uint256) {
        uint256 lease = job.params.leaseSeconds;
        uint256 served = uint256(job.leaseExpiry) + lease;
        uint256 stalled = uint256(job.progressAt) + STALL_LEASES * lease;
        return served < stalled ? served : stalled;
    }

    function _isActiveNode(address account) internal view returns (bool) {
        if (exitAvailableAt[account] != 0) return false;
        return trainers[account].registered || validators[account].registered;
    }

    function _checkCid(bytes calldata cid) internal pure {
        if (cid.length == 0 || cid.length > MAX_CID_LENGTH) revert JobManagerInvalidCid(cid.length);
    }

    /// @dev The most one update can earn: its base plus the whole bonus pool of a full round.
    function _maxUpdatePay(uint32 units, uint128 base, uint128 bonus, uint32 tasks) internal pure returns (uint256) {
        return uint256(units) * (uint256(base) + uint256(bonus) * tasks);
    }

    function _updateBond(JobParams storage p) internal view returns (uint256) {
        uint256 bond = SLASH_MULTIPLE * _maxUpdatePay(p.maxWorkUnits, p.baseRate, p.bonusRate, p.tasksPerRound);
        return bond > minUpdateBond ? bond : minUpdateBond;
    }

    function _addStake(uint256 amount) internal {
        totalStakes += amount;
        stakeHeld += amount;
    }

    /// @dev Returns locked stake or bond to its owner's balance.
    function _release(address account, uint256 amount) internal {
        stakeHeld -= amount;
        totalRefunded += amount;
        balanceOf[account] += amount;
    }

    function _burn(uint256 amount) internal {
        stakeHeld -= amount;
        totalSlashed += amount;
    }

    function _creditFee(uint256 jobId, Job storage job, address account, uint256 amount) internal {
        if (amount == 0) return;
        job.spent += amount;
        escrowHeld -= amount;
        totalPaid += amount;
        balanceOf[account] += amount;
        emit FeePaid(jobId, account, amount);
    }

    function _refund(Job storage job) internal returns (uint256 refund) {
        refund = job.deposit - job.spent;
        job.refunded = refund;
        escrowHeld -= refund;
        totalRefunded += refund;
        balanceOf[job.customer] += refund;
    }

    function _elect(uint256 jobId, Job storage job, address leader) internal {
        uint32 term = job.term + 1;
        uint64 leaseExpiry = uint64(block.timestamp) + job.params.leaseSeconds;
        job.leader = leader;
        job.term = term;
        job.leaseExpiry = leaseExpiry;
        job.successorAnchor = 0;
        emit LeaderElected(jobId, leader, term, leaseExpiry);
    }

    /// @dev The candidate (not the leader) drawn in proportion to bond from blockhash(successorAnchor + DRAW_DELAY);
    /// zero while no draw was requested or its block is not mined, or once its hash is gone.
    function _successor(uint256 jobId, Job storage job) internal view returns (address) {
        uint64 anchor = job.successorAnchor;
        if (anchor == 0) return address(0);
        (bool ready, bytes32 hash) = JobManagerLib.seedAt(anchor, DRAW_DELAY);
        if (!ready || hash == bytes32(0)) return address(0);
        address[] storage list = _candidates[jobId];
        uint256 n = list.length;
        uint256[] memory bonds = new uint256[](n);
        for (uint256 i; i < n; ++i) {
            if (list[i] != job.leader) bonds[i] = _candidacy[jobId][list[i]].bond;
        }
        uint256 index = JobManagerLib.pickWeighted(bonds, keccak256(abi.encode(hash, jobId, job.term)));
        return index == type(uint256).max ? address(0) : list[index];
    }

    /// @dev Removes a candidate and credits its remaining bond back.
    function _endCandidacy(uint256 jobId, address account) internal {
        address[] storage list = _candidates[jobId];
        uint256 n = list.length;
        for (uint256 i; i < n; ++i) {
            if (list[i] == account) {
                list[i] = list[n - 1];
                list.pop();
                break;
            }
        }
        uint256 bond = _candidacy[jobId][account].bond;
        delete _candidacy[jobId][account];
        _release(account, bond);
        emit CandidacyEnded(jobId, account, bond);
    }

    /// @dev Burns `bps` of a candidate's bond (nothing when it no longer stands).
    function _forfeit(uint256 jobId, address account, uint256 bps) internal {
        Candidate storage c = _candidacy[jobId][account];
        uint256 amount = (uint256(c.bond) * bps) / 10000;
        if (amount == 0) return;
        c.bond -= uint128(amount);
        _burn(amount);
        emit LeaderBondForfeited(jobId, account, amount);
    }

    function _indexOf(address[] storage list, address account) internal view returns (uint256) {
        uint256 n = list.length;
        for (uint256 i; i < n; ++i) {
            if (list[i] == account) return i;
        }
        return type(uint256).max;
    }

    // ------------------------------------------------------------------ draws and verdicts

    /// @dev The one re-anchor rule of every draw: the hash of block `anchor + DRAW_DELAY`, fresh unless the draw
    /// must move to a new anchor because that hash is gone (older than 256 blocks) or the validator pool changed
    /// in a block after the anchor (a join, exit or slash made once the seed block is known could steer the draw;
    /// one made in the anchor's block or before precedes the seed block, whose hash it cannot know). Reverts with
    /// JobManagerDrawNotReady before that block is mined.
    function _drawSeed(uint256 anchor) internal view returns (bool fresh, bytes32 hash) {
        bool ready;
        (ready, hash) = JobManagerLib.seedAt(anchor, DRAW_DELAY);
        if (!ready) revert JobManagerDrawNotReady(anchor + DRAW_DELAY + 1);
        fresh = hash != bytes32(0) && _pool.changedAt <= anchor;
    }

    /// @dev An update's anchor block from the 32 bits stored: the latest block number with those low bits (exact
    /// for any anchor less than 2^32 blocks old; a draw's anchor is re-anchored once it is 256 blocks old).
    function _anchorOf(Update storage u) internal view returns (uint256) {
        unchecked {
            return block.number - uint32(uint32(block.number) - u.anchorBlock);
        }
    }

    /// @dev Moves an update's pending draw to this block.
    function _reanchorUpdate(uint256 jobId, uint32 round, uint32 slot, Update storage u) internal {
        u.anchorBlock = uint32(block.number);
        emit DrawRescheduled(jobId, round, slot, uint64(block.number));
    }

    /// @dev An accepted update's pay in a priced round: baseRate per work unit plus its share of the bonus pool
    /// (bonusRate per accepted work unit) in proportion to its claim of loss reduction among the accepted claims
    /// (floor division: dust stays in the deposit). Fits 128 bits: _checkParams bounds maxWorkUnits * (baseRate +
    /// bonusRate * tasksPerRound).
    function _payOf(JobParams storage p, Round storage r, Update storage u) internal view returns (uint256 amount) {
        amount = uint256(p.baseRate) * u.workUnits;
        uint256 totalLoss = r.totalLoss;
        if (totalLoss != 0) amount += (uint256(p.bonusRate) * r.units * u.lossReduction) / totalLoss;
    }

    /// @dev A round's checkpoint CID as committed.
    function _checkpointOf(Round storage r) internal view returns (bytes memory) {
        bytes32 digest = r.checkpointDigest;
        return digest == bytes32(0) ? r.checkpointCid : abi.encodePacked(r.checkpointHead, digest);
    }

    /// @dev The first panel of an update whose draw `hash` is valid: the same stake-weighted draw whether it is
    /// stored by drawValidators or recomputed by the fast path (settleUpdates), so both see one panel.
    /// @return panel The members, in draw order. @return seed The draw's seed (the challenge derives from it).
    function _firstPanel(uint256 jobId, uint32 round, uint32 slot, bytes32 hash, uint8 quorum, address trainer)
        internal
        view
        returns (address[] memory panel, bytes32 seed)
    {
        seed = keccak256(abi.encode(hash, jobId, round, slot, Phase.AwaitingPanel));
        panel = _pool.draw(seed, quorum, trainer);
    }

    /// @dev The challenge of a first panel's seed: which segments the validators replay.
    function _challengeOf(bytes32 seed) internal pure returns (uint64) {
        return uint64(uint256(keccak256(abi.encode(seed, "challenge"))));
    }

    /// @dev A disagreement (or silence): the escalation panel is drawn from a block after this one.
    function _escalate(uint256 jobId, uint32 round, uint32 slot, Update storage u) internal {
        u.phase = Phase.AwaitingEscalation;
        u.anchorBlock = uint32(block.number);
        emit UpdateEscalated(jobId, round, slot, uint64(block.number));
    }

    /// @dev Settles an update: trainer accepted (bond unlocked) or rejected (bond burnt); first-panel voters that
    /// agree earn validatorFee, escalation-panel voters that agree share the losers' slashed stake, every losing
    /// voter is slashed.
    function _settle(uint256 jobId, Job storage job, uint32 round, uint32 slot, Update storage u, bool valid) internal {
        _settleTrainer(jobId, job, round, slot, u, valid);
        uint256 slashed = _judgePanel(jobId, job, u, valid);
        if (u.escPanel.length == 0) {
            if (slashed != 0) _burn(slashed);
        } else {
            _judgeEscalation(jobId, u, valid, slashed);
        }
    }

    /// @dev The trainer's side of a verdict: accepted (bond unlocked, slot in the accepted set) or rejected (bond
    /// burnt).
    function _settleTrainer(uint256 jobId, Job storage job, uint32 round, uint32 slot, Update storage u, bool valid)
        internal
    {
        address trainer = u.trainer;
        TrainerInfo storage t = trainers[trainer];
        uint256 bond = _updateBond(job.params);
        t.locked -= uint96(bond); // locked at submission: fits
        --t.pending;
        if (valid) {
            u.status = UpdateStatus.Accepted;
            _rounds[jobId][round].acceptedMask |= uint64(1) << slot;
            emit UpdateAccepted(jobId, round, slot, trainer);
        } else {
            u.status = UpdateStatus.Rejected;
            t.stake -= uint96(bond);
            _burn(bond);
            emit UpdateRejected(jobId, round, slot, trainer);
            emit TrainerSlashed(jobId, trainer, bond);
        }
    }

    /// @dev First panel: voters that agree with the verdict earn validatorFee, the others are slashed.
    /// @return slashed Stake taken from the losers (not yet burnt or paid).
    function _judgePanel(uint256 jobId, Job storage job, Update storage u, bool valid) internal returns (uint256 slashed) {
        uint256 fee = job.params.validatorFee;
        address[] storage panel = u.panel;
        uint256 voted = u.votedMask;
        uint256 agree = valid ? u.validMask : voted & ~uint256(u.validMask);
        uint256 silent = u.silentMask;
        uint256 n = panel.length;
        for (uint256 i; i < n; ++i) {
            if (voted & (1 << i) == 0) {
                // Silence past the vote window is a vote against whatever the escalation settles.
                if (silent & (1 << i) != 0) slashed += _slashValidator(jobId, panel[i]);
                continue;
            }
            address v = panel[i];
            --validators[v].openVotes;
            if (agree & (1 << i) != 0) _creditFee(jobId, job, v, fee);
            else slashed += _slashValidator(jobId, v);
        }
    }

    /// @dev Escalation panel: losers are slashed; the winners share everything the losers of both panels lost
    /// (winners > 0: the settling side holds more than half the panel's stake); the remainder is burnt.
    function _judgeEscalation(uint256 jobId, Update storage u, bool valid, uint256 slashed) internal {
        address[] storage esc = u.escPanel;
        uint256 n = esc.length;
        uint256 voted = u.escVotedMask;
        uint256 agree = valid ? u.escValidMask : voted & ~uint256(u.escValidMask);
        uint256 winners = 0;
        for (uint256 i; i < n; ++i) {
            if (voted & (1 << i) == 0) continue;
            address v = esc[i];
            --validators[v].openVotes;
            if (agree & (1 << i) != 0) ++winners;
            else slashed += _slashValidator(jobId, v);
        }
        uint256 share = slashed / winners;
        _burn(slashed % winners);
        if (share == 0) return;
        for (uint256 i; i < n; ++i) {
            if (agree & (1 << i) == 0) continue;
            address v = esc[i];
            stakeHeld -= share;
            totalPaid += share;
            balanceOf[v] += share;
            emit SlashRewardPaid(jobId, v, share);
        }
    }

    /// @dev The one path out of the pool; the pool holds exactly the registered, non-leaving validators with stake
    /// at least minValidatorStake.
    function _leavePool(address validator) internal {
        if (!_pool.contains(validator)) return;
        _pool.remove(validator);
        emit ValidatorLeftPool(validator, validators[validator].stake);
    }

    /// @dev Takes validatorSlash (capped at its stake) from a validator; the caller burns or redistributes it. A
    /// pool member slashed below the minimum leaves the pool; one still above keeps weight == stake.
    function _slashValidator(uint256 jobId, address validator) internal returns (uint256 amount) {
        ValidatorInfo storage v = validators[validator];
        uint256 stake = v.stake;
        amount = stake < validatorSlash ? stake : validatorSlash;
        if (amount == 0) return 0;
        stake -= amount;
        v.stake = stake;
        emit ValidatorSlashed(jobId, validator, amount);
        if (_pool.contains(validator)) {
            if (stake < minValidatorStake) _leavePool(validator);
            else _pool.lowerWeight(validator, stake);
        }
    }

    /// @dev End of the current audit panel's window: half a lease after the first panel's draw, a lease after the
    /// escalation panel's (0 while no panel votes).
    function _auditDeadline(Job storage job, Round storage r) internal view returns (uint256) {
        Phase phase = r.auditPhase;
        uint256 lease = job.params.leaseSeconds;
        if (phase == Phase.Voting) return uint256(r.auditDrawnAt) + lease / 2;
        if (phase == Phase.Escalated) return uint256(r.auditDrawnAt) + lease;
        return 0;
    }

    /// @dev Half a lease after the first panel's draw (0 before it).
    function _voteDeadline(Job storage job, Update storage u) internal view returns (uint256) {
        uint256 drawnAt = u.drawnAt;
        return drawnAt == 0 ? 0 : drawnAt + job.params.leaseSeconds / 2;
    }

    /// @dev Runs the call's calldata as `target`'s code on this contract's storage (DELEGATECALL) and returns or
    /// reverts with its result: JobManager's fallback (to the extension) and the extension's (to the views).
    function _delegate(address target) internal {
        assembly ("memory-safe") {
            calldatacopy(0, 0, calldatasize())
            let ok := delegatecall(gas(), target, 0, calldatasize(), 0, 0)
            returndatacopy(0, 0, returndatasize())
            if iszero(ok) {
                revert(0, returndatasize())
            }
            return(0, returndatasize())
        }
    }
}
