const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time, setBalance } = require("@nomicfoundation/hardhat-toolbox/network-helpers");
const h = require("./helpers");

describe("JobManager: jobs, election and cancellation", function () {
  describe("createJob", function () {
    it("escrows the deposit and records the job", async function () {
      const { jm, customer } = await loadFixture(h.registeredFixture);
      const p = h.jobParams();
      const deposit = h.requiredDeposit(p) + 7n;
      expect(await jm.requiredDeposit(p)).to.equal(h.requiredDeposit(p));
      const tx = jm.connect(customer).createJob(p, { value: deposit });
      await expect(tx).to.emit(jm, "JobCreated").withArgs(1n, customer.address, p.specCid, deposit);
      await expect(tx).to.changeEtherBalances([customer, jm], [-deposit, deposit]);
      expect(await jm.jobCount()).to.equal(1n);
      const job = await jm.getJob(1n);
      expect(job.customer).to.equal(customer.address);
      expect(job.params.specCid).to.equal(ethers.hexlify(p.specCid));
      expect(job.params.rounds).to.equal(2n);
      expect(job.params.quorum).to.equal(3n);
      expect(job.deposit).to.equal(deposit);
      expect(job.spent).to.equal(0n);
      expect(job.status).to.equal(1n);
      expect(job.committedRounds).to.equal(0n);
      expect(job.leader).to.equal(ethers.ZeroAddress);
      expect(job.lastCheckpointCid).to.equal("0x");
      expect(await jm.totalDeposits()).to.equal(deposit);
      expect(await jm.escrowHeld()).to.equal(deposit);
    });

    it("rejects bad parameters and short deposits", async function () {
      const { jm, customer } = await loadFixture(h.registeredFixture);
      const bad = async (overrides, err, ...args) => {
        const p = h.jobParams(overrides);
        await expect(jm.connect(customer).createJob(p, { value: h.E("100") }))
          .to.be.revertedWithCustomError(jm, err)
          .withArgs(...args);
      };
      await bad({ specCid: "0x" }, "InvalidCid", 0);
      await bad({ specCid: "0x" + "ab".repeat(129) }, "InvalidCid", 129);
      await bad({ rounds: 0 }, "InvalidJobParam", "rounds");
      await bad({ rounds: 1001 }, "InvalidJobParam", "rounds");
      await bad({ tasksPerRound: 0 }, "InvalidJobParam", "tasksPerRound");
      await bad({ tasksPerRound: 65 }, "InvalidJobParam", "tasksPerRound");
      await bad({ localSteps: 0 }, "InvalidJobParam", "localSteps");
      await bad({ quorum: 0 }, "InvalidJobParam", "quorum");
      await bad({ quorum: 16 }, "InvalidJobParam", "quorum");
      await bad({ leaseSeconds: 0 }, "InvalidJobParam", "leaseSeconds");
      await bad({ leaseSeconds: 7 * 86400 + 1 }, "InvalidJobParam", "leaseSeconds");
      await bad({ baseRate: 2n ** 128n - 1n, bonusRate: 1n }, "InvalidJobParam", "rates");
      const p = h.jobParams();
      const need = h.requiredDeposit(p);
      await expect(jm.connect(customer).createJob(p, { value: need - 1n }))
        .to.be.revertedWithCustomError(jm, "InsufficientDeposit")
        .withArgs(need, need - 1n);
    });

    it("reverts reads of unknown jobs and uncommitted rounds", async function () {
      const { jm, jobId } = await loadFixture(h.jobFixture);
      await expect(jm.getJob(99n)).to.be.revertedWithCustomError(jm, "UnknownJob").withArgs(99n);
      await expect(jm.getRoundCheckpoint(jobId, 0))
        .to.be.revertedWithCustomError(jm, "RoundNotCommitted")
        .withArgs(jobId, 0);
    });
  });

  describe("standForLeader", function () {
    it("elects the first candidate and makes the second the successor", async function () {
      const { jm, customer, l1, l2, l3 } = await loadFixture(h.registeredFixture);
      const { jobId, p } = await h.createJob(jm, customer);
      const expiry = (await h.nextTimestamp()) + p.leaseSeconds;
      const tx = jm.connect(l1).standForLeader(jobId);
      await expect(tx).to.emit(jm, "CandidateStood").withArgs(jobId, l1.address);
      await expect(tx).to.emit(jm, "LeaderElected").withArgs(jobId, l1.address, 1, expiry);
      await expect(tx).not.to.emit(jm, "SuccessorDrawn");
      expect(await jm.successor(jobId)).to.equal(ethers.ZeroAddress);
      await expect(jm.connect(l2).standForLeader(jobId))
        .to.emit(jm, "SuccessorDrawn")
        .withArgs(jobId, l2.address, 1);
      const tx3 = jm.connect(l3).standForLeader(jobId);
      await expect(tx3).to.emit(jm, "CandidateStood").withArgs(jobId, l3.address);
      await expect(tx3).not.to.emit(jm, "SuccessorDrawn");
      await expect(tx3).not.to.emit(jm, "LeaderElected");
      const job = await jm.getJob(jobId);
      expect(job.leader).to.equal(l1.address);
      expect(job.term).to.equal(1n);
      expect(job.leaseExpiry).to.equal(expiry);
      expect(job.successor).to.equal(l2.address);
      expect(await jm.getCandidates(jobId)).to.deep.equal([l1.address, l2.address, l3.address]);
      expect(await jm.isCandidate(jobId, l3.address)).to.equal(true);
      expect(await jm.isCandidate(jobId, customer.address)).to.equal(false);
    });

    it("reverts for unknown or closed jobs, strangers and repeat candidates", async function () {
      const { jm, jobId, customer, l1, l3, outsider } = await loadFixture(h.jobFixture);
      await expect(jm.connect(l3).standForLeader(99n)).to.be.revertedWithCustomError(jm, "UnknownJob").withArgs(99n);
      await expect(jm.connect(outsider).standForLeader(jobId))
        .to.be.revertedWithCustomError(jm, "NotRegistered")
        .withArgs(outsider.address);
      await expect(jm.connect(l1).standForLeader(jobId))
        .to.be.revertedWithCustomError(jm, "AlreadyCandidate")
        .withArgs(jobId, l1.address);
      const { jobId: other } = await h.createJob(jm, customer);
      await jm.connect(customer).cancelJob(other);
      await expect(jm.connect(l3).standForLeader(other))
        .to.be.revertedWithCustomError(jm, "JobNotActive")
        .withArgs(other, 3);
    });

    it("caps the candidates of a job", async function () {
      const { jm, jobId, owner } = await loadFixture(h.jobFixture);
      const max = Number(await jm.MAX_CANDIDATES());
      const extra = [];
      for (let i = 0; i < max - 1; i++) {
        const w = ethers.Wallet.createRandom().connect(ethers.provider);
        await setBalance(w.address, h.E("10"));
        extra.push(w);
      }
      // The job already has 2 candidates; fill up to the cap.
      for (const w of extra.slice(0, max - 2)) {
        await jm.connect(w).registerTrainer(0, { value: h.MIN_TRAINER_STAKE });
        await jm.connect(w).standForLeader(jobId);
      }
      const last = extra[max - 2];
      await jm.connect(last).registerTrainer(0, { value: h.MIN_TRAINER_STAKE });
      await expect(jm.connect(last).standForLeader(jobId))
        .to.be.revertedWithCustomError(jm, "TooManyCandidates")
        .withArgs(jobId, max);
      expect(owner).to.not.equal(undefined);
    });
  });

  describe("claimLeadership (failover by time travel)", function () {
    it("lets only the successor claim in the grace window, then anyone", async function () {
      const { jm, jobId, p, l1, l2, l3, t1 } = await loadFixture(h.jobFixture);
      await jm.connect(l3).standForLeader(jobId);
      const job = await jm.getJob(jobId);
      await expect(jm.connect(t1).claimLeadership(jobId))
        .to.be.revertedWithCustomError(jm, "NotCandidate")
        .withArgs(jobId, t1.address);
      await expect(jm.connect(l2).claimLeadership(jobId))
        .to.be.revertedWithCustomError(jm, "LeaseNotExpired")
        .withArgs(jobId, job.leaseExpiry);
      await time.increaseTo(job.leaseExpiry + 1n);
      const graceEnd = job.leaseExpiry + BigInt(p.leaseSeconds);
      await expect(jm.connect(l3).claimLeadership(jobId))
        .to.be.revertedWithCustomError(jm, "NotSuccessor")
        .withArgs(jobId, l2.address, graceEnd);
      const expiry = (await h.nextTimestamp()) + p.leaseSeconds;
      const tx = jm.connect(l2).claimLeadership(jobId);
      await expect(tx).to.emit(jm, "LeaderElected").withArgs(jobId, l2.address, 2, expiry);
      const after = await jm.getJob(jobId);
      expect(after.leader).to.equal(l2.address);
      expect(after.term).to.equal(2n);
      expect([l1.address, l3.address]).to.include(after.successor);
      // l2 stops too: after its lease and the grace window anyone may take over, here the non-successor.
      const nonSuccessor = after.successor === l1.address ? l3 : l1;
      await time.increaseTo(after.leaseExpiry + BigInt(p.leaseSeconds) + 1n);
      const expiry3 = (await h.nextTimestamp()) + p.leaseSeconds;
      await expect(jm.connect(nonSuccessor).claimLeadership(jobId))
        .to.emit(jm, "LeaderElected")
        .withArgs(jobId, nonSuccessor.address, 3, expiry3);
    });

    it("lets a lone leader reclaim its own expired lease", async function () {
      const { jm, customer, l1 } = await loadFixture(h.registeredFixture);
      const { jobId, p } = await h.createJob(jm, customer);
      await jm.connect(l1).standForLeader(jobId);
      await time.increase(p.leaseSeconds + 1);
      const expiry = (await h.nextTimestamp()) + p.leaseSeconds;
      await expect(jm.connect(l1).claimLeadership(jobId))
        .to.emit(jm, "LeaderElected")
        .withArgs(jobId, l1.address, 2, expiry);
    });

    it("hands a stalled job to the next leader, which finishes it with nothing paid twice", async function () {
      const f = await loadFixture(h.jobFixture);
      const { jm, jobId, l1, l2, t1, t2, customer } = f;
      await h.acceptedUpdate(f, jobId, 0, t1, 100n);
      await jm.connect(l1).commitRound(jobId, 0, h.cid("ckpt-0"));
      await h.acceptedUpdate(f, jobId, 1, t2, 100n);
      // l1 dies mid-round; l2 (successor) takes over after the lease.
      const job = await jm.getJob(jobId);
      await time.increaseTo(job.leaseExpiry + 1n);
      await expect(jm.connect(l1).commitRound(jobId, 1, h.cid("late")))
        .to.be.revertedWithCustomError(jm, "LeaseExpired")
        .withArgs(jobId, job.leaseExpiry);
      await jm.connect(job.successor === l2.address ? l2 : signerOfAddr(f, job.successor)).claimLeadership(jobId);
      const leader = (await jm.getJob(jobId)).leader;
      await expect(jm.connect(l1).commitRound(jobId, 1, h.cid("late")))
        .to.be.revertedWithCustomError(jm, "NotLeader")
        .withArgs(jobId, l1.address, leader);
      await expect(jm.connect(h.signerOf(f, leader)).commitRound(jobId, 1, h.cid("ckpt-1"))).to.emit(jm, "JobFinished");
      await jm.payout(jobId, t1.address);
      await jm.payout(jobId, t2.address);
      await expect(jm.payout(jobId, t1.address)).to.be.revertedWithCustomError(jm, "NothingToPay");
      const done = await jm.getJob(jobId);
      expect(done.spent + done.refunded).to.equal(done.deposit);
      expect(await jm.balanceOf(customer.address)).to.equal(done.refunded);
    });
  });

  describe("cancelJob", function () {
    it("refunds a job without a leader at once", async function () {
      const { jm, customer } = await loadFixture(h.registeredFixture);
      const { jobId, deposit } = await h.createJob(jm, customer);
      await expect(jm.connect(customer).cancelJob(jobId)).to.emit(jm, "JobCancelled").withArgs(jobId, deposit);
      expect(await jm.balanceOf(customer.address)).to.equal(deposit);
      expect((await jm.getJob(jobId)).status).to.equal(3n);
      await expect(jm.connect(customer).cancelJob(jobId))
        .to.be.revertedWithCustomError(jm, "JobNotActive")
        .withArgs(jobId, 3);
      await expect(jm.connect(customer).withdraw()).to.changeEtherBalances([customer, jm], [deposit, -deposit]);
    });

    it("lets the customer out of a job whose candidates keep claiming without committing", async function () {
      const f = await loadFixture(h.jobFixture);
      const { jm, jobId, p, customer } = f;
      const L = BigInt(p.leaseSeconds);
      const start = await jm.getJob(jobId);
      const stallEnd = start.progressAt + (await jm.STALL_LEASES()) * L;
      // Two failovers in a row, each claimed in time by the successor, none committing.
      for (let i = 0; i < 2; i++) {
        const job = await jm.getJob(jobId);
        await time.increaseTo(job.leaseExpiry + 1n);
        await jm.connect(h.signerOf(f, job.successor)).claimLeadership(jobId);
      }
      const job = await jm.getJob(jobId);
      expect(job.term).to.equal(3n);
      expect(job.progressAt).to.equal(start.progressAt);
      expect(job.leaseExpiry + L).to.be.gt(stallEnd);
      await expect(jm.connect(customer).cancelJob(jobId))
        .to.be.revertedWithCustomError(jm, "JobStillServed")
        .withArgs(jobId, job.leader, stallEnd);
      await time.increaseTo(stallEnd + 1n);
      await expect(jm.connect(customer).cancelJob(jobId)).to.emit(jm, "JobCancelled");
    });

    it("waits out lease and grace of a served job; keeps owed pay; expires pending updates", async function () {
      const f = await loadFixture(h.jobFixture);
      const { jm, jobId, p, deposit, customer, l1, t1, t2, t3, outsider } = f;
      await expect(jm.connect(outsider).cancelJob(jobId))
        .to.be.revertedWithCustomError(jm, "NotCustomer")
        .withArgs(jobId, outsider.address);
      await h.acceptedUpdate(f, jobId, 0, t1, 100n);
      await jm.connect(l1).commitRound(jobId, 0, h.cid("ckpt-0"));
      await h.acceptedUpdate(f, jobId, 1, t2, 100n); // accepted, but its round never commits: not paid
      await jm.connect(t3).submitUpdate(jobId, 1, h.cid("pending"));
      const job = await jm.getJob(jobId);
      const cancellableAfter = job.leaseExpiry + BigInt(p.leaseSeconds);
      await expect(jm.connect(customer).cancelJob(jobId))
        .to.be.revertedWithCustomError(jm, "JobStillServed")
        .withArgs(jobId, l1.address, cancellableAfter);
      await time.increaseTo(cancellableAfter + 1n);
      const spent = (await jm.getJob(jobId)).spent;
      const tx = jm.connect(customer).cancelJob(jobId);
      await expect(tx).to.emit(jm, "UpdateExpired").withArgs(jobId, 1, t3.address);
      await expect(tx).to.emit(jm, "JobCancelled").withArgs(jobId, deposit - spent);
      expect(await jm.pendingUpdates(t3.address)).to.equal(0n);
      expect((await jm.getUpdate(jobId, 1, t3.address)).status).to.equal(4n);
      // Owed pay of the committed round stays payable; the uncommitted round's accepted update is not paid.
      await expect(jm.payout(jobId, t1.address)).to.emit(jm, "PaidOut").withArgs(jobId, t1.address, p.baseRate + p.bonusRate);
      await expect(jm.payout(jobId, t2.address))
        .to.be.revertedWithCustomError(jm, "NothingToPay")
        .withArgs(jobId, t2.address);
      await expect(jm.connect(t1).submitUpdate(jobId, 1, h.cid("late")))
        .to.be.revertedWithCustomError(jm, "JobNotActive")
        .withArgs(jobId, 3);
    });
  });
});

function signerOfAddr(f, a) {
  return h.signerOf(f, a);
}
