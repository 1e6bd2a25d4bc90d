// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @title JobManager: escrow, per-job leader election, updates, validation and payouts for dtnode
/// @notice A customer posts a training job with a deposit that covers its worst-case cost. Registered nodes
/// stand as the job's leader (a lease renewed by every committed round, with failover to a successor drawn from
/// chain randomness), trainers submit the CIDs of their update manifests, validators drawn by this contract
/// vote on them, validators audit committed rounds (a disputed job can be cancelled by its customer at once),
/// and every wei that leaves the deposit is credited to a balance that its owner withdraws.
/// @dev Money accounting, exact at every step (the Hardhat invariant test checks it over random call sequences):
///      totalHeld() + totalPaid + totalRefunded + totalSlashed == totalDeposits + totalStakes, where
///      totalHeld() = escrowHeld (unspent or owed deposits) + stakeHeld (locked stakes), totalPaid = earnings
///      credited, totalRefunded = deposit refunds + returned stakes credited, totalSlashed = stake burnt (it stays
///      locked in this contract forever). In ether: balance == totalHeld() + sum(balanceOf) + totalSlashed.
///      Every loop is bounded by MAX_TASKS_PER_ROUND, MAX_QUORUM or a trainer's own submissions.
contract JobManager is ReentrancyGuard {
    // ------------------------------------------------------------------ constants

    /// @notice Upper bound on JobParams.tasksPerRound (bounds the loops in commitRound and cancelJob).
    uint32 public constant MAX_TASKS_PER_ROUND = 64;
    /// @notice Upper bound on JobParams.quorum (a vote bitmask is 16 bits wide).
    uint8 public constant MAX_QUORUM = 15;
    /// @notice Upper bound on JobParams.rounds (bounds a trainer's payout loop).
    uint32 public constant MAX_ROUNDS = 1000;
    /// @notice Upper bound on the candidates of one job.
    uint256 public constant MAX_CANDIDATES = 32;
    /// @notice Upper bound on the byte length of a CID (a CIDv1 with sha2-256 takes 36 bytes).
    uint256 public constant MAX_CID_LENGTH = 128;
    /// @notice Upper bound on JobParams.leaseSeconds, so a dead leader cannot block a job for long.
    uint64 public constant MAX_LEASE_SECONDS = 7 days;
    /// @notice A job that made no progress (first election or commit) for this many leases can be cancelled even
    /// while candidates keep claiming it, so claims without commits cannot hold a deposit hostage.
    uint64 public constant STALL_LEASES = 4;

    uint256 private constant NOT_FOUND = type(uint256).max;

    // ------------------------------------------------------------------ types

    /// @notice Lifecycle of a job. None marks an id that was never created.
    enum JobStatus {
        None,
        Active,
        Finished,
        Cancelled
    }

    /// @notice Lifecycle of an update. None marks an update that was never submitted.
    enum UpdateStatus {
        None,
        Pending,
        Accepted,
        Rejected,
        Expired
    }

    /// @notice What a customer chooses when creating a job. Rates are in wei.
    struct JobParams {
        bytes specCid; // raw bytes of the JobSpec's CID on IPFS
        uint32 rounds;
        uint32 tasksPerRound;
        uint32 localSteps;
        uint8 quorum; // validators drawn per update
        uint128 baseRate; // per accepted update
        uint128 bonusRate; // per accepted update, pooled and split by measured loss reduction
        uint128 validatorFee; // per vote that agrees with the outcome
        uint128 leaderFee; // per committed round
        uint64 leaseSeconds; // leader lease, also the successor's grace window
    }

    /// @notice Everything a node needs to know about a job (returned by getJob).
    struct JobInfo {
        address customer;
        JobParams params;
        uint256 deposit;
        uint256 spent; // credited or owed out of the deposit
        JobStatus status;
        uint32 committedRounds;
        address leader;
        uint64 leaseExpiry;
        uint32 term;
        bytes lastCheckpointCid; // empty until round 0 is committed
        address successor;
        uint256 refunded;
        uint64 progressAt; // first election or last commit (see STALL_LEASES)
        bool disputed; // some round's failed audits reached the quorum (see auditRound)
    }

    /// @notice One update as seen by a node (returned by getUpdate).
    struct UpdateInfo {
        bytes cid;
        UpdateStatus status;
        address[] validators;
        uint8 votesFor;
        uint8 votesAgainst;
        uint64 lossReduction;
        bool paid;
        uint128 amount; // base + bonus, fixed when its round is committed
    }

    /// @notice A registered trainer. nodeClass: 0 = S, 1 = M, 2 = L.
    struct TrainerInfo {
        bool registered;
        uint8 nodeClass;
        uint256 stake;
    }

    /// @notice A registered validator.
    struct ValidatorInfo {
        bool registered;
        uint256 stake;
    }

    struct Job {
        JobParams params;
        address customer;
        JobStatus status;
        uint32 committedRounds;
        uint32 term;
        address leader;
        uint64 leaseExpiry;
        address successor;
        uint64 progressAt;
        bool disputed;
        uint256 deposit;
        uint256 spent;
        uint256 refunded;
    }

    struct Round {
        address[] trainers;
        uint32 accepted;
        uint32 auditsOk;
        uint32 auditsFailed;
        bytes checkpointCid;
    }

    struct Update {
        bytes cid;
        UpdateStatus status;
        uint8 votesFor;
        uint8 votesAgainst;
        uint16 votedMask; // bit i: validators[i] voted
        uint16 forMask; // bit i: validators[i] voted valid
        uint64 lossReduction;
        bool paid;
        uint128 amount;
        address[] validators;
        uint64[] forLosses;
    }

    // ------------------------------------------------------------------ configuration

    /// @notice Minimum stake of a trainer (wei).
    uint256 public immutable minTrainerStake;
    /// @notice Minimum stake of a validator (wei).
    uint256 public immutable minValidatorStake;
    /// @notice Stake burnt from a trainer per rejected update (capped at its stake).
    uint256 public immutable slashAmount;
    /// @notice Seconds between requestDeregistration and completeDeregistration.
    uint64 public immutable deregistrationDelay;

    // ------------------------------------------------------------------ state

    /// @notice Number of jobs created; job ids are 1 .. jobCount.
    uint256 public jobCount;
    /// @notice Withdrawable balance of an account (wei).
    mapping(address account => uint256) public balanceOf;
    /// @notice Trainer registrations.
    mapping(address account => TrainerInfo) public trainers;
    /// @notice Validator registrations.
    mapping(address account => ValidatorInfo) public validators;
    /// @notice When an account may complete its deregistration; 0 while it has not requested one.
    mapping(address account => uint64) public exitAvailableAt;
    /// @notice Updates of a trainer still waiting for a verdict (its stake stays locked while any are).
    mapping(address trainer => uint256) public pendingUpdates;

    /// @notice Sum of all job deposits received.
    uint256 public totalDeposits;
    /// @notice Sum of all stakes received.
    uint256 public totalStakes;
    /// @notice Earnings credited to balances (trainer payouts, validator and leader fees).
    uint256 public totalPaid;
    /// @notice Deposit refunds and returned stakes credited to balances.
    uint256 public totalRefunded;
    /// @notice Stake burnt by slashing (locked in this contract forever).
    uint256 public totalSlashed;
    /// @notice Ether sent out by withdraw.
    uint256 public totalWithdrawn;
    /// @notice Deposits not yet credited or refunded (includes owed, uncollected trainer payouts).
    uint256 public escrowHeld;
    /// @notice Stakes still locked.
    uint256 public stakeHeld;

    address[] private _validatorList;
    mapping(address validator => uint256) private _validatorSlot; // index in _validatorList + 1; 0 = absent
    mapping(uint256 jobId => Job) private _jobs;
    mapping(uint256 jobId => address[]) private _candidates;
    mapping(uint256 jobId => mapping(address account => bool)) private _isCandidate;
    mapping(uint256 jobId => mapping(uint32 round => Round)) private _rounds;
    mapping(uint256 jobId => mapping(uint32 round => mapping(address trainer => Update))) private _updates;
    mapping(uint256 jobId => mapping(address trainer => uint32[])) private _trainerRounds;
    mapping(uint256 jobId => mapping(address trainer => uint256)) private _payoutCursor;
    mapping(uint256 jobId => mapping(uint32 round => mapping(address validator => bool))) private _audited;

    // ------------------------------------------------------------------ events

    event TrainerRegistered(address indexed trainer, uint8 nodeClass, uint256 stake);
    event ValidatorRegistered(address indexed validator, uint256 stake);
    event DeregistrationRequested(address indexed account, uint64 availableAt);
    event Deregistered(address indexed account, uint256 stakeReturned);
    event JobCreated(uint256 indexed jobId, address indexed customer, bytes specCid, uint256 deposit);
    event CandidateStood(uint256 indexed jobId, address indexed candidate);
    event LeaderElected(uint256 indexed jobId, address indexed leader, uint32 term, uint64 leaseExpiry);
    event SuccessorDrawn(uint256 indexed jobId, address indexed successor, uint32 term);
    event UpdateSubmitted(
        uint256 indexed jobId,
        uint32 indexed round,
        address indexed trainer,
        bytes updateCid,
        address[] validators
    );
    event UpdateVoted(
        uint256 indexed jobId,
        uint32 round,
        address indexed trainer,
        address indexed validator,
        bool isValid,
        uint64 lossReduction
    );
    event UpdateAccepted(uint256 indexed jobId, uint32 indexed round, address indexed trainer, uint64 lossReduction);
    event UpdateRejected(uint256 indexed jobId, uint32 indexed round, address indexed trainer);
    event UpdateExpired(uint256 indexed jobId, uint32 indexed round, address indexed trainer);
    event TrainerSlashed(uint256 indexed jobId, address indexed trainer, uint256 amount);
    event FeePaid(uint256 indexed jobId, address indexed account, uint256 amount);
    event RoundCommitted(
        uint256 indexed jobId,
        uint32 indexed round,
        address indexed leader,
        bytes checkpointCid,
        uint64 leaseExpiry
    );
    event PaidOut(uint256 indexed jobId, address indexed trainer, uint256 amount);
    event JobFinished(uint256 indexed jobId, bytes finalCheckpointCid, uint256 refund);
    event JobCancelled(uint256 indexed jobId, uint256 refund);
    event Withdrawn(address indexed account, uint256 amount);
    event RoundAudited(uint256 indexed jobId, uint32 indexed round, address indexed auditor, bool ok);
    event RoundDisputed(uint256 indexed jobId, uint32 indexed round, uint32 failures);

    // ------------------------------------------------------------------ errors

    error UnknownJob(uint256 jobId);
    error JobNotActive(uint256 jobId, JobStatus status);
    error InvalidJobParam(string param);
    error InsufficientDeposit(uint256 required, uint256 provided);
    error InsufficientStake(uint256 required, uint256 provided);
    error InvalidNodeClass(uint8 nodeClass);
    error AlreadyRegistered(address account);
    error NotRegistered(address account);
    error NotTrainer(address account);
    error StakeTooLow(address trainer, uint256 stake, uint256 required);
    error DeregistrationAlreadyRequested(address account, uint64 availableAt);
    error DeregistrationNotRequested(address account);
    error DeregistrationNotReady(address account, uint64 availableAt);
    error UpdatesPending(address trainer, uint256 count);
    error InvalidCid(uint256 length);
    error AlreadyCandidate(uint256 jobId, address account);
    error TooManyCandidates(uint256 jobId, uint256 max);
    error NotCandidate(uint256 jobId, address account);
    error LeaseNotExpired(uint256 jobId, uint64 leaseExpiry);
    error NotSuccessor(uint256 jobId, address successor, uint256 graceEnd);
    error NotLeader(uint256 jobId, address account, address leader);
    error LeaseExpired(uint256 jobId, uint64 leaseExpiry);
    error WrongRound(uint256 jobId, uint32 expected, uint32 given);
    error AlreadySubmitted(uint256 jobId, uint32 round, address trainer);
    error RoundFull(uint256 jobId, uint32 round, uint32 tasksPerRound);
    error NotEnoughValidators(uint256 jobId, uint256 available, uint8 quorum);
    error UnknownUpdate(uint256 jobId, uint32 round, address trainer);
    error UpdateNotPending(uint256 jobId, uint32 round, address trainer, UpdateStatus status);
    error NotDrawnValidator(uint256 jobId, uint32 round, address trainer, address account);
    error AlreadyVoted(uint256 jobId, uint32 round, address trainer, address validator);
    error NoAcceptedUpdates(uint256 jobId, uint32 round);
    error NotCustomer(uint256 jobId, address account);
    error JobStillServed(uint256 jobId, address leader, uint256 cancellableAfter);
    error NothingToPay(uint256 jobId, address trainer);
    error NothingToWithdraw(address account);
    error TransferFailed(address account, uint256 amount);
    error RoundNotCommitted(uint256 jobId, uint32 round);
    error AlreadyAudited(uint256 jobId, uint32 round, address validator);

    // ------------------------------------------------------------------ constructor

    /// @param minTrainerStake_ Minimum stake of a trainer (wei).
    /// @param minValidatorStake_ Minimum stake of a validator (wei).
    /// @param slashAmount_ Stake burnt per rejected update (wei, capped at the trainer's stake).
    /// @param deregistrationDelay_ Seconds a node waits between requesting and completing deregistration; choose it
    ///        longer than any job's validation window so that a trainer cannot leave before a verdict.
    constructor(
        uint256 minTrainerStake_,
        uint256 minValidatorStake_,
        uint256 slashAmount_,
        uint64 deregistrationDelay_
    ) {
        minTrainerStake = minTrainerStake_;
        minValidatorStake = minValidatorStake_;
        slashAmount = slashAmount_;
        deregistrationDelay = deregistrationDelay_;
    }

    // ------------------------------------------------------------------ roles and stake

    /// @notice Registers the caller as a trainer, staking msg.value.
    /// @param nodeClass Compute class the trainer declares: 0 = S, 1 = M, 2 = L (the leader sizes tasks by it).
    function registerTrainer(uint8 nodeClass) external payable {
        if (nodeClass > 2) revert InvalidNodeClass(nodeClass);
        if (trainers[msg.sender].registered) revert AlreadyRegistered(msg.sender);
        if (msg.value < minTrainerStake) revert InsufficientStake(minTrainerStake, msg.value);
        trainers[msg.sender] = TrainerInfo({registered: true, nodeClass: nodeClass, stake: msg.value});
        _addStake(msg.value);
        emit TrainerRegistered(msg.sender, nodeClass, msg.value);
    }

    /// @notice Registers the caller as a validator, staking msg.value; it enters the pool updates draw from.
    function registerValidator() external payable {
        if (validators[msg.sender].registered) revert AlreadyRegistered(msg.sender);
        if (msg.value < minValidatorStake) revert InsufficientStake(minValidatorStake, msg.value);
        validators[msg.sender] = ValidatorInfo({registered: true, stake: msg.value});
        _validatorList.push(msg.sender);
        _validatorSlot[msg.sender] = _validatorList.length;
        _addStake(msg.value);
        emit ValidatorRegistered(msg.sender, msg.value);
    }

    /// @notice Starts leaving every role of the caller: it is no longer drawn as a validator, may not submit
    /// updates, stand or claim leadership. Its stake comes back after deregistrationDelay.
    function requestDeregistration() external {
        bool isValidator = validators[msg.sender].registered;
        if (!trainers[msg.sender].registered && !isValidator) revert NotRegistered(msg.sender);
        uint64 pending = exitAvailableAt[msg.sender];
        if (pending != 0) revert DeregistrationAlreadyRequested(msg.sender, pending);
        uint64 availableAt = uint64(block.timestamp) + deregistrationDelay;
        exitAvailableAt[msg.sender] = availableAt;
        if (isValidator) _removeValidator(msg.sender);
        emit DeregistrationRequested(msg.sender, availableAt);
    }

    /// @notice Completes a deregistration once its delay has passed and no update of the caller awaits a
    /// verdict; credits the remaining stake (both roles) to the caller's withdrawable balance.
    function completeDeregistration() external nonReentrant {
        uint64 availableAt = exitAvailableAt[msg.sender];
        if (availableAt == 0) revert DeregistrationNotRequested(msg.sender);
        if (block.timestamp < availableAt) revert DeregistrationNotReady(msg.sender, availableAt);
        uint256 pending = pendingUpdates[msg.sender];
        if (pending != 0) revert UpdatesPending(msg.sender, pending);
        uint256 amount = trainers[msg.sender].stake + validators[msg.sender].stake;
        delete trainers[msg.sender];
        delete validators[msg.sender];
        delete exitAvailableAt[msg.sender];
        stakeHeld -= amount;
        totalRefunded += amount;
        balanceOf[msg.sender] += amount;
        emit Deregistered(msg.sender, amount);
    }

    // ------------------------------------------------------------------ jobs

    /// @notice Creates a job and holds msg.value in escrow for it.
    /// @dev msg.value must be at least requiredDeposit(p), the most the job can ever pay out; the excess is refunded
    /// when the job ends.
    /// @param p The job's parameters (see JobParams).
    /// @return jobId The new job's id (ids start at 1).
    function createJob(JobParams calldata p) external payable returns (uint256 jobId) {
        _checkParams(p);
        uint256 required = requiredDeposit(p);
        if (msg.value < required) revert InsufficientDeposit(required, msg.value);
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

    /// @notice Makes the caller (a registered node) a leader candidate of an active job. The first candidate of a
    /// job without a leader becomes its leader at once, with a lease of leaseSeconds.
    /// @param jobId The job.
    function standForLeader(uint256 jobId) external {
        Job storage job = _activeJob(jobId);
        if (!_isActiveNode(msg.sender)) revert NotRegistered(msg.sender);
        if (_isCandidate[jobId][msg.sender]) revert AlreadyCandidate(jobId, msg.sender);
        if (_candidates[jobId].length == MAX_CANDIDATES) revert TooManyCandidates(jobId, MAX_CANDIDATES);
        _candidates[jobId].push(msg.sender);
        _isCandidate[jobId][msg.sender] = true;
        emit CandidateStood(jobId, msg.sender);
        if (job.leader == address(0)) {
            job.progressAt = uint64(block.timestamp);
            _elect(jobId, job, msg.sender);
        } else if (job.successor == address(0)) {
            // The leader stood alone so far: the newcomer is the only possible successor.
            job.successor = msg.sender;
            emit SuccessorDrawn(jobId, msg.sender, job.term);
        }
    }

    /// @notice Takes over a job whose leader's lease expired. During the grace window (leaseSeconds after expiry)
    /// only the successor drawn at the last election or commit may claim; after it, any active candidate.
    /// @param jobId The job.
    function claimLeadership(uint256 jobId) external {
        Job storage job = _activeJob(jobId);
        if (!_isCandidate[jobId][msg.sender]) revert NotCandidate(jobId, msg.sender);
        if (!_isActiveNode(msg.sender)) revert NotRegistered(msg.sender);
        if (block.timestamp <= job.leaseExpiry) revert LeaseNotExpired(jobId, job.leaseExpiry);
        uint256 graceEnd = uint256(job.leaseExpiry) + job.params.leaseSeconds;
        address next = job.successor;
        if (block.timestamp <= graceEnd && next != address(0) && msg.sender != next) {
            revert NotSuccessor(jobId, next, graceEnd);
        }
        _elect(jobId, job, msg.sender);
    }

    /// @notice Records the CID of the update manifest a registered trainer produced for the job's current round
    /// and draws, from chain randomness, the quorum of validators that will judge it.
    /// @param jobId The job.
    /// @param round Must equal the job's current round (its number of committed rounds).
    /// @param updateCid Raw bytes of the manifest's CID.
    function submitUpdate(uint256 jobId, uint32 round, bytes calldata updateCid) external {
        Job storage job = _activeJob(jobId);
        TrainerInfo storage trainer = trainers[msg.sender];
        if (!trainer.registered || exitAvailableAt[msg.sender] != 0) revert NotTrainer(msg.sender);
        if (trainer.stake < minTrainerStake) revert StakeTooLow(msg.sender, trainer.stake, minTrainerStake);
        if (round != job.committedRounds) revert WrongRound(jobId, job.committedRounds, round);
        _checkCid(updateCid);
        Update storage u = _updates[jobId][round][msg.sender];
        if (u.status != UpdateStatus.None) revert AlreadySubmitted(jobId, round, msg.sender);
        Round storage r = _rounds[jobId][round];
        uint32 tasks = job.params.tasksPerRound;
        if (r.trainers.length >= tasks) revert RoundFull(jobId, round, tasks);
        address[] memory drawn = _drawValidators(jobId, round, msg.sender, job.params.quorum);
        u.cid = updateCid;
        u.status = UpdateStatus.Pending;
        u.validators = drawn;
        r.trainers.push(msg.sender);
        _trainerRounds[jobId][msg.sender].push(round);
        ++pendingUpdates[msg.sender];
        emit UpdateSubmitted(jobId, round, msg.sender, updateCid, drawn);
    }

    /// @notice A validator drawn for an update casts its vote, once. The first side to reach a strict majority of
    /// the quorum decides: Accepted (its loss reduction is the median of the valid votes' values) or Rejected (the
    /// trainer is slashed). Validators whose vote agrees with the outcome earn validatorFee.
    /// @param jobId The job.
    /// @param round The update's round.
    /// @param trainer The update's trainer.
    /// @param isValid The validator's verdict.
    /// @param lossReduction (lossBefore - lossAfter) * 1e6 as measured by the validator, clipped at 0; ignored when
    /// isValid is false.
    function validateUpdate(
        uint256 jobId,
        uint32 round,
        address trainer,
        bool isValid,
        uint64 lossReduction
    ) external nonReentrant {
        Job storage job = _activeJob(jobId);
        Update storage u = _updates[jobId][round][trainer];
        if (u.status == UpdateStatus.None) revert UnknownUpdate(jobId, round, trainer);
        if (u.status != UpdateStatus.Pending) revert UpdateNotPending(jobId, round, trainer, u.status);
        uint256 index = _indexOf(u.validators, msg.sender);
        if (index == NOT_FOUND) revert NotDrawnValidator(jobId, round, trainer, msg.sender);
        uint16 bit = uint16(1 << index);
        if (u.votedMask & bit != 0) revert AlreadyVoted(jobId, round, trainer, msg.sender);
        u.votedMask |= bit;
        if (isValid) {
            u.forMask |= bit;
            ++u.votesFor;
            u.forLosses.push(lossReduction);
        } else {
            ++u.votesAgainst;
        }
        emit UpdateVoted(jobId, round, trainer, msg.sender, isValid, lossReduction);
        uint8 majority = job.params.quorum / 2 + 1;
        if (u.votesFor == majority) {
            _accept(jobId, job, round, trainer, u);
        } else if (u.votesAgainst == majority) {
            _reject(jobId, job, round, trainer, u);
        }
    }

    /// @notice The current leader commits the job's current round: records the new checkpoint's CID, closes the
    /// round's undecided updates as Expired, fixes each accepted update's pay (base + bonus, see docs), credits
    /// leaderFee and renews the lease. The last round's commit finishes the job and refunds the unspent deposit.
    /// @dev Requires at least one accepted update, so a leader cannot run a job to its end without training.
    /// @param jobId The job.
    /// @param round Must equal the job's current round.
    /// @param checkpointCid Raw bytes of the aggregated checkpoint's CID.
    function commitRound(uint256 jobId, uint32 round, bytes calldata checkpointCid) external nonReentrant {
        Job storage job = _activeJob(jobId);
        address leader = job.leader;
        if (msg.sender != leader) revert NotLeader(jobId, msg.sender, leader);
        if (block.timestamp > job.leaseExpiry) revert LeaseExpired(jobId, job.leaseExpiry);
        if (round != job.committedRounds) revert WrongRound(jobId, job.committedRounds, round);
        _checkCid(checkpointCid);
        Round storage r = _rounds[jobId][round];
        if (r.accepted == 0) revert NoAcceptedUpdates(jobId, round);

        r.checkpointCid = checkpointCid;
        job.spent += _settleRound(jobId, round, job.params, r);
        uint32 committed = round + 1;
        job.committedRounds = committed;
        job.progressAt = uint64(block.timestamp);
        bool finished = committed >= job.params.rounds; // never greater: round == committedRounds < rounds
        uint64 leaseExpiry = job.leaseExpiry;
        if (!finished) {
            leaseExpiry = uint64(block.timestamp) + job.params.leaseSeconds;
            job.leaseExpiry = leaseExpiry;
        }
        emit RoundCommitted(jobId, round, leader, checkpointCid, leaseExpiry);
        _creditFee(jobId, job, leader, job.params.leaderFee);
        if (finished) {
            job.status = JobStatus.Finished;
            uint256 refund = _refund(job);
            emit JobFinished(jobId, checkpointCid, refund);
        } else {
            _drawSuccessor(jobId, job);
        }
    }

    /// @notice Credits the trainer's pay (base + bonus) for all its accepted updates in committed rounds that were
    /// not paid yet. Anyone may call it; the money goes to the trainer's balance.
    /// @param jobId The job (active, finished or cancelled).
    /// @param trainer The trainer to pay.
    function payout(uint256 jobId, address trainer) external nonReentrant {
        Job storage job = _jobs[jobId];
        if (job.status == JobStatus.None) revert UnknownJob(jobId);
        uint32[] storage submitted = _trainerRounds[jobId][trainer];
        uint256 n = submitted.length;
        uint256 i = _payoutCursor[jobId][trainer];
        uint32 committed = job.committedRounds;
        uint256 total;
        // Each submission is visited once: the cursor only moves past rounds that are committed.
        for (; i < n; ++i) {
            uint32 round = submitted[i];
            if (round >= committed) break;
            Update storage u = _updates[jobId][round][trainer];
            if (u.status == UpdateStatus.Accepted) {
                u.paid = true;
                total += u.amount;
            }
        }
        if (total == 0) revert NothingToPay(jobId, trainer);
        _payoutCursor[jobId][trainer] = i;
        escrowHeld -= total;
        totalPaid += total;
        balanceOf[trainer] += total;
        emit PaidOut(jobId, trainer, total);
    }

    /// @notice A registered validator reports whether it recomputed a committed round's checkpoint from the
    /// round's base checkpoint and its accepted updates and got the CID the leader committed. Once per validator
    /// and round; any job status (a finished job's last round can be audited too). When a round's failed audits
    /// reach the job's quorum the job is marked disputed (RoundDisputed, once per round), and its customer may
    /// cancel it at once. Moves no money.
    /// @param jobId The job.
    /// @param round A committed round.
    /// @param ok True when the recomputed checkpoint's CID equals the committed one.
    function auditRound(uint256 jobId, uint32 round, bool ok) external {
        Job storage job = _job(jobId);
        if (!validators[msg.sender].registered || exitAvailableAt[msg.sender] != 0) revert NotRegistered(msg.sender);
        if (round >= job.committedRounds) revert RoundNotCommitted(jobId, round);
        if (_audited[jobId][round][msg.sender]) revert AlreadyAudited(jobId, round, msg.sender);
        _audited[jobId][round][msg.sender] = true;
        Round storage r = _rounds[jobId][round];
        if (ok) ++r.auditsOk;
        else ++r.auditsFailed;
        emit RoundAudited(jobId, round, msg.sender, ok);
        // Equality, not >=: the round is disputed once, by the audit that reaches the quorum.
        if (!ok && r.auditsFailed == job.params.quorum) {
            job.disputed = true;
            emit RoundDisputed(jobId, round, r.auditsFailed);
        }
    }

    /// @notice The customer cancels a job nobody serves: one without a leader, one whose leader's lease expired
    /// more than a grace window (leaseSeconds) ago, one that made no progress for STALL_LEASES leases, or, at
    /// once, a disputed one (see auditRound). Pending updates expire; what is not owed is refunded.
    /// @param jobId The job.
    function cancelJob(uint256 jobId) external nonReentrant {
        Job storage job = _activeJob(jobId);
        if (msg.sender != job.customer) revert NotCustomer(jobId, msg.sender);
        if (job.leader != address(0) && !job.disputed) {
            uint256 cancellableAfter = _cancellableAfter(job);
            if (block.timestamp <= cancellableAfter) revert JobStillServed(jobId, job.leader, cancellableAfter);
        }
        job.status = JobStatus.Cancelled;
        uint32 round = job.committedRounds;
        address[] storage submitted = _rounds[jobId][round].trainers;
        uint256 n = submitted.length;
        for (uint256 i; i < n; ++i) {
            address trainer = submitted[i];
            _expireIfPending(jobId, round, trainer, _updates[jobId][round][trainer]);
        }
        uint256 refund = _refund(job);
        emit JobCancelled(jobId, refund);
    }

    /// @notice Sends the caller its whole withdrawable balance.
    function withdraw() external nonReentrant {
        uint256 amount = balanceOf[msg.sender];
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        balanceOf[msg.sender] = 0;
        totalWithdrawn += amount;
        emit Withdrawn(msg.sender, amount);
        (bool ok, ) = payable(msg.sender).call{value: amount}("");
        if (!ok) revert TransferFailed(msg.sender, amount);
    }

    // ------------------------------------------------------------------ views

    /// @notice The deposit a job with these parameters needs: the most it can ever pay out,
    /// rounds * (tasksPerRound * (baseRate + bonusRate + quorum * validatorFee) + leaderFee).
    /// @param p The job's parameters.
    /// @return The minimum deposit in wei.
    function requiredDeposit(JobParams calldata p) public pure returns (uint256) {
        uint256 perUpdate = uint256(p.baseRate) + p.bonusRate + uint256(p.quorum) * p.validatorFee;
        return uint256(p.rounds) * (uint256(p.tasksPerRound) * perUpdate + p.leaderFee);
    }

    /// @notice A job's parameters and state.
    /// @param jobId The job.
    /// @return info See JobInfo.
    function getJob(uint256 jobId) external view returns (JobInfo memory info) {
        Job storage job = _job(jobId);
        info.customer = job.customer;
        info.params = job.params;
        info.deposit = job.deposit;
        info.spent = job.spent;
        info.status = job.status;
        info.committedRounds = job.committedRounds;
        info.leader = job.leader;
        info.leaseExpiry = job.leaseExpiry;
        info.term = job.term;
        if (job.committedRounds > 0) {
            info.lastCheckpointCid = _rounds[jobId][job.committedRounds - 1].checkpointCid;
        }
        info.successor = job.successor;
        info.refunded = job.refunded;
        info.progressAt = job.progressAt;
        info.disputed = job.disputed;
    }

    /// @notice The checkpoint CID committed for a round.
    /// @param jobId The job.
    /// @param round A committed round.
    /// @return The CID's raw bytes.
    function getRoundCheckpoint(uint256 jobId, uint32 round) external view returns (bytes memory) {
        Job storage job = _job(jobId);
        if (round >= job.committedRounds) revert RoundNotCommitted(jobId, round);
        return _rounds[jobId][round].checkpointCid;
    }

    /// @notice How a committed round's audits went so far.
    /// @param jobId The job.
    /// @param round The round.
    /// @return ok Audits that reproduced the committed checkpoint.
    /// @return failed Audits that did not.
    function getRoundAudits(uint256 jobId, uint32 round) external view returns (uint32 ok, uint32 failed) {
        Round storage r = _rounds[jobId][round];
        return (r.auditsOk, r.auditsFailed);
    }

    /// @notice Whether a validator already audited a round.
    /// @param jobId The job.
    /// @param round The round.
    /// @param validator The validator.
    /// @return True when it did.
    function hasAudited(uint256 jobId, uint32 round, address validator) external view returns (bool) {
        return _audited[jobId][round][validator];
    }

    /// @notice The leader candidates of a job, in the order they stood.
    /// @param jobId The job.
    /// @return The candidates' addresses.
    function getCandidates(uint256 jobId) external view returns (address[] memory) {
        return _candidates[jobId];
    }

    /// @notice Whether an account stands as leader candidate of a job.
    /// @param jobId The job.
    /// @param account The account.
    /// @return True when it is a candidate.
    function isCandidate(uint256 jobId, address account) external view returns (bool) {
        return _isCandidate[jobId][account];
    }

    /// @notice Who may claim a job during the grace window after its lease expires (zero: anyone).
    /// @param jobId The job.
    /// @return The successor's address.
    function successor(uint256 jobId) external view returns (address) {
        return _jobs[jobId].successor;
    }

    /// @notice One update of a round.
    /// @param jobId The job.
    /// @param round The round.
    /// @param trainer The update's trainer.
    /// @return info See UpdateInfo (status None when it was never submitted).
    function getUpdate(uint256 jobId, uint32 round, address trainer) external view returns (UpdateInfo memory info) {
        Update storage u = _updates[jobId][round][trainer];
        info.cid = u.cid;
        info.status = u.status;
        info.validators = u.validators;
        info.votesFor = u.votesFor;
        info.votesAgainst = u.votesAgainst;
        info.lossReduction = u.lossReduction;
        info.paid = u.paid;
        info.amount = u.amount;
    }

    /// @notice Whether a drawn validator already voted on an update.
    /// @param jobId The job.
    /// @param round The round.
    /// @param trainer The update's trainer.
    /// @param validator The validator.
    /// @return True when it voted.
    function hasVoted(uint256 jobId, uint32 round, address trainer, address validator) external view returns (bool) {
        Update storage u = _updates[jobId][round][trainer];
        uint256 index = _indexOf(u.validators, validator);
        return index != NOT_FOUND && (u.votedMask & (1 << index)) != 0;
    }

    /// @notice The trainers that submitted an update in a round, in submission order.
    /// @param jobId The job.
    /// @param round The round.
    /// @return The trainers' addresses.
    function getRoundUpdates(uint256 jobId, uint32 round) external view returns (address[] memory) {
        return _rounds[jobId][round].trainers;
    }

    /// @notice How many updates of a round were accepted so far.
    /// @param jobId The job.
    /// @param round The round.
    /// @return The count.
    function acceptedCount(uint256 jobId, uint32 round) external view returns (uint32) {
        return _rounds[jobId][round].accepted;
    }

    /// @notice Number of validators in the draw pool (registered and not leaving).
    /// @return The count.
    function validatorCount() external view returns (uint256) {
        return _validatorList.length;
    }

    /// @notice The validators in the draw pool.
    /// @return Their addresses (order changes when one leaves).
    function getValidators() external view returns (address[] memory) {
        return _validatorList;
    }

    /// @notice Money held for open obligations: escrowed deposits plus locked stakes.
    /// @return escrowHeld + stakeHeld.
    function totalHeld() external view returns (uint256) {
        return escrowHeld + stakeHeld;
    }

    // ------------------------------------------------------------------ internals

    function _job(uint256 jobId) private view returns (Job storage job) {
        job = _jobs[jobId];
        if (job.status == JobStatus.None) revert UnknownJob(jobId);
    }

    function _activeJob(uint256 jobId) private view returns (Job storage job) {
        job = _job(jobId);
        if (job.status != JobStatus.Active) revert JobNotActive(jobId, job.status);
    }

    /// @dev The earlier of: the lease's end plus a grace window, and STALL_LEASES leases after the last progress.
    function _cancellableAfter(Job storage job) private view returns (uint256) {
        uint256 lease = job.params.leaseSeconds;
        uint256 served = uint256(job.leaseExpiry) + lease;
        uint256 stalled = uint256(job.progressAt) + STALL_LEASES * lease;
        return served < stalled ? served : stalled;
    }

    function _isActiveNode(address account) private view returns (bool) {
        if (exitAvailableAt[account] != 0) return false; // leaving
        return trainers[account].registered || validators[account].registered;
    }

    function _checkCid(bytes calldata cid) private pure {
        if (cid.length == 0 || cid.length > MAX_CID_LENGTH) revert InvalidCid(cid.length);
    }

    function _checkParams(JobParams calldata p) private pure {
        if (p.specCid.length == 0 || p.specCid.length > MAX_CID_LENGTH) revert InvalidCid(p.specCid.length);
        if (p.rounds == 0 || p.rounds > MAX_ROUNDS) revert InvalidJobParam("rounds");
        if (p.tasksPerRound == 0 || p.tasksPerRound > MAX_TASKS_PER_ROUND) revert InvalidJobParam("tasksPerRound");
        if (p.localSteps == 0) revert InvalidJobParam("localSteps");
        if (p.quorum == 0 || p.quorum > MAX_QUORUM) revert InvalidJobParam("quorum");
        if (p.leaseSeconds == 0 || p.leaseSeconds > MAX_LEASE_SECONDS) revert InvalidJobParam("leaseSeconds");
        if (uint256(p.baseRate) + uint256(p.bonusRate) * p.tasksPerRound > type(uint128).max) {
            revert InvalidJobParam("rates");
        }
    }

    function _addStake(uint256 amount) private {
        totalStakes += amount;
        stakeHeld += amount;
    }

    function _removeValidator(address validator) private {
        uint256 slot = _validatorSlot[validator];
        uint256 last = _validatorList.length;
        if (slot != last) {
            address moved = _validatorList[last - 1];
            _validatorList[slot - 1] = moved;
            _validatorSlot[moved] = slot;
        }
        _validatorList.pop();
        delete _validatorSlot[validator];
    }

    function _elect(uint256 jobId, Job storage job, address leader) private {
        uint32 term = job.term + 1;
        uint64 leaseExpiry = uint64(block.timestamp) + job.params.leaseSeconds;
        job.leader = leader;
        job.term = term;
        job.leaseExpiry = leaseExpiry;
        emit LeaderElected(jobId, leader, term, leaseExpiry);
        _drawSuccessor(jobId, job);
    }

    /// @dev The successor is one candidate other than the leader, drawn from block.prevrandao at every election and
    /// commit, so a leader cannot know long in advance who takes over from it.
    function _drawSuccessor(uint256 jobId, Job storage job) private {
        address[] storage candidates = _candidates[jobId];
        uint256 n = candidates.length;
        address next = address(0);
        if (n > 1) {
            uint256 index = uint256(keccak256(abi.encode(block.prevrandao, jobId, job.term, job.committedRounds))) % n;
            next = candidates[index];
            if (next == job.leader) next = candidates[(index + 1) % n];
        }
        if (next != job.successor) {
            job.successor = next;
            emit SuccessorDrawn(jobId, next, job.term);
        }
    }

    /// @dev Draws `quorum` distinct validators other than the trainer: each pick hashes block.prevrandao with the
    /// update's coordinates to an index and probes forward past the trainer and earlier picks (at most quorum + 1
    /// probes per pick, so the loop is bounded by MAX_QUORUM^2).
    function _drawValidators(
        uint256 jobId,
        uint32 round,
        address trainer,
        uint8 quorum
    ) private view returns (address[] memory drawn) {
        uint256 n = _validatorList.length;
        uint256 available = _validatorSlot[trainer] != 0 ? n - 1 : n;
        if (available < quorum) revert NotEnoughValidators(jobId, available, quorum);
        drawn = new address[](quorum);
        bytes32 seed = keccak256(abi.encode(block.prevrandao, jobId, round, trainer));
        for (uint256 i; i < quorum; ++i) {
            uint256 index = uint256(keccak256(abi.encode(seed, i))) % n;
            address candidate = _validatorList[index];
            while (candidate == trainer || _contains(drawn, i, candidate)) {
                index = index + 1 == n ? 0 : index + 1;
                candidate = _validatorList[index];
            }
            drawn[i] = candidate;
        }
    }

    function _contains(address[] memory list, uint256 length, address account) private pure returns (bool) {
        for (uint256 i; i < length; ++i) {
            if (list[i] == account) return true;
        }
        return false;
    }

    function _indexOf(address[] storage list, address account) private view returns (uint256) {
        uint256 n = list.length;
        for (uint256 i; i < n; ++i) {
            if (list[i] == account) return i;
        }
        return NOT_FOUND;
    }

    function _accept(uint256 jobId, Job storage job, uint32 round, address trainer, Update storage u) private {
        uint64 loss = _median(u.forLosses);
        u.status = UpdateStatus.Accepted;
        u.lossReduction = loss;
        ++_rounds[jobId][round].accepted;
        --pendingUpdates[trainer];
        emit UpdateAccepted(jobId, round, trainer, loss);
        _payVoters(jobId, job, u, u.forMask);
    }

    function _reject(uint256 jobId, Job storage job, uint32 round, address trainer, Update storage u) private {
        u.status = UpdateStatus.Rejected;
        --pendingUpdates[trainer];
        TrainerInfo storage t = trainers[trainer];
        uint256 slashed = t.stake < slashAmount ? t.stake : slashAmount;
        t.stake -= slashed;
        stakeHeld -= slashed;
        totalSlashed += slashed;
        emit UpdateRejected(jobId, round, trainer);
        emit TrainerSlashed(jobId, trainer, slashed);
        _payVoters(jobId, job, u, u.votedMask & ~u.forMask);
    }

    function _payVoters(uint256 jobId, Job storage job, Update storage u, uint16 mask) private {
        uint256 fee = job.params.validatorFee;
        uint256 n = u.validators.length;
        for (uint256 i; i < n; ++i) {
            if (mask & (1 << i) != 0) _creditFee(jobId, job, u.validators[i], fee);
        }
    }

    function _creditFee(uint256 jobId, Job storage job, address account, uint256 amount) private {
        if (amount == 0) return;
        job.spent += amount;
        escrowHeld -= amount;
        totalPaid += amount;
        balanceOf[account] += amount;
        emit FeePaid(jobId, account, amount);
    }

    /// @dev Closes undecided updates and fixes the pay of accepted ones: baseRate each, plus a bonus pool of
    /// bonusRate * accepted split in proportion to each update's lossReduction (floor division; the dust and the
    /// pool of a round whose accepted updates all measured 0 stay in the deposit and are refunded).
    /// @return owed The round's total trainer pay, now owed from the deposit.
    function _settleRound(
        uint256 jobId,
        uint32 round,
        JobParams storage p,
        Round storage r
    ) private returns (uint256 owed) {
        address[] storage submitted = r.trainers;
        uint256 n = submitted.length;
        uint256 totalLoss = 0;
        for (uint256 i; i < n; ++i) {
            address trainer = submitted[i];
            Update storage u = _updates[jobId][round][trainer];
            if (u.status == UpdateStatus.Accepted) {
                totalLoss += u.lossReduction;
            } else {
                _expireIfPending(jobId, round, trainer, u);
            }
        }
        uint256 base = p.baseRate;
        uint256 pool = uint256(p.bonusRate) * r.accepted;
        for (uint256 i; i < n; ++i) {
            Update storage u = _updates[jobId][round][submitted[i]];
            if (u.status == UpdateStatus.Accepted) {
                uint256 bonus = totalLoss == 0 ? 0 : (pool * u.lossReduction) / totalLoss;
                uint256 amount = base + bonus;
                // Fits: _checkParams bounds baseRate + bonusRate * tasksPerRound by type(uint128).max.
                u.amount = uint128(amount);
                owed += amount;
            }
        }
    }

    function _expireIfPending(uint256 jobId, uint32 round, address trainer, Update storage u) private {
        if (u.status == UpdateStatus.Pending) {
            u.status = UpdateStatus.Expired;
            --pendingUpdates[trainer];
            emit UpdateExpired(jobId, round, trainer);
        }
    }

    /// @dev Credits the customer everything of the deposit that is neither spent nor owed.
    function _refund(Job storage job) private returns (uint256 refund) {
        refund = job.deposit - job.spent;
        job.refunded = refund;
        escrowHeld -= refund;
        totalRefunded += refund;
        balanceOf[job.customer] += refund;
    }

    /// @dev Lower median (index (n-1)/2 of the sorted values); n <= MAX_QUORUM / 2 + 1, so insertion sort is cheap.
    function _median(uint64[] storage values) private view returns (uint64) {
        uint256 n = values.length;
        uint64[] memory sorted = new uint64[](n);
        for (uint256 i; i < n; ++i) {
            uint64 v = values[i];
            uint256 j = i;
            while (j > 0 && sorted[j - 1] > v) {
                sorted[j] = sorted[j - 1];
                --j;
            }
            sorted[j] = v;
        }
        return sorted[(n - 1) / 2];
    }
}
