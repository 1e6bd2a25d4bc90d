const { expect } = require("chai");
const { loadFixture, time } = require("@nomicfoundation/hardhat-toolbox/network-helpers");
const h = require("./helpers");

// A job (quorum 3, 2 rounds) whose round 0 is committed by l1 with one accepted update of t1.
async function committedFixture() {
  const f = await h.jobFixture();
  await h.acceptedUpdate(f, f.jobId, 0, f.t1, 100n);
  await f.jm.connect(f.l1).commitRound(f.jobId, 0, h.cid("ckpt-0"));
  return f;
}

describe("JobManager: audits of committed rounds", function () {
  describe("auditRound", function () {
    it("records one verdict per validator and round, and counts them", async function () {
      const f = await loadFixture(committedFixture);
      const { jm, jobId, v1, v2 } = f;
      expect(await jm.hasAudited(jobId, 0, v1.address)).to.equal(false);
      const tx = jm.connect(v1).auditRound(jobId, 0, true);
      await expect(tx).to.emit(jm, "RoundAudited").withArgs(jobId, 0, v1.address, true);
      await expect(tx).not.to.emit(jm, "RoundDisputed");
      await expect(jm.connect(v2).auditRound(jobId, 0, false))
        .to.emit(jm, "RoundAudited")
        .withArgs(jobId, 0, v2.address, false);
      expect(await jm.hasAudited(jobId, 0, v1.address)).to.equal(true);
      expect(await jm.hasAudited(jobId, 1, v1.address)).to.equal(false);
      const [ok, failed] = await jm.getRoundAudits(jobId, 0);
      expect([ok, failed]).to.deep.equal([1n, 1n]);
      expect((await jm.getJob(jobId)).disputed).to.equal(false);
      await expect(jm.connect(v1).auditRound(jobId, 0, false))
        .to.be.revertedWithCustomError(jm, "AlreadyAudited")
        .withArgs(jobId, 0, v1.address);
    });

    it("reverts for unknown jobs, rounds not committed yet, and accounts that are not active validators", async function () {
      const f = await loadFixture(committedFixture);
      const { jm, jobId, v1, v2, t1, l1, outsider } = f;
      await expect(jm.connect(v1).auditRound(99n, 0, true)).to.be.revertedWithCustomError(jm, "UnknownJob").withArgs(99n);
      await expect(jm.connect(v1).auditRound(jobId, 1, true))
        .to.be.revertedWithCustomError(jm, "RoundNotCommitted")
        .withArgs(jobId, 1);
      for (const who of [t1, l1, outsider]) {
        await expect(jm.connect(who).auditRound(jobId, 0, true))
          .to.be.revertedWithCustomError(jm, "NotRegistered")
          .withArgs(who.address);
      }
      await jm.connect(v2).requestDeregistration();
      await expect(jm.connect(v2).auditRound(jobId, 0, false))
        .to.be.revertedWithCustomError(jm, "NotRegistered")
        .withArgs(v2.address);
    });

    it("disputes a round once its failed audits reach the quorum, and lets the customer cancel at once", async function () {
      const f = await loadFixture(committedFixture);
      const { jm, jobId, p, deposit, customer, l1, t1, t2, v1, v2, v3, v4, v5 } = f;
      // Round 1 is under way: an accepted update (never paid: its round is not committed) and a pending one.
      await h.acceptedUpdate(f, jobId, 1, t1, 100n);
      await jm.connect(t2).submitUpdate(jobId, 1, h.cid("pending"));
      const served = await jm.getJob(jobId);
      await expect(jm.connect(customer).cancelJob(jobId))
        .to.be.revertedWithCustomError(jm, "JobStillServed")
        .withArgs(jobId, l1.address, served.leaseExpiry + BigInt(p.leaseSeconds));
      await jm.connect(v1).auditRound(jobId, 0, false);
      await jm.connect(v2).auditRound(jobId, 0, true);
      await expect(jm.connect(v3).auditRound(jobId, 0, false)).not.to.emit(jm, "RoundDisputed");
      const before = await jm.totalHeld();
      const tx = jm.connect(v4).auditRound(jobId, 0, false);
      await expect(tx).to.emit(jm, "RoundAudited").withArgs(jobId, 0, v4.address, false);
      await expect(tx).to.emit(jm, "RoundDisputed").withArgs(jobId, 0, 3);
      await expect(jm.connect(v5).auditRound(jobId, 0, false)).not.to.emit(jm, "RoundDisputed");
      expect(await jm.totalHeld()).to.equal(before); // audits move no money
      const job = await jm.getJob(jobId);
      expect(job.disputed).to.equal(true);
      expect(await jm.getRoundAudits(jobId, 0)).to.deep.equal([1n, 4n]);
      // The lease is still running: only the dispute lets the customer out now.
      expect(BigInt(await time.latest())).to.be.lt(job.leaseExpiry);
      const cancel = jm.connect(customer).cancelJob(jobId);
      await expect(cancel).to.emit(jm, "UpdateExpired").withArgs(jobId, 1, t2.address);
      await expect(cancel).to.emit(jm, "JobCancelled").withArgs(jobId, deposit - job.spent);
      expect(await jm.balanceOf(customer.address)).to.equal(deposit - job.spent);
      // What round 0 owes stays payable: the trainers did their work.
      await expect(jm.payout(jobId, t1.address)).to.emit(jm, "PaidOut").withArgs(jobId, t1.address, p.baseRate + p.bonusRate);
      const [held, paid, refunded, slashed, deposits, stakes] = await Promise.all([
        jm.totalHeld(), jm.totalPaid(), jm.totalRefunded(), jm.totalSlashed(), jm.totalDeposits(), jm.totalStakes(),
      ]);
      expect(held + paid + refunded + slashed).to.equal(deposits + stakes);
    });

    it("audits a finished job's last round as a record; a dispute cannot reopen it", async function () {
      const f = await loadFixture(h.registeredFixture);
      const { jm, customer, l1, t1, v1 } = f;
      const { jobId } = await h.createJob(jm, customer, { rounds: 1, quorum: 1 });
      await jm.connect(l1).standForLeader(jobId);
      await h.acceptedUpdate(f, jobId, 0, t1, 5n);
      await jm.connect(l1).commitRound(jobId, 0, h.cid("final"));
      await expect(jm.connect(v1).auditRound(jobId, 0, false)).to.emit(jm, "RoundDisputed").withArgs(jobId, 0, 1);
      expect((await jm.getJob(jobId)).disputed).to.equal(true);
      await expect(jm.connect(customer).cancelJob(jobId))
        .to.be.revertedWithCustomError(jm, "JobNotActive")
        .withArgs(jobId, 2);
    });
  });
});
