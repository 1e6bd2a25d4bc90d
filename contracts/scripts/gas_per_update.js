// Gas per accepted update: one round of N accepted updates in a running job (submission, verdict, the round's
// commit shared N ways, the round's payout shared N ways), measured on Hardhat's in-process chain, for
//   - the fast path: the first panel signs off-chain, one settleUpdates call settles the whole round (quorum 3, 5);
//   - the on-chain path (contested or silent panels): drawValidators + one validateUpdate per member (quorum 3).
//
//   ./node_modules/.bin/hardhat run scripts/gas_per_update.js          (TRAINERS=4 by default)
//
// Prints a table per scenario; the last line is JSON.
const hre = require("hardhat");
const { mine } = require("@nomicfoundation/hardhat-toolbox/network-helpers");
const h = require("../test/helpers");

async function gas(tx) {
  return (await (await tx).wait()).gasUsed;
}

async function measure(n, quorum, fast) {
  const f = await h.registeredFixture();
  const { jm } = f;
  // Enough validators for a panel of `quorum` (the fixture registers 5).
  for (const v of f.signers.slice(30, 30 + Math.max(0, quorum + 1 - 5))) {
    await jm.connect(v).registerValidator({ value: h.MIN_VALIDATOR_STAKE });
  }
  const trainers = [f.t1, f.t2, f.t3, f.t4, ...f.signers.slice(20, 20 + Math.max(0, n - 4))].slice(0, n);
  for (const t of trainers.slice(4)) await jm.connect(t).registerTrainer(0, { value: h.MIN_TRAINER_STAKE });
  const { jobId } = await h.createJob(jm, f.customer, { tasksPerRound: n, quorum, rounds: 3 });
  await jm.connect(f.l1).standForLeader(jobId, { value: h.MIN_LEADER_BOND });
  const steps = fast
    ? { submitUpdate: 0n, settleUpdates: 0n, commitRound: 0n, payout: 0n }
    : { submitUpdate: 0n, drawValidators: 0n, validateUpdate: 0n, commitRound: 0n, payout: 0n };
  // Round 0 warms storage the way a running job has it (balances, pool); round 1 is measured.
  for (const round of [0, 1]) {
    const measured = round === 1;
    const add = (k, g) => {
      if (measured) steps[k] += g;
    };
    for (const [slot, t] of trainers.entries()) add("submitUpdate", await gas(h.submit(f, jobId, t, slot)));
    await mine(h.DRAW_DELAY + 1);
    if (fast) {
      const sets = [];
      for (const slot of trainers.keys()) sets.push(await h.voteSet(f, jobId, round, slot, (1 << quorum) - 1));
      add("settleUpdates", await gas(jm.settleUpdates(jobId, round, sets)));
    } else {
      for (const slot of trainers.keys()) {
        add("drawValidators", await gas(jm.drawValidators(jobId, round, slot)));
        const { panel } = await jm.getUpdate(jobId, round, slot);
        for (const v of panel) {
          add("validateUpdate", await gas(jm.connect(h.signerOf(f, v)).validateUpdate(jobId, round, slot, true)));
        }
      }
    }
    add("commitRound", await gas(h.commit(f, jobId)));
    add("payout", await gas(jm.payout(jobId, round)));
  }
  const perUpdate = Object.fromEntries(Object.entries(steps).map(([k, v]) => [k, Number(v / BigInt(n))]));
  const total = Object.values(perUpdate).reduce((a, b) => a + b, 0);
  return { path: fast ? "fast" : "on-chain", quorum, updatesPerRound: n, perUpdate, total };
}

async function main() {
  const n = Number(process.env.TRAINERS || 4);
  const results = [await measure(n, 3, true), await measure(n, 5, true), await measure(n, 3, false)];
  for (const r of results) {
    console.log(`\n${r.path} path, quorum ${r.quorum}, ${n} accepted updates per round (round 1 of a running job)`);
    console.log("| step | gas per accepted update |");
    console.log("|---|---:|");
    for (const [k, v] of Object.entries(r.perUpdate)) {
      const note =
        { settleUpdates: ` (1/${n} of one call)`, commitRound: ` (1/${n})`, payout: ` (1/${n} of one call)`, validateUpdate: ` (x${r.quorum})` }[k] ?? "";
      console.log(`| ${k}${note} | ${v.toLocaleString("en-US")} |`);
    }
    console.log(`| **total** | **${r.total.toLocaleString("en-US")}** |`);
  }
  console.log(JSON.stringify(results));
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
