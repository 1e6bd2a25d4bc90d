// Gas per accepted update at quorum 3: one round of N accepted updates (submission, panel draw, three votes, the
// round's commit shared N ways, payout), measured on Hardhat's in-process chain.
//
//   ./node_modules/.bin/hardhat run scripts/gas_per_update.js          (TRAINERS=4 by default)
//
// Prints a table per step and the total per accepted update; the last line is JSON.
const hre = require("hardhat");
const { mine } = require("@nomicfoundation/hardhat-toolbox/network-helpers");
const h = require("../test/helpers");

async function gas(tx) {
  return (await (await tx).wait()).gasUsed;
}

async function main() {
  const n = Number(process.env.TRAINERS || 4);
  const f = await h.registeredFixture();
  const { jm } = f;
  const trainers = [f.t1, f.t2, f.t3, f.t4, ...f.signers.slice(20, 20 + Math.max(0, n - 4))].slice(0, n);
  for (const t of trainers.slice(4)) await jm.connect(t).registerTrainer(0, { value: h.MIN_TRAINER_STAKE });
  const { jobId } = await h.createJob(jm, f.customer, { tasksPerRound: n, quorum: 3, rounds: 2 });
  await jm.connect(f.l1).standForLeader(jobId, { value: h.MIN_LEADER_BOND });
  const steps = { submitUpdate: 0n, drawValidators: 0n, validateUpdate: 0n, commitRound: 0n, payout: 0n };
  // Round 0 warms storage the way a running job has it (balances, pool); round 1 is measured.
  for (const round of [0, 1]) {
    const measured = round === 1;
    for (const [slot, t] of trainers.entries()) {
      const g = await gas(h.submit(f, jobId, t, slot));
      if (measured) steps.submitUpdate += g;
    }
    await mine(h.DRAW_DELAY);
    for (const slot of trainers.keys()) {
      const g = await gas(jm.drawValidators(jobId, round, slot));
      if (measured) steps.drawValidators += g;
      const { panel } = await jm.getUpdate(jobId, round, slot);
      for (const v of panel) {
        const gv = await gas(jm.connect(h.signerOf(f, v)).validateUpdate(jobId, round, slot, true));
        if (measured) steps.validateUpdate += gv;
      }
    }
    const gc = await gas(h.commit(f, jobId));
    if (measured) steps.commitRound += gc;
    for (const t of trainers) {
      const gp = await gas(jm.payout(jobId, t.address));
      if (measured) steps.payout += gp;
    }
  }
  let total = 0n;
  console.log(`gas per accepted update, quorum 3, ${n} accepted updates per round (round 1 of a running job)`);
  console.log("| step | gas per update |");
  console.log("|---|---:|");
  for (const [k, v] of Object.entries(steps)) {
    const per = v / BigInt(n);
    total += per;
    console.log(`| ${k}${k === "validateUpdate" ? " (x3)" : ""}${k === "commitRound" ? ` (1/${n})` : ""} | ${per} |`);
  }
  console.log(`| **total** | **${total}** |`);
  console.log(JSON.stringify({ quorum: 3, updatesPerRound: n, perUpdate: Object.fromEntries(Object.entries(steps).map(([k, v]) => [k, Number(v / BigInt(n))])), total: Number(total) }));
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
