// The compact storage that keeps a submission to one new slot: its bounds (work units, loss claims), the draw's
// staleness by the block of the pool's last change, 32-bit anchors past block 2^32, pay derived from the round's
// totals with one paid flag per round, and checkpoint CIDs stored in two forms.
const { expect } = require("chai");
const { ethers, network } = require("hardhat");
const { loadFixture, mine } = require("@nomicfoundation/hardhat-toolbox/network-helpers");
const h = require("./helpers");

describe("JobManager: compact storage of updates and rounds", function () {
  it("bounds work units at 2^16 - 1 and loss claims at 2^32 - 1, and stores both exactly", async function () {
    const f = await loadFixture(h.jobFixture);
    const { jm, jobId, t1, customer } = f;
    const maxUnits = await jm.MAX_WORK_UNITS();
    const maxLoss = await jm.MAX_LOSS_REDUCTION();
    expect([maxUnits, maxLoss]).to.deep.equal([65535n, 2n ** 32n - 1n]);
    const wide = h.jobParams({ maxWorkUnits: maxUnits + 1n, baseRate: 1n, bonusRate: 1n });
    await expect(jm.connect(customer).createJob(wide, { value: h.requiredDeposit(wide) }))
      .to.be.revertedWithCustomError(jm, "JobManagerInvalidJobParam")
      .withArgs("maxWorkUnits");
    const widest = h.jobParams({ maxWorkUnits: maxUnits, baseRate: 1n, bonusRate: 1n });
    const { jobId: big } = await h.createJob(jm, customer, widest);
    await jm.connect(f.l1).standForLeader(big, { value: h.MIN_LEADER_BOND });
    await expect(h.submit(f, jobId, t1, 0, { loss: maxLoss + 1n }))
      .to.be.revertedWithCustomError(jm, "JobManagerLossReductionTooLarge")
      .withArgs(maxLoss + 1n, maxLoss);
    await h.submit(f, big, t1, 0, { workUnits: Number(maxUnits), loss: maxLoss });
    const u = await jm.getUpdate(big, 0, 0);
    expect([u.workUnits, u.lossReduction]).to.deep.equal([maxUnits, maxLoss]);
  });

  it("a pool change in the anchor's block keeps the draw; one in a later block re-anchors it", async function () {
    const f = await loadFixture(h.jobFixture);
    const { jm, jobId, t1, t2 } = f;
    // The submission and a registration in one block: the change precedes the seed block (anchor + DRAW_DELAY).
    await network.provider.send("evm_setAutomine", [false]);
    let reg;
    try {
      await h.submit(f, jobId, t1, 0, { expiry: 2 ** 40 });
      reg = await jm.connect(f.signers[20]).registerValidator({ value: h.MIN_VALIDATOR_STAKE, gasLimit: 1_000_000 });
      await mine(1);
    } finally {
      await network.provider.send("evm_setAutomine", [true]);
    }
    const { anchorBlock } = await jm.getUpdate(jobId, 0, 0);
    expect(BigInt((await reg.wait()).blockNumber)).to.equal(anchorBlock);
    expect(await jm.poolWeightOf(f.signers[20].address)).to.equal(h.MIN_VALIDATOR_STAKE);
    await mine(h.DRAW_DELAY + 1);
    const [panel, anchor] = await jm.votePanel(jobId, 0, 0);
    expect([panel.length, anchor]).to.deep.equal([3, anchorBlock]);
    await expect(jm.settleUpdates(jobId, 0, [await h.voteSet(f, jobId, 0, 0, 7)])).to.emit(jm, "UpdateAccepted");
    // A change one block after the anchor: stale.
    const sub = await h.submit(f, jobId, t2, 1);
    await jm.connect(f.signers[21]).registerValidator({ value: h.MIN_VALIDATOR_STAKE });
    await mine(h.DRAW_DELAY + 1);
    expect((await jm.votePanel(jobId, 0, 1))[0]).to.deep.equal([]);
    const tx = await jm.drawValidators(jobId, 0, 1);
    await expect(tx).to.emit(jm, "DrawRescheduled").withArgs(jobId, 0, 1, tx.blockNumber);
    expect(tx.blockNumber).to.be.greaterThan(sub.blockNumber);
  });

  it("keeps full anchor block numbers past block 2^32 (32 bits stored)", async function () {
    const f = await loadFixture(h.jobFixture);
    const { jm, jobId, t1 } = f;
    await mine(2 ** 32);
    const tx = await h.submit(f, jobId, t1, 0, { expiry: 2 ** 40 });
    expect(tx.blockNumber).to.be.greaterThan(2 ** 32);
    expect((await jm.getUpdate(jobId, 0, 0)).anchorBlock).to.equal(BigInt(tx.blockNumber));
    await mine(h.DRAW_DELAY + 1);
    expect((await jm.votePanel(jobId, 0, 0))[1]).to.equal(BigInt(tx.blockNumber));
    await expect(jm.settleUpdates(jobId, 0, [await h.voteSet(f, jobId, 0, 0, 7)]))
      .to.emit(jm, "UpdateAccepted")
      .withArgs(jobId, 0, 0, t1.address);
  });

  it("derives each update's pay from the round's totals; one payout marks the whole round paid", async function () {
    const f = await loadFixture(h.jobFixture);
    const { jm, jobId, t1, t2, t3, p } = f;
    await h.fastAcceptedUpdate(f, jobId, 0, t1, 0, { workUnits: 10, loss: 3n });
    await h.fastAcceptedUpdate(f, jobId, 0, t2, 1, { workUnits: 4, loss: 1n });
    await h.submit(f, jobId, t3, 2); // still pending at the commit: expires unpaid
    expect((await jm.getUpdate(jobId, 0, 0)).amount).to.equal(0n); // not priced yet
    await h.commit(f, jobId);
    const pool = 14n * p.bonusRate;
    const pay0 = 10n * p.baseRate + (pool * 3n) / 4n;
    const pay1 = 4n * p.baseRate + (pool * 1n) / 4n;
    const u = [await jm.getUpdate(jobId, 0, 0), await jm.getUpdate(jobId, 0, 1), await jm.getUpdate(jobId, 0, 2)];
    expect(u.map((x) => [x.amount, x.paid])).to.deep.equal([
      [pay0, false],
      [pay1, false],
      [0n, false],
    ]);
    expect(u[2].status).to.equal(h.Status.Expired);
    expect((await jm.getJob(jobId)).spent).to.equal(pay0 + pay1 + 3n * 2n * p.validatorFee + p.leaderFee);
    const tx = await jm.payout(jobId, 0);
    await expect(tx).to.emit(jm, "PaidOut").withArgs(jobId, t1.address, pay0);
    await expect(tx).to.emit(jm, "PaidOut").withArgs(jobId, t2.address, pay1);
    expect((await jm.getUpdate(jobId, 0, 0)).paid).to.equal(true);
    expect((await jm.getUpdate(jobId, 0, 2)).paid).to.equal(false);
    await expect(jm.payout(jobId, 0)).to.be.revertedWithCustomError(jm, "JobManagerNothingToPay").withArgs(jobId, 0);
  });

  it("returns every checkpoint CID as committed: 36-byte CIDv1s compactly, any other form as bytes", async function () {
    const f = await loadFixture(h.registeredFixture);
    const { jm, customer, l1, t1 } = f;
    const cids = [
      h.cid("ckpt"), // 36 bytes: header + sha2-256 digest
      ethers.concat(["0x01551220", ethers.ZeroHash]), // 36 bytes, zero digest: stored as bytes
      ethers.hexlify(ethers.toUtf8Bytes("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")), // 59 bytes
    ];
    const { jobId } = await h.createJob(jm, customer, { rounds: cids.length + 1 });
    await jm.connect(l1).standForLeader(jobId, { value: h.MIN_LEADER_BOND });
    for (const [round, cid] of cids.entries()) {
      await h.fastAcceptedUpdate(f, jobId, round, t1, 0);
      const { acceptedMask } = await jm.getRound(jobId, round);
      await expect(jm.connect(l1).commitRound(jobId, round, cid, acceptedMask))
        .to.emit(jm, "RoundCommitted")
        .withArgs(jobId, round, l1.address, cid, acceptedMask, (x) => x > 0n);
      expect((await jm.getRound(jobId, round)).checkpointCid).to.equal(cid);
      expect((await jm.getJob(jobId)).lastCheckpointCid).to.equal(cid);
    }
    for (const [round, cid] of cids.entries()) expect((await jm.getRound(jobId, round)).checkpointCid).to.equal(cid);
  });
});
