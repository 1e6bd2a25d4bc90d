// Issue #13, written as the cheater would try it: one test per numbered attack, each showing that the attack now
// fails or costs the attacker more than it gains.
const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time, mine } = require("@nomicfoundation/hardhat-toolbox/network-helpers");
const h = require("./helpers");

describe("JobManager: the attacks of issue #13", function () {
  it("1. stakeless validators: leaving empties the pool entry, stake returns only on exit, no duplicates", async function () {
    const f = await loadFixture(h.registeredFixture);
    const { jm, v1 } = f;
    // The old trick: request, complete, register again, repeat. Every step keeps one entry or none.
    await jm.connect(v1).requestDeregistration();
    expect(await jm.getValidators()).to.not.include(v1.address);
    expect(await jm.poolWeightOf(v1.address)).to.equal(0n);
    // While leaving it is still registered: it cannot re-enter the pool before its exit completes.
    await expect(jm.connect(v1).registerValidator({ value: h.MIN_VALIDATOR_STAKE }))
      .to.be.revertedWithCustomError(jm, "JobManagerAlreadyRegistered")
      .withArgs(v1.address);
    await time.increase(h.DELAY);
    await jm.connect(v1).completeDeregistration();
    expect((await jm.validators(v1.address)).stake).to.equal(0n);
    expect(await jm.getValidators()).to.not.include(v1.address);
    await jm.connect(v1).registerValidator({ value: h.MIN_VALIDATOR_STAKE });
    const pool = await jm.getValidators();
    expect(pool.filter((a) => a === v1.address)).to.have.length(1);
    expect(await jm.validatorCount()).to.equal(5n);
    // Pool weight is exactly the members' stake: nobody is drawn for free.
    let sum = 0n;
    for (const a of pool) {
      const v = await jm.validators(a);
      expect(v.stake).to.be.gte(h.MIN_VALIDATOR_STAKE);
      expect(await jm.poolWeightOf(a)).to.equal(v.stake);
      sum += v.stake;
    }
    expect(await jm.poolWeight()).to.equal(sum);
    // A validator that leaves cannot vote on an update it was never drawn for, and a deregistered one not at all.
    await expect(jm.connect(f.outsider).validateUpdate(1n, 0, 0, true)).to.be.revertedWithCustomError(
      jm,
      "JobManagerUnknownJob",
    );
  });

  it("2. slot squatting: no ticket, no slot; a ticket holder that withholds its content loses its bond", async function () {
    const f = await loadFixture(h.jobFixture);
    const { jm, jobId, t1, t2, t3, p } = f;
    // A sybil signs its own ticket: refused.
    const forged = await h.ticket(f, jobId, t3, 0, { signer: t3 });
    await expect(jm.connect(t3).submitUpdate(forged.t, h.cid("squat"), 0, forged.sig))
      .to.be.revertedWithCustomError(jm, "JobManagerBadTicketSignature")
      .withArgs(jobId, t3.address, f.l1.address);
    // It copies someone else's ticket: refused.
    const real = await h.ticket(f, jobId, t1, 0);
    await expect(jm.connect(t3).submitUpdate(real.t, h.cid("squat"), 0, real.sig))
      .to.be.revertedWithCustomError(jm, "JobManagerNotTicketHolder")
      .withArgs(t1.address, t3.address);
    // One update per slot, whoever holds a second ticket for it.
    await jm.connect(t1).submitUpdate(real.t, h.cid("honest"), 1000n, real.sig);
    const second = await h.ticket(f, jobId, t2, 0);
    await expect(jm.connect(t2).submitUpdate(second.t, h.cid("again"), 0, second.sig))
      .to.be.revertedWithCustomError(jm, "JobManagerSlotTaken")
      .withArgs(jobId, 0, 0);
    await expect(h.submit(f, jobId, t2, 4))
      .to.be.revertedWithCustomError(jm, "JobManagerInvalidSlot")
      .withArgs(jobId, 4);
    // A ticket holder that withholds: the drawn validators vote invalid (unavailable), the bond burns.
    await h.submit(f, jobId, t2, 1);
    const panel = await h.draw(f, jobId, 0, 1);
    const stakeBefore = (await jm.trainers(t2.address)).stake;
    let tx;
    for (const v of panel) tx = await jm.connect(v).validateUpdate(jobId, 0, 1, false);
    const bond = h.updateBond(p);
    await expect(tx).to.emit(jm, "UpdateRejected").withArgs(jobId, 0, 1, t2.address);
    await expect(tx).to.emit(jm, "TrainerSlashed").withArgs(jobId, t2.address, bond);
    expect((await jm.trainers(t2.address)).stake).to.equal(stakeBefore - bond);
    expect((await jm.trainers(t2.address)).locked).to.equal(0n);
  });

  it("3. verdicts cannot be predicted or bought: later block, stake weight, losers pay", async function () {
    const f = await loadFixture(h.jobFixture);
    const { jm, jobId, t1, whale } = { ...f, whale: f.outsider };
    // Predicting: the panel does not exist at submission and cannot be drawn in the next block.
    await h.submit(f, jobId, t1, 0);
    const { anchorBlock } = await jm.getUpdate(jobId, 0, 0);
    await expect(jm.drawValidators(jobId, 0, 0))
      .to.be.revertedWithCustomError(jm, "JobManagerDrawNotReady")
      .withArgs(anchorBlock + BigInt(h.DRAW_DELAY) + 1n);
    // Buying with identities: weight is stake. A whale with 99% of the stake sits on (nearly) every panel.
    await jm.connect(whale).registerValidator({ value: h.E("1000") });
    await h.submit(f, jobId, f.t2, 1);
    const panel = await h.draw(f, jobId, 0, 1);
    expect(panel.map((s) => s.address)).to.include(whale.address);
    // Voting against the truth: the liar in the first panel forces an escalation and loses stake to the honest.
    const first = await h.draw(f, jobId, 0, 0);
    const liar = first.find((s) => s.address !== whale.address);
    const honest = first.filter((s) => s !== liar);
    await jm.connect(liar).validateUpdate(jobId, 0, 0, false);
    await expect(jm.connect(honest[0]).validateUpdate(jobId, 0, 0, true)).to.emit(jm, "UpdateEscalated");
    await expect(jm.connect(honest[1]).validateUpdate(jobId, 0, 0, true)).to.be.revertedWithCustomError(
      jm,
      "JobManagerUpdateNotVoting",
    );
    const esc = await h.draw(f, jobId, 0, 0);
    expect(esc.length).to.equal(6); // the whole pool: the escalation panel is capped by it
    const liarStake = (await jm.validators(liar.address)).stake;
    let tx;
    for (const v of esc) {
      if (v.address === liar.address) continue;
      const u = await jm.getUpdate(jobId, 0, 0);
      if (u.status !== h.Status.Pending) break;
      tx = await jm.connect(v).validateUpdate(jobId, 0, 0, true);
    }
    await expect(tx).to.emit(jm, "UpdateAccepted").withArgs(jobId, 0, 0, t1.address);
    await expect(tx).to.emit(jm, "ValidatorSlashed").withArgs(jobId, liar.address, h.VALIDATOR_SLASH);
    await expect(tx).to.emit(jm, "SlashRewardPaid");
    expect((await jm.validators(liar.address)).stake).to.equal(liarStake - h.VALIDATOR_SLASH);
    // Below the minimum stake the liar is out of the pool.
    expect(await jm.getValidators()).to.not.include(liar.address);
  });

  it("3b. a pool change after the seed block is known cannot steer a draw: it re-anchors", async function () {
    const f = await loadFixture(h.jobFixture);
    const { jm, jobId, t1, v1, outsider } = f;
    await h.submit(f, jobId, t1, 0);
    await mine(h.DRAW_DELAY); // the seed block is mined: the grinder now knows the draw
    await jm.connect(v1).requestDeregistration(); // ... and shifts the tree before anyone draws
    const tx = await jm.drawValidators(jobId, 0, 0);
    await expect(tx).to.emit(jm, "DrawRescheduled").withArgs(jobId, 0, 0, tx.blockNumber);
    await expect(tx).not.to.emit(jm, "ValidatorsDrawn");
    // Joining is a change too.
    await jm.connect(outsider).registerValidator({ value: h.MIN_VALIDATOR_STAKE });
    await mine(h.DRAW_DELAY);
    await expect(jm.drawValidators(jobId, 0, 0)).to.emit(jm, "DrawRescheduled");
    // Without a change after the anchor the draw happens.
    await mine(h.DRAW_DELAY);
    await expect(jm.drawValidators(jobId, 0, 0)).to.emit(jm, "ValidatorsDrawn");
  });

  it("4. candidate squatting: bonds, eviction by a bigger bond, a lapse burns half, no timed successor", async function () {
    const f = await loadFixture(h.registeredFixture);
    const { jm, customer, l1 } = f;
    const { jobId } = await h.createJob(jm, customer);
    await expect(jm.connect(l1).standForLeader(jobId))
      .to.be.revertedWithCustomError(jm, "JobManagerInsufficientBond")
      .withArgs(h.MIN_LEADER_BOND, 0);
    // 16 sybils with the minimum bond fill the list; the first leads and never commits.
    const sybils = f.signers.slice(20, 36);
    for (const s of sybils) {
      await jm.connect(s).registerTrainer(0, { value: h.MIN_TRAINER_STAKE });
      await jm.connect(s).standForLeader(jobId, { value: h.MIN_LEADER_BOND });
    }
    const squatter = sybils[0];
    expect((await jm.getJob(jobId)).leader).to.equal(squatter.address);
    const extra = f.signers[36];
    await jm.connect(extra).registerTrainer(0, { value: h.MIN_TRAINER_STAKE });
    await expect(jm.connect(extra).standForLeader(jobId, { value: h.MIN_LEADER_BOND }))
      .to.be.revertedWithCustomError(jm, "JobManagerInsufficientBond")
      .withArgs(h.MIN_LEADER_BOND + 1n, h.MIN_LEADER_BOND);
    // An honest leader outbids the smallest non-leader bond; the evicted sybil gets its bond back.
    const bigBond = h.E("5");
    const tx = await jm.connect(l1).standForLeader(jobId, { value: bigBond });
    await expect(tx).to.emit(jm, "CandidacyEnded");
    const [list] = await jm.getCandidates(jobId);
    expect(list).to.include(l1.address);
    expect(list).to.include(squatter.address);
    // The squatter cannot draw its successor by timing: nothing is drawn before its lease expires.
    await expect(jm.drawSuccessor(jobId)).to.be.revertedWithCustomError(jm, "JobManagerLeaseNotExpired");
    await time.increase(h.LEASE + 1);
    await jm.drawSuccessor(jobId);
    expect(await jm.successor(jobId)).to.equal(ethers.ZeroAddress); // its block is not mined yet
    await mine(h.DRAW_DELAY + 1);
    const next = await jm.successor(jobId);
    expect(next).to.not.equal(squatter.address);
    // Whoever is drawn claims; the lapsed squatter burns half its bond and is dropped.
    const claim = await jm.connect(h.signerOf(f, next)).claimLeadership(jobId);
    await expect(claim)
      .to.emit(jm, "LeaderBondForfeited")
      .withArgs(jobId, squatter.address, h.MIN_LEADER_BOND / 2n);
    await expect(claim)
      .to.emit(jm, "CandidacyEnded")
      .withArgs(jobId, squatter.address, h.MIN_LEADER_BOND / 2n);
    expect((await jm.getCandidates(jobId))[0]).to.not.include(squatter.address);
  });

  it("5. dispute griefing: only the drawn audit panel counts, successes count, accepted work stays paid", async function () {
    const f = await loadFixture(h.jobFixture);
    const { jm, jobId, customer, t1, t2, outsider, p } = f;
    await h.acceptedUpdate(f, jobId, 0, t1, 0);
    await h.commit(f, jobId);
    // The customer's throw-away validator was not drawn (no panel is): its "failed" audit is refused. Drawn, a
    // lone "failed" only escalates and costs its stake (audits.test.js).
    await jm.connect(outsider).registerValidator({ value: h.MIN_VALIDATOR_STAKE });
    await expect(jm.connect(outsider).auditRound(jobId, 0, false))
      .to.be.revertedWithCustomError(jm, "JobManagerAuditNotVoting")
      .withArgs(jobId, 0, h.Phase.AwaitingPanel);
    await mine(h.DRAW_DELAY);
    // Its registration changed the pool after the commit: the audit draw re-anchors (a change made once the seed
    // is known could otherwise steer the panel).
    await expect(jm.drawAuditors(jobId, 0)).to.emit(jm, "DrawRescheduled");
    await mine(h.DRAW_DELAY);
    await jm.drawAuditors(jobId, 0);
    const auditors = (await jm.getRound(jobId, 0)).auditors.map((a) => h.signerOf(f, a));
    expect(auditors).to.have.length(6); // AUDIT_PANEL (7) capped by the pool of 6
    // Successful audits count: a unanimous panel of oks closes the audit; later failures change nothing.
    for (const a of auditors.slice(0, 5)) await jm.connect(a).auditRound(jobId, 0, true);
    await expect(jm.connect(auditors[5]).auditRound(jobId, 0, true))
      .to.emit(jm, "RoundAuditPassed")
      .withArgs(jobId, 0, 6);
    await expect(jm.connect(auditors[0]).auditRound(jobId, 0, false))
      .to.be.revertedWithCustomError(jm, "JobManagerAuditClosed")
      .withArgs(jobId, 0);
    expect((await jm.getJob(jobId)).disputed).to.equal(false);
    // Work accepted in the open round is owed even when the customer cancels.
    await h.acceptedUpdate(f, jobId, 1, t2, 2, { workUnits: 4 });
    await time.increase(5 * h.LEASE);
    await jm.connect(customer).cancelJob(jobId);
    await expect(jm.payout(jobId, 1))
      .to.emit(jm, "PaidOut")
      .withArgs(jobId, t2.address, 4n * p.baseRate + 4n * p.bonusRate);
  });

  it("6. stake covers work in flight: a bond per pending update that scales with the job's rates", async function () {
    const f = await loadFixture(h.jobFixture);
    const { jm, jobId, customer, t1, l1, p } = f;
    // A rich job: one update may earn 10 * (0.05 + 0.01 * 4) = 0.9 ETH; the bond is 3x that, above the stake.
    const { jobId: rich, p: rp } = await h.createJob(jm, customer, { baseRate: h.E("0.05"), bonusRate: h.E("0.01") });
    await jm.connect(l1).standForLeader(rich, { value: h.MIN_LEADER_BOND });
    const bond = h.updateBond(rp);
    expect(await jm.updateBond(rich)).to.equal(bond);
    expect(bond).to.equal(h.E("2.7"));
    await expect(h.submit(f, rich, t1, 0))
      .to.be.revertedWithCustomError(jm, "JobManagerInsufficientFreeStake")
      .withArgs(t1.address, h.MIN_TRAINER_STAKE, bond);
    // One stake cannot back unlimited pending updates: each locks its own bond.
    await jm.connect(t1).addTrainerStake({ value: h.E("2") });
    await h.submit(f, rich, t1, 0); // locks 2.7 of 3
    const small = h.updateBond(p);
    await h.submit(f, jobId, t1, 0); // locks 0.09 more: 2.79
    expect((await jm.trainers(t1.address)).locked).to.equal(bond + small);
    const { jobId: third } = await h.createJob(jm, customer, { baseRate: h.E("0.01") });
    await jm.connect(l1).standForLeader(third, { value: h.MIN_LEADER_BOND });
    await expect(h.submit(f, third, t1, 0)).to.be.revertedWithCustomError(jm, "JobManagerInsufficientFreeStake");
    // Leaving does not free locked bonds before the verdicts.
    await jm.connect(t1).requestDeregistration();
    await time.increase(h.DELAY);
    await expect(jm.connect(t1).completeDeregistration())
      .to.be.revertedWithCustomError(jm, "JobManagerObligationsOpen")
      .withArgs(t1.address, bond + small, 0);
    // Cheating never pays: the bond is three times the most an update can earn.
    const maxPay = BigInt(rp.maxWorkUnits) * (rp.baseRate + rp.bonusRate * BigInt(rp.tasksPerRound));
    expect(bond).to.equal(3n * maxPay);
  });

  it("7. no vote moves a bonus: the bonus splits by the trainers' verified claims", async function () {
    const f = await loadFixture(h.jobFixture);
    const { jm, jobId, t1, t2, p } = f;
    await h.acceptedUpdate(f, jobId, 0, t1, 0, { loss: 3000n });
    await h.acceptedUpdate(f, jobId, 0, t2, 1, { loss: 1000n });
    await h.commit(f, jobId);
    const pool = p.bonusRate * 20n;
    const base = p.baseRate * 10n;
    expect((await jm.getUpdate(jobId, 0, 0)).amount).to.equal(base + (pool * 3000n) / 4000n);
    expect((await jm.getUpdate(jobId, 0, 1)).amount).to.equal(base + (pool * 1000n) / 4000n);
    // validateUpdate takes no loss value at all: a validator can only say valid or invalid.
    const fragment = jm.interface.getFunction("validateUpdate");
    expect(fragment.inputs.map((i) => i.name)).to.deep.equal(["jobId", "round", "slot", "isValid"]);
  });

  it("8. a commit names exactly the accepted set; a late verdict makes a stale commit revert", async function () {
    const f = await loadFixture(h.jobFixture);
    const { jm, jobId, t1, t2, t3, l1 } = f;
    await h.acceptedUpdate(f, jobId, 0, t1, 0);
    await h.submit(f, jobId, t2, 1);
    const panel = await h.draw(f, jobId, 0, 1);
    const stale = (await jm.getRound(jobId, 0)).acceptedMask; // the leader reads {0}
    for (const v of panel) await jm.connect(v).validateUpdate(jobId, 0, 1, true); // slot 1 lands in between
    await expect(jm.connect(l1).commitRound(jobId, 0, h.cid("c"), stale))
      .to.be.revertedWithCustomError(jm, "JobManagerWrongAcceptedSet")
      .withArgs(jobId, 0, 3n, 1n);
    await h.submit(f, jobId, t3, 2); // still pending at commit: closed, not aggregated
    const tx = await jm.connect(l1).commitRound(jobId, 0, h.cid("c"), 3n);
    await expect(tx).to.emit(jm, "RoundCommitted").withArgs(jobId, 0, l1.address, h.cid("c"), 3n, (v) => v > 0n);
    await expect(tx).to.emit(jm, "UpdateExpired").withArgs(jobId, 0, 2, t3.address);
    expect((await jm.trainers(t3.address)).locked).to.equal(0n);
  });

  it("9. leaving leaders, replayed tickets, other terms", async function () {
    const f = await loadFixture(h.jobFixture);
    const { jm, jobId, t1, t2, l1, l2 } = f;
    // A ticket signed for another deployment (another verifyingContract) is refused here.
    const { jm: other } = await h.deploy([h.MIN_TRAINER_STAKE, h.MIN_VALIDATOR_STAKE, h.MIN_UPDATE_BOND, h.VALIDATOR_SLASH, h.MIN_LEADER_BOND, h.DELAY, h.MIN_QUORUM]);
    const t = (await h.ticket(f, jobId, t1, 0)).t;
    const foreign = await l1.signTypedData({ ...(await h.domain(jm)), verifyingContract: await other.getAddress() }, h.TICKET_TYPES, t);
    await expect(jm.connect(t1).submitUpdate(t, h.cid("x"), 0, foreign)).to.be.revertedWithCustomError(
      jm,
      "JobManagerBadTicketSignature",
    );
    // ... and one for another chain id.
    const otherChain = await l1.signTypedData({ ...(await h.domain(jm)), chainId: 1n }, h.TICKET_TYPES, t);
    await expect(jm.connect(t1).submitUpdate(t, h.cid("x"), 0, otherChain)).to.be.revertedWithCustomError(
      jm,
      "JobManagerBadTicketSignature",
    );
    await expect(h.submit(f, jobId, t1, 0, { term: 2 }))
      .to.be.revertedWithCustomError(jm, "JobManagerWrongTerm")
      .withArgs(jobId, 1, 2);
    await expect(h.submit(f, jobId, t1, 0, { round: 1 }))
      .to.be.revertedWithCustomError(jm, "JobManagerWrongRound")
      .withArgs(jobId, 0, 1);
    await h.acceptedUpdate(f, jobId, 0, t1, 0);
    // The leader starts leaving: it can neither admit work nor commit (and so earns no fee).
    await jm.connect(l1).requestDeregistration();
    await expect(h.submit(f, jobId, t2, 1))
      .to.be.revertedWithCustomError(jm, "JobManagerLeaderInactive")
      .withArgs(jobId, l1.address);
    await expect(h.commit(f, jobId))
      .to.be.revertedWithCustomError(jm, "JobManagerLeaderInactive")
      .withArgs(jobId, l1.address);
    // Its lease lapses; the successor (the only other candidate) takes over and tickets of the old term die.
    await time.increase(h.LEASE + 1);
    await jm.drawSuccessor(jobId);
    await mine(h.DRAW_DELAY + 1);
    expect(await jm.successor(jobId)).to.equal(l2.address);
    await jm.connect(l2).claimLeadership(jobId);
    await expect(h.submit(f, jobId, t2, 1, { term: 1, signer: l1 })).to.be.revertedWithCustomError(
      jm,
      "JobManagerWrongTerm",
    );
    await h.acceptedUpdate(f, jobId, 0, t2, 1);
    await expect(h.commit(f, jobId)).to.emit(jm, "RoundCommitted");
  });
});
