const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time } = require("@nomicfoundation/hardhat-toolbox/network-helpers");
const h = require("./helpers");

describe("JobManager: registration, stake, pool and withdrawals", function () {
  describe("deployment", function () {
    it("stores its configuration and serves the whole surface from one address", async function () {
      const { jm, core } = await loadFixture(h.deployFixture);
      expect(await jm.minTrainerStake()).to.equal(h.MIN_TRAINER_STAKE);
      expect(await jm.minValidatorStake()).to.equal(h.MIN_VALIDATOR_STAKE);
      expect(await jm.minUpdateBond()).to.equal(h.MIN_UPDATE_BOND);
      expect(await jm.validatorSlash()).to.equal(h.VALIDATOR_SLASH);
      expect(await jm.minLeaderBond()).to.equal(h.MIN_LEADER_BOND);
      expect(await jm.deregistrationDelay()).to.equal(BigInt(h.DELAY));
      expect(await jm.DRAW_DELAY()).to.equal(BigInt(h.DRAW_DELAY));
      expect(await jm.SLASH_MULTIPLE()).to.equal(3n);
      expect(await jm.ESCALATION_PANEL()).to.equal(63n);
      expect(await jm.MAX_QUORUM()).to.equal(15n);
      expect(await jm.MAX_TASKS_PER_ROUND()).to.equal(64n);
      expect(await jm.MAX_CANDIDATES()).to.equal(16n);
      expect(await jm.MAX_VALIDATORS()).to.equal(1024n);
      expect(await jm.LAPSE_FORFEIT_BPS()).to.equal(5000n);
      const d = await jm.eip712Domain();
      expect(d.name).to.equal("dtnode JobManager");
      expect(d.version).to.equal("2");
      expect(d.verifyingContract).to.equal(await core.getAddress());
      expect(await jm.extension()).to.not.equal(ethers.ZeroAddress);
    });

    it("refuses a zero validator stake (it is the draw weight)", async function () {
      await expect(ethers.deployContract("JobManager", [1, 0, 0, 0, 0, 0, 1, ethers.ZeroAddress])).to.be.revertedWithCustomError(
        await ethers.getContractFactory("JobManager"),
        "JobManagerInvalidJobParam",
      );
    });

    it("the extension refuses to be called directly; plain ether is refused", async function () {
      const { jm, owner } = await loadFixture(h.deployFixture);
      const ext = await ethers.getContractAt("IJobManager", await jm.extension());
      await expect(ext.standForLeader(1n, { value: 1n })).to.be.revertedWithCustomError(ext, "JobManagerNotDelegated");
      await expect(owner.sendTransaction({ to: await jm.getAddress(), value: 1n })).to.be.reverted;
    });
  });

  describe("trainers", function () {
    it("registers, holds the stake, tops it up, and emits", async function () {
      const { jm, t1 } = await loadFixture(h.deployFixture);
      await expect(jm.connect(t1).registerTrainer(2, { value: h.E("1.5") }))
        .to.emit(jm, "TrainerRegistered")
        .withArgs(t1.address, 2, h.E("1.5"));
      await expect(jm.connect(t1).addTrainerStake({ value: h.E("1") }))
        .to.emit(jm, "TrainerStakeAdded")
        .withArgs(t1.address, h.E("1"), h.E("2.5"));
      const t = await jm.trainers(t1.address);
      expect([t.registered, t.nodeClass, t.pending, t.stake, t.locked]).to.deep.equal([true, 2n, 0n, h.E("2.5"), 0n]);
      expect(await jm.stakeHeld()).to.equal(h.E("2.5"));
      expect(await jm.totalStakes()).to.equal(h.E("2.5"));
    });

    it("reverts on a bad class, a low stake, twice, and top-ups by strangers", async function () {
      const { jm, t1, outsider } = await loadFixture(h.deployFixture);
      await expect(jm.connect(t1).registerTrainer(3, { value: h.MIN_TRAINER_STAKE }))
        .to.be.revertedWithCustomError(jm, "JobManagerInvalidNodeClass")
        .withArgs(3);
      await expect(jm.connect(t1).registerTrainer(0, { value: 1n }))
        .to.be.revertedWithCustomError(jm, "JobManagerInsufficientStake")
        .withArgs(h.MIN_TRAINER_STAKE, 1n);
      await jm.connect(t1).registerTrainer(0, { value: h.MIN_TRAINER_STAKE });
      await expect(jm.connect(t1).registerTrainer(0, { value: h.MIN_TRAINER_STAKE }))
        .to.be.revertedWithCustomError(jm, "JobManagerAlreadyRegistered")
        .withArgs(t1.address);
      await expect(jm.connect(outsider).addTrainerStake({ value: 1n }))
        .to.be.revertedWithCustomError(jm, "JobManagerNotTrainer")
        .withArgs(outsider.address);
    });
  });

  describe("validators", function () {
    it("registers into the pool with weight == stake", async function () {
      const { jm, v1, v2 } = await loadFixture(h.deployFixture);
      await expect(jm.connect(v1).registerValidator({ value: h.MIN_VALIDATOR_STAKE }))
        .to.emit(jm, "ValidatorRegistered")
        .withArgs(v1.address, h.MIN_VALIDATOR_STAKE);
      await jm.connect(v2).registerValidator({ value: h.E("3") });
      expect(await jm.getValidators()).to.deep.equal([v1.address, v2.address]);
      expect(await jm.validatorCount()).to.equal(2n);
      expect(await jm.poolWeight()).to.equal(h.E("5"));
      expect(await jm.poolWeightOf(v2.address)).to.equal(h.E("3"));
      const v = await jm.validators(v1.address);
      expect([v.registered, v.openVotes, v.stake]).to.deep.equal([true, 0n, h.MIN_VALIDATOR_STAKE]);
    });

    it("reverts on a low stake or twice", async function () {
      const { jm, v1 } = await loadFixture(h.deployFixture);
      await expect(jm.connect(v1).registerValidator({ value: 1n }))
        .to.be.revertedWithCustomError(jm, "JobManagerInsufficientStake")
        .withArgs(h.MIN_VALIDATOR_STAKE, 1n);
      await jm.connect(v1).registerValidator({ value: h.MIN_VALIDATOR_STAKE });
      await expect(jm.connect(v1).registerValidator({ value: h.MIN_VALIDATOR_STAKE }))
        .to.be.revertedWithCustomError(jm, "JobManagerAlreadyRegistered")
        .withArgs(v1.address);
    });

    it("reuses freed pool slots, keeping the tree's sums exact", async function () {
      const { jm, v1, v2, v3, v4 } = await loadFixture(h.deployFixture);
      for (const [i, v] of [v1, v2, v3].entries()) await jm.connect(v).registerValidator({ value: h.E(`${2 + i}`) });
      await jm.connect(v2).requestDeregistration();
      expect(await jm.poolWeight()).to.equal(h.E("6"));
      await jm.connect(v4).registerValidator({ value: h.E("7") });
      expect(await jm.getValidators()).to.deep.equal([v1.address, v4.address, v3.address]);
      expect(await jm.poolWeight()).to.equal(h.E("13"));
    });
  });

  describe("deregistration", function () {
    it("takes a validator out of the pool at once and returns both stakes after the delay", async function () {
      const { jm, v1 } = await loadFixture(h.deployFixture);
      await jm.connect(v1).registerValidator({ value: h.MIN_VALIDATOR_STAKE });
      await jm.connect(v1).registerTrainer(0, { value: h.MIN_TRAINER_STAKE });
      const tx = await jm.connect(v1).requestDeregistration();
      const at = BigInt((await ethers.provider.getBlock(tx.blockNumber)).timestamp + h.DELAY);
      await expect(tx).to.emit(jm, "DeregistrationRequested").withArgs(v1.address, at);
      await expect(tx).to.emit(jm, "ValidatorLeftPool").withArgs(v1.address, h.MIN_VALIDATOR_STAKE);
      expect(await jm.validatorCount()).to.equal(0n);
      expect(await jm.exitAvailableAt(v1.address)).to.equal(at);
      await expect(jm.connect(v1).completeDeregistration())
        .to.be.revertedWithCustomError(jm, "JobManagerDeregistrationNotReady")
        .withArgs(v1.address, at);
      await time.increaseTo(at);
      const total = h.MIN_VALIDATOR_STAKE + h.MIN_TRAINER_STAKE;
      await expect(jm.connect(v1).completeDeregistration()).to.emit(jm, "Deregistered").withArgs(v1.address, total);
      expect(await jm.balanceOf(v1.address)).to.equal(total);
      await expect(jm.connect(v1).withdraw()).to.changeEtherBalances([v1, jm], [total, -total]);
      // It can come back, once.
      await jm.connect(v1).registerValidator({ value: h.MIN_VALIDATOR_STAKE });
      expect(await jm.getValidators()).to.deep.equal([v1.address]);
    });

    it("reverts for strangers, twice, and without a request", async function () {
      const { jm, v1, outsider } = await loadFixture(h.deployFixture);
      await expect(jm.connect(outsider).requestDeregistration())
        .to.be.revertedWithCustomError(jm, "JobManagerNotRegistered")
        .withArgs(outsider.address);
      await expect(jm.connect(outsider).completeDeregistration())
        .to.be.revertedWithCustomError(jm, "JobManagerDeregistrationNotRequested")
        .withArgs(outsider.address);
      await jm.connect(v1).registerValidator({ value: h.MIN_VALIDATOR_STAKE });
      const tx = await jm.connect(v1).requestDeregistration();
      const at = BigInt((await ethers.provider.getBlock(tx.blockNumber)).timestamp + h.DELAY);
      await expect(jm.connect(v1).requestDeregistration())
        .to.be.revertedWithCustomError(jm, "JobManagerDeregistrationAlreadyRequested")
        .withArgs(v1.address, at);
    });

    it("waits for a validator's open votes and a trainer's locked bonds", async function () {
      const f = await loadFixture(h.jobFixture);
      const { jm, jobId, t1 } = f;
      await h.submit(f, jobId, t1, 0);
      const [v] = await h.draw(f, jobId, 0, 0);
      await jm.connect(v).validateUpdate(jobId, 0, 0, true);
      await jm.connect(v).requestDeregistration();
      await jm.connect(t1).requestDeregistration();
      await time.increase(h.DELAY);
      await expect(jm.connect(v).completeDeregistration())
        .to.be.revertedWithCustomError(jm, "JobManagerObligationsOpen")
        .withArgs(v.address, 0, 1);
      // A leaving validator still votes on what it was drawn for; the verdict releases both.
      const u = await jm.getUpdate(jobId, 0, 0);
      for (const a of u.panel.slice(1)) await jm.connect(h.signerOf(f, a)).validateUpdate(jobId, 0, 0, true);
      await expect(jm.connect(v).completeDeregistration()).to.emit(jm, "Deregistered");
      await expect(jm.connect(t1).completeDeregistration()).to.emit(jm, "Deregistered");
    });
  });

  describe("withdraw", function () {
    it("reverts on an empty balance", async function () {
      const { jm, outsider } = await loadFixture(h.deployFixture);
      await expect(jm.connect(outsider).withdraw())
        .to.be.revertedWithCustomError(jm, "JobManagerNothingToWithdraw")
        .withArgs(outsider.address);
    });
  });

  describe("re-entrancy", function () {
    async function attackerFixture() {
      const f = await h.registeredFixture();
      const attacker = await ethers.deployContract("ReentrantAttacker", [await f.jm.getAddress()]);
      const p = h.jobParams();
      const deposit = h.requiredDeposit(p);
      await attacker.fundAndCancel(p, { value: deposit });
      return { ...f, attacker, deposit };
    }

    it("a receiver that re-enters withdraw makes its own withdrawal fail", async function () {
      const { jm, attacker, deposit } = await loadFixture(attackerFixture);
      expect(await jm.balanceOf(await attacker.getAddress())).to.equal(deposit);
      await expect(attacker.attack(0))
        .to.be.revertedWithCustomError(jm, "JobManagerTransferFailed")
        .withArgs(await attacker.getAddress(), deposit);
      expect(await jm.balanceOf(await attacker.getAddress())).to.equal(deposit);
    });

    it("every other money-moving function is guarded against re-entry too", async function () {
      const { jm, attacker, deposit } = await loadFixture(attackerFixture);
      await expect(attacker.attack(2)).to.changeEtherBalances([attacker, jm], [deposit, -deposit]);
      expect(await attacker.guardedReverts()).to.equal(7n);
    });

    it("a receiver that swallows the failed re-entry is paid exactly once", async function () {
      const { jm, attacker, deposit } = await loadFixture(attackerFixture);
      await expect(attacker.attack(1)).to.changeEtherBalances([attacker, jm], [deposit, -deposit]);
      expect(await attacker.reentryAttempts()).to.equal(1n);
      expect(await attacker.reentrySucceeded()).to.equal(false);
      expect(await jm.balanceOf(await attacker.getAddress())).to.equal(0n);
    });
  });
});
