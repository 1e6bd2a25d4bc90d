const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time } = require("@nomicfoundation/hardhat-toolbox/network-helpers");
const h = require("./helpers");

describe("JobManager: updates, votes, commits and pay", function () {
  describe("submitUpdate", function () {
    it("records the CID and draws distinct validators other than the trainer", async function () {
      const f = await loadFixture(h.jobFixture);
      const { jm, jobId, t1 } = f;
      const c = h.cid("update");
      const tx = await jm.connect(t1).submitUpdate(jobId, 0, c);
      const u = await jm.getUpdate(jobId, 0, t1.address);
      await expect(tx).to.emit(jm, "UpdateSubmitted").withArgs(jobId, 0, t1.address, c, u.validators);
      expect(u.cid).to.equal(ethers.hexlify(c));
      expect(u.status).to.equal(1n);
      expect(u.validators.length).to.equal(3);
      expect(new Set(u.validators).size).to.equal(3);
      const pool = await jm.getValidators();
      for (const v of u.validators) expect(pool).to.include(v);
      expect(await jm.getRoundUpdates(jobId, 0)).to.deep.equal([t1.address]);
      expect(await jm.pendingUpdates(t1.address)).to.equal(1n);
    });

    it("never draws the trainer itself, even when the pool is just big enough", async function () {
      const f = await loadFixture(h.registeredFixture);
      const { jm, customer, v1, l1 } = f;
      await jm.connect(v1).registerTrainer(0, { value: h.MIN_TRAINER_STAKE });
      const { jobId } = await h.createJob(jm, customer, { quorum: 4 });
      await jm.connect(l1).standForLeader(jobId);
      await jm.connect(v1).submitUpdate(jobId, 0, h.cid("self"));
      const u = await jm.getUpdate(jobId, 0, v1.address);
      expect(u.validators).to.not.include(v1.address);
      expect(new Set(u.validators).size).to.equal(4);
      const { jobId: big } = await h.createJob(jm, customer, { quorum: 5 });
      await expect(jm.connect(v1).submitUpdate(big, 0, h.cid("self")))
        .to.be.revertedWithCustomError(jm, "NotEnoughValidators")
        .withArgs(big, 4, 5);
    });

    it("reverts for strangers, wrong rounds, bad CIDs, repeats and full rounds", async function () {
      const f = await loadFixture(h.jobFixture);
      const { jm, jobId, customer, t1, t2, v1 } = f;
      await expect(jm.connect(v1).submitUpdate(jobId, 0, h.cid("x")))
        .to.be.revertedWithCustomError(jm, "NotTrainer")
        .withArgs(v1.address);
      await expect(jm.connect(t1).submitUpdate(jobId, 1, h.cid("x")))
        .to.be.revertedWithCustomError(jm, "WrongRound")
        .withArgs(jobId, 0, 1);
      await expect(jm.connect(t1).submitUpdate(jobId, 0, "0x")).to.be.revertedWithCustomError(jm, "InvalidCid").withArgs(0);
      await expect(jm.connect(t1).submitUpdate(99n, 0, h.cid("x"))).to.be.revertedWithCustomError(jm, "UnknownJob").withArgs(99n);
      await jm.connect(t1).submitUpdate(jobId, 0, h.cid("x"));
      await expect(jm.connect(t1).submitUpdate(jobId, 0, h.cid("y")))
        .to.be.revertedWithCustomError(jm, "AlreadySubmitted")
        .withArgs(jobId, 0, t1.address);
      const { jobId: small } = await h.createJob(jm, customer, { tasksPerRound: 1 });
      await jm.connect(t1).submitUpdate(small, 0, h.cid("x"));
      await expect(jm.connect(t2).submitUpdate(small, 0, h.cid("x")))
        .to.be.revertedWithCustomError(jm, "RoundFull")
        .withArgs(small, 0, 1);
    });

    it("refuses a trainer whose stake fell below the minimum by slashing", async function () {
      const f = await loadFixture(h.jobFixture);
      const { jm, jobId, t1 } = f;
      await jm.connect(t1).submitUpdate(jobId, 0, h.cid("bad"));
      await h.vote(f, jobId, 0, t1.address, [
        [false, 0n],
        [false, 0n],
      ]);
      const { jobId: other } = await h.createJob(jm, f.customer);
      await expect(jm.connect(t1).submitUpdate(other, 0, h.cid("x")))
        .to.be.revertedWithCustomError(jm, "StakeTooLow")
        .withArgs(t1.address, h.MIN_TRAINER_STAKE - h.SLASH, h.MIN_TRAINER_STAKE);
    });
  });

  describe("validateUpdate", function () {
    it("accepts at a strict majority, with the median loss, and pays the agreeing validators", async function () {
      const f = await loadFixture(h.registeredFixture);
      const { jm, customer, l1, t1 } = f;
      const { jobId, p } = await h.createJob(jm, customer, { quorum: 5 });
      await jm.connect(l1).standForLeader(jobId);
      await jm.connect(t1).submitUpdate(jobId, 0, h.cid("u"));
      const vs = await h.drawn(f, jobId, 0, t1.address);
      await expect(jm.connect(vs[0]).validateUpdate(jobId, 0, t1.address, true, 30n))
        .to.emit(jm, "UpdateVoted")
        .withArgs(jobId, 0, t1.address, vs[0].address, true, 30n);
      expect(await jm.hasVoted(jobId, 0, t1.address, vs[0].address)).to.equal(true);
      expect(await jm.hasVoted(jobId, 0, t1.address, vs[1].address)).to.equal(false);
      expect(await jm.hasVoted(jobId, 0, t1.address, customer.address)).to.equal(false);
      await jm.connect(vs[1]).validateUpdate(jobId, 0, t1.address, false, 0n);
      await jm.connect(vs[2]).validateUpdate(jobId, 0, t1.address, true, 10n);
      const tx = jm.connect(vs[3]).validateUpdate(jobId, 0, t1.address, true, 20n);
      await expect(tx).to.emit(jm, "UpdateAccepted").withArgs(jobId, 0, t1.address, 20n);
      for (const v of [vs[0], vs[2], vs[3]]) {
        await expect(tx).to.emit(jm, "FeePaid").withArgs(jobId, v.address, p.validatorFee);
        expect(await jm.balanceOf(v.address)).to.equal(p.validatorFee);
      }
      expect(await jm.balanceOf(vs[1].address)).to.equal(0n);
      const u = await jm.getUpdate(jobId, 0, t1.address);
      expect(u.status).to.equal(2n);
      expect(u.votesFor).to.equal(3n);
      expect(u.votesAgainst).to.equal(1n);
      expect(u.lossReduction).to.equal(20n);
      expect(await jm.acceptedCount(jobId, 0)).to.equal(1n);
      expect((await jm.getJob(jobId)).spent).to.equal(3n * p.validatorFee);
      await expect(jm.connect(vs[4]).validateUpdate(jobId, 0, t1.address, true, 1n))
        .to.be.revertedWithCustomError(jm, "UpdateNotPending")
        .withArgs(jobId, 0, t1.address, 2);
    });

    it("rejects at a strict majority, slashes the trainer and pays the dissenters", async function () {
      const f = await loadFixture(h.jobFixture);
      const { jm, jobId, p, t1 } = f;
      await jm.connect(t1).submitUpdate(jobId, 0, h.cid("u"));
      const vs = await h.drawn(f, jobId, 0, t1.address);
      await jm.connect(vs[0]).validateUpdate(jobId, 0, t1.address, true, 7n);
      await jm.connect(vs[1]).validateUpdate(jobId, 0, t1.address, false, 0n);
      const slashedBefore = await jm.totalSlashed();
      const tx = jm.connect(vs[2]).validateUpdate(jobId, 0, t1.address, false, 0n);
      await expect(tx).to.emit(jm, "UpdateRejected").withArgs(jobId, 0, t1.address);
      await expect(tx).to.emit(jm, "TrainerSlashed").withArgs(jobId, t1.address, h.SLASH);
      await expect(tx).to.emit(jm, "FeePaid").withArgs(jobId, vs[2].address, p.validatorFee);
      expect(await jm.balanceOf(vs[1].address)).to.equal(p.validatorFee);
      expect(await jm.balanceOf(vs[0].address)).to.equal(0n);
      expect((await jm.trainers(t1.address)).stake).to.equal(h.MIN_TRAINER_STAKE - h.SLASH);
      expect(await jm.totalSlashed()).to.equal(slashedBefore + h.SLASH);
      expect((await jm.getUpdate(jobId, 0, t1.address)).status).to.equal(3n);
      expect(await jm.pendingUpdates(t1.address)).to.equal(0n);
    });

    it("slashes no more than the stake left", async function () {
      const { jm, customer, l1, t1, signers } = await loadFixture(h.registeredFixture);
      const cheap = await ethers.deployContract("JobManager", [1n, h.MIN_VALIDATOR_STAKE, h.E("5"), 60]);
      const f = { jm: cheap, signers };
      await cheap.connect(t1).registerTrainer(0, { value: h.E("1") });
      for (const v of signers.slice(9, 12)) await cheap.connect(v).registerValidator({ value: h.MIN_VALIDATOR_STAKE });
      const { jobId } = await h.createJob(cheap, customer, { quorum: 1 });
      await cheap.connect(t1).submitUpdate(jobId, 0, h.cid("u"));
      const [v] = await h.drawn(f, jobId, 0, t1.address);
      await expect(cheap.connect(v).validateUpdate(jobId, 0, t1.address, false, 0n))
        .to.emit(cheap, "TrainerSlashed")
        .withArgs(jobId, t1.address, h.E("1"));
      expect((await cheap.trainers(t1.address)).stake).to.equal(0n);
      expect(jm).to.not.equal(undefined);
      expect(l1).to.not.equal(undefined);
    });

    it("reverts for unknown updates, undrawn validators, double votes and closed jobs", async function () {
      const f = await loadFixture(h.jobFixture);
      const { jm, jobId, customer, t1, t2, l1 } = f;
      await expect(jm.connect(t2).validateUpdate(jobId, 0, t1.address, true, 0n))
        .to.be.revertedWithCustomError(jm, "UnknownUpdate")
        .withArgs(jobId, 0, t1.address);
      await jm.connect(t1).submitUpdate(jobId, 0, h.cid("u"));
      const vs = await h.drawn(f, jobId, 0, t1.address);
      await expect(jm.connect(t2).validateUpdate(jobId, 0, t1.address, true, 0n))
        .to.be.revertedWithCustomError(jm, "NotDrawnValidator")
        .withArgs(jobId, 0, t1.address, t2.address);
      await jm.connect(vs[0]).validateUpdate(jobId, 0, t1.address, true, 0n);
      await expect(jm.connect(vs[0]).validateUpdate(jobId, 0, t1.address, false, 0n))
        .to.be.revertedWithCustomError(jm, "AlreadyVoted")
        .withArgs(jobId, 0, t1.address, vs[0].address);
      const job = await jm.getJob(jobId);
      await time.increaseTo(job.leaseExpiry + BigInt(job.params.leaseSeconds) + 1n);
      await jm.connect(customer).cancelJob(jobId);
      await expect(jm.connect(vs[1]).validateUpdate(jobId, 0, t1.address, true, 0n))
        .to.be.revertedWithCustomError(jm, "JobNotActive")
        .withArgs(jobId, 3);
      expect(l1).to.not.equal(undefined);
    });
  });

  describe("commitRound", function () {
    it("records the checkpoint, renews the lease, pays the leader, splits the bonus by loss reduction", async function () {
      const f = await loadFixture(h.jobFixture);
      const { jm, jobId, p, l1, t1, t2, t3 } = f;
      await h.acceptedUpdate(f, jobId, 0, t1, 100n);
      await h.acceptedUpdate(f, jobId, 0, t2, 300n);
      await jm.connect(t3).submitUpdate(jobId, 0, h.cid("slow")); // still pending at commit: expires
      const c = h.cid("ckpt-0");
      const expiry = (await h.nextTimestamp()) + p.leaseSeconds;
      const tx = jm.connect(l1).commitRound(jobId, 0, c);
      await expect(tx).to.emit(jm, "RoundCommitted").withArgs(jobId, 0, l1.address, c, expiry);
      await expect(tx).to.emit(jm, "FeePaid").withArgs(jobId, l1.address, p.leaderFee);
      await expect(tx).to.emit(jm, "UpdateExpired").withArgs(jobId, 0, t3.address);
      const job = await jm.getJob(jobId);
      expect(job.committedRounds).to.equal(1n);
      expect(job.leaseExpiry).to.equal(expiry);
      expect(job.lastCheckpointCid).to.equal(ethers.hexlify(c));
      expect(await jm.getRoundCheckpoint(jobId, 0)).to.equal(ethers.hexlify(c));
      expect(await jm.balanceOf(l1.address)).to.equal(p.leaderFee);
      expect(await jm.pendingUpdates(t3.address)).to.equal(0n);
      const pool = p.bonusRate * 2n;
      const a1 = (await jm.getUpdate(jobId, 0, t1.address)).amount;
      const a2 = (await jm.getUpdate(jobId, 0, t2.address)).amount;
      expect(a1).to.equal(p.baseRate + (pool * 100n) / 400n);
      expect(a2).to.equal(p.baseRate + (pool * 300n) / 400n);
      expect((await jm.getUpdate(jobId, 0, t3.address)).amount).to.equal(0n);
    });

    it("pays no bonus when no accepted update reduced the loss, and expires a tied vote", async function () {
      const f = await loadFixture(h.registeredFixture);
      const { jm, customer, l1, t1, t2 } = f;
      const { jobId, p } = await h.createJob(jm, customer, { quorum: 2, rounds: 1 });
      await jm.connect(l1).standForLeader(jobId);
      await h.acceptedUpdate(f, jobId, 0, t1, 0n);
      await jm.connect(t2).submitUpdate(jobId, 0, h.cid("tie"));
      await h.vote(f, jobId, 0, t2.address, [
        [true, 5n],
        [false, 0n],
      ]);
      expect((await jm.getUpdate(jobId, 0, t2.address)).status).to.equal(1n);
      const tx = jm.connect(l1).commitRound(jobId, 0, h.cid("final"));
      await expect(tx).to.emit(jm, "UpdateExpired").withArgs(jobId, 0, t2.address);
      expect((await jm.getUpdate(jobId, 0, t1.address)).amount).to.equal(p.baseRate);
      // quorum 2 -> majority 2: t1's two voters, t2's one valid voter earned nothing (no outcome).
      const spent = p.baseRate + 2n * p.validatorFee + p.leaderFee;
      const deposit = h.requiredDeposit(p);
      await expect(tx).to.emit(jm, "JobFinished").withArgs(jobId, h.cid("final"), deposit - spent);
    });

    it("finishes the job at the last round and refunds the rest", async function () {
      const f = await loadFixture(h.registeredFixture);
      const { jm, customer, l1, t1 } = f;
      const extra = h.E("1");
      const { jobId, p, deposit } = await h.createJob(jm, customer, { rounds: 1 }, extra);
      await jm.connect(l1).standForLeader(jobId);
      await h.acceptedUpdate(f, jobId, 0, t1, 10n);
      const spent = p.baseRate + p.bonusRate + 2n * p.validatorFee + p.leaderFee;
      const tx = jm.connect(l1).commitRound(jobId, 0, h.cid("final"));
      await expect(tx).to.emit(jm, "JobFinished").withArgs(jobId, h.cid("final"), deposit - spent);
      await expect(tx).not.to.emit(jm, "SuccessorDrawn");
      const job = await jm.getJob(jobId);
      expect(job.status).to.equal(2n);
      expect(job.spent).to.equal(spent);
      expect(job.refunded).to.equal(deposit - spent);
      expect(await jm.balanceOf(customer.address)).to.equal(deposit - spent);
      await expect(jm.connect(t1).submitUpdate(jobId, 1, h.cid("x")))
        .to.be.revertedWithCustomError(jm, "JobNotActive")
        .withArgs(jobId, 2);
    });

    it("reverts for non-leaders, expired leases, wrong rounds, bad CIDs and empty rounds", async function () {
      const f = await loadFixture(h.jobFixture);
      const { jm, jobId, l1, l2, t1 } = f;
      await expect(jm.connect(l2).commitRound(jobId, 0, h.cid("c")))
        .to.be.revertedWithCustomError(jm, "NotLeader")
        .withArgs(jobId, l2.address, l1.address);
      await expect(jm.connect(l1).commitRound(jobId, 1, h.cid("c")))
        .to.be.revertedWithCustomError(jm, "WrongRound")
        .withArgs(jobId, 0, 1);
      await expect(jm.connect(l1).commitRound(jobId, 0, "0x" + "00".repeat(129)))
        .to.be.revertedWithCustomError(jm, "InvalidCid")
        .withArgs(129);
      await expect(jm.connect(l1).commitRound(jobId, 0, h.cid("c")))
        .to.be.revertedWithCustomError(jm, "NoAcceptedUpdates")
        .withArgs(jobId, 0);
      await h.acceptedUpdate(f, jobId, 0, t1);
      const job = await jm.getJob(jobId);
      await time.increaseTo(job.leaseExpiry + 1n);
      await expect(jm.connect(l1).commitRound(jobId, 0, h.cid("c")))
        .to.be.revertedWithCustomError(jm, "LeaseExpired")
        .withArgs(jobId, job.leaseExpiry);
    });
  });

  it("credits nothing (and emits no FeePaid) when fees are zero", async function () {
    const f = await loadFixture(h.registeredFixture);
    const { jm, customer, l1, t1 } = f;
    const { jobId, p } = await h.createJob(jm, customer, { rounds: 1, validatorFee: 0n, leaderFee: 0n });
    await jm.connect(l1).standForLeader(jobId);
    await jm.connect(t1).submitUpdate(jobId, 0, h.cid("u"));
    const vs = await h.drawn(f, jobId, 0, t1.address);
    await jm.connect(vs[0]).validateUpdate(jobId, 0, t1.address, true, 1n);
    await expect(jm.connect(vs[1]).validateUpdate(jobId, 0, t1.address, true, 1n)).not.to.emit(jm, "FeePaid");
    await expect(jm.connect(l1).commitRound(jobId, 0, h.cid("c"))).not.to.emit(jm, "FeePaid");
    expect(await jm.balanceOf(l1.address)).to.equal(0n);
    expect((await jm.getJob(jobId)).spent).to.equal(p.baseRate + p.bonusRate);
  });

  describe("payout and withdraw", function () {
    it("credits accepted updates of committed rounds once, across rounds", async function () {
      const f = await loadFixture(h.jobFixture);
      const { jm, jobId, p, l1, t1, t2, t3 } = f;
      await expect(jm.payout(99n, t1.address)).to.be.revertedWithCustomError(jm, "UnknownJob").withArgs(99n);
      await h.acceptedUpdate(f, jobId, 0, t1, 10n);
      await expect(jm.payout(jobId, t1.address))
        .to.be.revertedWithCustomError(jm, "NothingToPay")
        .withArgs(jobId, t1.address);
      await jm.connect(t2).submitUpdate(jobId, 0, h.cid("bad"));
      await h.vote(f, jobId, 0, t2.address, [
        [false, 0n],
        [false, 0n],
      ]);
      await jm.connect(l1).commitRound(jobId, 0, h.cid("c0"));
      await h.acceptedUpdate(f, jobId, 1, t1, 10n);
      await h.acceptedUpdate(f, jobId, 1, t3, 30n);
      await jm.connect(l1).commitRound(jobId, 1, h.cid("c1"));
      const a0 = (await jm.getUpdate(jobId, 0, t1.address)).amount;
      const a1 = (await jm.getUpdate(jobId, 1, t1.address)).amount;
      expect(a0).to.equal(p.baseRate + p.bonusRate);
      const paidBefore = await jm.totalPaid();
      await expect(jm.connect(t2).payout(jobId, t1.address)).to.emit(jm, "PaidOut").withArgs(jobId, t1.address, a0 + a1);
      expect(await jm.totalPaid()).to.equal(paidBefore + a0 + a1);
      expect((await jm.getUpdate(jobId, 0, t1.address)).paid).to.equal(true);
      expect((await jm.getUpdate(jobId, 1, t1.address)).paid).to.equal(true);
      await expect(jm.payout(jobId, t1.address)).to.be.revertedWithCustomError(jm, "NothingToPay");
      const b3 = (await jm.getUpdate(jobId, 1, t3.address)).amount;
      await expect(jm.payout(jobId, t3.address)).to.emit(jm, "PaidOut").withArgs(jobId, t3.address, b3);
      // The rejected update is never paid.
      await expect(jm.payout(jobId, t2.address)).to.be.revertedWithCustomError(jm, "NothingToPay");
      expect((await jm.getUpdate(jobId, 0, t2.address)).paid).to.equal(false);
      const bal = await jm.balanceOf(t1.address);
      await expect(jm.connect(t1).withdraw()).to.emit(jm, "Withdrawn").withArgs(t1.address, bal);
    });

    it("withdraw sends the whole balance once", async function () {
      const f = await loadFixture(h.jobFixture);
      const { jm, jobId, l1, t1 } = f;
      await expect(jm.connect(t1).withdraw())
        .to.be.revertedWithCustomError(jm, "NothingToWithdraw")
        .withArgs(t1.address);
      await h.acceptedUpdate(f, jobId, 0, t1, 10n);
      await jm.connect(l1).commitRound(jobId, 0, h.cid("c0"));
      await jm.payout(jobId, t1.address);
      const bal = await jm.balanceOf(t1.address);
      await expect(jm.connect(t1).withdraw()).to.changeEtherBalances([t1, jm], [bal, -bal]);
      expect(await jm.balanceOf(t1.address)).to.equal(0n);
      expect(await jm.totalWithdrawn()).to.equal(bal);
      await expect(jm.connect(t1).withdraw()).to.be.revertedWithCustomError(jm, "NothingToWithdraw");
    });
  });

  describe("reentrancy", function () {
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
        .to.be.revertedWithCustomError(jm, "TransferFailed")
        .withArgs(await attacker.getAddress(), deposit);
      expect(await jm.balanceOf(await attacker.getAddress())).to.equal(deposit);
    });

    it("every other money-moving function is guarded against re-entry too", async function () {
      const { jm, attacker, deposit } = await loadFixture(attackerFixture);
      await expect(attacker.attack(2)).to.changeEtherBalances([attacker, jm], [deposit, -deposit]);
      expect(await attacker.guardedReverts()).to.equal(6n);
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
