const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, mine, time } = require("@nomicfoundation/hardhat-toolbox/network-helpers");
const h = require("./helpers");

const Audit = { Open: 0n, Passed: 1n, Disputed: 2n, Lapsed: 3n };

describe("JobManager: audits of committed rounds", function () {
  async function committedFixture() {
    const f = await h.jobFixture();
    await h.acceptedUpdate(f, f.jobId, 0, f.t1, 0);
    await h.commit(f, f.jobId);
    return f;
  }

  // Two colluders holding a third of the validator stake (2.5 ETH each against the five honest 2 ETH stakes).
  async function colludersFixture() {
    const f = await h.jobFixture();
    const colluders = f.signers.slice(20, 22);
    for (const c of colluders) await f.jm.connect(c).registerValidator({ value: h.E("2.5") });
    await h.acceptedUpdate(f, f.jobId, 0, f.t1, 0);
    await h.commit(f, f.jobId);
    return { ...f, colluders };
  }

  // Mines past the draw delay and draws the audit panel of the round's current phase (again when it re-anchored).
  async function drawAudit(f, jobId, round) {
    await mine(h.DRAW_DELAY);
    await f.jm.drawAuditors(jobId, round);
    let r = await f.jm.getRound(jobId, round);
    if (r.auditPhase === h.Phase.AwaitingPanel || r.auditPhase === h.Phase.AwaitingEscalation) {
      await mine(h.DRAW_DELAY);
      await f.jm.drawAuditors(jobId, round);
      r = await f.jm.getRound(jobId, round);
    }
    const list = r.auditPhase === h.Phase.Escalated ? r.auditEscalationPanel : r.auditors;
    return list.map((a) => h.signerOf(f, a));
  }

  async function stakeOf(jm, s) {
    return (await jm.validators(s.address)).stake;
  }

  async function expectConserved(jm) {
    const [deposits, stakes, paid, refunded, slashed, , escrow, held] = await jm.accounting();
    expect(escrow + held + paid + refunded + slashed).to.equal(deposits + stakes);
  }

  it("draws the audit panel from a block after the commit, never the committer", async function () {
    const f = await loadFixture(committedFixture);
    const { jm, jobId, l1 } = f;
    expect(await jm.AUDIT_PANEL()).to.equal(7n);
    await expect(jm.drawAuditors(jobId, 1))
      .to.be.revertedWithCustomError(jm, "JobManagerRoundNotCommitted")
      .withArgs(jobId, 1);
    const { auditAnchor } = await jm.getRound(jobId, 0);
    await expect(jm.drawAuditors(jobId, 0))
      .to.be.revertedWithCustomError(jm, "JobManagerDrawNotReady")
      .withArgs(auditAnchor + BigInt(h.DRAW_DELAY) + 1n);
    await mine(h.DRAW_DELAY);
    const tx = await jm.drawAuditors(jobId, 0);
    const r = await jm.getRound(jobId, 0);
    await expect(tx).to.emit(jm, "AuditorsDrawn").withArgs(jobId, 0, h.Phase.Voting, r.auditors);
    expect(r.auditors).to.have.length(5); // AUDIT_PANEL capped by the pool (the committer is no validator)
    expect(r.auditors).to.not.include(l1.address);
    expect(r.auditPhase).to.equal(h.Phase.Voting);
    const { timestamp } = await tx.getBlock();
    expect(r.auditDeadline).to.equal(BigInt(timestamp + h.LEASE / 2));
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

  it("a unanimous failed panel disputes the round, burns the committer's bond, and frees the customer at once", async function () {
    const f = await loadFixture(committedFixture);
    const { jm, jobId, customer, l1, t1, t2, p } = f;
    await expect(jm.connect(f.v1).auditRound(jobId, 1, false))
      .to.be.revertedWithCustomError(jm, "JobManagerRoundNotCommitted")
      .withArgs(jobId, 1);
    const auditors = await drawAudit(f, jobId, 0);
    await expect(jm.connect(auditors[0]).auditRound(jobId, 0, false))
      .to.emit(jm, "RoundAudited")
      .withArgs(jobId, 0, auditors[0].address, false);
    await expect(jm.connect(auditors[0]).auditRound(jobId, 0, true))
      .to.be.revertedWithCustomError(jm, "JobManagerAlreadyAudited")
      .withArgs(jobId, 0, auditors[0].address);
    expect((await jm.validators(auditors[0].address)).openVotes).to.equal(1n); // it cannot leave before the verdict
    await h.acceptedUpdate(f, jobId, 1, t2, 1); // work in the open round
    for (const a of auditors.slice(1, -1)) await jm.connect(a).auditRound(jobId, 0, false);
    expect((await jm.getJob(jobId)).disputed).to.equal(false); // not before the panel is complete
    const tx = jm.connect(auditors.at(-1)).auditRound(jobId, 0, false);
    await expect(tx).to.emit(jm, "RoundDisputed").withArgs(jobId, 0, 5);
    await expect(tx).to.emit(jm, "LeaderBondForfeited").withArgs(jobId, l1.address, h.MIN_LEADER_BOND);
    await expect(tx).not.to.emit(jm, "ValidatorSlashed"); // a unanimous panel has no loser
    const r = await jm.getRound(jobId, 0);
    expect([r.audit, r.auditOk, r.auditFailed]).to.deep.equal([Audit.Disputed, 0n, 5n]);
    for (const a of auditors) expect((await jm.validators(a.address)).openVotes).to.equal(0n);
    expect((await jm.getJob(jobId)).disputed).to.equal(true);
    await expect(jm.connect(customer).cancelJob(jobId)).to.emit(jm, "JobCancelled");
    // Accepted work stays paid: the committed round's and the open round's.
    await expect(jm.payout(jobId, 0)).to.emit(jm, "PaidOut").withArgs(jobId, t1.address, 10n * p.baseRate + 10n * p.bonusRate);
    await expect(jm.payout(jobId, 1)).to.emit(jm, "PaidOut").withArgs(jobId, t2.address, 10n * p.baseRate + 10n * p.bonusRate);
    await expectConserved(jm);
  });

  it("a split panel escalates to a stake-weighted panel; its majority settles and the minority is slashed", async function () {
    const f = await loadFixture(committedFixture);
    const { jm, jobId, l1 } = f;
    const first = await drawAudit(f, jobId, 0);
    const [liar, honest] = first;
    await jm.connect(liar).auditRound(jobId, 0, false);
    const tx = await jm.connect(honest).auditRound(jobId, 0, true);
    await expect(tx).to.emit(jm, "AuditEscalated").withArgs(jobId, 0, tx.blockNumber);
    // The first panel's vote is over; the escalation panel is drawn from a block after the escalation.
    await expect(jm.connect(first[2]).auditRound(jobId, 0, true))
      .to.be.revertedWithCustomError(jm, "JobManagerAuditNotVoting")
      .withArgs(jobId, 0, h.Phase.AwaitingEscalation);
    await expect(jm.drawAuditors(jobId, 0))
      .to.be.revertedWithCustomError(jm, "JobManagerDrawNotReady")
      .withArgs(BigInt(tx.blockNumber + h.DRAW_DELAY + 1));
    const esc = await drawAudit(f, jobId, 0);
    const r = await jm.getRound(jobId, 0);
    expect(r.auditPhase).to.equal(h.Phase.Escalated);
    expect(esc).to.have.length(5); // ESCALATION_PANEL capped by the pool
    expect(r.auditEscStake).to.equal(5n * h.MIN_VALIDATOR_STAKE);
    await expect(jm.connect(f.outsider).auditRound(jobId, 0, true))
      .to.be.revertedWithCustomError(jm, "JobManagerNotAuditor")
      .withArgs(jobId, 0, f.outsider.address);
    await jm.connect(liar).auditRound(jobId, 0, false);
    const others = esc.filter((v) => v.address !== liar.address);
    await jm.connect(others[0]).auditRound(jobId, 0, true);
    await jm.connect(others[1]).auditRound(jobId, 0, true);
    expect((await jm.getRound(jobId, 0)).audit).to.equal(Audit.Open); // 4 of 10 ETH: no majority yet
    const before = await jm.totalSlashed();
    const settle = jm.connect(others[2]).auditRound(jobId, 0, true);
    // The liar lost twice (first panel and escalation); the three escalation winners share it.
    const share = (2n * h.VALIDATOR_SLASH) / 3n;
    await expect(settle).to.emit(jm, "RoundAuditPassed").withArgs(jobId, 0, 3);
    await expect(settle).to.emit(jm, "ValidatorSlashed").withArgs(jobId, liar.address, h.VALIDATOR_SLASH);
    for (const w of others.slice(0, 3)) await expect(settle).to.emit(jm, "SlashRewardPaid").withArgs(jobId, w.address, share);
    await expect(settle).not.to.emit(jm, "LeaderBondForfeited");
    expect(await stakeOf(jm, liar)).to.equal(h.MIN_VALIDATOR_STAKE - 2n * h.VALIDATOR_SLASH);
    expect(await stakeOf(jm, honest)).to.equal(h.MIN_VALIDATOR_STAKE);
    expect(await jm.totalSlashed()).to.equal(before + 2n * h.VALIDATOR_SLASH - 3n * share);
    const done = await jm.getRound(jobId, 0);
    expect([done.audit, done.auditOk, done.auditFailed]).to.deep.equal([Audit.Passed, 1n, 1n]);
    expect([done.auditEscOkStake, done.auditEscFailedStake]).to.deep.equal([3n * h.MIN_VALIDATOR_STAKE, h.MIN_VALIDATOR_STAKE]);
    expect((await jm.getJob(jobId)).disputed).to.equal(false);
    expect((await jm.getCandidates(jobId))[1][0]).to.equal(h.MIN_LEADER_BOND); // l1's bond intact
    expect((await jm.getCandidates(jobId))[0][0]).to.equal(l1.address);
    for (const v of [f.v1, f.v2, f.v3, f.v4, f.v5]) expect((await jm.validators(v.address)).openVotes).to.equal(0n);
    await expectConserved(jm);
  });

  it("a colluding third of the stake cannot dispute an honest leader: it escalates, loses, and pays", async function () {
    const f = await loadFixture(colludersFixture);
    const { jm, jobId, colluders } = f;
    const isColluder = (s) => colluders.some((c) => c.address === s.address);
    const first = await drawAudit(f, jobId, 0);
    expect(first).to.have.length(7); // the whole pool: the colluders are on it
    // Colluders vote "failed" first; the first honest "ok" escalates.
    for (const a of first.filter(isColluder)) await jm.connect(a).auditRound(jobId, 0, false);
    await expect(jm.connect(first.find((a) => !isColluder(a))).auditRound(jobId, 0, true)).to.emit(jm, "AuditEscalated");
    const esc = await drawAudit(f, jobId, 0);
    for (const a of esc.filter(isColluder)) await jm.connect(a).auditRound(jobId, 0, false);
    // 5 of 15 ETH say "failed"; the honest side needs more than 7.5 ETH: four 2 ETH votes.
    const honest = esc.filter((a) => !isColluder(a));
    for (const a of honest.slice(0, 3)) await jm.connect(a).auditRound(jobId, 0, true);
    const settle = jm.connect(honest[3]).auditRound(jobId, 0, true);
    await expect(settle).to.emit(jm, "RoundAuditPassed").withArgs(jobId, 0, 4);
    await expect(settle).not.to.emit(jm, "RoundDisputed");
    for (const c of colluders) {
      await expect(settle).to.emit(jm, "ValidatorSlashed").withArgs(jobId, c.address, h.VALIDATOR_SLASH);
      expect(await stakeOf(jm, c)).to.equal(h.E("2.5") - 2n * h.VALIDATOR_SLASH); // both panels lost
      expect(await jm.poolWeightOf(c.address)).to.equal(0n); // below the minimum: out of the pool
    }
    expect((await jm.getJob(jobId)).disputed).to.equal(false);
    await expectConserved(jm);
  });

  it("a dishonest commit is disputed through the escalation even when a colluder sits on the first panel", async function () {
    const f = await loadFixture(committedFixture);
    const { jm, jobId, l1 } = f;
    const first = await drawAudit(f, jobId, 0);
    const colluder = first[0];
    await jm.connect(colluder).auditRound(jobId, 0, true); // vouches for the wrong checkpoint
    await jm.connect(first[1]).auditRound(jobId, 0, false);
    const esc = await drawAudit(f, jobId, 0);
    const honest = esc.filter((v) => v.address !== colluder.address);
    await jm.connect(honest[0]).auditRound(jobId, 0, false);
    await jm.connect(honest[1]).auditRound(jobId, 0, false);
    const tx = jm.connect(honest[2]).auditRound(jobId, 0, false);
    await expect(tx).to.emit(jm, "RoundDisputed").withArgs(jobId, 0, 3);
    await expect(tx).to.emit(jm, "LeaderBondForfeited").withArgs(jobId, l1.address, h.MIN_LEADER_BOND);
    await expect(tx).to.emit(jm, "ValidatorSlashed").withArgs(jobId, colluder.address, h.VALIDATOR_SLASH);
    expect((await jm.getJob(jobId)).disputed).to.equal(true);
    await expect(jm.connect(colluder).auditRound(jobId, 0, true))
      .to.be.revertedWithCustomError(jm, "JobManagerAuditClosed")
      .withArgs(jobId, 0);
    await expectConserved(jm);
  });

  it("a silent first-panel member cannot block the audit: after the window anyone escalates, the silent one pays", async function () {
    const f = await loadFixture(committedFixture);
    const { jm, jobId, outsider } = f;
    const first = await drawAudit(f, jobId, 0);
    const silent = first.at(-1);
    for (const a of first.slice(0, -1)) await jm.connect(a).auditRound(jobId, 0, true);
    const { auditDeadline } = await jm.getRound(jobId, 0);
    await expect(jm.connect(outsider).escalateAudit(jobId, 0))
      .to.be.revertedWithCustomError(jm, "JobManagerAuditWindowOpen")
      .withArgs(jobId, 0, auditDeadline);
    await expect(jm.lapseAudit(jobId, 0))
      .to.be.revertedWithCustomError(jm, "JobManagerAuditWindowOpen")
      .withArgs(jobId, 0, auditDeadline);
    await time.increaseTo(auditDeadline + 1n);
    await expect(jm.connect(outsider).escalateAudit(jobId, 0)).to.emit(jm, "AuditEscalated");
    const r = await jm.getRound(jobId, 0);
    expect(r.auditSilentMask).to.equal(1n << BigInt(first.length - 1));
    expect(r.auditDeadline).to.equal(0n);
    await expect(jm.escalateAudit(jobId, 0))
      .to.be.revertedWithCustomError(jm, "JobManagerAuditWindowOpen")
      .withArgs(jobId, 0, 0);
    const esc = await drawAudit(f, jobId, 0);
    const voters = esc.filter((v) => v.address !== silent.address);
    for (const v of voters.slice(0, 2)) await jm.connect(v).auditRound(jobId, 0, true);
    const settle = jm.connect(voters[2]).auditRound(jobId, 0, true);
    await expect(settle).to.emit(jm, "RoundAuditPassed").withArgs(jobId, 0, 3);
    await expect(settle).to.emit(jm, "ValidatorSlashed").withArgs(jobId, silent.address, h.VALIDATOR_SLASH);
    for (const v of voters.slice(0, 3)) await expect(settle).to.emit(jm, "SlashRewardPaid").withArgs(jobId, v.address, h.VALIDATOR_SLASH / 3n);
    expect(await stakeOf(jm, silent)).to.equal(h.MIN_VALIDATOR_STAKE - h.VALIDATOR_SLASH);
    await expectConserved(jm);
  });

  it("an escalation without a stake majority lapses after its window: nothing disputed, nobody slashed", async function () {
    const f = await loadFixture(committedFixture);
    const { jm, jobId } = f;
    const first = await drawAudit(f, jobId, 0);
    await jm.connect(first[0]).auditRound(jobId, 0, false);
    await jm.connect(first[1]).auditRound(jobId, 0, true);
    const esc = await drawAudit(f, jobId, 0);
    await jm.connect(esc[0]).auditRound(jobId, 0, false);
    await jm.connect(esc[1]).auditRound(jobId, 0, true);
    const { auditDeadline } = await jm.getRound(jobId, 0);
    await expect(jm.escalateAudit(jobId, 0))
      .to.be.revertedWithCustomError(jm, "JobManagerAuditWindowOpen")
      .withArgs(jobId, 0, auditDeadline);
    await expect(jm.lapseAudit(jobId, 0))
      .to.be.revertedWithCustomError(jm, "JobManagerAuditWindowOpen")
      .withArgs(jobId, 0, auditDeadline);
    await time.increaseTo(auditDeadline + 1n);
    const tx = jm.lapseAudit(jobId, 0);
    await expect(tx).to.emit(jm, "RoundAuditLapsed").withArgs(jobId, 0);
    await expect(tx).not.to.emit(jm, "ValidatorSlashed");
    expect((await jm.getRound(jobId, 0)).audit).to.equal(Audit.Lapsed);
    expect((await jm.getJob(jobId)).disputed).to.equal(false);
    for (const v of [f.v1, f.v2, f.v3, f.v4, f.v5]) {
      expect(await jm.validators(v.address)).to.deep.equal([true, 0n, h.MIN_VALIDATOR_STAKE]);
    }
    await expect(jm.connect(esc[2]).auditRound(jobId, 0, true))
      .to.be.revertedWithCustomError(jm, "JobManagerAuditClosed")
      .withArgs(jobId, 0);
    await expect(jm.drawAuditors(jobId, 0))
      .to.be.revertedWithCustomError(jm, "JobManagerNothingToDraw")
      .withArgs(jobId, 0, 2n ** 32n - 1n);
    await expectConserved(jm);
  });

  it("an escalated audit keeps the committer's bond at stake until it can settle", async function () {
    const f = await loadFixture(h.registeredFixture);
    const { jm, customer, l1, t1 } = f;
    const { jobId } = await h.createJob(jm, customer, { rounds: 1 }); // the commit finishes it: l1 may leave
    await jm.connect(l1).standForLeader(jobId, { value: h.MIN_LEADER_BOND });
    await h.acceptedUpdate(f, jobId, 0, t1, 0);
    await h.commit(f, jobId);
    const first = await drawAudit(f, jobId, 0);
    await jm.connect(first[0]).auditRound(jobId, 0, true);
    await time.increase(h.LEASE / 2);
    await jm.connect(first[1]).auditRound(jobId, 0, false); // escalates half a lease after the commit
    const esc = await drawAudit(f, jobId, 0);
    await time.increase(h.LEASE / 2 + 10); // a lease after the commit: its own audit window is over
    const { timestamp } = await ethers.provider.getBlock("latest");
    const r = await jm.getRound(jobId, 0);
    await expect(jm.connect(l1).withdrawCandidacy(jobId))
      .to.be.revertedWithCustomError(jm, "JobManagerBondInAuditWindow")
      .withArgs(jobId, l1.address, r.auditDeadline); // held until the escalation could lapse
    expect(r.auditDeadline).to.be.gt(BigInt(timestamp));
    for (const v of esc.slice(0, 2)) await jm.connect(v).auditRound(jobId, 0, false);
    const tx = jm.connect(esc[2]).auditRound(jobId, 0, false);
    await expect(tx).to.emit(jm, "RoundDisputed").withArgs(jobId, 0, 3);
    await expect(tx).to.emit(jm, "LeaderBondForfeited").withArgs(jobId, l1.address, h.MIN_LEADER_BOND);
  });

  it("a committer that left before its audit escalated holds no bond to burn", async function () {
    const f = await loadFixture(h.registeredFixture);
    const { jm, customer, l1, t1 } = f;
    const { jobId } = await h.createJob(jm, customer, { rounds: 1 });
    await jm.connect(l1).standForLeader(jobId, { value: h.MIN_LEADER_BOND });
    await h.acceptedUpdate(f, jobId, 0, t1, 0);
    await h.commit(f, jobId);
    await time.increase(h.LEASE + 1);
    await jm.connect(l1).withdrawCandidacy(jobId);
    const first = await drawAudit(f, jobId, 0);
    await jm.connect(first[0]).auditRound(jobId, 0, true);
    await jm.connect(first[1]).auditRound(jobId, 0, false);
    const esc = await drawAudit(f, jobId, 0);
    for (const v of esc.slice(0, 2)) await jm.connect(v).auditRound(jobId, 0, false);
    const tx = jm.connect(esc[2]).auditRound(jobId, 0, false);
    await expect(tx).to.emit(jm, "RoundDisputed");
    await expect(tx).not.to.emit(jm, "LeaderBondForfeited");
    expect((await jm.getCandidates(jobId))[0]).to.not.include(l1.address);
  });

  it("a drawn auditor that left and was deleted cannot report", async function () {
    const f = await loadFixture(committedFixture);
    const { jm, jobId } = f;
    const first = await drawAudit(f, jobId, 0);
    await jm.connect(first[0]).requestDeregistration();
    await time.increase(h.DELAY);
    await jm.connect(first[0]).completeDeregistration();
    await expect(jm.connect(first[0]).auditRound(jobId, 0, false))
      .to.be.revertedWithCustomError(jm, "JobManagerNotAuditor")
      .withArgs(jobId, 0, first[0].address);
  });
});

describe("JobManager: an audit's worst-case loops stay within a bounded gas", function () {
  this.timeout(600000);

  it("draws and settles an audit escalation of 63 after a split first panel of 7", async function () {
    const { setBalance } = require("@nomicfoundation/hardhat-toolbox/network-helpers");
    const f = await h.registeredFixture();
    const { jm, customer, l1, t1 } = f;
    const extra = [];
    for (let i = 0; i < 60; i++) {
      const w = ethers.Wallet.createRandom().connect(ethers.provider);
      await setBalance(w.address, h.E("100"));
      await jm.connect(w).registerValidator({ value: h.MIN_VALIDATOR_STAKE });
      extra.push(w);
    }
    f.signers = [...f.signers, ...extra];
    const { jobId } = await h.createJob(jm, customer, { quorum: 1 });
    await jm.connect(l1).standForLeader(jobId, { value: h.MIN_LEADER_BOND });
    await h.acceptedUpdate(f, jobId, 0, t1, 0);
    await h.commit(f, jobId);
    const gasOf = async (tx) => (await (await tx).wait()).gasUsed;
    const report = (label, gas) => {
      if (process.env.BOUNDS_VERBOSE) console.log(`      ${label}: ${gas} gas`);
      expect(gas).to.be.lt(15_000_000n); // half a 30 M block
    };
    await mine(h.DRAW_DELAY);
    report("drawAuditors, first panel of 7", await gasOf(jm.drawAuditors(jobId, 0)));
    const first = (await jm.getRound(jobId, 0)).auditors.map((a) => h.signerOf(f, a));
    expect(first).to.have.length(7);
    for (const v of first.slice(0, 6)) await jm.connect(v).auditRound(jobId, 0, true);
    await jm.connect(first[6]).auditRound(jobId, 0, false); // split: escalate
    await mine(h.DRAW_DELAY);
    report("drawAuditors, escalation of 63", await gasOf(jm.drawAuditors(jobId, 0)));
    const esc = (await jm.getRound(jobId, 0)).auditEscalationPanel.map((a) => h.signerOf(f, a));
    expect(esc).to.have.length(63);
    // 31 vote "failed" (losers), then "ok" until more than half the stake: the settlement slashes 31 + 1 and pays 32.
    for (const v of esc.slice(0, 31)) await jm.connect(v).auditRound(jobId, 0, false);
    let gas = 0n;
    for (const v of esc.slice(31)) {
      if ((await jm.getRound(jobId, 0)).audit !== Audit.Open) break;
      gas = await gasOf(jm.connect(v).auditRound(jobId, 0, true));
    }
    report("auditRound, settling an escalation of 63", gas);
    expect((await jm.getRound(jobId, 0)).audit).to.equal(Audit.Passed);
  });
});
