// Shared fixtures and helpers for the JobManager tests.
const { ethers } = require("hardhat");

const E = (x) => ethers.parseEther(x);
const MIN_TRAINER_STAKE = E("1");
const MIN_VALIDATOR_STAKE = E("2");
const SLASH = E("0.4");
const DELAY = 3600;
const LEASE = 600;

// A CIDv1 (raw codec, sha2-256) for a tag: the same 36 bytes a real CID of that content would have.
function cid(tag) {
  return ethers.concat(["0x01551220", ethers.sha256(ethers.toUtf8Bytes(tag))]);
}

function jobParams(overrides = {}) {
  return {
    specCid: cid("spec"),
    rounds: 2,
    tasksPerRound: 4,
    localSteps: 50,
    quorum: 3,
    baseRate: E("0.01"),
    bonusRate: E("0.005"),
    validatorFee: E("0.001"),
    leaderFee: E("0.002"),
    leaseSeconds: LEASE,
    ...overrides,
  };
}

function requiredDeposit(p) {
  return (
    BigInt(p.rounds) *
    (BigInt(p.tasksPerRound) * (BigInt(p.baseRate) + BigInt(p.bonusRate) + BigInt(p.quorum) * BigInt(p.validatorFee)) +
      BigInt(p.leaderFee))
  );
}

async function deployFixture() {
  const signers = await ethers.getSigners();
  const [owner, customer, l1, l2, l3, t1, t2, t3, t4, v1, v2, v3, v4, v5, outsider] = signers;
  const jm = await ethers.deployContract("JobManager", [MIN_TRAINER_STAKE, MIN_VALIDATOR_STAKE, SLASH, DELAY]);
  return { jm, signers, owner, customer, l1, l2, l3, t1, t2, t3, t4, v1, v2, v3, v4, v5, outsider };
}

async function registeredFixture() {
  const f = await deployFixture();
  const { jm } = f;
  for (const [i, t] of [f.t1, f.t2, f.t3, f.t4].entries()) {
    await jm.connect(t).registerTrainer(i % 3, { value: MIN_TRAINER_STAKE });
  }
  for (const v of [f.v1, f.v2, f.v3, f.v4, f.v5]) {
    await jm.connect(v).registerValidator({ value: MIN_VALIDATOR_STAKE });
  }
  // Leader nodes register as trainers so they never enter the validator pool.
  for (const l of [f.l1, f.l2, f.l3]) {
    await jm.connect(l).registerTrainer(1, { value: MIN_TRAINER_STAKE });
  }
  return f;
}

async function createJob(jm, customer, overrides = {}, extra = 0n) {
  const p = jobParams(overrides);
  const deposit = requiredDeposit(p) + extra;
  const tx = await jm.connect(customer).createJob(p, { value: deposit });
  const receipt = await tx.wait();
  const ev = receipt.logs.map((l) => jm.interface.parseLog(l)).find((e) => e && e.name === "JobCreated");
  return { jobId: ev.args.jobId, p, deposit };
}

// A job with l1 as leader (term 1) and l2 as its successor.
async function jobFixture() {
  const f = await registeredFixture();
  const { jobId, p, deposit } = await createJob(f.jm, f.customer);
  await f.jm.connect(f.l1).standForLeader(jobId);
  await f.jm.connect(f.l2).standForLeader(jobId);
  return { ...f, jobId, p, deposit };
}

function signerOf(f, address) {
  const s = f.signers.find((x) => x.address === address);
  if (!s) throw new Error(`no signer for ${address}`);
  return s;
}

// Drawn validators of an update, as signers.
async function drawn(f, jobId, round, trainer) {
  const u = await f.jm.getUpdate(jobId, round, trainer);
  return u.validators.map((a) => signerOf(f, a));
}

// Votes `votes` (array of [isValid, lossReduction]) by the first drawn validators, in order.
async function vote(f, jobId, round, trainer, votes) {
  const vs = await drawn(f, jobId, round, trainer);
  for (const [i, [ok, loss]] of votes.entries()) {
    await f.jm.connect(vs[i]).validateUpdate(jobId, round, trainer, ok, loss);
  }
  return vs;
}

// Submits and gets accepted an update of `trainer` in `round` with the given loss reduction.
async function acceptedUpdate(f, jobId, round, trainer, loss = 1000n) {
  await f.jm.connect(trainer).submitUpdate(jobId, round, cid(`u-${jobId}-${round}-${trainer.address}`));
  const vs = await drawn(f, jobId, round, trainer.address);
  const majority = Math.floor(vs.length / 2) + 1;
  for (let i = 0; i < majority; i++) {
    await f.jm.connect(vs[i]).validateUpdate(jobId, round, trainer.address, true, loss);
  }
  return vs;
}

// Pins the next block's timestamp (automining under coverage moves with the wall clock) and returns it.
async function nextTimestamp() {
  const { time } = require("@nomicfoundation/hardhat-toolbox/network-helpers");
  const t = (await time.latest()) + 5;
  await time.setNextBlockTimestamp(t);
  return t;
}

module.exports = {
  nextTimestamp,
  E,
  MIN_TRAINER_STAKE,
  MIN_VALIDATOR_STAKE,
  SLASH,
  DELAY,
  LEASE,
  cid,
  jobParams,
  requiredDeposit,
  deployFixture,
  registeredFixture,
  createJob,
  jobFixture,
  signerOf,
  drawn,
  vote,
  acceptedUpdate,
};
