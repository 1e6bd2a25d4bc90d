// Random call sequences against JobManager with its invariants checked as it goes.
//
// A seeded PRNG picks actions that are mostly meaningful (a ticket signed by the leader, a vote from a drawn
// validator, a commit with the accepted set) and sometimes not; any revert must be one of JobManager's custom
// errors (a Panic, i.e. an overflow or underflow in the accounting, fails the test).
//
// Cost per step is O(1): after every call the contract-wide counters and the ether balance are checked (money
// conserved); every FULL_EVERY steps, and at the end, a full scan checks stakes, the validator pool, escrow per
// job and "no payment without a settled valid verdict". INVARIANT_CALLS sets the number of calls (default 1000),
// INVARIANT_SEED the seed; INVARIANT_VERBOSE=1 prints what ran and the timing.
const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time, mine } = require("@nomicfoundation/hardhat-toolbox/network-helpers");
const h = require("./helpers");

const CALLS = Number(process.env.INVARIANT_CALLS || process.env.INVARIANT_STEPS || 1000);
const SEED = Number(process.env.INVARIANT_SEED || 0x5eed);
const FULL_EVERY = Number(process.env.INVARIANT_FULL_EVERY || 250);

// mulberry32: small, fast, good enough to drive a test deterministically.
function prng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: (xs) => xs[Math.floor(next() * xs.length)],
    chance: (p) => next() < p,
  };
}

function revertData(e) {
  return e.data ?? e.error?.data ?? e.info?.error?.data;
}

describe("JobManager: invariants over random call sequences", function () {
  it(`conserves money, keeps the pool staked and pays only settled valid work over ${CALLS} calls (seed ${SEED})`, async function () {
    this.timeout(Math.max(300000, CALLS * 200));
    const started = Date.now();
    const f = await loadFixture(h.registeredFixture);
    const { jm } = f;
    const rnd = prng(SEED);
    const customers = [f.customer, f.owner, f.outsider];
    const trainers = [f.t1, f.t2, f.t3, f.t4, f.l1, f.l2, f.l3];
    const validators = [f.v1, f.v2, f.v3, f.v4, f.v5, ...f.signers.slice(20, 25)];
    for (const v of validators.slice(5)) await jm.connect(v).registerValidator({ value: h.MIN_VALIDATOR_STAKE });
    const nodes = [...trainers, ...validators];
    const everyone = [...customers, ...nodes];
    const bySigner = new Map(everyone.map((s) => [s.address, s]));
    const jmAddress = await jm.getAddress();
    const domain = await h.domain(jm);

    const jobs = []; // {jobId, customer, p}
    const closed = new Set();
    const updates = []; // {jobId, round, slot, trainer}
    const keyOf = (j, r, s) => `${j}:${r}:${s}`;
    const open = new Map(); // key -> update still pending
    const credited = new Map(); // jobId -> FeePaid + PaidOut
    const paidOut = new Map(); // `${jobId}:${trainer}` -> PaidOut sum
    const accepted = new Set(); // keys settled valid (UpdateAccepted)
    const committedRounds = new Map(); // jobId -> rounds committed
    const disputes = new Map(); // jobId -> rounds disputed (RoundDisputed)
    const counts = { ok: 0, reverted: 0 };
    const actions = {};
    const reverts = {};
    const add = (m, k, v) => m.set(k, (m.get(k) ?? 0n) + v);

    async function send(label, fn) {
      try {
        const receipt = await (await fn()).wait();
        for (const log of receipt.logs) {
          if (log.address !== jmAddress) continue;
          const ev = jm.interface.parseLog(log);
          const a = ev.args;
          switch (ev.name) {
            case "JobCreated":
              jobs.push({ jobId: a.jobId, customer: a.customer });
              break;
            case "UpdateSubmitted": {
              const u = { jobId: a.jobId, round: a.round, slot: a.slot, trainer: a.trainer };
              updates.push(u);
              open.set(keyOf(a.jobId, a.round, a.slot), u);
              break;
            }
            case "UpdateAccepted":
              accepted.add(keyOf(a.jobId, a.round, a.slot));
              open.delete(keyOf(a.jobId, a.round, a.slot));
              break;
            case "UpdateRejected":
            case "UpdateExpired":
              open.delete(keyOf(a.jobId, a.round, a.slot));
              break;
            case "JobFinished":
            case "JobCancelled":
              closed.add(a.jobId);
              break;
            case "RoundCommitted":
              committedRounds.set(a.jobId, a.round + 1n);
              break;
            case "RoundDisputed":
              disputes.set(a.jobId, [...(disputes.get(a.jobId) ?? []), a.round]);
              break;
            case "FeePaid":
              add(credited, a.jobId, a.amount);
              break;
            case "PaidOut":
              add(credited, a.jobId, a.amount);
              add(paidOut, `${a.jobId}:${a.trainer}`, a.amount);
              break;
            default:
          }
        }
        counts.ok++;
        actions[label] = (actions[label] ?? 0) + 1;
      } catch (e) {
        const data = revertData(e);
        const parsed = data ? jm.interface.parseError(data) : null;
        if (!parsed) throw new Error(`${label}: not a JobManager custom error: ${e.message}`);
        counts.reverted++;
        const k = `${label}:${parsed.name}`;
        reverts[k] = (reverts[k] ?? 0) + 1;
      }
    }

    async function submit(job, info) {
      const trainer = rnd.pick(trainers);
      const leader = bySigner.get(info.leader);
      const latest = await time.latest();
      const t = {
        jobId: job.jobId,
        round: rnd.chance(0.95) ? info.committedRounds : info.committedRounds + 1n,
        term: rnd.chance(0.95) ? info.term : info.term + 1n,
        trainer: trainer.address,
        slot: rnd.int(0, Number(info.params.tasksPerRound) - (rnd.chance(0.95) ? 1 : 0)),
        workUnits: rnd.int(rnd.chance(0.95) ? 1 : 0, Number(info.params.maxWorkUnits)),
        expiry: latest + (rnd.chance(0.95) ? 3600 : -1),
        taskHash: ethers.ZeroHash,
      };
      const signer = leader && rnd.chance(0.95) ? leader : rnd.pick(nodes);
      const sig = await signer.signTypedData(domain, h.TICKET_TYPES, t);
      return send("submitUpdate", () =>
        jm.connect(trainer).submitUpdate(t, h.cid(`u${rnd.next()}`), BigInt(rnd.int(0, 5000)), sig),
      );
    }

    // The fast path: the would-be panel signs (mostly unanimous, sometimes split, sometimes a wrong signer or a
    // stale anchor) and anyone posts the signatures.
    async function settleSigned(u) {
      if (rnd.chance(0.8)) await mine(h.DRAW_DELAY);
      let panel;
      try {
        [panel] = await jm.votePanel(u.jobId, u.round, u.slot);
      } catch {
        panel = []; // seed block not mined: the call below reverts with JobManagerDrawNotReady
      }
      const q = panel.length || 1;
      const all = (1 << q) - 1;
      const x = rnd.next();
      const mask = x < 0.75 ? all : x < 0.85 ? 0 : rnd.int(0, all);
      const signers = panel.map((a) => (rnd.chance(0.97) ? bySigner.get(a) : rnd.pick(validators)));
      const opts = { signers, anchorBlock: rnd.chance(0.97) ? undefined : 1 };
      const set = panel.length ? await h.voteSet(f, u.jobId, u.round, u.slot, mask, opts) : { slot: u.slot, validMask: 1, signatures: "0x" };
      return send("settleUpdates", () => jm.connect(rnd.pick(everyone)).settleUpdates(u.jobId, u.round, [set]));
    }

    async function randomAction() {
      const r = rnd.next();
      const live = jobs.filter((j) => !closed.has(j.jobId));
      if (r < 0.015 || live.length < 2) {
        const p = h.jobParams({
          rounds: rnd.int(1, 3),
          tasksPerRound: rnd.int(1, 4),
          maxWorkUnits: rnd.int(1, 10),
          quorum: rnd.int(1, 3),
          baseRate: BigInt(rnd.int(0, 1000)) * 10n ** 12n,
          bonusRate: BigInt(rnd.int(0, 1000)) * 10n ** 12n,
          validatorFee: BigInt(rnd.int(0, 100)) * 10n ** 12n,
          leaderFee: BigInt(rnd.int(0, 100)) * 10n ** 12n,
          leaseSeconds: rnd.int(60, 600),
        });
        const extra = rnd.chance(0.5) ? BigInt(rnd.int(0, 10 ** 6)) : 0n;
        const short = rnd.chance(0.05) ? 1n : 0n;
        return send("createJob", () =>
          jm.connect(rnd.pick(customers)).createJob(p, { value: h.requiredDeposit(p) + extra - short }),
        );
      }
      const job = live.length && rnd.chance(0.9) ? rnd.pick(live) : rnd.pick(jobs);
      const info = await jm.getJob(job.jobId);
      const now = await time.latest();
      if (info.leader === ethers.ZeroAddress && info.status === 1n && rnd.chance(0.7)) {
        return send("standForLeader", () => jm.connect(rnd.pick(nodes)).standForLeader(job.jobId, { value: h.MIN_LEADER_BOND }));
      }
      if (info.status === 1n && info.leader !== ethers.ZeroAddress && BigInt(now) > info.leaseExpiry && rnd.chance(0.5)) {
        const next = await jm.successor(job.jobId);
        if (next === ethers.ZeroAddress && rnd.chance(0.5)) {
          await mine(h.DRAW_DELAY + 1);
          return send("drawSuccessor", () => jm.connect(rnd.pick(everyone)).drawSuccessor(job.jobId));
        }
        const [cands] = await jm.getCandidates(job.jobId);
        const any = cands.length && rnd.chance(0.8) ? bySigner.get(rnd.pick(cands)) : rnd.pick(nodes);
        const who = next !== ethers.ZeroAddress && rnd.chance(0.8) ? bySigner.get(next) : any;
        return send("claimLeadership", () => jm.connect(who).claimLeadership(job.jobId));
      }
      if (r < 0.08) {
        const bond = h.MIN_LEADER_BOND + (rnd.chance(0.3) ? BigInt(rnd.int(0, 100)) * 10n ** 16n : 0n);
        return send("standForLeader", () => jm.connect(rnd.pick(nodes)).standForLeader(job.jobId, { value: bond }));
      }
      if (r < 0.09) return send("withdrawCandidacy", () => jm.connect(rnd.pick(nodes)).withdrawCandidacy(job.jobId));
      if (r < 0.1) {
        if (rnd.chance(0.5)) return send("drawSuccessor", () => jm.connect(rnd.pick(everyone)).drawSuccessor(job.jobId));
        return send("claimLeadership", () => jm.connect(rnd.pick(nodes)).claimLeadership(job.jobId));
      }
      if (r < 0.12) {
        const lease = Number(info.params.leaseSeconds);
        await time.increase(rnd.chance(0.9) ? rnd.int(1, lease / 4) : rnd.int(lease, lease * 3));
        return;
      }
      if (r < 0.13) {
        await mine(rnd.chance(0.95) ? rnd.int(1, 3) : 257);
        return;
      }
      if (r < 0.36) return submit(job, info);
      const pending = [...open.values()];
      if (r < 0.66) {
        if (!pending.length) return;
        const u = rnd.chance(0.97) ? rnd.pick(pending) : rnd.pick(updates);
        const info2 = await jm.getUpdate(u.jobId, u.round, u.slot);
        if (info2.phase === h.Phase.Voting && info2.voteDeadline > 0n && rnd.chance(0.1)) {
          if (rnd.chance(0.5) && BigInt(await time.latest()) <= info2.voteDeadline) await time.increaseTo(info2.voteDeadline + 1n);
          return send("escalateUpdate", () => jm.connect(rnd.pick(everyone)).escalateUpdate(u.jobId, u.round, u.slot));
        }
        if (info2.phase === h.Phase.AwaitingPanel && rnd.chance(0.5)) return settleSigned(u);
        if (info2.phase === h.Phase.AwaitingPanel || info2.phase === h.Phase.AwaitingEscalation) {
          if (rnd.chance(0.8)) await mine(h.DRAW_DELAY);
          return send("drawValidators", () => jm.connect(rnd.pick(everyone)).drawValidators(u.jobId, u.round, u.slot));
        }
        const panel = info2.phase === h.Phase.Escalated ? info2.escalationPanel : info2.panel;
        const v = panel.length && rnd.chance(0.95) ? bySigner.get(rnd.pick(panel)) : rnd.pick(validators);
        return send("validateUpdate", () => jm.connect(v).validateUpdate(u.jobId, u.round, u.slot, rnd.chance(0.85)));
      }
      if (r < 0.77) {
        const leader = info.leader !== ethers.ZeroAddress && rnd.chance(0.9) ? bySigner.get(info.leader) : rnd.pick(nodes);
        const round = await jm.getRound(job.jobId, info.committedRounds);
        const mask = rnd.chance(0.9) ? round.acceptedMask : round.submittedMask;
        return send("commitRound", () =>
          jm.connect(leader).commitRound(job.jobId, info.committedRounds, h.cid(`c${rnd.next()}`), mask),
        );
      }
      if (r < 0.83) {
        const audited = committedRounds.size && rnd.chance(0.9) ? rnd.pick([...committedRounds.keys()]) : job.jobId;
        const done = Number(committedRounds.get(audited) ?? 0n);
        const round = done > 0 && rnd.chance(0.9) ? rnd.int(0, done - 1) : done;
        const ri = await jm.getRound(audited, round);
        if ((ri.auditPhase === h.Phase.AwaitingPanel || ri.auditPhase === h.Phase.AwaitingEscalation) && rnd.chance(0.8)) {
          if (rnd.chance(0.8)) await mine(h.DRAW_DELAY);
          return send("drawAuditors", () => jm.drawAuditors(audited, round));
        }
        if (ri.auditDeadline > 0n && rnd.chance(0.1)) {
          if (rnd.chance(0.5) && BigInt(await time.latest()) <= ri.auditDeadline) await time.increaseTo(ri.auditDeadline + 1n);
          const stalled = ri.auditPhase === h.Phase.Voting ? "escalateAudit" : "lapseAudit";
          return send(stalled, () => jm.connect(rnd.pick(everyone))[stalled](audited, round));
        }
        const panel = ri.auditPhase === h.Phase.Escalated ? ri.auditEscalationPanel : ri.auditors;
        const who = panel.length && rnd.chance(0.9) ? bySigner.get(rnd.pick(panel)) : rnd.pick(validators);
        return send("auditRound", () => jm.connect(who).auditRound(audited, round, rnd.chance(0.7)));
      }
      if (r < 0.89) {
        const done = Number(committedRounds.get(job.jobId) ?? 0n);
        const round = rnd.chance(0.9) ? rnd.int(0, done) : rnd.int(0, 3);
        return send("payout", () => jm.connect(rnd.pick(everyone)).payout(job.jobId, round));
      }
      if (r < 0.9) {
        const who = rnd.chance(0.8) ? bySigner.get(job.customer) : rnd.pick(everyone);
        return send("cancelJob", () => jm.connect(who).cancelJob(job.jobId));
      }
      if (r < 0.94) return send("withdraw", () => jm.connect(rnd.pick(everyone)).withdraw());
      // Node upkeep: leaving nodes finish leaving, unregistered ones come back, some start leaving.
      const node = rnd.pick(nodes);
      const isValidator = validators.includes(node);
      const [tr, va, leaving] = await Promise.all([jm.trainers(node.address), jm.validators(node.address), jm.exitAvailableAt(node.address)]);
      if (leaving !== 0n) {
        await time.increase(h.DELAY);
        return send("completeDeregistration", () => jm.connect(node).completeDeregistration());
      }
      if (isValidator && !va.registered) {
        return send("registerValidator", () => jm.connect(node).registerValidator({ value: h.MIN_VALIDATOR_STAKE }));
      }
      if (!isValidator && !tr.registered) {
        return send("registerTrainer", () => jm.connect(node).registerTrainer(rnd.int(0, 2), { value: h.MIN_TRAINER_STAKE }));
      }
      if (isValidator && va.stake < h.MIN_VALIDATOR_STAKE) return send("requestDeregistration", () => jm.connect(node).requestDeregistration());
      if (r < 0.965) return send("requestDeregistration", () => jm.connect(node).requestDeregistration());
      if (r < 0.98) return send("addTrainerStake", () => jm.connect(node).addTrainerStake({ value: h.E("0.5") }));
      if (isValidator) return send("registerValidator", () => jm.connect(node).registerValidator({ value: h.MIN_VALIDATOR_STAKE }));
      return send("registerTrainer", () => jm.connect(node).registerTrainer(rnd.int(0, 2), { value: h.MIN_TRAINER_STAKE }));
    }

    // O(1): contract-wide counters and the ether balance.
    async function checkMoney() {
      const [[deposits, stakes, paid, refunded, slashed, withdrawn, escrow, stakeHeld], ether] = await Promise.all([
        jm.accounting(),
        ethers.provider.getBalance(jmAddress),
      ]);
      expect(escrow + stakeHeld + paid + refunded + slashed, "held + paid + refunded + slashed").to.equal(deposits + stakes);
      expect(ether, "ether balance vs in - out").to.equal(deposits + stakes - withdrawn);
    }

    // O(state): stakes, pool, escrow per job, payments.
    async function fullScan() {
      const [ether, escrow, stakeHeld, slashed] = await Promise.all([
        ethers.provider.getBalance(jmAddress),
        jm.escrowHeld(),
        jm.stakeHeld(),
        jm.totalSlashed(),
      ]);
      const balances = await Promise.all(everyone.map((s) => jm.balanceOf(s.address)));
      expect(ether, "ether vs ledger").to.equal(escrow + stakeHeld + slashed + balances.reduce((a, b) => a + b, 0n));
      let stakes = 0n;
      for (const s of nodes) {
        const [t, v, leaving] = await Promise.all([jm.trainers(s.address), jm.validators(s.address), jm.exitAvailableAt(s.address)]);
        stakes += t.stake + v.stake;
        expect(t.locked, "locked <= stake").to.be.lte(t.stake);
        const inPool = (await jm.poolWeightOf(s.address)) > 0n;
        const eligible = v.registered && v.stake >= h.MIN_VALIDATOR_STAKE && leaving === 0n;
        expect(inPool, `pool membership of ${s.address}`).to.equal(eligible);
        if (inPool) expect(await jm.poolWeightOf(s.address), "weight == stake").to.equal(v.stake);
      }
      let escrowExpected = 0n;
      for (const { jobId } of jobs) {
        const [list, bonds] = await jm.getCandidates(jobId);
        stakes += bonds.reduce((a, b) => a + b, 0n);
        expect(new Set(list).size, "no duplicate candidates").to.equal(list.length);
        const j = await jm.getJob(jobId);
        const c = credited.get(jobId) ?? 0n;
        expect(c + j.refunded, `job ${jobId} pays at most its deposit`).to.be.lte(j.deposit);
        expect(c, `job ${jobId} credited <= spent`).to.be.lte(j.spent);
        if (j.status !== 1n) expect(j.spent + j.refunded, `closed job ${jobId}`).to.equal(j.deposit);
        // A job is disputed only by a settled failed audit, and that audit stays settled.
        expect(j.disputed, `job ${jobId} disputed <=> RoundDisputed`).to.equal(disputes.has(jobId));
        for (const round of disputes.get(jobId) ?? []) expect((await jm.getRound(jobId, round)).audit).to.equal(2n);
        escrowExpected += j.deposit - c - j.refunded;
      }
      expect(stakeHeld, "stakeHeld == stakes + bonds").to.equal(stakes);
      expect(escrow, "escrowHeld").to.equal(escrowExpected);
      const pool = await jm.getValidators();
      expect(new Set(pool).size, "no duplicate pool entries").to.equal(pool.length);
      // No payment without a settled valid verdict; each paid once.
      const perTrainer = new Map();
      for (const u of updates) {
        const info = await jm.getUpdate(u.jobId, u.round, u.slot);
        if (info.paid) {
          expect(info.status, "only accepted updates are paid").to.equal(h.Status.Accepted);
          expect(accepted.has(keyOf(u.jobId, u.round, u.slot)), "paid only after UpdateAccepted").to.equal(true);
          add(perTrainer, `${u.jobId}:${info.trainer}`, info.amount);
        }
      }
      for (const [k, v] of paidOut) expect(perTrainer.get(k) ?? 0n, `paid once ${k}`).to.equal(v);
      for (const [k, v] of perTrainer) expect(paidOut.get(k) ?? 0n, `paid once ${k}`).to.equal(v);
    }

    for (let step = 0; step < CALLS; step++) {
      await randomAction();
      await checkMoney();
      if (step % FULL_EVERY === FULL_EVERY - 1) await fullScan();
    }
    await fullScan();
    if (process.env.INVARIANT_VERBOSE) {
      const seconds = (Date.now() - started) / 1000;
      console.log(`${CALLS} calls in ${seconds.toFixed(1)} s`, counts, actions, "jobs", jobs.length, "closed", closed.size, "updates", updates.length, "accepted", accepted.size, reverts);
    }
    // The sequence must exercise the contract, not just bounce off reverts.
    expect(counts.ok).to.be.gte(CALLS / 4);
    expect(actions.validateUpdate ?? 0).to.be.gt(0);
    expect(actions.auditRound ?? 0).to.be.gt(0);
    expect(await jm.totalPaid()).to.be.gt(0n);
    expect(closed.size).to.be.gt(0);
  });
});
