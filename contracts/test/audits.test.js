const { expect } = require("chai");
const { loadFixture, mine } = require("@nomicfoundation/hardhat-toolbox/network-helpers");
const h = require("./helpers");

describe("JobManager: audits of committed rounds", function () {
  async function committedFixture() {
    const f = await h.jobFixture();
    await h.acceptedUpdate(f, f.jobId, 0, f.t1, 0);
    await h.commit(f, f.jobId);
    return f;
  }

  it("draws the audit panel from a block after the commit, never the committer", async function () {
    const f = await loadFixture(committedFixture);
    const { jm, jobId, l1 } = f;
    await expect(jm.drawAuditors(jobId, 1))
      .to.be.revertedWithCustomError(jm, "JobManagerRoundNotCommitted")
      .withArgs(jobId, 1);
    const { auditAnchor } = await jm.getRound(jobId, 0);
    await expect(jm.drawAuditors(jobId, 0))
      .to.be.revertedWithCustomError(jm, "JobManagerDrawNotReady")
      .withArgs(auditAnchor + BigInt(h.DRAW_DELAY) + 1n);
    await mine(h.DRAW_DELAY);
    const tx = await jm.drawAuditors(jobId, 0);
    const { auditors } = await jm.getRound(jobId, 0);
    await expect(tx).to.emit(jm, "AuditorsDrawn").withArgs(jobId, 0, auditors);
    expect(auditors).to.have.length(3);
    expect(auditors).to.not.include(l1.address);
    await expect(jm.drawAuditors(jobId, 0))
      .to.be.revertedWithCustomError(jm, "JobManagerNothingToDraw")
      .withArgs(jobId, 0, 2n ** 32n - 1n);
  });

  it("re-anchors an audit draw whose block hash is gone", async function () {
    const f = await loadFixture(committedFixture);
    const { jm, jobId } = f;
    await mine(300);
    const tx = await jm.drawAuditors(jobId, 0);
    await expect(tx).to.emit(jm, "DrawRescheduled").withArgs(jobId, 0, 2n ** 32n - 1n, tx.blockNumber);
    await mine(h.DRAW_DELAY);
    await expect(jm.drawAuditors(jobId, 0)).to.emit(jm, "AuditorsDrawn");
  });

  it("a failed majority disputes the round, burns the committer's bond, and frees the customer at once", async function () {
    const f = await loadFixture(committedFixture);
    const { jm, jobId, customer, l1, t1, t2, p } = f;
    await expect(jm.connect(f.v1).auditRound(jobId, 1, false))
      .to.be.revertedWithCustomError(jm, "JobManagerRoundNotCommitted")
      .withArgs(jobId, 1);
    await mine(h.DRAW_DELAY);
    await jm.drawAuditors(jobId, 0);
    const auditors = (await jm.getRound(jobId, 0)).auditors.map((a) => h.signerOf(f, a));
    await expect(jm.connect(auditors[0]).auditRound(jobId, 0, false))
      .to.emit(jm, "RoundAudited")
      .withArgs(jobId, 0, auditors[0].address, false);
    await expect(jm.connect(auditors[0]).auditRound(jobId, 0, true))
      .to.be.revertedWithCustomError(jm, "JobManagerAlreadyAudited")
      .withArgs(jobId, 0, auditors[0].address);
    await h.acceptedUpdate(f, jobId, 1, t2, 1); // work in the open round
    const tx = jm.connect(auditors[1]).auditRound(jobId, 0, false);
    await expect(tx).to.emit(jm, "RoundDisputed").withArgs(jobId, 0, 2);
    await expect(tx).to.emit(jm, "LeaderBondForfeited").withArgs(jobId, l1.address, h.MIN_LEADER_BOND);
    const r = await jm.getRound(jobId, 0);
    expect([r.audit, r.auditOk, r.auditFailed]).to.deep.equal([2n, 0n, 2n]);
    expect((await jm.getJob(jobId)).disputed).to.equal(true);
    await expect(jm.connect(customer).cancelJob(jobId)).to.emit(jm, "JobCancelled");
    // Accepted work stays paid: the committed round's and the open round's.
    await expect(jm.payout(jobId, 0)).to.emit(jm, "PaidOut").withArgs(jobId, t1.address, 10n * p.baseRate + 10n * p.bonusRate);
    await expect(jm.payout(jobId, 1)).to.emit(jm, "PaidOut").withArgs(jobId, t2.address, 10n * p.baseRate + 10n * p.bonusRate);
  });
});
