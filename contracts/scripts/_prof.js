const hre = require("hardhat");
const { mine } = require("@nomicfoundation/hardhat-toolbox/network-helpers");
const h = require("/work/econ2/contracts/test/helpers");
async function main() {
  const f = await h.registeredFixture();
  const { jm } = f;
  const trainers = [f.t1, f.t2, f.t3, f.t4];
  const { jobId } = await h.createJob(jm, f.customer, { tasksPerRound: 4, quorum: 3, rounds: 3, validatorFee: 0n });
  await jm.connect(f.l1).standForLeader(jobId, { value: h.MIN_LEADER_BOND });
  for (const [slot, t] of trainers.entries()) await h.submit(f, jobId, t, slot);
  await mine(3);
  const sets = [];
  for (const slot of [0,1,2,3]) sets.push(await h.voteSet(f, jobId, 0, slot, 7));
  console.log("empty batch", await jm.settleUpdates.estimateGas(jobId, 0, []));
  for (const k of [1,2,3,4]) console.log(k, await jm.settleUpdates.estimateGas(jobId, 0, sets.slice(0,k)));
}
main();
