// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {JobManager} from "../JobManager.sol";
import {IJobManager} from "../IJobManager.sol";

/// @title ReentrantAttacker: a customer whose receive hook re-enters JobManager (test only)
/// @notice It creates a job, cancels it to get a refund credited, then withdraws; on receiving ether it calls back
/// into JobManager. Mode Bubble lets the re-entry's revert propagate (the withdrawal must fail as a whole);
/// mode Swallow catches it and records the outcome (the withdrawal must pay exactly once); mode CrossFunction tries
/// every other guarded function and counts the calls the guard stopped.
contract ReentrantAttacker {
    enum Mode {
        Bubble,
        Swallow,
        CrossFunction
    }

    bytes4 public constant GUARD_ERROR = bytes4(keccak256("ReentrancyGuardReentrantCall()"));
    uint256 public guardedReverts;

    JobManager public immutable target;
    Mode public mode;
    uint256 public reentryAttempts;
    bool public reentrySucceeded;
    uint256 public jobId;

    constructor(JobManager target_) {
        target = target_;
    }

    /// @notice Creates a job with msg.value as deposit and cancels it at once (no leader), crediting the refund.
    function fundAndCancel(IJobManager.JobParams calldata p) external payable {
        jobId = target.createJob{value: msg.value}(p);
        target.cancelJob(jobId);
    }

    /// @notice Withdraws the credited balance; receive() then tries to withdraw again.
    function attack(Mode mode_) external {
        mode = mode_;
        target.withdraw();
    }

    receive() external payable {
        if (reentryAttempts > 0) return;
        ++reentryAttempts;
        if (mode == Mode.Bubble) {
            target.withdraw();
        } else if (mode == Mode.CrossFunction) {
            _tryGuarded(abi.encodeCall(JobManager.withdraw, ()));
            _tryGuarded(abi.encodeCall(JobManager.payout, (jobId, uint32(0))));
            _tryGuarded(abi.encodeCall(JobManager.cancelJob, (jobId)));
            _tryGuarded(abi.encodeCall(JobManager.commitRound, (jobId, 0, hex"01", 1)));
            _tryGuarded(abi.encodeCall(JobManager.validateUpdate, (jobId, 0, 0, true)));
            _tryGuarded(abi.encodeCall(JobManager.completeDeregistration, ()));
            _tryGuarded(abi.encodeCall(IJobManager.settleUpdates, (jobId, 0, new IJobManager.VoteSet[](0))));
        } else {
            try target.withdraw() {
                reentrySucceeded = true;
            } catch {
                reentrySucceeded = false;
            }
        }
    }

    function _tryGuarded(bytes memory data) private {
        (bool ok, bytes memory ret) = address(target).call(data);
        if (!ok && ret.length >= 4 && bytes4(ret) == GUARD_ERROR) ++guardedReverts;
    }
}
