const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time, mine } = require("@nomicfoundation/hardhat-toolbox/network-helpers");
const h = require("./helpers");

describe("JobManager: updates, draws, votes, commits and pay", function () {
  describe("submitUpdate", function () {
    it("admits a ticketed update, locks its bond and emits the ticket's digest", async function () {
      const f = await loadFixture(h.jobFixture);
      const { jm, jobId, t1, p } = f;
      const { t, sig } = await h.ticket(f, jobId, t1, 2, { workUnits: 7 });
      const digest = await jm.ticketDigest(t);
      const expected = ethers.TypedDataEncoder.hash(await h.domain(jm), h.TICKET_TYPES, t);
      expect(digest).to.equal(expected);
      const tx = await jm.connect(t1).submitUpdate(t, h.cid("u"), 1234n, sig);
      await expect(tx).to.emit(jm, "UpdateSubmitted").withArgs(jobId, 0, t1.address, 2, 7, 1234n, h.cid("u"), digest);
      const u = await jm.getUpdate(jobId, 0, 2);
      expect([u.trainer, u.status, u.phase, u.workUnits, u.lossReduction]).to.deep.equal([
        t1.address,
        h.Status.Pending,
        h.Phase.AwaitingPanel,
        7n,
        1234n,
      ]);
      expect(u.anchorBlock).to.equal(BigInt(tx.blockNumber));
      const tr = await jm.trainers(t1.address);
      expect([tr.pending, tr.locked]).to.deep.equal([1n, h.updateBond(p)]);
      expect((await jm.getRound(jobId, 0)).submittedMask).to.equal(4n);
    });

    it("reverts on expired tickets, bad work units, bad CIDs, strangers, short stake and closed jobs", async function () {
      const f = await loadFixture(h.jobFixture);
      const { jm, jobId, t1, outsider, customer, l1 } = f;
      const now = await time.latest();
      await expect(h.submit(f, jobId, t1, 0, { expiry: now - 1 }))
        .to.be.revertedWithCustomError(jm, "JobManagerTicketExpired")
        .withArgs(now - 1);
      for (const workUnits of [0, 11]) {
        await expect(h.submit(f, jobId, t1, 0, { workUnits }))
          .to.be.revertedWithCustomError(jm, "JobManagerInvalidWorkUnits")
          .withArgs(workUnits, 10);
      }
      await expect(h.submit(f, jobId, t1, 0, { cid: "0x" }))
        .to.be.revertedWithCustomError(jm, "JobManagerInvalidCid")
        .withArgs(0);
      await expect(h.submit(f, jobId, outsider, 0))
        .to.be.revertedWithCustomError(jm, "JobManagerNotTrainer")
        .withArgs(outsider.address);
      const sig65 = "0x" + "00".repeat(65);
      const { t } = await h.ticket(f, jobId, t1, 0);
      await expect(jm.connect(t1).submitUpdate(t, h.cid("x"), 0, sig65))
        .to.be.revertedWithCustomError(jm, "JobManagerBadTicketSignature")
        .withArgs(jobId, ethers.ZeroAddress, l1.address);
      const { jobId: other } = await h.createJob(jm, customer);
      await jm.connect(customer).cancelJob(other);
      await expect(jm.connect(t1).submitUpdate({ ...t, jobId: other }, h.cid("x"), 0, sig65))
        .to.be.revertedWithCustomError(jm, "JobManagerJobNotActive")
        .withArgs(other, 3);
    });
  });

  describe("drawValidators", function () {
    it("draws distinct, stake-weighted validators other than the trainer, from a block after the submission", async function () {
      const f = await loadFixture(h.registeredFixture);
      const { jm, customer, v1, l1 } = f;
      await jm.connect(v1).registerTrainer(0, { value: h.MIN_TRAINER_STAKE });
      const { jobId } = await h.createJob(jm, customer, { quorum: 4 });
      await jm.connect(l1).standForLeader(jobId, { value: h.MIN_LEADER_BOND });
      await h.submit(f, jobId, v1, 0);
      await expect(jm.challengeSeed(jobId, 0, 0)).to.be.revertedWithCustomError(jm, "JobManagerDrawNotReady");
      const panel = await h.draw(f, jobId, 0, 0);
      expect(panel.map((s) => s.address)).to.not.include(v1.address);
      expect(new Set(panel.map((s) => s.address)).size).to.equal(4);
      expect(await jm.challengeSeed(jobId, 0, 0)).to.not.equal(ethers.ZeroHash);
      await expect(jm.drawValidators(jobId, 0, 0))
        .to.be.revertedWithCustomError(jm, "JobManagerNothingToDraw")
        .withArgs(jobId, 0, 0);
      // Not enough validators other than the trainer for quorum 5.
      const { jobId: big } = await h.createJob(jm, customer, { quorum: 5 });
      await jm.connect(l1).standForLeader(big, { value: h.MIN_LEADER_BOND });
      await h.submit(f, big, v1, 0);
      await mine(h.DRAW_DELAY);
      await expect(jm.drawValidators(big, 0, 0))
        .to.be.revertedWithCustomError(jm, "JobManagerNotEnoughValidators")
        .withArgs(4, 5);
    });

    it("re-anchors a draw whose block hash is older than 256 blocks", async function () {
      const f = await loadFixture(h.jobFixture);
      const { jm, jobId, t1 } = f;
      await h.submit(f, jobId, t1, 0);
      await mine(300);
      const tx = await jm.drawValidators(jobId, 0, 0);
      await expect(tx).to.emit(jm, "DrawRescheduled").withArgs(jobId, 0, 0, tx.blockNumber);
      expect((await jm.getUpdate(jobId, 0, 0)).phase).to.equal(h.Phase.AwaitingPanel);
      const panel = await h.draw(f, jobId, 0, 0);
      expect(panel).to.have.length(3);
    });
  });

  describe("validateUpdate", function () {
    it("settles a unanimous panel at once and pays each voter its fee", async function () {
      const f = await loadFixture(h.jobFixture);
      const { jm, jobId, t1, p } = f;
      await h.submit(f, jobId, t1, 0);
      const panel = await h.draw(f, jobId, 0, 0);
      await expect(jm.connect(panel[0]).validateUpdate(jobId, 0, 0, true))
        .to.emit(jm, "UpdateVoted")
        .withArgs(jobId, 0, 0, panel[0].address, h.Phase.Voting, true);
      await jm.connect(panel[1]).validateUpdate(jobId, 0, 0, true);
      const tx = jm.connect(panel[2]).validateUpdate(jobId, 0, 0, true);
      await expect(tx).to.emit(jm, "UpdateAccepted").withArgs(jobId, 0, 0, t1.address);
      await expect(tx).to.emit(jm, "FeePaid").withArgs(jobId, panel[0].address, p.validatorFee);
      expect((await jm.getRound(jobId, 0)).acceptedMask).to.equal(1n);
      expect((await jm.trainers(t1.address)).locked).to.equal(0n);
      await expect(jm.connect(panel[0]).validateUpdate(jobId, 0, 0, true))
        .to.be.revertedWithCustomError(jm, "JobManagerUpdateNotVoting")
        .withArgs(jobId, 0, 0);
    });

    it("reverts for unknown updates, undrawn validators, repeat votes and panels not drawn yet", async function () {
      const f = await loadFixture(h.jobFixture);
      const { jm, jobId, t1, outsider, v1, v2, v3, v4, v5 } = f;
      await expect(jm.connect(v1).validateUpdate(jobId, 0, 0, true))
        .to.be.revertedWithCustomError(jm, "JobManagerUnknownUpdate")
        .withArgs(jobId, 0, 0);
      await h.submit(f, jobId, t1, 0);
      await expect(jm.connect(v1).validateUpdate(jobId, 0, 0, true))
        .to.be.revertedWithCustomError(jm, "JobManagerUpdateNotVoting")
        .withArgs(jobId, 0, 0);
      const panel = await h.draw(f, jobId, 0, 0);
      const stranger = [v1, v2, v3, v4, v5].find((v) => !panel.includes(v));
      await expect(jm.connect(stranger).validateUpdate(jobId, 0, 0, true))
        .to.be.revertedWithCustomError(jm, "JobManagerNotDrawnValidator")
        .withArgs(jobId, 0, 0, stranger.address);
      await expect(jm.connect(outsider).validateUpdate(jobId, 0, 0, true))
        .to.be.revertedWithCustomError(jm, "JobManagerNotDrawnValidator")
        .withArgs(jobId, 0, 0, outsider.address);
      await jm.connect(panel[0]).validateUpdate(jobId, 0, 0, true);
      await expect(jm.connect(panel[0]).validateUpdate(jobId, 0, 0, true))
        .to.be.revertedWithCustomError(jm, "JobManagerAlreadyVoted")
        .withArgs(jobId, 0, 0, panel[0].address);
    });

    it("escalates a split panel; the escalation's stake majority rejects; the liar pays the honest", async function () {
      const f = await loadFixture(h.jobFixture);
      const { jm, jobId, t1, p } = f;
      await h.submit(f, jobId, t1, 0);
      const panel = await h.draw(f, jobId, 0, 0);
      await jm.connect(panel[0]).validateUpdate(jobId, 0, 0, false);
      const tx = await jm.connect(panel[1]).validateUpdate(jobId, 0, 0, true); // the liar says valid
      await expect(tx).to.emit(jm, "UpdateEscalated").withArgs(jobId, 0, 0, tx.blockNumber);
      expect((await jm.getUpdate(jobId, 0, 0)).phase).to.equal(h.Phase.AwaitingEscalation);
      const esc = await h.draw(f, jobId, 0, 0);
      expect(esc).to.have.length(5);
      const info = await jm.getUpdate(jobId, 0, 0);
      expect(info.escStake).to.equal(5n * h.MIN_VALIDATOR_STAKE);
      const liar = panel[1];
      await jm.connect(liar).validateUpdate(jobId, 0, 0, true);
      const honest = esc.filter((v) => v !== liar);
      await jm.connect(honest[0]).validateUpdate(jobId, 0, 0, false);
      await jm.connect(honest[1]).validateUpdate(jobId, 0, 0, false);
      const last = jm.connect(honest[2]).validateUpdate(jobId, 0, 0, false);
      await expect(last).to.emit(jm, "UpdateRejected").withArgs(jobId, 0, 0, t1.address);
      await expect(last).to.emit(jm, "TrainerSlashed").withArgs(jobId, t1.address, h.updateBond(p));
      // The liar lost twice (first panel and escalation); each honest escalation voter got a third of that.
      await expect(last).to.emit(jm, "ValidatorSlashed").withArgs(jobId, liar.address, h.VALIDATOR_SLASH);
      await expect(last)
        .to.emit(jm, "SlashRewardPaid")
        .withArgs(jobId, honest[0].address, (2n * h.VALIDATOR_SLASH) / 3n);
      await expect(last).to.emit(jm, "FeePaid").withArgs(jobId, panel[0].address, p.validatorFee);
      expect((await jm.validators(liar.address)).stake).to.equal(h.MIN_VALIDATOR_STAKE - 2n * h.VALIDATOR_SLASH);
      expect((await jm.validators(liar.address)).openVotes).to.equal(0n);
      expect(await jm.getValidators()).to.not.include(liar.address);
    });
  });

  describe("commitRound and payout", function () {
    it("prices accepted work by units plus the bonus share, pays the leader, finishes and refunds", async function () {
      const f = await loadFixture(h.jobFixture);
      const { jm, jobId, t1, t2, l1, customer, p, deposit } = f;
      await h.acceptedUpdate(f, jobId, 0, t1, 0, { workUnits: 10, loss: 0n });
      await h.acceptedUpdate(f, jobId, 0, t2, 1, { workUnits: 5, loss: 0n });
      const tx = await h.commit(f, jobId);
      const expiry = BigInt((await ethers.provider.getBlock(tx.blockNumber)).timestamp + h.LEASE);
      await expect(tx).to.emit(jm, "RoundCommitted").withArgs(jobId, 0, l1.address, h.cid(`ckpt-${jobId}-0`), 3n, expiry);
      await expect(tx).to.emit(jm, "FeePaid").withArgs(jobId, l1.address, p.leaderFee);
      // All claims 0: no bonus.
      expect((await jm.getUpdate(jobId, 0, 1)).amount).to.equal(5n * p.baseRate);
      const r = await jm.getRound(jobId, 0);
      expect([r.priced, r.committer, r.checkpointCid]).to.deep.equal([true, l1.address, h.cid(`ckpt-${jobId}-0`)]);
      await h.acceptedUpdate(f, jobId, 1, t1, 0, { workUnits: 10, loss: 5n });
      const fin = h.commit(f, jobId);
      await expect(fin).to.emit(jm, "JobFinished");
      // One payout per round credits each accepted update of it (t2's included).
      await expect(jm.payout(jobId, 0)).to.emit(jm, "PaidOut").withArgs(jobId, t1.address, 10n * p.baseRate);
      await expect(jm.payout(jobId, 1))
        .to.emit(jm, "PaidOut")
        .withArgs(jobId, t1.address, 10n * p.baseRate + 10n * p.bonusRate);
      await expect(jm.payout(jobId, 1))
        .to.be.revertedWithCustomError(jm, "JobManagerNothingToPay")
        .withArgs(jobId, 1);
      const j = await jm.getJob(jobId);
      expect(j.status).to.equal(2n);
      expect(j.spent + j.refunded).to.equal(deposit);
      expect(await jm.balanceOf(customer.address)).to.equal(j.refunded);
    });

    it("reverts for strangers, expired leases, wrong rounds, bad CIDs and empty rounds", async function () {
      const f = await loadFixture(h.jobFixture);
      const { jm, jobId, l1, l2 } = f;
      await expect(jm.connect(l2).commitRound(jobId, 0, h.cid("c"), 0))
        .to.be.revertedWithCustomError(jm, "JobManagerNotLeader")
        .withArgs(jobId, l2.address, l1.address);
      await expect(jm.connect(l1).commitRound(jobId, 1, h.cid("c"), 0))
        .to.be.revertedWithCustomError(jm, "JobManagerWrongRound")
        .withArgs(jobId, 0, 1);
      await expect(jm.connect(l1).commitRound(jobId, 0, "0x", 0))
        .to.be.revertedWithCustomError(jm, "JobManagerInvalidCid")
        .withArgs(0);
      await expect(jm.connect(l1).commitRound(jobId, 0, h.cid("c"), 0))
        .to.be.revertedWithCustomError(jm, "JobManagerNoAcceptedUpdates")
        .withArgs(jobId, 0);
      const { leaseExpiry } = await jm.getJob(jobId);
      await time.increaseTo(leaseExpiry + 1n);
      await expect(jm.connect(l1).commitRound(jobId, 0, h.cid("c"), 0))
        .to.be.revertedWithCustomError(jm, "JobManagerLeaseExpired")
        .withArgs(jobId, leaseExpiry);
    });
  });
});

describe("JobManager: edge rules", function () {
  it("a slashed validator above the minimum stays in the pool with its weight lowered; zero fees move nothing", async function () {
    const f = await loadFixture(h.registeredFixture);
    const { jm, customer, l1, t1, outsider: rich } = f;
    await jm.connect(rich).registerValidator({ value: h.E("3") });
    const { jobId } = await h.createJob(jm, customer, { quorum: 6, validatorFee: 0, leaderFee: 0 });
    await jm.connect(l1).standForLeader(jobId, { value: h.MIN_LEADER_BOND });
    await h.submit(f, jobId, t1, 0);
    const panel = await h.draw(f, jobId, 0, 0); // the whole pool
    const honest = panel.filter((v) => v !== rich);
    await jm.connect(honest[0]).validateUpdate(jobId, 0, 0, true);
    await jm.connect(rich).validateUpdate(jobId, 0, 0, false); // the liar: escalation
    const esc = await h.draw(f, jobId, 0, 0);
    await jm.connect(rich).validateUpdate(jobId, 0, 0, false);
    let tx;
    for (const v of esc.filter((s) => s !== rich)) {
      if ((await jm.getUpdate(jobId, 0, 0)).status !== h.Status.Pending) break;
      tx = await jm.connect(v).validateUpdate(jobId, 0, 0, true);
    }
    await expect(tx).to.emit(jm, "UpdateAccepted");
    await expect(tx).not.to.emit(jm, "FeePaid");
    const left = h.E("3") - 2n * h.VALIDATOR_SLASH;
    expect((await jm.validators(rich.address)).stake).to.equal(left);
    expect(await jm.poolWeightOf(rich.address)).to.equal(left);
    expect(await jm.getValidators()).to.include(rich.address);
    await expect(h.commit(f, jobId)).not.to.emit(jm, "FeePaid");
  });

  it("a silent first-panel member cannot block a verdict: after the window anyone escalates, the silent one pays", async function () {
    const f = await loadFixture(h.jobFixture);
    const { jm, jobId, t1, outsider } = f;
    await h.submit(f, jobId, t1, 0);
    await expect(jm.escalateUpdate(jobId, 0, 0))
      .to.be.revertedWithCustomError(jm, "JobManagerVoteWindowOpen")
      .withArgs(jobId, 0, 0, 0);
    const panel = await h.draw(f, jobId, 0, 0);
    const [silent, ...voters] = panel;
    for (const v of voters) await jm.connect(v).validateUpdate(jobId, 0, 0, true);
    const { voteDeadline } = await jm.getUpdate(jobId, 0, 0);
    expect(voteDeadline).to.be.gt(0n);
    await expect(jm.connect(outsider).escalateUpdate(jobId, 0, 0))
      .to.be.revertedWithCustomError(jm, "JobManagerVoteWindowOpen")
      .withArgs(jobId, 0, 0, voteDeadline);
    await time.increaseTo(voteDeadline + 1n);
    await expect(jm.connect(outsider).escalateUpdate(jobId, 0, 0)).to.emit(jm, "UpdateEscalated");
    expect((await jm.getUpdate(jobId, 0, 0)).silentMask).to.equal(1n);
    const esc = await h.draw(f, jobId, 0, 0);
    let tx;
    for (const v of esc.filter((s) => s !== silent)) {
      if ((await jm.getUpdate(jobId, 0, 0)).status !== h.Status.Pending) break;
      tx = await jm.connect(v).validateUpdate(jobId, 0, 0, true);
    }
    await expect(tx).to.emit(jm, "UpdateAccepted").withArgs(jobId, 0, 0, t1.address);
    await expect(tx).to.emit(jm, "ValidatorSlashed").withArgs(jobId, silent.address, h.VALIDATOR_SLASH);
    expect((await jm.validators(silent.address)).openVotes).to.equal(0n);
  });

  it("refuses an update CID longer than 128 bytes", async function () {
    const f = await loadFixture(h.jobFixture);
    const { jm, jobId, t1 } = f;
    await expect(h.submit(f, jobId, t1, 0, { cid: ethers.hexlify(new Uint8Array(129)) }))
      .to.be.revertedWithCustomError(jm, "JobManagerInvalidCid")
      .withArgs(129);
  });

  it("a disputed leader that also lapses has no bond left to burn", async function () {
    const f = await loadFixture(h.jobFixture);
    const { jm, jobId, t1, l1, l2 } = f;
    await h.acceptedUpdate(f, jobId, 0, t1, 0);
    await h.commit(f, jobId);
    await mine(h.DRAW_DELAY);
    await jm.drawAuditors(jobId, 0);
    const auditors = (await jm.getRound(jobId, 0)).auditors.map((a) => h.signerOf(f, a));
    for (const a of auditors.slice(0, -1)) await jm.connect(a).auditRound(jobId, 0, false);
    await expect(jm.connect(auditors.at(-1)).auditRound(jobId, 0, false)).to.emit(jm, "LeaderBondForfeited");
    await time.increase(2 * h.LEASE + 2);
    const tx = jm.connect(l2).claimLeadership(jobId);
    await expect(tx).not.to.emit(jm, "LeaderBondForfeited");
    await expect(tx).to.emit(jm, "CandidacyEnded").withArgs(jobId, l1.address, 0);
  });
});
