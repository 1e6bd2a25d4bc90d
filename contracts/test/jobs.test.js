const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time, mine } = require("@nomicfoundation/hardhat-toolbox/network-helpers");
const h = require("./helpers");

describe("JobManager: jobs, leaders, failover and cancellation", function () {
  describe("createJob", function () {
    it("escrows the deposit and records the job", async function () {
      const { jm, customer } = await loadFixture(h.registeredFixture);
      const p = h.jobParams();
      const deposit = h.requiredDeposit(p) + 7n;
      expect(await jm.requiredDeposit(p)).to.equal(h.requiredDeposit(p));
      await expect(jm.connect(customer).createJob(p, { value: deposit }))
        .to.emit(jm, "JobCreated")
        .withArgs(1n, customer.address, p.specCid, deposit);
      const j = await jm.getJob(1n);
      expect(j.customer).to.equal(customer.address);
      expect(j.deposit).to.equal(deposit);
      expect(j.status).to.equal(1n);
      expect(j.params.maxWorkUnits).to.equal(10n);
      expect(j.lastCheckpointCid).to.equal("0x");
      expect(await jm.jobCount()).to.equal(1n);
      expect(await jm.escrowHeld()).to.equal(deposit);
      const acc = await jm.accounting();
      expect([acc.deposits, acc.escrow, acc.locked]).to.deep.equal([deposit, deposit, await jm.stakeHeld()]);
      expect(await jm.totalHeld()).to.equal(deposit + (await jm.stakeHeld()));
      expect(await jm.updateBond(1n)).to.equal(h.updateBond(p));
    });

    it("rejects bad parameters and short deposits", async function () {
      const { jm, customer } = await loadFixture(h.registeredFixture);
      const bad = {
        rounds: [0, 1001],
        tasksPerRound: [0, 65],
        localSteps: [0],
        maxWorkUnits: [0],
        quorum: [0, 16],
        leaseSeconds: [0, 7 * 86400 + 1],
      };
      for (const [param, values] of Object.entries(bad)) {
        for (const v of values) {
          const p = h.jobParams({ [param]: v });
          await expect(jm.connect(customer).createJob(p, { value: h.requiredDeposit(p) }))
            .to.be.revertedWithCustomError(jm, "JobManagerInvalidJobParam")
            .withArgs(param);
        }
      }
      const rates = h.jobParams({ baseRate: 2n ** 127n, maxWorkUnits: 4 });
      await expect(jm.connect(customer).createJob(rates, { value: 0 }))
        .to.be.revertedWithCustomError(jm, "JobManagerInvalidJobParam")
        .withArgs("rates");
      for (const specCid of ["0x", ethers.hexlify(new Uint8Array(129))]) {
        const p = h.jobParams({ specCid });
        await expect(jm.connect(customer).createJob(p, { value: h.requiredDeposit(p) })).to.be.revertedWithCustomError(
          jm,
          "JobManagerInvalidCid",
        );
      }
      const p = h.jobParams();
      const need = h.requiredDeposit(p);
      await expect(jm.connect(customer).createJob(p, { value: need - 1n }))
        .to.be.revertedWithCustomError(jm, "JobManagerInsufficientDeposit")
        .withArgs(need, need - 1n);
    });

    it("reverts reads of unknown jobs", async function () {
      const { jm } = await loadFixture(h.registeredFixture);
      await expect(jm.getJob(5n)).to.be.revertedWithCustomError(jm, "JobManagerUnknownJob").withArgs(5n);
      await expect(jm.updateBond(5n)).to.be.revertedWithCustomError(jm, "JobManagerUnknownJob").withArgs(5n);
      await expect(jm.payout(5n, 0)).to.be.revertedWithCustomError(jm, "JobManagerUnknownJob");
    });
  });

  describe("candidacy", function () {
    it("elects the first bonded candidate; later ones wait", async function () {
      const { jm, customer, l1, l2 } = await loadFixture(h.registeredFixture);
      const { jobId } = await h.createJob(jm, customer);
      const at = await h.nextTimestamp();
      const tx = await jm.connect(l1).standForLeader(jobId, { value: h.MIN_LEADER_BOND });
      await expect(tx).to.emit(jm, "CandidateStood").withArgs(jobId, l1.address, h.MIN_LEADER_BOND);
      await expect(tx).to.emit(jm, "LeaderElected").withArgs(jobId, l1.address, 1, at + h.LEASE);
      await expect(jm.connect(l2).standForLeader(jobId, { value: h.E("1") })).not.to.emit(jm, "LeaderElected");
      const [list, bonds] = await jm.getCandidates(jobId);
      expect(list).to.deep.equal([l1.address, l2.address]);
      expect(bonds).to.deep.equal([h.MIN_LEADER_BOND, h.E("1")]);
      expect(await jm.successor(jobId)).to.equal(ethers.ZeroAddress);
      expect(await jm.stakeHeld()).to.equal(h.E("17") + h.MIN_LEADER_BOND + h.E("1"));
    });

    it("reverts for closed jobs, strangers, leaving nodes and repeat candidates", async function () {
      const { jm, customer, l1, outsider } = await loadFixture(h.registeredFixture);
      const { jobId } = await h.createJob(jm, customer);
      const bond = { value: h.MIN_LEADER_BOND };
      await expect(jm.connect(outsider).standForLeader(jobId, bond))
        .to.be.revertedWithCustomError(jm, "JobManagerNotRegistered")
        .withArgs(outsider.address);
      await jm.connect(l1).standForLeader(jobId, bond);
      await expect(jm.connect(l1).standForLeader(jobId, bond))
        .to.be.revertedWithCustomError(jm, "JobManagerAlreadyCandidate")
        .withArgs(jobId, l1.address);
      await expect(jm.connect(l1).standForLeader(9n, bond)).to.be.revertedWithCustomError(jm, "JobManagerUnknownJob");
      const { jobId: other } = await h.createJob(jm, customer);
      await jm.connect(customer).cancelJob(other);
      await expect(jm.connect(l1).standForLeader(other, bond))
        .to.be.revertedWithCustomError(jm, "JobManagerJobNotActive")
        .withArgs(other, 3);
    });

    it("returns a bond on withdrawal, but not the leader's, and not inside a committer's audit window", async function () {
      const f = await loadFixture(h.jobFixture);
      const { jm, jobId, l1, l2, t1, outsider } = f;
      await expect(jm.connect(outsider).withdrawCandidacy(jobId))
        .to.be.revertedWithCustomError(jm, "JobManagerNotCandidate")
        .withArgs(jobId, outsider.address);
      await expect(jm.connect(l1).withdrawCandidacy(jobId))
        .to.be.revertedWithCustomError(jm, "JobManagerCandidateIsLeader")
        .withArgs(jobId, l1.address);
      await expect(jm.connect(l2).withdrawCandidacy(jobId))
        .to.emit(jm, "CandidacyEnded")
        .withArgs(jobId, l2.address, h.MIN_LEADER_BOND);
      expect(await jm.balanceOf(l2.address)).to.equal(h.MIN_LEADER_BOND);
      // l1 commits both rounds; the job finishes; its bond stays for one lease after its last commit.
      for (const round of [0, 1]) {
        await h.acceptedUpdate(f, jobId, round, t1, 0);
        await h.commit(f, jobId);
      }
      const last = await time.latest();
      await expect(jm.connect(l1).withdrawCandidacy(jobId))
        .to.be.revertedWithCustomError(jm, "JobManagerBondInAuditWindow")
        .withArgs(jobId, l1.address, BigInt(last + h.LEASE));
      await time.increase(h.LEASE + 1);
      await expect(jm.connect(l1).withdrawCandidacy(jobId)).to.emit(jm, "CandidacyEnded");
    });
  });

  describe("failover", function () {
    it("draws the successor by bond from a later block; only it claims in the grace window, then anyone", async function () {
      const f = await loadFixture(h.registeredFixture);
      const { jm, customer, l1, l2, l3 } = f;
      const { jobId } = await h.createJob(jm, customer);
      await jm.connect(l1).standForLeader(jobId, { value: h.MIN_LEADER_BOND });
      await jm.connect(l2).standForLeader(jobId, { value: h.E("1000") }); // ~all the bond weight
      await jm.connect(l3).standForLeader(jobId, { value: h.MIN_LEADER_BOND });
      await expect(jm.connect(l2).claimLeadership(jobId)).to.be.revertedWithCustomError(jm, "JobManagerLeaseNotExpired");
      await time.increase(h.LEASE + 1);
      const job = await jm.getJob(jobId);
      const graceEnd = job.leaseExpiry + BigInt(h.LEASE);
      await expect(jm.connect(l2).claimLeadership(jobId))
        .to.be.revertedWithCustomError(jm, "JobManagerNotSuccessor")
        .withArgs(jobId, ethers.ZeroAddress, graceEnd);
      const tx = await jm.connect(l3).drawSuccessor(jobId);
      await expect(tx).to.emit(jm, "SuccessorDrawRequested").withArgs(jobId, 1, tx.blockNumber);
      await expect(jm.drawSuccessor(jobId))
        .to.be.revertedWithCustomError(jm, "JobManagerSuccessorDrawPending")
        .withArgs(jobId, tx.blockNumber);
      await mine(h.DRAW_DELAY + 1);
      expect(await jm.successor(jobId)).to.equal(l2.address);
      await expect(jm.connect(l3).claimLeadership(jobId))
        .to.be.revertedWithCustomError(jm, "JobManagerNotSuccessor")
        .withArgs(jobId, l2.address, graceEnd);
      await expect(jm.connect(l2).claimLeadership(jobId)).to.emit(jm, "LeaderElected");
      const after = await jm.getJob(jobId);
      expect([after.leader, after.term, after.successorAnchor]).to.deep.equal([l2.address, 2n, 0n]);
      // l2 lapses too; after the grace window any candidate may claim without a draw.
      await time.increase(2 * h.LEASE + 2);
      await expect(jm.connect(l3).claimLeadership(jobId))
        .to.emit(jm, "LeaderBondForfeited")
        .withArgs(jobId, l2.address, h.E("500"));
      expect((await jm.getJob(jobId)).leader).to.equal(l3.address);
    });

    it("re-anchors a successor draw whose block hash is gone; a lone leader may reclaim at the price of half its bond", async function () {
      const f = await loadFixture(h.registeredFixture);
      const { jm, customer, l1, outsider } = f;
      const { jobId } = await h.createJob(jm, customer);
      await jm.connect(l1).standForLeader(jobId, { value: h.MIN_LEADER_BOND });
      await expect(jm.drawSuccessor(jobId)).to.be.revertedWithCustomError(jm, "JobManagerLeaseNotExpired");
      await time.increase(h.LEASE + 1);
      await jm.drawSuccessor(jobId);
      await mine(300);
      expect(await jm.successor(jobId)).to.equal(ethers.ZeroAddress);
      await expect(jm.drawSuccessor(jobId)).to.emit(jm, "SuccessorDrawRequested");
      await expect(jm.connect(outsider).claimLeadership(jobId))
        .to.be.revertedWithCustomError(jm, "JobManagerNotCandidate")
        .withArgs(jobId, outsider.address);
      await time.increase(h.LEASE + 1);
      const tx = jm.connect(l1).claimLeadership(jobId);
      await expect(tx).to.emit(jm, "LeaderBondForfeited").withArgs(jobId, l1.address, h.MIN_LEADER_BOND / 2n);
      await expect(tx).to.emit(jm, "LeaderElected");
      expect((await jm.getCandidates(jobId))[1]).to.deep.equal([h.MIN_LEADER_BOND / 2n]);
      // A leaving candidate cannot claim.
      await time.increase(2 * h.LEASE + 2);
      await jm.connect(l1).requestDeregistration();
      await expect(jm.connect(l1).claimLeadership(jobId))
        .to.be.revertedWithCustomError(jm, "JobManagerNotRegistered")
        .withArgs(l1.address);
    });

    it("hands a job killed mid-round to the next leader, which finishes it with nothing paid twice", async function () {
      const f = await loadFixture(h.jobFixture);
      const { jm, jobId, t1, t2, l2, deposit } = f;
      await h.acceptedUpdate(f, jobId, 0, t1, 0);
      await h.commit(f, jobId);
      await h.acceptedUpdate(f, jobId, 1, t2, 0);
      // l1 dies: its round-1 tickets die with its term; l2 takes over and re-admits the work.
      await time.increase(h.LEASE + 1);
      await jm.drawSuccessor(jobId);
      await mine(h.DRAW_DELAY + 1);
      await jm.connect(l2).claimLeadership(jobId);
      expect((await jm.getRound(jobId, 1)).acceptedMask).to.equal(1n);
      await h.acceptedUpdate(f, jobId, 1, t1, 1);
      await expect(h.commit(f, jobId)).to.emit(jm, "JobFinished");
      await jm.payout(jobId, 0);
      await jm.payout(jobId, 1);
      await expect(jm.payout(jobId, 0)).to.be.revertedWithCustomError(jm, "JobManagerNothingToPay");
      const j = await jm.getJob(jobId);
      expect(j.spent + j.refunded).to.equal(deposit);
      expect(j.lastCheckpointCid).to.not.equal("0x");
    });
  });

  describe("cancelJob", function () {
    it("refunds a job without a leader at once", async function () {
      const { jm, customer, outsider } = await loadFixture(h.registeredFixture);
      const { jobId, deposit } = await h.createJob(jm, customer);
      await expect(jm.connect(outsider).cancelJob(jobId))
        .to.be.revertedWithCustomError(jm, "JobManagerNotCustomer")
        .withArgs(jobId, outsider.address);
      await expect(jm.connect(customer).cancelJob(jobId)).to.emit(jm, "JobCancelled").withArgs(jobId, deposit);
      expect(await jm.balanceOf(customer.address)).to.equal(deposit);
      await expect(jm.connect(customer).cancelJob(jobId))
        .to.be.revertedWithCustomError(jm, "JobManagerJobNotActive")
        .withArgs(jobId, 3);
    });

    it("waits out lease and grace; burns half the lapsed leader's bond; expires pending work", async function () {
      const f = await loadFixture(h.jobFixture);
      const { jm, jobId, customer, l1, t1, t2 } = f;
      await h.submit(f, jobId, t1, 0);
      const job = await jm.getJob(jobId);
      const after = job.leaseExpiry + BigInt(h.LEASE);
      await expect(jm.connect(customer).cancelJob(jobId))
        .to.be.revertedWithCustomError(jm, "JobManagerJobStillServed")
        .withArgs(jobId, l1.address, after);
      await time.increaseTo(after + 1n);
      const tx = jm.connect(customer).cancelJob(jobId);
      await expect(tx).to.emit(jm, "UpdateExpired").withArgs(jobId, 0, 0, t1.address);
      await expect(tx).to.emit(jm, "LeaderBondForfeited").withArgs(jobId, l1.address, h.MIN_LEADER_BOND / 2n);
      expect((await jm.trainers(t1.address)).locked).to.equal(0n);
      await expect(h.submit(f, jobId, t2, 1)).to.be.revertedWithCustomError(jm, "JobManagerJobNotActive");
    });

    it("lets the customer out of a job whose candidates keep claiming without committing", async function () {
      const f = await loadFixture(h.jobFixture);
      const { jm, jobId, customer, l2 } = f;
      for (let i = 0; i < 2; i++) {
        await time.increase(2 * h.LEASE + 1);
        await jm.connect(l2).claimLeadership(jobId); // a fresh lease each time, never a commit
      }
      await expect(jm.connect(customer).cancelJob(jobId)).to.emit(jm, "JobCancelled");
    });
  });
});
