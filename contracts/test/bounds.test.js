// Worst cases of the bounded loops: a full round (MAX_TASKS_PER_ROUND updates), a full first panel (MAX_QUORUM)
// and a full escalation panel (ESCALATION_PANEL), so gas stays predictable and far below a block. The figures are
// printed with BOUNDS_VERBOSE=1 and recorded in contracts/README.md.
const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, setBalance, mine } = require("@nomicfoundation/hardhat-toolbox/network-helpers");
const h = require("./helpers");

const BLOCK = 30_000_000n;

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

function report(label, gas) {
  if (process.env.BOUNDS_VERBOSE) console.log(`      ${label}: ${gas} gas`);
  expect(gas).to.be.lt(BLOCK / 2n);
}

describe("JobManager: worst-case loops stay within a bounded gas", function () {
  this.timeout(600000);

  async function fullRoundFixture() {
    const f = await h.registeredFixture();
    const tasks = Number(await f.jm.MAX_TASKS_PER_ROUND());
    const trainers = await wallets(tasks);
    f.signers = [...f.signers, ...trainers];
    for (const t of trainers) await f.jm.connect(t).registerTrainer(0, { value: h.MIN_TRAINER_STAKE });
    const { jobId, p } = await h.createJob(f.jm, f.customer, { tasksPerRound: tasks, quorum: 1, rounds: 1 });
    await f.jm.connect(f.l1).standForLeader(jobId, { value: h.MIN_LEADER_BOND });
    for (const [i, t] of trainers.entries()) await h.submit(f, jobId, t, i);
    return { ...f, trainers, jobId, p, tasks };
  }

  it("commits a round of 64 accepted updates, and pays one", async function () {
    const f = await loadFixture(fullRoundFixture);
    const { jm, jobId, trainers } = f;
    await mine(h.DRAW_DELAY);
    for (const i of trainers.keys()) {
      await jm.drawValidators(jobId, 0, i);
      const [v] = (await jm.getUpdate(jobId, 0, i)).panel;
      await jm.connect(h.signerOf(f, v)).validateUpdate(jobId, 0, i, true);
    }
    report("commitRound, 64 accepted", await gasOf(h.commit(f, jobId)));
    report("payout, 64 accepted", await gasOf(jm.payout(jobId, 0)));
  });

  it("cancels a job with a full round of pending updates", async function () {
    const f = await loadFixture(fullRoundFixture);
    const { jm, jobId, customer } = f;
    await mine(h.DRAW_DELAY);
    for (const i of f.trainers.keys()) await jm.drawValidators(jobId, 0, i); // panels drawn, votes open
    await jm.connect(f.l1).requestDeregistration(); // the leader leaves: lease and grace pass
    const { time } = require("@nomicfoundation/hardhat-toolbox/network-helpers");
    await time.increase(2 * h.LEASE + 1);
    report("cancelJob, 64 pending", await gasOf(jm.connect(customer).cancelJob(jobId)));
  });

  it("draws and settles a first panel of 15 and an escalation panel of 63", async function () {
    const f = await loadFixture(h.registeredFixture);
    const { jm, customer, l1, t1 } = f;
    const extra = await wallets(60);
    f.signers = [...f.signers, ...extra];
    for (const v of extra) await jm.connect(v).registerValidator({ value: h.MIN_VALIDATOR_STAKE });
    const { jobId } = await h.createJob(jm, customer, { quorum: 15 });
    await jm.connect(l1).standForLeader(jobId, { value: h.MIN_LEADER_BOND });
    await h.submit(f, jobId, t1, 0);
    await mine(h.DRAW_DELAY);
    report("drawValidators, quorum 15", await gasOf(jm.drawValidators(jobId, 0, 0)));
    const panel = (await jm.getUpdate(jobId, 0, 0)).panel.map((a) => h.signerOf(f, a));
    for (const v of panel.slice(0, 14)) await jm.connect(v).validateUpdate(jobId, 0, 0, true);
    report("validateUpdate, deciding vote of 15", await gasOf(jm.connect(panel[14]).validateUpdate(jobId, 0, 0, true)));

    await h.submit(f, jobId, f.t2, 1);
    await mine(h.DRAW_DELAY);
    await jm.drawValidators(jobId, 0, 1);
    const first = (await jm.getUpdate(jobId, 0, 1)).panel.map((a) => h.signerOf(f, a));
    for (const v of first.slice(0, 7)) await jm.connect(v).validateUpdate(jobId, 0, 1, false);
    await jm.connect(first[7]).validateUpdate(jobId, 0, 1, true); // split: escalate
    await mine(h.DRAW_DELAY);
    report("drawValidators, escalation of 63", await gasOf(jm.drawValidators(jobId, 0, 1)));
    const esc = (await jm.getUpdate(jobId, 0, 1)).escalationPanel.map((a) => h.signerOf(f, a));
    expect(esc).to.have.length(63);
    // 31 vote valid (losers), then invalid votes until more than half the stake: the settlement slashes 31 + 1.
    for (const v of esc.slice(0, 31)) await jm.connect(v).validateUpdate(jobId, 0, 1, true);
    let gas = 0n;
    for (const v of esc.slice(31)) {
      if ((await jm.getUpdate(jobId, 0, 1)).status !== h.Status.Pending) break;
      gas = await gasOf(jm.connect(v).validateUpdate(jobId, 0, 1, false));
    }
    report("validateUpdate, settling an escalation of 63", gas);
    expect((await jm.getUpdate(jobId, 0, 1)).status).to.equal(h.Status.Rejected);
  });
});
