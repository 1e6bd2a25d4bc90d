// The fast path of a verdict: the first panel signs its votes off-chain (EIP-712 Vote) and one call settles many
// updates (settleUpdates); the minimum quorum of a deployment.
const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, mine } = require("@nomicfoundation/hardhat-toolbox/network-helpers");
const h = require("./helpers");

// Two updates of round 0 submitted, their seed blocks mined: ready for the fast path.
async function submittedFixture() {
  const f = await h.jobFixture();
  await h.submit(f, f.jobId, f.t1, 0);
  await h.submit(f, f.jobId, f.t2, 1);
  await mine(h.DRAW_DELAY + 1);
  return f;
}

describe("JobManager: signed votes (fast path) and the minimum quorum", function () {
  describe("settleUpdates", function () {
    it("settles a whole round from unanimous signatures in one call: fees, bonds, verdicts, pay", async function () {
      const f = await loadFixture(submittedFixture);
      const { jm, jobId, t1, t2, p } = f;
      const bond = h.updateBond(p);
      expect((await jm.trainers(t1.address)).locked).to.equal(bond);
      const [panel0] = await jm.votePanel(jobId, 0, 0);
      const [panel1] = await jm.votePanel(jobId, 0, 1);
      expect(panel0.length).to.equal(3);
      const sets = [await h.voteSet(f, jobId, 0, 0, 0b111), await h.voteSet(f, jobId, 0, 1, 0b111)];
      // Anyone may post the signatures (here a stranger).
      const tx = jm.connect(f.outsider).settleUpdates(jobId, 0, sets);
      await expect(tx).to.emit(jm, "UpdateAccepted").withArgs(jobId, 0, 0, t1.address);
      await expect(tx).to.emit(jm, "UpdateAccepted").withArgs(jobId, 0, 1, t2.address);
      for (const v of [...panel0, ...panel1]) await expect(tx).to.emit(jm, "FeePaid").withArgs(jobId, v, p.validatorFee);
      await expect(tx).to.not.emit(jm, "UpdateVoted");
      const u = await jm.getUpdate(jobId, 0, 0);
      expect([u.status, u.panel.length, u.votedMask]).to.deep.equal([h.Status.Accepted, 0, 0n]);
      expect((await jm.trainers(t1.address)).locked).to.equal(0n);
      expect((await jm.getRound(jobId, 0)).acceptedMask).to.equal(3n);
      for (const v of panel0) expect((await jm.validators(v)).openVotes).to.equal(0n);
      // Replayed: the update is settled, the fast path is closed.
      await expect(jm.settleUpdates(jobId, 0, [sets[0]]))
        .to.be.revertedWithCustomError(jm, "JobManagerFastPathClosed")
        .withArgs(jobId, 0, 0);
      expect((await jm.votePanel(jobId, 0, 0))[0]).to.deep.equal([]);
      // The commit names the accepted set; one payout credits the round.
      await h.commit(f, jobId);
      const pay = jm.payout(jobId, 0);
      await expect(pay).to.emit(jm, "PaidOut").withArgs(jobId, t1.address, 10n * p.baseRate + 10n * p.bonusRate);
      await expect(pay).to.emit(jm, "PaidOut").withArgs(jobId, t2.address, 10n * p.baseRate + 10n * p.bonusRate);
      expect((await jm.getUpdate(jobId, 0, 1)).paid).to.equal(true);
    });

    it("unanimous 'invalid' signatures reject the update and burn its bond", async function () {
      const f = await loadFixture(submittedFixture);
      const { jm, jobId, t1, p } = f;
      const tx = jm.settleUpdates(jobId, 0, [await h.voteSet(f, jobId, 0, 0, 0)]);
      await expect(tx).to.emit(jm, "UpdateRejected").withArgs(jobId, 0, 0, t1.address);
      await expect(tx).to.emit(jm, "TrainerSlashed").withArgs(jobId, t1.address, h.updateBond(p));
      expect((await jm.trainers(t1.address)).stake).to.equal(h.MIN_TRAINER_STAKE - h.updateBond(p));
    });

    it("split signatures are recorded as on-chain votes and escalate; the escalation settles and slashes", async function () {
      const f = await loadFixture(submittedFixture);
      const { jm, jobId, t1 } = f;
      const [panel] = await jm.votePanel(jobId, 0, 0);
      const tx = await jm.settleUpdates(jobId, 0, [await h.voteSet(f, jobId, 0, 0, 0b011)]);
      await expect(tx).to.emit(jm, "ValidatorsDrawn").withArgs(jobId, 0, 0, h.Phase.Voting, panel);
      await expect(tx).to.emit(jm, "UpdateVoted").withArgs(jobId, 0, 0, panel[2], h.Phase.Voting, false);
      await expect(tx).to.emit(jm, "UpdateEscalated").withArgs(jobId, 0, 0, tx.blockNumber);
      await expect(tx).to.not.emit(jm, "UpdateAccepted");
      const u = await jm.getUpdate(jobId, 0, 0);
      expect([u.phase, u.votedMask, u.validMask, u.panel]).to.deep.equal([h.Phase.AwaitingEscalation, 7n, 3n, panel]);
      for (const v of panel) expect((await jm.validators(v)).openVotes).to.equal(1n);
      // No 2-of-3 settlement: the escalation decides, and the first panel's loser is slashed.
      const esc = await h.draw(f, jobId, 0, 0);
      let settled;
      for (const v of esc) {
        settled = await jm.connect(v).validateUpdate(jobId, 0, 0, true);
        if ((await jm.getUpdate(jobId, 0, 0)).status !== h.Status.Pending) break;
      }
      await expect(settled).to.emit(jm, "UpdateAccepted").withArgs(jobId, 0, 0, t1.address);
      await expect(settled).to.emit(jm, "ValidatorSlashed").withArgs(jobId, panel[2], h.VALIDATOR_SLASH);
      for (const v of panel) expect((await jm.validators(v)).openVotes).to.equal(0n);
    });

    it("refuses signatures from outside the panel, duplicated, for another anchor, chain or contract, malformed", async function () {
      const f = await loadFixture(submittedFixture);
      const { jm, jobId } = f;
      const [panel, anchor] = await jm.votePanel(jobId, 0, 0);
      const members = panel.map((a) => h.signerOf(f, a));
      const stranger = [f.v1, f.v2, f.v3, f.v4, f.v5].find((v) => !panel.includes(v.address));
      const refused = async (set, signer, member) =>
        expect(jm.settleUpdates(jobId, 0, [set]))
          .to.be.revertedWithCustomError(jm, "JobManagerBadVoteSignature")
          .withArgs(jobId, 0, 0, signer, member);
      // A validator not on the panel.
      await refused(await h.voteSet(f, jobId, 0, 0, 7, { signers: [members[0], stranger, members[2]] }), stranger.address, panel[1]);
      // The same member's signature twice.
      await refused(await h.voteSet(f, jobId, 0, 0, 7, { signers: [members[0], members[0], members[2]] }), panel[0], panel[1]);
      // Panel order matters: swapped members do not match their positions.
      await refused(await h.voteSet(f, jobId, 0, 0, 7, { signers: [members[1], members[0], members[2]] }), panel[1], panel[0]);
      // Another anchor (a vote for an earlier or later draw), chain, or contract: the digest differs.
      const other = async (opts) => {
        const set = await h.voteSet(f, jobId, 0, 0, 7, opts);
        await expect(jm.settleUpdates(jobId, 0, [set])).to.be.revertedWithCustomError(jm, "JobManagerBadVoteSignature");
      };
      await other({ anchorBlock: anchor + 1n });
      const dom = await h.domain(jm);
      await other({ domain: { ...dom, chainId: 1n } });
      await other({ domain: { ...dom, verifyingContract: f.outsider.address } });
      // A malformed signature (v = 0) recovers to nobody.
      const good = await h.voteSet(f, jobId, 0, 0, 7);
      const bad = ethers.concat([ethers.dataSlice(good.signatures, 0, 64), "0x00", ethers.dataSlice(good.signatures, 65)]);
      await refused({ ...good, signatures: bad }, ethers.ZeroAddress, panel[0]);
      // Too few signatures, or a mask past the panel.
      await expect(jm.settleUpdates(jobId, 0, [{ ...good, signatures: ethers.dataSlice(good.signatures, 0, 130) }]))
        .to.be.revertedWithCustomError(jm, "JobManagerInvalidVoteSet")
        .withArgs(jobId, 0, 0, 3);
      await expect(jm.settleUpdates(jobId, 0, [{ ...good, validMask: 0b1111 }]))
        .to.be.revertedWithCustomError(jm, "JobManagerInvalidVoteSet")
        .withArgs(jobId, 0, 0, 3);
      // A vote signed "invalid" posted as "valid" does not recover to its signer.
      const flipped = await h.voteSet(f, jobId, 0, 0, 0b110);
      await expect(jm.settleUpdates(jobId, 0, [{ ...flipped, validMask: 0b111 }])).to.be.revertedWithCustomError(
        jm,
        "JobManagerBadVoteSignature",
      );
      // One bad set fails the whole batch; the good one then settles.
      await expect(jm.settleUpdates(jobId, 0, [await h.voteSet(f, jobId, 0, 1, 7), { ...good, validMask: 8 }])).to.be.reverted;
      await expect(jm.settleUpdates(jobId, 0, [good])).to.emit(jm, "UpdateAccepted");
    });

    it("is closed once the first panel is drawn or voted on-chain; the on-chain panel is the one that signed", async function () {
      const f = await loadFixture(submittedFixture);
      const { jm, jobId } = f;
      const [panel] = await jm.votePanel(jobId, 0, 0);
      const seed = await jm.challengeSeed(jobId, 0, 0);
      const set = await h.voteSet(f, jobId, 0, 0, 7);
      await jm.drawValidators(jobId, 0, 0);
      const u = await jm.getUpdate(jobId, 0, 0);
      // Same seed, same stake-weighted draw, same challenge.
      expect(u.panel).to.deep.equal(panel);
      expect(await jm.challengeSeed(jobId, 0, 0)).to.equal(seed);
      await expect(jm.settleUpdates(jobId, 0, [set]))
        .to.be.revertedWithCustomError(jm, "JobManagerFastPathClosed")
        .withArgs(jobId, 0, 0);
      await jm.connect(h.signerOf(f, panel[0])).validateUpdate(jobId, 0, 0, true);
      await expect(jm.settleUpdates(jobId, 0, [set])).to.be.revertedWithCustomError(jm, "JobManagerFastPathClosed");
      expect((await jm.votePanel(jobId, 0, 0))[0]).to.deep.equal([]);
    });

    it("re-anchors instead when the pool changed since the anchor; old signatures are then refused", async function () {
      const f = await loadFixture(submittedFixture);
      const { jm, jobId, t1 } = f;
      const stale = await h.voteSet(f, jobId, 0, 0, 7);
      const [, anchor] = await jm.votePanel(jobId, 0, 0);
      await jm.connect(f.signers[20]).registerValidator({ value: h.MIN_VALIDATOR_STAKE }); // the pool changes
      expect((await jm.votePanel(jobId, 0, 0))[0]).to.deep.equal([]); // must re-anchor
      await expect(jm.challengeSeed(jobId, 0, 0)).to.be.revertedWithCustomError(jm, "JobManagerDrawNotReady");
      const tx = await jm.settleUpdates(jobId, 0, [stale]);
      await expect(tx).to.emit(jm, "DrawRescheduled").withArgs(jobId, 0, 0, tx.blockNumber);
      await expect(tx).to.not.emit(jm, "UpdateAccepted");
      const u = await jm.getUpdate(jobId, 0, 0);
      expect([u.status, u.phase, u.anchorBlock]).to.deep.equal([h.Status.Pending, h.Phase.AwaitingPanel, BigInt(tx.blockNumber)]);
      expect(u.anchorBlock).to.not.equal(anchor);
      // Before the new seed block: not ready. After it: the old votes name the old anchor and are refused.
      await expect(jm.votePanel(jobId, 0, 0)).to.be.revertedWithCustomError(jm, "JobManagerDrawNotReady");
      await expect(jm.settleUpdates(jobId, 0, [stale])).to.be.revertedWithCustomError(jm, "JobManagerDrawNotReady");
      await mine(h.DRAW_DELAY);
      await expect(jm.settleUpdates(jobId, 0, [stale])).to.be.revertedWithCustomError(jm, "JobManagerBadVoteSignature");
      await expect(jm.settleUpdates(jobId, 0, [await h.voteSet(f, jobId, 0, 0, 7)]))
        .to.emit(jm, "UpdateAccepted")
        .withArgs(jobId, 0, 0, t1.address);
    });

    it("re-anchors a draw whose seed block hash is gone; refuses closed jobs and direct calls to the extension", async function () {
      const f = await loadFixture(submittedFixture);
      const { jm, jobId, core, customer } = f;
      await mine(257);
      expect((await jm.votePanel(jobId, 0, 0))[0]).to.deep.equal([]);
      await expect(jm.settleUpdates(jobId, 0, [await h.voteSet(f, jobId, 0, 0, 0, { signers: [] })])).to.emit(jm, "DrawRescheduled");
      const ext = await ethers.getContractAt("JobManagerExtension", await core.extension());
      await expect(ext.settleUpdates(jobId, 0, [])).to.be.revertedWithCustomError(ext, "JobManagerNotDelegated");
      // An empty batch is a no-op; a cancelled job takes no verdicts.
      await jm.settleUpdates(jobId, 0, []);
      const { jobId: idle } = await h.createJob(jm, customer);
      await jm.connect(customer).cancelJob(idle);
      await expect(jm.settleUpdates(idle, 0, []))
        .to.be.revertedWithCustomError(jm, "JobManagerJobNotActive")
        .withArgs(idle, 3);
    });

    it("voteDigest is the EIP-712 digest of the tickets' domain", async function () {
      const f = await loadFixture(h.jobFixture);
      const vote = { jobId: f.jobId, round: 0, slot: 2, anchorBlock: 77, valid: true };
      expect(await f.jm.voteDigest(vote)).to.equal(ethers.TypedDataEncoder.hash(await h.domain(f.jm), h.VOTE_TYPES, vote));
    });
  });

  describe("minQuorum", function () {
    it("createJob refuses a quorum below the deployment's floor; the constructor bounds the floor", async function () {
      const [customer] = await ethers.getSigners();
      const args = [h.MIN_TRAINER_STAKE, h.MIN_VALIDATOR_STAKE, h.MIN_UPDATE_BOND, h.VALIDATOR_SLASH, h.MIN_LEADER_BOND, h.DELAY];
      const { jm } = await h.deploy([...args, 5]);
      expect(await jm.minQuorum()).to.equal(5n);
      const p = h.jobParams({ quorum: 3 });
      await expect(jm.connect(customer).createJob(p, { value: h.requiredDeposit(p) }))
        .to.be.revertedWithCustomError(jm, "JobManagerQuorumBelowMinimum")
        .withArgs(3, 5);
      await expect(h.createJob(jm, customer, { quorum: 5 })).to.not.be.reverted;
      const factory = await ethers.getContractFactory("JobManager");
      for (const bad of [0, 16]) {
        await expect(ethers.deployContract("JobManager", [...args, bad, ethers.ZeroAddress]))
          .to.be.revertedWithCustomError(factory, "JobManagerInvalidJobParam")
          .withArgs("minQuorum");
      }
      // The floor's reason: with a third of the stake an attacker fills a whole panel of 5 with p <= (1/3)^5.
      expect(1 / 3 ** 5).to.be.below(0.01);
      expect(1 / 3 ** 3).to.be.above(0.01);
    });
  });
});
