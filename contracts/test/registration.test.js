const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time } = require("@nomicfoundation/hardhat-toolbox/network-helpers");
const h = require("./helpers");

describe("JobManager: roles and stake", function () {
  describe("constructor", function () {
    it("stores its configuration", async function () {
      const { jm } = await loadFixture(h.deployFixture);
      expect(await jm.minTrainerStake()).to.equal(h.MIN_TRAINER_STAKE);
      expect(await jm.minValidatorStake()).to.equal(h.MIN_VALIDATOR_STAKE);
      expect(await jm.slashAmount()).to.equal(h.SLASH);
      expect(await jm.deregistrationDelay()).to.equal(h.DELAY);
      expect(await jm.jobCount()).to.equal(0n);
    });
  });

  describe("registerTrainer", function () {
    it("registers, holds the stake and emits", async function () {
      const { jm, t1 } = await loadFixture(h.deployFixture);
      const stake = h.E("1.5");
      const tx = jm.connect(t1).registerTrainer(2, { value: stake });
      await expect(tx).to.emit(jm, "TrainerRegistered").withArgs(t1.address, 2, stake);
      await expect(tx).to.changeEtherBalances([t1, jm], [-stake, stake]);
      const info = await jm.trainers(t1.address);
      expect(info.registered).to.equal(true);
      expect(info.nodeClass).to.equal(2n);
      expect(info.stake).to.equal(stake);
      expect(await jm.totalStakes()).to.equal(stake);
      expect(await jm.stakeHeld()).to.equal(stake);
    });

    it("reverts on a bad class, a low stake, or twice", async function () {
      const { jm, t1 } = await loadFixture(h.deployFixture);
      await expect(jm.connect(t1).registerTrainer(3, { value: h.MIN_TRAINER_STAKE }))
        .to.be.revertedWithCustomError(jm, "InvalidNodeClass")
        .withArgs(3);
      await expect(jm.connect(t1).registerTrainer(0, { value: h.MIN_TRAINER_STAKE - 1n }))
        .to.be.revertedWithCustomError(jm, "InsufficientStake")
        .withArgs(h.MIN_TRAINER_STAKE, h.MIN_TRAINER_STAKE - 1n);
      await jm.connect(t1).registerTrainer(0, { value: h.MIN_TRAINER_STAKE });
      await expect(jm.connect(t1).registerTrainer(0, { value: h.MIN_TRAINER_STAKE }))
        .to.be.revertedWithCustomError(jm, "AlreadyRegistered")
        .withArgs(t1.address);
    });
  });

  describe("registerValidator", function () {
    it("registers into the draw pool and emits", async function () {
      const { jm, v1, v2 } = await loadFixture(h.deployFixture);
      const tx = jm.connect(v1).registerValidator({ value: h.MIN_VALIDATOR_STAKE });
      await expect(tx).to.emit(jm, "ValidatorRegistered").withArgs(v1.address, h.MIN_VALIDATOR_STAKE);
      await expect(tx).to.changeEtherBalances([v1, jm], [-h.MIN_VALIDATOR_STAKE, h.MIN_VALIDATOR_STAKE]);
      await jm.connect(v2).registerValidator({ value: h.MIN_VALIDATOR_STAKE });
      expect(await jm.validatorCount()).to.equal(2n);
      expect(await jm.getValidators()).to.deep.equal([v1.address, v2.address]);
      const info = await jm.validators(v1.address);
      expect(info.registered).to.equal(true);
      expect(info.stake).to.equal(h.MIN_VALIDATOR_STAKE);
    });

    it("reverts on a low stake or twice", async function () {
      const { jm, v1 } = await loadFixture(h.deployFixture);
      await expect(jm.connect(v1).registerValidator({ value: 1n }))
        .to.be.revertedWithCustomError(jm, "InsufficientStake")
        .withArgs(h.MIN_VALIDATOR_STAKE, 1n);
      await jm.connect(v1).registerValidator({ value: h.MIN_VALIDATOR_STAKE });
      await expect(jm.connect(v1).registerValidator({ value: h.MIN_VALIDATOR_STAKE }))
        .to.be.revertedWithCustomError(jm, "AlreadyRegistered")
        .withArgs(v1.address);
    });
  });

  describe("requestDeregistration", function () {
    it("takes a validator out of the pool at once (middle and last)", async function () {
      const f = await loadFixture(h.registeredFixture);
      const { jm, v1, v2, v3, v4, v5 } = f;
      const t = await h.nextTimestamp();
      const tx = jm.connect(v2).requestDeregistration();
      const at = t + h.DELAY;
      await expect(tx).to.emit(jm, "DeregistrationRequested").withArgs(v2.address, at);
      expect(await jm.exitAvailableAt(v2.address)).to.equal(at);
      expect(await jm.getValidators()).to.deep.equal([v1.address, v5.address, v3.address, v4.address]);
      await jm.connect(v4).requestDeregistration();
      expect(await jm.getValidators()).to.deep.equal([v1.address, v5.address, v3.address]);
      expect(await jm.validatorCount()).to.equal(3n);
      // Still registered (stake locked) until completion.
      expect((await jm.validators(v2.address)).registered).to.equal(true);
    });

    it("reverts for strangers and when already requested", async function () {
      const { jm, t1, outsider } = await loadFixture(h.registeredFixture);
      await expect(jm.connect(outsider).requestDeregistration())
        .to.be.revertedWithCustomError(jm, "NotRegistered")
        .withArgs(outsider.address);
      await jm.connect(t1).requestDeregistration();
      const at = await jm.exitAvailableAt(t1.address);
      await expect(jm.connect(t1).requestDeregistration())
        .to.be.revertedWithCustomError(jm, "DeregistrationAlreadyRequested")
        .withArgs(t1.address, at);
    });

    it("stops a leaving node from submitting, standing and claiming", async function () {
      const f = await loadFixture(h.jobFixture);
      const { jm, jobId, t1, l2, l3 } = f;
      await jm.connect(l3).standForLeader(jobId);
      await jm.connect(t1).requestDeregistration();
      await expect(jm.connect(t1).submitUpdate(jobId, 0, h.cid("x")))
        .to.be.revertedWithCustomError(jm, "NotTrainer")
        .withArgs(t1.address);
      await expect(jm.connect(t1).standForLeader(jobId))
        .to.be.revertedWithCustomError(jm, "NotRegistered")
        .withArgs(t1.address);
      await jm.connect(l2).requestDeregistration();
      await time.increase(h.LEASE * 3);
      await expect(jm.connect(l2).claimLeadership(jobId))
        .to.be.revertedWithCustomError(jm, "NotRegistered")
        .withArgs(l2.address);
    });
  });

  describe("completeDeregistration", function () {
    it("returns both stakes after the delay, and the node can come back", async function () {
      const { jm, t1 } = await loadFixture(h.registeredFixture);
      await jm.connect(t1).registerValidator({ value: h.MIN_VALIDATOR_STAKE });
      await expect(jm.connect(t1).completeDeregistration())
        .to.be.revertedWithCustomError(jm, "DeregistrationNotRequested")
        .withArgs(t1.address);
      await jm.connect(t1).requestDeregistration();
      const at = await jm.exitAvailableAt(t1.address);
      await expect(jm.connect(t1).completeDeregistration())
        .to.be.revertedWithCustomError(jm, "DeregistrationNotReady")
        .withArgs(t1.address, at);
      await time.increaseTo(at);
      const total = h.MIN_TRAINER_STAKE + h.MIN_VALIDATOR_STAKE;
      const held = await jm.stakeHeld();
      await expect(jm.connect(t1).completeDeregistration())
        .to.emit(jm, "Deregistered")
        .withArgs(t1.address, total);
      expect(await jm.balanceOf(t1.address)).to.equal(total);
      expect(await jm.stakeHeld()).to.equal(held - total);
      expect(await jm.totalRefunded()).to.equal(total);
      expect((await jm.trainers(t1.address)).registered).to.equal(false);
      expect(await jm.exitAvailableAt(t1.address)).to.equal(0n);
      await expect(jm.connect(t1).withdraw()).to.changeEtherBalances([t1, jm], [total, -total]);
      await jm.connect(t1).registerTrainer(0, { value: h.MIN_TRAINER_STAKE });
    });

    it("waits for verdicts on the trainer's pending updates", async function () {
      const f = await loadFixture(h.jobFixture);
      const { jm, jobId, t1 } = f;
      await jm.connect(t1).submitUpdate(jobId, 0, h.cid("u"));
      expect(await jm.pendingUpdates(t1.address)).to.equal(1n);
      await jm.connect(t1).requestDeregistration();
      await time.increase(h.DELAY);
      await expect(jm.connect(t1).completeDeregistration())
        .to.be.revertedWithCustomError(jm, "UpdatesPending")
        .withArgs(t1.address, 1n);
      await h.vote(f, jobId, 0, t1.address, [
        [true, 5n],
        [true, 5n],
      ]);
      expect(await jm.pendingUpdates(t1.address)).to.equal(0n);
      await expect(jm.connect(t1).completeDeregistration()).to.emit(jm, "Deregistered");
    });
  });
});
