// Shared fixtures and helpers for the JobManager tests.
//
// `jm` is the deployed JobManager seen through IJobManager (the whole surface: the core's functions and those its
// fallback delegates to the extension), so tests call every function, and match every event and error, on it.
const { ethers } = require("hardhat");
const { mine } = require("@nomicfoundation/hardhat-toolbox/network-helpers");

const E = (x) => ethers.parseEther(x);
const MIN_TRAINER_STAKE = E("1");
const MIN_VALIDATOR_STAKE = E("2");
const MIN_UPDATE_BOND = E("0.05");
const VALIDATOR_SLASH = E("0.5");
const MIN_LEADER_BOND = E("0.5");
const DELAY = 3600;
const LEASE = 600;
const DRAW_DELAY = 2;
// The tests' deployments accept any quorum; votes.test.js checks a deployment with the network's floor of 5.
const MIN_QUORUM = 1;

const Status = { None: 0n, Pending: 1n, Accepted: 2n, Rejected: 3n, Expired: 4n };
const Phase = { AwaitingPanel: 0n, Voting: 1n, AwaitingEscalation: 2n, Escalated: 3n };

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
    maxWorkUnits: 10,
    quorum: 3,
    baseRate: E("0.001"),
    bonusRate: E("0.0005"),
    validatorFee: E("0.001"),
    leaderFee: E("0.002"),
    leaseSeconds: LEASE,
    ...overrides,
  };
}

function requiredDeposit(p) {
  const perUpdate =
    BigInt(p.maxWorkUnits) * (BigInt(p.baseRate) + BigInt(p.bonusRate)) + BigInt(p.quorum) * BigInt(p.validatorFee);
  return BigInt(p.rounds) * (BigInt(p.tasksPerRound) * perUpdate + BigInt(p.leaderFee));
}

function updateBond(p) {
  const maxPay = BigInt(p.maxWorkUnits) * (BigInt(p.baseRate) + BigInt(p.bonusRate) * BigInt(p.tasksPerRound));
  const bond = 3n * maxPay;
  return bond > MIN_UPDATE_BOND ? bond : MIN_UPDATE_BOND;
}

async function deploy(args) {
  // Instrumented for coverage, JobManager's constructor (which deploys the extension) outgrows gas estimation.
  const overrides = require("hardhat").__SOLIDITY_COVERAGE_RUNNING ? { gasLimit: 500_000_000n } : {};
  // Two transactions: the views first (JobManager's initcode cannot hold them too), then JobManager with their address.
  const views = await ethers.deployContract("JobManagerViews", [], overrides);
  await views.waitForDeployment();
  const core = await ethers.deployContract("JobManager", [...args, await views.getAddress()], overrides);
  await core.waitForDeployment();
  return { core, jm: await ethers.getContractAt("IJobManager", await core.getAddress()) };
}

async function deployFixture() {
  const signers = await ethers.getSigners();
  const [owner, customer, l1, l2, l3, t1, t2, t3, t4, v1, v2, v3, v4, v5, outsider] = signers;
  const { core, jm } = await deploy([
    MIN_TRAINER_STAKE,
    MIN_VALIDATOR_STAKE,
    MIN_UPDATE_BOND,
    VALIDATOR_SLASH,
    MIN_LEADER_BOND,
    DELAY,
    MIN_QUORUM,
  ]);
  return { jm, core, signers, owner, customer, l1, l2, l3, t1, t2, t3, t4, v1, v2, v3, v4, v5, outsider };
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

function parse(jm, receipt, name) {
  return receipt.logs
    .map((l) => {
      try {
        return jm.interface.parseLog(l);
      } catch {
        return null;
      }
    })
    .filter((e) => e && e.name === name);
}

async function createJob(jm, customer, overrides = {}, extra = 0n) {
  const p = jobParams(overrides);
  const deposit = requiredDeposit(p) + extra;
  const receipt = await (await jm.connect(customer).createJob(p, { value: deposit })).wait();
  return { jobId: parse(jm, receipt, "JobCreated")[0].args.jobId, p, deposit };
}

// A job with l1 as leader (term 1) and l2 as a second candidate.
async function jobFixture() {
  const f = await registeredFixture();
  const { jobId, p, deposit } = await createJob(f.jm, f.customer);
  await f.jm.connect(f.l1).standForLeader(jobId, { value: MIN_LEADER_BOND });
  await f.jm.connect(f.l2).standForLeader(jobId, { value: MIN_LEADER_BOND });
  return { ...f, jobId, p, deposit };
}

function signerOf(f, address) {
  const s = f.signers.find((x) => x.address === address);
  if (!s) throw new Error(`no signer for ${address}`);
  return s;
}

async function domain(jm) {
  const { chainId } = await ethers.provider.getNetwork();
  return { name: "dtnode JobManager", version: "2", chainId, verifyingContract: await jm.getAddress() };
}

const TICKET_TYPES = {
  Ticket: [
    { name: "jobId", type: "uint256" },
    { name: "round", type: "uint32" },
    { name: "term", type: "uint32" },
    { name: "trainer", type: "address" },
    { name: "slot", type: "uint32" },
    { name: "workUnits", type: "uint32" },
    { name: "expiry", type: "uint64" },
    { name: "taskHash", type: "bytes32" },
  ],
};

const VOTE_TYPES = {
  Vote: [
    { name: "jobId", type: "uint256" },
    { name: "round", type: "uint32" },
    { name: "slot", type: "uint32" },
    { name: "anchorBlock", type: "uint48" },
    { name: "valid", type: "bool" },
  ],
};

// A VoteSet for settleUpdates: `signers[i]` signs vote bit i of `validMask` on the update's draw at `anchorBlock`
// (signers default to the would-be panel, `anchorBlock` to the update's anchor; `dom` overrides the domain).
async function voteSet(f, jobId, round, slot, validMask, opts = {}) {
  const [panel, anchor] = await f.jm.votePanel(jobId, round, slot);
  const signers = opts.signers ?? panel.map((a) => signerOf(f, a));
  const dom = opts.domain ?? (await domain(f.jm));
  const sigs = [];
  for (const [i, s] of signers.entries()) {
    const vote = { jobId, round, slot, anchorBlock: opts.anchorBlock ?? anchor, valid: ((validMask >> i) & 1) === 1 };
    sigs.push(await s.signTypedData(dom, VOTE_TYPES, vote));
  }
  return { slot, validMask, signatures: ethers.concat(sigs.length ? sigs : ["0x"]) };
}

// Submits and settles an update through the fast path: the whole first panel signs "valid", anyone posts it.
async function fastAcceptedUpdate(f, jobId, round, trainer, slot, opts = {}) {
  await submit(f, jobId, trainer, slot, opts);
  await mine(DRAW_DELAY + 1); // a view sees the latest block: the seed block must be mined before votePanel
  const [panel] = await f.jm.votePanel(jobId, round, slot);
  const set = await voteSet(f, jobId, round, slot, (1 << panel.length) - 1);
  await f.jm.settleUpdates(jobId, round, [set]);
  return panel.map((a) => signerOf(f, a));
}

// A ticket for the job's current round and term, signed by `signer` (default: the job's leader).
async function ticket(f, jobId, trainer, slot, opts = {}) {
  const job = await f.jm.getJob(jobId);
  const latest = (await ethers.provider.getBlock("latest")).timestamp;
  const t = {
    jobId,
    round: opts.round ?? job.committedRounds,
    term: opts.term ?? job.term,
    trainer: trainer.address ?? trainer,
    slot,
    workUnits: opts.workUnits ?? 10,
    expiry: opts.expiry ?? latest + 3600,
    taskHash: opts.taskHash ?? ethers.keccak256(ethers.toUtf8Bytes(`task-${jobId}-${slot}`)),
  };
  const signer = opts.signer ?? signerOf(f, job.leader);
  const sig = await signer.signTypedData(await domain(f.jm), TICKET_TYPES, t);
  return { t, sig };
}

// Submits an update of `trainer` in `slot` under a ticket of the current leader.
async function submit(f, jobId, trainer, slot, opts = {}) {
  const { t, sig } = await ticket(f, jobId, trainer, slot, opts);
  return f.jm.connect(trainer).submitUpdate(t, opts.cid ?? cid(`u-${jobId}-${t.round}-${slot}`), opts.loss ?? 1000n, sig);
}

// Mines past the draw delay and draws the panel of the update's current phase; returns it as signers.
async function draw(f, jobId, round, slot) {
  await mine(DRAW_DELAY);
  await f.jm.drawValidators(jobId, round, slot);
  let u = await f.jm.getUpdate(jobId, round, slot);
  if (u.phase === Phase.AwaitingPanel || u.phase === Phase.AwaitingEscalation) {
    // Re-anchored (the pool changed since the anchor): draw from the new anchor.
    await mine(DRAW_DELAY);
    await f.jm.drawValidators(jobId, round, slot);
    u = await f.jm.getUpdate(jobId, round, slot);
  }
  const list = u.phase === Phase.Escalated ? u.escalationPanel : u.panel;
  return list.map((a) => signerOf(f, a));
}

// Submits, draws and gets the whole first panel to vote valid: an accepted update.
async function acceptedUpdate(f, jobId, round, trainer, slot, opts = {}) {
  await submit(f, jobId, trainer, slot, opts);
  const panel = await draw(f, jobId, round, slot);
  for (const v of panel) await f.jm.connect(v).validateUpdate(jobId, round, slot, true);
  return panel;
}

// The leader commits the current round with exactly its accepted set.
async function commit(f, jobId, tag = "ckpt") {
  const job = await f.jm.getJob(jobId);
  const round = job.committedRounds;
  const r = await f.jm.getRound(jobId, round);
  return f.jm.connect(signerOf(f, job.leader)).commitRound(jobId, round, cid(`${tag}-${jobId}-${round}`), r.acceptedMask);
}

// Pins the next block's timestamp (automining under coverage moves with the wall clock) and returns it.
async function nextTimestamp() {
  const { time } = require("@nomicfoundation/hardhat-toolbox/network-helpers");
  const t = (await time.latest()) + 5;
  await time.setNextBlockTimestamp(t);
  return t;
}

module.exports = {
  E,
  MIN_TRAINER_STAKE,
  MIN_VALIDATOR_STAKE,
  MIN_UPDATE_BOND,
  VALIDATOR_SLASH,
  MIN_LEADER_BOND,
  DELAY,
  MIN_QUORUM,
  LEASE,
  DRAW_DELAY,
  Status,
  Phase,
  TICKET_TYPES,
  VOTE_TYPES,
  voteSet,
  fastAcceptedUpdate,
  cid,
  jobParams,
  requiredDeposit,
  updateBond,
  deploy,
  deployFixture,
  registeredFixture,
  createJob,
  jobFixture,
  signerOf,
  parse,
  domain,
  ticket,
  submit,
  draw,
  acceptedUpdate,
  commit,
  nextTimestamp,
};
