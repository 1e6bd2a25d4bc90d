// Random call sequences against JobManager with the money invariants checked after every step.
//
// A seeded PRNG picks actions that are mostly meaningful (a vote from a drawn validator, a commit from the leader,
// ...) and sometimes not; any revert must be one of JobManager's custom errors (a Panic, i.e. an overflow or
// underflow in the accounting, fails the test).
const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time } = require("@nomicfoundation/hardhat-toolbox/network-helpers");
const h = require("./helpers");

const STEPS = Number(process.env.INVARIANT_STEPS || 300);
const SEED = Number(process.env.INVARIANT_SEED || 0x5eed);

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
  it(`conserves money and pays nothing twice over ${STEPS} random steps (seed ${SEED})`, async function () {
    this.timeout(Math.max(120000, STEPS * 1000));
    const f = await loadFixture(h.registeredFixture);
    const { jm } = f;
    const rnd = prng(SEED);
    const customers = [f.customer, f.owner, f.outsider];
    const trainers = [f.t1, f.t2, f.t3, f.t4, f.l1, f.l2, f.l3];
    const validators = [f.v1, f.v2, f.v3, f.v4, f.v5];
    const nodes = [...trainers, ...validators];
    const everyone = [...customers, ...nodes];
    const bySigner = new Map(everyone.map((s) => [s.address, s]));
    const jmAddress = await jm.getAddress();

    const jobs = []; // {jobId, customer}
    const updates = []; // {jobId, round, trainer, validators}
    const credited = new Map(); // jobId -> credited from the deposit (FeePaid + PaidOut)
    const paidOut = new Map(); // `${jobId}:${trainer}` -> sum of PaidOut
    const counts = { ok: 0, reverted: 0 };
    const actionCounts = {};
    const decided = new Set(); // `${jobId}:${round}:${trainer}` of updates that left Pending
    const closedJobs = new Set();
    const committed = new Map(); // jobId -> rounds committed (from RoundCommitted)
    const disputes = new Map(); // `${jobId}:${round}` -> RoundDisputed events seen (must stay at most 1)
    const key = (j, r, t) => `${j}:${r}:${t}`;

    const add = (m, k, v) => m.set(k, (m.get(k) ?? 0n) + v);

    async function send(label, fn) {
      try {
        const tx = await fn();
        const receipt = await tx.wait();
        for (const log of receipt.logs) {
          if (log.address !== jmAddress) continue;
          const ev = jm.interface.parseLog(log);
          if (ev.name === "JobCreated") jobs.push({ jobId: ev.args.jobId, customer: ev.args.customer });
          if (ev.name === "UpdateSubmitted") {
            updates.push({ jobId: ev.args.jobId, round: ev.args.round, trainer: ev.args.trainer, validators: [...ev.args.validators] });
          }
          if (["UpdateAccepted", "UpdateRejected", "UpdateExpired"].includes(ev.name)) {
            decided.add(key(ev.args.jobId, ev.args.round, ev.args.trainer));
          }
          if (ev.name === "JobFinished" || ev.name === "JobCancelled") closedJobs.add(ev.args.jobId);
          if (ev.name === "RoundCommitted") committed.set(ev.args.jobId, ev.args.round + 1n);
          if (ev.name === "RoundDisputed") {
            const k = `${ev.args.jobId}:${ev.args.round}`;
            disputes.set(k, (disputes.get(k) ?? 0) + 1);
          }
          if (ev.name === "FeePaid") add(credited, ev.args.jobId, ev.args.amount);
          if (ev.name === "PaidOut") {
            add(credited, ev.args.jobId, ev.args.amount);
            add(paidOut, `${ev.args.jobId}:${ev.args.trainer}`, ev.args.amount);
          }
        }
        counts.ok++;
        actionCounts[label] = (actionCounts[label] ?? 0) + 1;
      } catch (e) {
        const data = revertData(e);
        const parsed = data ? jm.interface.parseError(data) : null;
        if (!parsed) throw new Error(`${label}: not a JobManager custom error: ${e.message}`);
        counts.reverted++;
      }
    }

    async function randomAction() {
      const r = rnd.next();
      const open = jobs.filter((j) => !closedJobs.has(j.jobId));
      const job = open.length && rnd.chance(0.9) ? rnd.pick(open) : jobs.length ? rnd.pick(jobs) : null;
      if (r < 0.05 || open.length < 2) {
        const p = h.jobParams({
          rounds: rnd.int(1, 3),
          tasksPerRound: rnd.int(1, 4),
          quorum: rnd.int(1, 3),
          baseRate: BigInt(rnd.int(0, 1000)) * 10n ** 12n,
          bonusRate: BigInt(rnd.int(0, 1000)) * 10n ** 12n,
          validatorFee: BigInt(rnd.int(0, 100)) * 10n ** 12n,
          leaderFee: BigInt(rnd.int(0, 100)) * 10n ** 12n,
          leaseSeconds: rnd.int(60, 600),
        });
        const extra = rnd.chance(0.5) ? BigInt(rnd.int(0, 10 ** 6)) : 0n;
        const short = rnd.chance(0.05) ? 1n : 0n;
        return send("createJob", () => jm.connect(rnd.pick(customers)).createJob(p, { value: h.requiredDeposit(p) + extra - short }));
      }
      const info = await jm.getJob(job.jobId);
      if (r < 0.15) return send("standForLeader", () => jm.connect(rnd.pick(nodes)).standForLeader(job.jobId));
      if (r < 0.18) {
        const who = rnd.chance(0.6) && info.successor !== ethers.ZeroAddress ? bySigner.get(info.successor) : rnd.pick(nodes);
        return send("claimLeadership", () => jm.connect(who).claimLeadership(job.jobId));
      }
      if (r < 0.22) {
        const lease = Number(info.params.leaseSeconds);
        await time.increase(rnd.chance(0.8) ? rnd.int(1, lease / 2) : rnd.int(lease, lease * 3));
        return;
      }
      if (r < 0.44) {
        const round = rnd.chance(0.95) ? info.committedRounds : info.committedRounds + 1n;
        return send("submitUpdate", () => jm.connect(rnd.pick(trainers)).submitUpdate(job.jobId, round, h.cid(`u${rnd.next()}`)));
      }
      if (r < 0.67) {
        const pending = updates.filter((u) => !decided.has(key(u.jobId, u.round, u.trainer)));
        if (!pending.length) return;
        const u = rnd.chance(0.95) ? rnd.pick(pending) : rnd.pick(updates);
        const v = rnd.chance(0.95) ? bySigner.get(rnd.pick(u.validators)) : rnd.pick(validators);
        const valid = rnd.chance(0.8);
        return send("validateUpdate", () =>
          jm.connect(v).validateUpdate(u.jobId, u.round, u.trainer, valid, BigInt(rnd.int(0, 1000))),
        );
      }
      if (r < 0.74) {
        // Audits of committed rounds (sometimes of a round not committed yet, or by a non-validator).
        const audited = committed.size && rnd.chance(0.9) ? rnd.pick([...committed.keys()]) : job.jobId;
        const done = Number(committed.get(audited) ?? 0n);
        const round = done > 0 && rnd.chance(0.9) ? rnd.int(0, done - 1) : done;
        const who = rnd.chance(0.9) ? rnd.pick(validators) : rnd.pick(everyone);
        return send("auditRound", () => jm.connect(who).auditRound(audited, round, rnd.chance(0.4)));
      }
      if (r < 0.85) {
        const leader = info.leader !== ethers.ZeroAddress && rnd.chance(0.9) ? bySigner.get(info.leader) : rnd.pick(nodes);
        return send("commitRound", () => jm.connect(leader).commitRound(job.jobId, info.committedRounds, h.cid(`c${rnd.next()}`)));
      }
      if (r < 0.91) {
        const mine = updates.filter((u) => u.jobId === job.jobId);
        const t = mine.length && rnd.chance(0.9) ? rnd.pick(mine).trainer : rnd.pick(trainers).address;
        return send("payout", () => jm.connect(rnd.pick(everyone)).payout(job.jobId, t));
      }
      if (r < 0.925) {
        const who = rnd.chance(0.8) ? bySigner.get(job.customer) : rnd.pick(everyone);
        return send("cancelJob", () => jm.connect(who).cancelJob(job.jobId));
      }
      if (r < 0.975) return send("withdraw", () => jm.connect(rnd.pick(everyone)).withdraw());
      const node = rnd.pick(nodes);
      if (r < 0.985) return send("requestDeregistration", () => jm.connect(node).requestDeregistration());
      if (r < 0.993) {
        await time.increase(h.DELAY);
        return send("completeDeregistration", () => jm.connect(node).completeDeregistration());
      }
      if (validators.includes(node)) {
        return send("registerValidator", () => jm.connect(node).registerValidator({ value: h.MIN_VALIDATOR_STAKE }));
      }
      return send("registerTrainer", () => jm.connect(node).registerTrainer(rnd.int(0, 2), { value: h.MIN_TRAINER_STAKE }));
    }

    async function checkMoney() {
      const [deposits, stakes, paid, refunded, slashed, withdrawn, held, escrow, stakeHeld, ether] = await Promise.all([
        jm.totalDeposits(),
        jm.totalStakes(),
        jm.totalPaid(),
        jm.totalRefunded(),
        jm.totalSlashed(),
        jm.totalWithdrawn(),
        jm.totalHeld(),
        jm.escrowHeld(),
        jm.stakeHeld(),
        ethers.provider.getBalance(jmAddress),
      ]);
      expect(held + paid + refunded + slashed, "held + paid + refunded + slashed").to.equal(deposits + stakes);
      expect(ether, "ether balance vs in - out").to.equal(deposits + stakes - withdrawn);
      const balances = await Promise.all(everyone.map((s) => jm.balanceOf(s.address)));
      const owedToAccounts = balances.reduce((a, b) => a + b, 0n);
      expect(ether, "ether balance vs ledger").to.equal(held + owedToAccounts + slashed);
      const stakesNow = await Promise.all(
        nodes.map(async (s) => (await jm.trainers(s.address)).stake + (await jm.validators(s.address)).stake),
      );
      expect(stakeHeld, "stakeHeld").to.equal(stakesNow.reduce((a, b) => a + b, 0n));
      let escrowExpected = 0n;
      for (const { jobId } of jobs) {
        const j = await jm.getJob(jobId);
        const c = credited.get(jobId) ?? 0n;
        expect(c + j.refunded, `job ${jobId} pays at most its deposit`).to.be.lte(j.deposit);
        expect(j.spent + j.refunded, `job ${jobId} spent + refunded`).to.be.lte(j.deposit);
        expect(c, `job ${jobId} credited <= spent`).to.be.lte(j.spent);
        if (j.status !== 1n) expect(j.spent + j.refunded, `closed job ${jobId}`).to.equal(j.deposit);
        const disputed = [...disputes.keys()].some((k) => k.startsWith(`${jobId}:`));
        expect(j.disputed, `job ${jobId} disputed flag`).to.equal(disputed);
        escrowExpected += j.deposit - c - j.refunded;
      }
      expect(escrow, "escrowHeld").to.equal(escrowExpected);
    }

    async function checkPaidOnce() {
      const perTrainer = new Map();
      for (const u of updates) {
        const info = await jm.getUpdate(u.jobId, u.round, u.trainer);
        if (info.paid) {
          expect(info.status, "only accepted updates are paid").to.equal(2n);
          add(perTrainer, `${u.jobId}:${u.trainer}`, info.amount);
        }
      }
      for (const [k, v] of paidOut) expect(perTrainer.get(k) ?? 0n, `paid once ${k}`).to.equal(v);
      for (const [k, v] of perTrainer) expect(paidOut.get(k) ?? 0n, `paid once ${k}`).to.equal(v);
    }

    for (let step = 0; step < STEPS; step++) {
      await randomAction();
      await checkMoney();
      for (const [k, n] of disputes) expect(n, `RoundDisputed once for ${k}`).to.equal(1);
      if (step % 25 === 24) await checkPaidOnce();
    }
    await checkPaidOnce();
    // The sequence must actually exercise the contract, not just bounce off reverts.
    expect(counts.ok).to.be.gte(STEPS / 4);
    expect(await jm.totalPaid()).to.be.gt(0n);
    expect(closedJobs.size).to.be.gt(0);
    if (process.env.INVARIANT_VERBOSE) {
      console.log(counts, "successful:", actionCounts, "disputed rounds", disputes.size, "jobs", jobs.length, "closed", closedJobs.size, "updates", updates.length);
    }
  });
});
