// Worst cases of the bounded loops: a full round (MAX_TASKS_PER_ROUND updates) and a full quorum (MAX_QUORUM),
// so gas stays predictable. The gas figures land in the gas report (REPORT_GAS=true) and in contracts/README.md.
const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, setBalance, time } = require("@nomicfoundation/hardhat-toolbox/network-helpers");
const h = require("./helpers");

async function wallets(n) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const w = ethers.Wallet.createRandom().connect(ethers.provider);
    await setBalance(w.address, h.E("100"));
    out.push(w);
  }
  return out;
}

async function gasOf(txPromise) {
  return (await (await txPromise).wait()).gasUsed;
}

describe("JobManager: worst-case loops stay within a bounded gas", function () {
  this.timeout(120000);

  async function fullRoundFixture() {
    const f = await h.registeredFixture();
    const tasks = Number(await f.jm.MAX_TASKS_PER_ROUND());
    const trainers = await wallets(tasks);
    for (const t of trainers) await f.jm.connect(t).registerTrainer(0, { value: h.MIN_TRAINER_STAKE });
    const { jobId, p } = await h.createJob(f.jm, f.customer, { tasksPerRound: tasks, quorum: 1, rounds: 1 });
    await f.jm.connect(f.l1).standForLeader(jobId);
    for (const [i, t] of trainers.entries()) await f.jm.connect(t).submitUpdate(jobId, 0, h.cid(`u${i}`));
    return { ...f, trainers, jobId, p, tasks };
  }

  it("commits a round of 64 accepted updates", async function () {
    const f = await loadFixture(fullRoundFixture);
    const { jm, jobId, trainers } = f;
    for (const [i, t] of trainers.entries()) {
      const [v] = await h.drawn(f, jobId, 0, t.address);
      await jm.connect(v).validateUpdate(jobId, 0, t.address, true, BigInt(i + 1));
    }
    const gas = await gasOf(jm.connect(f.l1).commitRound(jobId, 0, h.cid("final")));
    expect(gas).to.be.lt(3_000_000n);
    const job = await jm.getJob(jobId);
    expect(job.spent + job.refunded).to.equal(job.deposit);
  });

  it("cancels a job with a full round of pending updates", async function () {
    const f = await loadFixture(fullRoundFixture);
    const { jm, jobId, p } = f;
    await time.increase(3 * p.leaseSeconds);
    const gas = await gasOf(jm.connect(f.customer).cancelJob(jobId));
    expect(gas).to.be.lt(1_500_000n);
    for (const t of f.trainers.slice(0, 3)) expect(await jm.pendingUpdates(t.address)).to.equal(0n);
  });

  it("draws, and decides, a quorum of 15 from a pool of exactly 15", async function () {
    const f = await loadFixture(h.deployFixture);
    const { jm, customer } = f;
    const quorum = Number(await jm.MAX_QUORUM());
    const vals = await wallets(quorum);
    for (const v of vals) await jm.connect(v).registerValidator({ value: h.MIN_VALIDATOR_STAKE });
    await jm.connect(f.t1).registerTrainer(2, { value: h.MIN_TRAINER_STAKE });
    const { jobId } = await h.createJob(jm, customer, { quorum });
    const submitGas = await gasOf(jm.connect(f.t1).submitUpdate(jobId, 0, h.cid("u")));
    expect(submitGas).to.be.lt(1_000_000n);
    const u = await jm.getUpdate(jobId, 0, f.t1.address);
    expect(new Set(u.validators).size).to.equal(quorum);
    const byAddr = new Map(vals.map((v) => [v.address, v]));
    let decidingGas = 0n;
    for (let i = 0; i < Math.floor(quorum / 2) + 1; i++) {
      decidingGas = await gasOf(jm.connect(byAddr.get(u.validators[i])).validateUpdate(jobId, 0, f.t1.address, true, BigInt(100 - i)));
    }
    expect(decidingGas).to.be.lt(500_000n);
    expect((await jm.getUpdate(jobId, 0, f.t1.address)).lossReduction).to.equal(96n); // median of 100..93
  });
});
