// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title IJobManagerTypes: the types, events and errors of dtnode's JobManager
/// @notice Shared by the interface below and by both halves of the implementation (JobManager and the
/// JobManagerExtension it delegates its rarely used functions to).
/// @dev Errors are prefixed `JobManager`. Rounds are numbered 0 .. rounds-1; a job's current round equals its
/// number of committed rounds. An update is addressed by (jobId, round, slot), slot < tasksPerRound.
interface IJobManagerTypes {
    // ------------------------------------------------------------------ types

    /// @dev Lifecycle of a job. None marks an id that was never created.
    enum JobStatus {
        None,
        Active,
        Finished,
        Cancelled
    }

    /// @dev Lifecycle of an update. None marks a slot nobody filled.
    enum UpdateStatus {
        None,
        Pending,
        Accepted,
        Rejected,
        Expired
    }

    /// @dev Where a pending update's verdict stands. AwaitingPanel: `drawValidators` may draw the first panel once
    /// `block.number >= anchorBlock + DRAW_DELAY`. Voting: the first panel votes; unanimity settles, any disagreement
    /// escalates. AwaitingEscalation: `drawValidators` draws the escalation panel. Escalated: the escalation panel
    /// votes; the side holding more than half of its stake settles.
    enum Phase {
        AwaitingPanel,
        Voting,
        AwaitingEscalation,
        Escalated
    }

    /// @dev Outcome of a committed round's audit. Passed / Disputed: settled by a unanimous first panel or by the
    /// stake majority of an escalation panel. Lapsed: an escalation panel reached no stake majority within its
    /// window (`lapseAudit`); nothing is disputed and nobody is slashed.
    enum AuditOutcome {
        Open,
        Passed,
        Disputed,
        Lapsed
    }

    /// @dev What a customer chooses when creating a job. Rates are in wei.
    /// `baseRate` is paid per work unit of an accepted update; `bonusRate` per accepted work unit feeds the round's
    /// bonus pool, split by the accepted updates' claimed loss reductions; `validatorFee` per first-panel vote that
    /// agrees with the settled verdict; `leaderFee` per committed round.
    struct JobParams {
        bytes specCid;
        uint32 rounds;
        uint32 tasksPerRound;
        uint32 localSteps;
        uint32 maxWorkUnits;
        uint8 quorum;
        uint128 baseRate;
        uint128 bonusRate;
        uint128 validatorFee;
        uint128 leaderFee;
        uint64 leaseSeconds;
    }

    /// @dev A task ticket, signed by the job's current leader with EIP-712 (see `ticketDigest`). `taskHash` is the
    /// keccak256 of the off-chain task description (base CID, shard, sample range, steps, batch, seed), so a
    /// validator can check that the ticket in a manifest is the one the chain admitted.
    struct Ticket {
        uint256 jobId;
        uint32 round;
        uint32 term;
        address trainer;
        uint32 slot;
        uint32 workUnits;
        uint64 expiry;
        bytes32 taskHash;
    }

    /// @dev A first-panel member's vote on an update, signed off-chain with EIP-712 (see `voteDigest`; the tickets'
    /// domain: chain id and this contract). `anchorBlock` is the update's draw anchor when the member signed: a
    /// re-anchored draw (a new panel) cannot reuse the vote.
    struct Vote {
        uint256 jobId;
        uint32 round;
        uint32 slot;
        uint48 anchorBlock;
        bool valid;
    }

    /// @dev A whole first panel's signed votes on one update, for `settleUpdates`. `signatures` concatenates one
    /// 65-byte signature (r, s, v) per panel member, in the draw order `votePanel` returns; bit i of `validMask` is
    /// member i's vote.
    struct VoteSet {
        uint32 slot;
        uint16 validMask;
        bytes signatures;
    }

    /// @dev A job's parameters and state (returned by `getJob`). `spent`: credited or owed out of the deposit.
    /// `successorAnchor`: block fixed by `drawSuccessor` (0 when no draw is pending).
    struct JobInfo {
        address customer;
        JobParams params;
        uint256 deposit;
        uint256 spent;
        uint256 refunded;
        JobStatus status;
        uint32 committedRounds;
        uint32 term;
        address leader;
        uint64 leaseExpiry;
        uint64 progressAt;
        uint64 successorAnchor;
        bool disputed;
        bytes lastCheckpointCid;
    }

    /// @dev One round (returned by `getRound`). Masks have bit `slot` set. The audit moves through the phases of
    /// an update's verdict (`Phase`; `drawAuditors` draws in the two Awaiting phases): `auditors` is the first
    /// panel (`auditOk`/`auditFailed` count its votes; `auditVotedMask`/`auditSilentMask` index it),
    /// `auditEscalationPanel` the escalation panel (`auditEscVotedMask` indexes it; `auditEscStake`: its stake at
    /// the draw; `auditEscOkStake`/`auditEscFailedStake`: the stake of its votes each way). `auditDeadline`: end of the current panel's window (0 while none votes):
    /// past it, `escalateAudit` (first panel) or `lapseAudit` (escalation panel) may be called.
    struct RoundInfo {
        uint64 submittedMask;
        uint64 acceptedMask;
        bool priced;
        address committer;
        uint64 auditAnchor;
        AuditOutcome audit;
        uint8 auditOk;
        uint8 auditFailed;
        address[] auditors;
        bytes checkpointCid;
        Phase auditPhase;
        uint64 auditDeadline;
        uint16 auditSilentMask;
        uint64 auditVotedMask;
        address[] auditEscalationPanel;
        uint64 auditEscVotedMask;
        uint256 auditEscStake;
        uint256 auditEscOkStake;
        uint256 auditEscFailedStake;
    }

    /// @dev One update (returned by `getUpdate`). `votedMask`/`validMask` index `panel`, `escVotedMask`/
    /// `escValidMask` index `escalationPanel`. `amount` is fixed when the round is priced (commit or cancel).
    /// `voteDeadline`: end of the first panel's vote window (0 before the draw); `silentMask`: first-panel members
    /// that had not voted when `escalateUpdate` closed the window (slashed when the verdict settles).
    struct UpdateInfo {
        address trainer;
        UpdateStatus status;
        Phase phase;
        uint32 workUnits;
        uint64 anchorBlock;
        uint64 lossReduction;
        uint128 amount;
        bool paid;
        uint16 votedMask;
        uint16 validMask;
        uint64 escVotedMask;
        uint64 escValidMask;
        uint128 escStake;
        uint128 escValidStake;
        uint128 escInvalidStake;
        address[] panel;
        address[] escalationPanel;
        uint64 voteDeadline;
        uint16 silentMask;
    }

    /// @dev A trainer. `locked`: update bonds of its pending updates (part of `stake`). nodeClass: 0 S, 1 M, 2 L.
    /// One storage slot (a submission and a verdict each rewrite one slot): stakes are bounded by 2^96 wei.
    struct TrainerInfo {
        bool registered;
        uint8 nodeClass;
        uint32 pending;
        uint96 stake;
        uint96 locked;
    }

    /// @dev A validator. `openVotes`: votes cast on updates and audits not settled yet (it cannot leave before they
    /// are).
    struct ValidatorInfo {
        bool registered;
        uint32 openVotes;
        uint256 stake;
    }

    // ------------------------------------------------------------------ events: registration and stake

    /// @dev Emitted by `registerTrainer`.
    event TrainerRegistered(address indexed trainer, uint8 nodeClass, uint256 stake);
    /// @dev Emitted by `addTrainerStake`; `stake` is the new total.
    event TrainerStakeAdded(address indexed trainer, uint256 amount, uint256 stake);
    /// @dev Emitted by `registerValidator`; the validator entered the draw pool with weight `stake`.
    event ValidatorRegistered(address indexed validator, uint256 stake);
    /// @dev Emitted when a validator leaves the draw pool (deregistration, or stake slashed below the minimum).
    event ValidatorLeftPool(address indexed validator, uint256 stake);
    /// @dev Emitted by `requestDeregistration`.
    event DeregistrationRequested(address indexed account, uint64 availableAt);
    /// @dev Emitted by `completeDeregistration`; the stake of both roles was credited.
    event Deregistered(address indexed account, uint256 stakeReturned);

    // ------------------------------------------------------------------ events: jobs and leaders

    /// @dev Emitted by `createJob`.
    event JobCreated(uint256 indexed jobId, address indexed customer, bytes specCid, uint256 deposit);
    /// @dev Emitted by `standForLeader`; `bond` is locked until the candidacy ends.
    event CandidateStood(uint256 indexed jobId, address indexed candidate, uint256 bond);
    /// @dev Emitted when a candidacy ends (withdrawn, evicted by a bigger bond, or dropped after a lapse);
    /// `bondReturned` was credited to the candidate.
    event CandidacyEnded(uint256 indexed jobId, address indexed candidate, uint256 bondReturned);
    /// @dev Emitted when a leader's bond is burnt (`amount`): its lease lapsed, or a round it committed was disputed.
    event LeaderBondForfeited(uint256 indexed jobId, address indexed leader, uint256 amount);
    /// @dev Emitted when a candidate becomes leader (first candidate, or a claim after a lapse).
    event LeaderElected(uint256 indexed jobId, address indexed leader, uint32 term, uint64 leaseExpiry);
    /// @dev Emitted by `drawSuccessor`: the successor is drawn from blockhash(anchorBlock + DRAW_DELAY).
    event SuccessorDrawRequested(uint256 indexed jobId, uint32 term, uint64 anchorBlock);

    // ------------------------------------------------------------------ events: updates

    /// @dev Emitted by `submitUpdate`. `ticketHash` is the EIP-712 digest of the admitted ticket.
    event UpdateSubmitted(
        uint256 indexed jobId,
        uint32 indexed round,
        address indexed trainer,
        uint32 slot,
        uint32 workUnits,
        uint64 lossReduction,
        bytes updateCid,
        bytes32 ticketHash
    );
    /// @dev Emitted by `drawValidators`: `panel` may vote on the update in `phase` (Voting or Escalated).
    event ValidatorsDrawn(uint256 indexed jobId, uint32 indexed round, uint32 indexed slot, Phase phase, address[] panel);
    /// @dev Emitted by a draw whose block hash is older than 256 blocks, or whose validator pool changed since its
    /// anchor (a change made after the seed block is known could steer the draw): the draw moved to `anchorBlock`.
    event DrawRescheduled(uint256 indexed jobId, uint32 indexed round, uint32 indexed slot, uint64 anchorBlock);
    /// @dev Emitted by `validateUpdate`.
    event UpdateVoted(
        uint256 indexed jobId,
        uint32 round,
        uint32 slot,
        address indexed validator,
        Phase phase,
        bool isValid
    );
    /// @dev Emitted when the first panel disagrees; the escalation panel is drawn after `anchorBlock + DRAW_DELAY`.
    event UpdateEscalated(uint256 indexed jobId, uint32 indexed round, uint32 indexed slot, uint64 anchorBlock);
    /// @dev Emitted when an update's verdict settles as valid.
    event UpdateAccepted(uint256 indexed jobId, uint32 indexed round, uint32 indexed slot, address trainer);
    /// @dev Emitted when an update's verdict settles as invalid (the trainer's bond is burnt, see TrainerSlashed).
    event UpdateRejected(uint256 indexed jobId, uint32 indexed round, uint32 indexed slot, address trainer);
    /// @dev Emitted when a commit or a cancel closes an update still pending (bond unlocked, unpaid).
    event UpdateExpired(uint256 indexed jobId, uint32 indexed round, uint32 indexed slot, address trainer);
    /// @dev Emitted when a rejected update's bond is burnt.
    event TrainerSlashed(uint256 indexed jobId, address indexed trainer, uint256 amount);
    /// @dev Emitted when a voter on the losing side of a settled verdict loses stake.
    event ValidatorSlashed(uint256 indexed jobId, address indexed validator, uint256 amount);
    /// @dev Emitted when an escalation-panel winner is credited its share of the losers' slashed stake.
    event SlashRewardPaid(uint256 indexed jobId, address indexed validator, uint256 amount);
    /// @dev Emitted when a validator or leader fee is credited out of a job's deposit.
    event FeePaid(uint256 indexed jobId, address indexed account, uint256 amount);

    // ------------------------------------------------------------------ events: rounds, audits, money

    /// @dev Emitted by `commitRound`; `acceptedMask` is exactly the set of slots the checkpoint aggregates.
    event RoundCommitted(
        uint256 indexed jobId,
        uint32 indexed round,
        address indexed leader,
        bytes checkpointCid,
        uint64 acceptedMask,
        uint64 leaseExpiry
    );
    /// @dev Emitted by `drawAuditors`: `auditors` may audit the round in `phase` (Voting: the first panel;
    /// Escalated: the escalation panel).
    event AuditorsDrawn(uint256 indexed jobId, uint32 indexed round, Phase phase, address[] auditors);
    /// @dev Emitted by `auditRound` (in the phase the round's audit is in: see `getRound(...).auditPhase`).
    event RoundAudited(uint256 indexed jobId, uint32 indexed round, address indexed auditor, bool ok);
    /// @dev Emitted when the first audit panel disagrees, or `escalateAudit` closed its window with members
    /// silent; the escalation panel is drawn after `anchorBlock + DRAW_DELAY`.
    event AuditEscalated(uint256 indexed jobId, uint32 indexed round, uint64 anchorBlock);
    /// @dev Emitted when a round's audit settles as passed: the whole first panel reproduced the checkpoint, or
    /// more than half of the escalation panel's stake did. `okVotes`: votes on the settling side of that panel.
    event RoundAuditPassed(uint256 indexed jobId, uint32 indexed round, uint8 okVotes);
    /// @dev Emitted when a round's audit settles as failed (the whole first panel, or more than half of the
    /// escalation panel's stake, did not reproduce the checkpoint). `failures`: votes on the settling side.
    event RoundDisputed(uint256 indexed jobId, uint32 indexed round, uint8 failures);
    /// @dev Emitted by `lapseAudit`: the escalation panel reached no stake majority within its window.
    event RoundAuditLapsed(uint256 indexed jobId, uint32 indexed round);
    /// @dev Emitted by `payout`, once per accepted update credited to its trainer.
    event PaidOut(uint256 indexed jobId, address indexed trainer, uint256 amount);
    /// @dev Emitted by the last round's commit; `refund` was credited to the customer.
    event JobFinished(uint256 indexed jobId, bytes finalCheckpointCid, uint256 refund);
    /// @dev Emitted by `cancelJob`; `refund` was credited to the customer.
    event JobCancelled(uint256 indexed jobId, uint256 refund);
    /// @dev Emitted by `withdraw`, before the transfer.
    event Withdrawn(address indexed account, uint256 amount);

    // ------------------------------------------------------------------ errors

    /// @dev No job has this id.
    error JobManagerUnknownJob(uint256 jobId);
    /// @dev The job is finished or cancelled.
    error JobManagerJobNotActive(uint256 jobId, JobStatus status);
    /// @dev A job parameter is out of bounds; `param` names it.
    error JobManagerInvalidJobParam(string param);
    /// @dev `createJob` was sent less than `requiredDeposit`.
    error JobManagerInsufficientDeposit(uint256 required, uint256 provided);
    /// @dev A registration was sent less than the minimum stake.
    error JobManagerInsufficientStake(uint256 required, uint256 provided);
    /// @dev A bond is below the minimum, or too small to replace the smallest candidate of a full list.
    error JobManagerInsufficientBond(uint256 required, uint256 provided);
    /// @dev Node classes are 0 (S), 1 (M), 2 (L).
    error JobManagerInvalidNodeClass(uint8 nodeClass);
    /// @dev The role is registered already (also while leaving, until `completeDeregistration`).
    error JobManagerAlreadyRegistered(address account);
    /// @dev The caller holds no role, or is leaving.
    error JobManagerNotRegistered(address account);
    /// @dev The caller is not an active trainer.
    error JobManagerNotTrainer(address account);
    /// @dev The validator pool holds MAX_VALIDATORS members.
    error JobManagerPoolFull(uint256 max);
    /// @dev `requestDeregistration` was called twice.
    error JobManagerDeregistrationAlreadyRequested(address account, uint64 availableAt);
    /// @dev `completeDeregistration` without a request.
    error JobManagerDeregistrationNotRequested(address account);
    /// @dev `completeDeregistration` before the delay passed.
    error JobManagerDeregistrationNotReady(address account, uint64 availableAt);
    /// @dev A trainer's update bonds are locked, or a validator's votes are unsettled.
    error JobManagerObligationsOpen(address account, uint256 lockedStake, uint256 openVotes);
    /// @dev A CID is empty or longer than MAX_CID_LENGTH.
    error JobManagerInvalidCid(uint256 length);
    /// @dev The account stands for the job already.
    error JobManagerAlreadyCandidate(uint256 jobId, address account);
    /// @dev The account is not a candidate of the job.
    error JobManagerNotCandidate(uint256 jobId, address account);
    /// @dev The current leader of an active job cannot withdraw its candidacy.
    error JobManagerCandidateIsLeader(uint256 jobId, address account);
    /// @dev A candidate that committed a round keeps its bond for an audit window after its last commit.
    error JobManagerBondInAuditWindow(uint256 jobId, address account, uint256 availableAt);
    /// @dev The leader's lease has not expired.
    error JobManagerLeaseNotExpired(uint256 jobId, uint64 leaseExpiry);
    /// @dev During the grace window only the drawn successor may claim (zero: not drawn yet).
    error JobManagerNotSuccessor(uint256 jobId, address successor, uint256 graceEnd);
    /// @dev A successor draw is pending already for this term.
    error JobManagerSuccessorDrawPending(uint256 jobId, uint64 anchorBlock);
    /// @dev The caller is not the job's leader.
    error JobManagerNotLeader(uint256 jobId, address account, address leader);
    /// @dev The leader is leaving or no longer registered: it cannot commit or admit work.
    error JobManagerLeaderInactive(uint256 jobId, address leader);
    /// @dev The leader's lease expired.
    error JobManagerLeaseExpired(uint256 jobId, uint64 leaseExpiry);
    /// @dev The round is not the job's current round.
    error JobManagerWrongRound(uint256 jobId, uint32 expected, uint32 given);
    /// @dev The ticket names another term than the job's current one.
    error JobManagerWrongTerm(uint256 jobId, uint32 expected, uint32 given);
    /// @dev The ticket's signature does not recover to the job's current leader.
    error JobManagerBadTicketSignature(uint256 jobId, address signer, address leader);
    /// @dev The ticket expired.
    error JobManagerTicketExpired(uint64 expiry);
    /// @dev The ticket names another trainer.
    error JobManagerNotTicketHolder(address trainer, address account);
    /// @dev slot >= tasksPerRound.
    error JobManagerInvalidSlot(uint256 jobId, uint32 slot);
    /// @dev The slot already holds an update this round.
    error JobManagerSlotTaken(uint256 jobId, uint32 round, uint32 slot);
    /// @dev workUnits is 0 or above maxWorkUnits.
    error JobManagerInvalidWorkUnits(uint32 workUnits, uint32 max);
    /// @dev lossReduction is above MAX_LOSS_REDUCTION (a trainer claims at most that much).
    error JobManagerLossReductionTooLarge(uint64 lossReduction, uint64 max);
    /// @dev Free stake (stake - locked) does not cover the job's update bond.
    error JobManagerInsufficientFreeStake(address trainer, uint256 free, uint256 required);
    /// @dev The pool (minus excluded accounts) holds fewer validators than a panel needs.
    error JobManagerNotEnoughValidators(uint256 available, uint256 required);
    /// @dev The draw's block is not mined yet: call again at block `readyAt`.
    error JobManagerDrawNotReady(uint256 readyAt);
    /// @dev Nothing to draw: the update's panel (or the round's audit panel) is drawn, or it is not pending.
    error JobManagerNothingToDraw(uint256 jobId, uint32 round, uint32 slot);
    /// @dev No update in this slot.
    error JobManagerUnknownUpdate(uint256 jobId, uint32 round, uint32 slot);
    /// @dev The update is decided, expired, or not in a voting phase.
    error JobManagerUpdateNotVoting(uint256 jobId, uint32 round, uint32 slot);
    /// @dev The caller is not on the update's current panel.
    error JobManagerNotDrawnValidator(uint256 jobId, uint32 round, uint32 slot, address account);
    /// @dev The validator voted in this phase already.
    error JobManagerAlreadyVoted(uint256 jobId, uint32 round, uint32 slot, address validator);
    /// @dev The commit's set of slots differs from the round's accepted set.
    error JobManagerWrongAcceptedSet(uint256 jobId, uint32 round, uint64 expected, uint64 given);
    /// @dev A round can only be committed with at least one accepted update.
    error JobManagerNoAcceptedUpdates(uint256 jobId, uint32 round);
    /// @dev Only the job's customer may cancel it.
    error JobManagerNotCustomer(uint256 jobId, address account);
    /// @dev The job is served; it can be cancelled after `cancellableAfter`.
    error JobManagerJobStillServed(uint256 jobId, address leader, uint256 cancellableAfter);
    /// @dev The round is not priced, or every accepted update of it is paid already.
    error JobManagerNothingToPay(uint256 jobId, uint32 round);
    /// @dev `createJob` with a quorum below the deployment's `minQuorum`.
    error JobManagerQuorumBelowMinimum(uint8 quorum, uint8 minQuorum);
    /// @dev The fast path is closed for the update: it is not pending, or its first panel was drawn on-chain.
    error JobManagerFastPathClosed(uint256 jobId, uint32 round, uint32 slot);
    /// @dev A VoteSet's signatures are not 65 bytes per member of the `panelSize` panel, or its mask has bits past it.
    error JobManagerInvalidVoteSet(uint256 jobId, uint32 round, uint32 slot, uint256 panelSize);
    /// @dev A signature of a VoteSet does not recover to the panel member at its position (`signer`: what it
    /// recovers to, zero for a malformed signature).
    error JobManagerBadVoteSignature(uint256 jobId, uint32 round, uint32 slot, address signer, address member);
    /// @dev The caller's balance is zero.
    error JobManagerNothingToWithdraw(address account);
    /// @dev The ether transfer of `withdraw` failed.
    error JobManagerTransferFailed(address account, uint256 amount);
    /// @dev The round is not committed.
    error JobManagerRoundNotCommitted(uint256 jobId, uint32 round);
    /// @dev The first panel's vote window is still open (or the update is not in the first panel's vote).
    error JobManagerVoteWindowOpen(uint256 jobId, uint32 round, uint32 slot, uint256 deadline);
    /// @dev The caller is not on the round's audit panel.
    error JobManagerNotAuditor(uint256 jobId, uint32 round, address account);
    /// @dev The auditor reported on this round already.
    error JobManagerAlreadyAudited(uint256 jobId, uint32 round, address validator);
    /// @dev The round's audit is decided.
    error JobManagerAuditClosed(uint256 jobId, uint32 round);
    /// @dev No audit panel of the round is voting (none drawn yet, or an escalation waits for its draw).
    error JobManagerAuditNotVoting(uint256 jobId, uint32 round, Phase phase);
    /// @dev The audit panel's window is still open (or the audit is not in the phase the call moves on).
    error JobManagerAuditWindowOpen(uint256 jobId, uint32 round, uint256 deadline);
    /// @dev A function of the extension was called on the extension itself instead of through JobManager.
    error JobManagerNotDelegated();
}

/// @title IJobManager: the whole surface of dtnode's JobManager
/// @notice Everything a node, a customer or a test calls on the JobManager address (its ABI is the exported ABI;
/// the functions are served by JobManager itself or, through its fallback, by JobManagerExtension). The rules
/// behind each function are in docs/economy.md and docs/api/contract.md.
interface IJobManager is IJobManagerTypes {
    // ------------------------------------------------------------------ configuration and bounds

    /// @notice Upper bound on tasksPerRound (a slot mask is 64 bits).
    function MAX_TASKS_PER_ROUND() external view returns (uint32);
    /// @notice Upper bound on quorum.
    function MAX_QUORUM() external view returns (uint8);
    /// @notice Size of an escalation panel (capped by the pool).
    function ESCALATION_PANEL() external view returns (uint256);
    /// @notice Size of a round's first audit panel (capped by the pool).
    function AUDIT_PANEL() external view returns (uint256);
    /// @notice Upper bound on maxWorkUnits.
    function MAX_WORK_UNITS() external view returns (uint32);
    /// @notice Upper bound on a claimed loss reduction (micro-units).
    function MAX_LOSS_REDUCTION() external view returns (uint64);
    /// @notice Upper bound on rounds.
    function MAX_ROUNDS() external view returns (uint32);
    /// @notice Upper bound on the candidates of one job.
    function MAX_CANDIDATES() external view returns (uint256);
    /// @notice Upper bound on the validator pool.
    function MAX_VALIDATORS() external view returns (uint256);
    /// @notice Upper bound on a CID's byte length.
    function MAX_CID_LENGTH() external view returns (uint256);
    /// @notice Upper bound on leaseSeconds.
    function MAX_LEASE_SECONDS() external view returns (uint64);
    /// @notice A job without progress for this many leases can be cancelled.
    function STALL_LEASES() external view returns (uint64);
    /// @notice Blocks between the act that fixes a draw's inputs and the block whose hash draws.
    function DRAW_DELAY() external view returns (uint256);
    /// @notice A trainer's bond per pending update is this multiple of the most the update can earn.
    function SLASH_MULTIPLE() external view returns (uint256);
    /// @notice Share of a lapsed leader's bond that is burnt, in basis points.
    function LAPSE_FORFEIT_BPS() external view returns (uint256);
    /// @notice Minimum trainer stake (wei).
    function minTrainerStake() external view returns (uint256);
    /// @notice Minimum validator stake (wei).
    function minValidatorStake() external view returns (uint256);
    /// @notice Floor of a job's update bond (wei).
    function minUpdateBond() external view returns (uint256);
    /// @notice Stake a losing voter loses (wei).
    function validatorSlash() external view returns (uint256);
    /// @notice Minimum candidate bond (wei).
    function minLeaderBond() external view returns (uint256);
    /// @notice Seconds between requesting and completing deregistration.
    function deregistrationDelay() external view returns (uint64);
    /// @notice The smallest quorum a job may choose.
    function minQuorum() external view returns (uint8);
    /// @notice The contract the fallback delegates to.
    function extension() external view returns (address);

    // ------------------------------------------------------------------ accounts and money

    /// @notice Number of jobs created.
    function jobCount() external view returns (uint256);
    /// @notice Withdrawable balance of an account.
    function balanceOf(address account) external view returns (uint256);
    /// @notice A trainer's registration (see TrainerInfo).
    function trainers(
        address account
    ) external view returns (bool registered, uint8 nodeClass, uint32 pending, uint96 stake, uint96 locked);
    /// @notice A validator's registration (see ValidatorInfo).
    function validators(address account) external view returns (bool registered, uint32 openVotes, uint256 stake);
    /// @notice When an account may complete its deregistration (0: not leaving).
    function exitAvailableAt(address account) external view returns (uint64);
    /// @notice Sum of all deposits received.
    function totalDeposits() external view returns (uint256);
    /// @notice Sum of all stakes and bonds received.
    function totalStakes() external view returns (uint256);
    /// @notice Earnings credited.
    function totalPaid() external view returns (uint256);
    /// @notice Refunds and returned stakes and bonds credited.
    function totalRefunded() external view returns (uint256);
    /// @notice Stake and bonds burnt.
    function totalSlashed() external view returns (uint256);
    /// @notice Ether sent out by withdraw.
    function totalWithdrawn() external view returns (uint256);
    /// @notice Deposits not yet credited or refunded.
    function escrowHeld() external view returns (uint256);
    /// @notice Stakes and bonds still locked.
    function stakeHeld() external view returns (uint256);
    /// @notice Every money counter in one call (for monitors and invariant checks): escrowHeld + stakeHeld +
    /// paid + refunded + slashed == deposits + stakes, and the ether balance == deposits + stakes - withdrawn.
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
        );
    /// @notice Number of validators in the draw pool.
    function validatorCount() external view returns (uint256);
    /// @notice Sum of the pool's weights.
    function poolWeight() external view returns (uint256);
    /// @notice A validator's draw weight (0 outside the pool).
    function poolWeightOf(address validator) external view returns (uint256);
    /// @notice The EIP-712 domain (EIP-5267).
    function eip712Domain()
        external
        view
        returns (
            bytes1 fields,
            string memory name,
            string memory version,
            uint256 chainId,
            address verifyingContract,
            bytes32 salt,
            uint256[] memory extensions
        );

    // ------------------------------------------------------------------ roles and stake

    /// @notice Registers the caller as a trainer, staking msg.value (>= minTrainerStake).
    /// @dev Emits a {TrainerRegistered} event.
    function registerTrainer(uint8 nodeClass) external payable;

    /// @notice Adds msg.value to the caller's trainer stake.
    /// @dev Emits a {TrainerStakeAdded} event.
    function addTrainerStake() external payable;

    /// @notice Registers the caller as a validator, staking msg.value (>= minValidatorStake); it enters the draw
    /// pool with weight equal to its stake.
    /// @dev Emits a {ValidatorRegistered} event.
    function registerValidator() external payable;

    /// @notice Starts leaving every role: out of the pool at once, no new work, stake back after the delay.
    /// @dev Emits a {DeregistrationRequested} event (and {ValidatorLeftPool} for a pool member).
    function requestDeregistration() external;

    /// @notice Credits both roles' stakes once the delay passed, no bond is locked and no vote is open.
    /// @dev Emits a {Deregistered} event.
    function completeDeregistration() external;

    // ------------------------------------------------------------------ jobs and leaders

    /// @notice Creates a job holding msg.value (>= requiredDeposit(p)) in escrow.
    /// @dev Emits a {JobCreated} event.
    function createJob(JobParams calldata p) external payable returns (uint256 jobId);

    /// @notice Stands as leader candidate with a bond of msg.value; the first candidate leads at once.
    /// @dev Emits a {CandidateStood} event, maybe {LeaderElected} and {CandidacyEnded} (an evicted candidate).
    function standForLeader(uint256 jobId) external payable;

    /// @notice Ends the caller's candidacy and credits its bond back.
    /// @dev Emits a {CandidacyEnded} event.
    function withdrawCandidacy(uint256 jobId) external;

    /// @notice After the lease expired, fixes the block whose hash draws the successor.
    /// @dev Emits a {SuccessorDrawRequested} event.
    function drawSuccessor(uint256 jobId) external;

    /// @notice Takes over a job whose lease expired: the drawn successor in the grace window, any candidate after.
    /// @dev Emits {LeaderBondForfeited}, maybe {CandidacyEnded}, and {LeaderElected} events.
    function claimLeadership(uint256 jobId) external;

    /// @notice Admits the caller's update for a slot under a ticket signed by the job's current leader.
    /// `lossReduction` (micro-units) is at most MAX_LOSS_REDUCTION.
    /// @dev Emits an {UpdateSubmitted} event.
    function submitUpdate(
        Ticket calldata ticket,
        bytes calldata updateCid,
        uint64 lossReduction,
        bytes calldata leaderSignature
    ) external;

    /// @notice Draws the panel of the update's current phase from a block after its anchor (re-anchors instead when
    /// that block's hash is gone or the validator pool changed since the anchor).
    /// @dev Emits a {ValidatorsDrawn} or a {DrawRescheduled} event.
    function drawValidators(uint256 jobId, uint32 round, uint32 slot) external;

    /// @notice A drawn validator votes on the update's claim (manifest, ticket, replay, loss reduction).
    /// @dev Emits an {UpdateVoted} event, maybe {UpdateEscalated} or {UpdateAccepted}/{UpdateRejected} and the
    /// settlement's {FeePaid}, {ValidatorSlashed}, {SlashRewardPaid}, {TrainerSlashed} events.
    function validateUpdate(uint256 jobId, uint32 round, uint32 slot, bool isValid) external;

    /// @notice Settles updates of a round from their whole first panels' signed votes, in one call (anyone may
    /// send it). Per VoteSet: the update must be pending with no first panel drawn on-chain; its panel is recomputed
    /// from the draw seed (as `drawValidators` would draw it); every member's signature must recover. Unanimous
    /// votes settle as the last on-chain vote would (fees, bond unlocked or burnt, verdict); split votes are
    /// recorded as on-chain votes and escalate. A stale seed (hash gone, pool changed) re-anchors that update
    /// instead ({DrawRescheduled}); the panel signs again for the new anchor.
    /// @dev Emits per update {UpdateAccepted} or {UpdateRejected} and {TrainerSlashed}, and {FeePaid} per member;
    /// or {ValidatorsDrawn}, {UpdateVoted} per member and {UpdateEscalated}; or {DrawRescheduled}.
    function settleUpdates(uint256 jobId, uint32 round, VoteSet[] calldata sets) external;

    /// @notice Escalates an update whose first panel stayed silent past its vote window (half a lease after the
    /// draw): the members that had not voted are slashed when the verdict settles. Anyone may call it.
    /// @dev Emits an {UpdateEscalated} event.
    function escalateUpdate(uint256 jobId, uint32 round, uint32 slot) external;

    /// @notice The leader commits the current round's checkpoint aggregating exactly `acceptedMask`.
    /// @dev Emits a {RoundCommitted} event, {UpdateExpired} per closed update, {FeePaid}, maybe {JobFinished}.
    function commitRound(uint256 jobId, uint32 round, bytes calldata checkpointCid, uint64 acceptedMask) external;

    /// @notice Credits every accepted, unpaid update of a priced round (committed or cancelled) to its trainer, in
    /// one call (anyone may send it).
    /// @dev Emits a {PaidOut} event per update credited.
    function payout(uint256 jobId, uint32 round) external;

    /// @notice Draws a committed round's audit panel of the current phase: the first panel (`AUDIT_PANEL`
    /// validators) from a block after the commit, the escalation panel (`ESCALATION_PANEL`) from a block after the
    /// escalation; stake-weighted, never the committer (re-anchors instead when that block's hash is gone or the
    /// validator pool changed since the anchor).
    /// @dev Emits an {AuditorsDrawn} event (or {DrawRescheduled} with slot type(uint32).max).
    function drawAuditors(uint256 jobId, uint32 round) external;

    /// @notice A member of the round's current audit panel reports whether it reproduced the committed
    /// checkpoint. A unanimous first panel settles; any disagreement escalates; in the escalation panel the side
    /// holding more than half of its stake settles. Every voter on the losing side (and every first-panel member
    /// silent past its window) loses `validatorSlash`; escalation winners share it. A failed verdict disputes
    /// the round: the committer's bond is burnt and the customer may cancel.
    /// @dev Emits a {RoundAudited} event, maybe {AuditEscalated}, or {RoundAuditPassed}/{RoundDisputed} with the
    /// settlement's {ValidatorSlashed}, {SlashRewardPaid} and {LeaderBondForfeited} events.
    function auditRound(uint256 jobId, uint32 round, bool ok) external;

    /// @notice Escalates an audit whose first panel is incomplete past its window (half a lease after the draw):
    /// the members that had not voted are slashed when the escalation settles. Anyone may call it.
    /// @dev Emits an {AuditEscalated} event.
    function escalateAudit(uint256 jobId, uint32 round) external;

    /// @notice Closes an audit whose escalation panel reached no stake majority within a lease of its draw:
    /// outcome Lapsed, nothing disputed, nobody slashed, every vote released. Anyone may call it.
    /// @dev Emits a {RoundAuditLapsed} event.
    function lapseAudit(uint256 jobId, uint32 round) external;

    /// @notice The customer cancels a job nobody serves, a stalled one, or a disputed one.
    /// @dev Emits a {JobCancelled} event.
    function cancelJob(uint256 jobId) external;

    /// @notice Sends the caller its whole balance.
    /// @dev Emits a {Withdrawn} event.
    function withdraw() external;

    // ------------------------------------------------------------------ views

    /// @notice The deposit a job with these parameters needs (the most it can pay out).
    function requiredDeposit(JobParams calldata p) external pure returns (uint256);

    /// @notice The stake a trainer locks per pending update of the job.
    function updateBond(uint256 jobId) external view returns (uint256);

    /// @notice The EIP-712 digest a leader signs for a ticket (also the `ticketHash` of UpdateSubmitted).
    function ticketDigest(Ticket calldata ticket) external view returns (bytes32);

    /// @notice The EIP-712 digest a first-panel member signs for its vote (see `settleUpdates`).
    function voteDigest(Vote calldata vote) external view returns (bytes32);

    /// @notice The first panel the fast path would recompute now for a pending update, in draw order, and the
    /// anchor its votes must name. Empty when the fast path is closed (drawn on-chain, not pending) or the draw must
    /// re-anchor (its hash is gone or the pool changed: `drawValidators` or `settleUpdates` re-anchors). Reverts with
    /// JobManagerDrawNotReady before the seed block is mined.
    function votePanel(
        uint256 jobId,
        uint32 round,
        uint32 slot
    ) external view returns (address[] memory panel, uint64 anchorBlock);

    /// @notice The seed from which validators choose the segments they replay (fixed by the first panel's draw,
    /// on-chain or recomputed).
    function challengeSeed(uint256 jobId, uint32 round, uint32 slot) external view returns (bytes32);

    /// @notice A job's parameters and state.
    function getJob(uint256 jobId) external view returns (JobInfo memory);

    /// @notice A round's state.
    function getRound(uint256 jobId, uint32 round) external view returns (RoundInfo memory);

    /// @notice An update's state (status None for an empty slot).
    function getUpdate(uint256 jobId, uint32 round, uint32 slot) external view returns (UpdateInfo memory);

    /// @notice The leader candidates of a job and their bonds.
    function getCandidates(uint256 jobId) external view returns (address[] memory, uint256[] memory);

    /// @notice Who may claim during the grace window (zero until the draw's block is mined).
    function successor(uint256 jobId) external view returns (address);

    /// @notice The validators in the draw pool.
    function getValidators() external view returns (address[] memory);

    /// @notice Escrowed deposits plus locked stakes and bonds.
    function totalHeld() external view returns (uint256);
}
