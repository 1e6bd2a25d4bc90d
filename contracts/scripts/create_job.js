// Creates a job on JobManager from a job.json file.
//
//   JOB_SPEC=job.json npx hardhat run scripts/create_job.js --network localhost
//
// (`hardhat run` takes no script arguments, so the file comes from JOB_SPEC; `--jobSpec job.json` is honoured too
// when the script runs under plain `node`.) The contract's address comes from JOB_MANAGER_ADDRESS, else from
// DEPLOYMENT_OUT / deployments/<network>.json written by deploy_contract.js.
//
// job.json (camelCase or snake_case keys; amounts in wei as decimal strings or numbers, or "<x> ether"):
//   { "specCid": "bafy...",  rounds, tasksPerRound, localSteps, maxWorkUnits, quorum, baseRate, bonusRate,
//     validatorFee, leaderFee, leaseSeconds, "deposit": optional (default: requiredDeposit) }
// baseRate and bonusRate are per work unit (see docs/economy.md).
// specCid may be a base32 CIDv1 ("b..."), a base58btc CIDv0 ("Qm..."), or 0x-prefixed hex of the CID's bytes.
// Prints the job id and writes it with the tx hash as JSON to stdout's last line.
const fs = require("fs");
const path = require("path");
const hre = require("hardhat");

const B32 = "abcdefghijklmnopqrstuvwxyz234567";
const B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

function base32Decode(s) {
  let bits = 0;
  let value = 0;
  const out = [];
  for (const ch of s.toLowerCase()) {
    const v = B32.indexOf(ch);
    if (v < 0) throw new Error(`invalid base32 character ${JSON.stringify(ch)} in CID`);
    value = (value << 5) | v;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Uint8Array.from(out);
}

function base58Decode(s) {
  let n = 0n;
  for (const ch of s) {
    const v = B58.indexOf(ch);
    if (v < 0) throw new Error(`invalid base58 character ${JSON.stringify(ch)} in CID`);
    n = n * 58n + BigInt(v);
  }
  const bytes = [];
  while (n > 0n) {
    bytes.unshift(Number(n & 0xffn));
    n >>= 8n;
  }
  for (const ch of s) {
    if (ch !== "1") break;
    bytes.unshift(0);
  }
  return Uint8Array.from(bytes);
}

/** The raw bytes of a CID given as text (multibase base32 'b', CIDv0 'Qm', or 0x-hex). */
function cidBytes(text) {
  if (typeof text !== "string" || text.length === 0) throw new Error("specCid must be a non-empty string");
  if (text.startsWith("0x")) return hre.ethers.getBytes(text);
  if (text.startsWith("Qm")) return base58Decode(text);
  if (text.startsWith("b")) return base32Decode(text.slice(1));
  throw new Error(`unsupported CID encoding ${JSON.stringify(text)} (expected base32 "b...", "Qm..." or 0x hex)`);
}

function field(spec, camel) {
  const snake = camel.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
  return spec[camel] ?? spec[snake];
}

function wei(spec, name, { required = true } = {}) {
  const v = field(spec, name);
  if (v === undefined || v === null) {
    if (required) throw new Error(`job spec lacks ${name}`);
    return undefined;
  }
  const s = String(v).trim();
  const m = s.match(/^([0-9.]+)\s*ether$/);
  if (m) return hre.ethers.parseEther(m[1]);
  if (!/^[0-9]+$/.test(s)) throw new Error(`${name} must be an integer amount of wei or "<x> ether", got ${s}`);
  return BigInt(s);
}

function int(spec, name) {
  const v = field(spec, name);
  if (!Number.isInteger(Number(v))) throw new Error(`job spec's ${name} must be an integer, got ${JSON.stringify(v)}`);
  return Number(v);
}

function specPath() {
  const i = process.argv.indexOf("--jobSpec");
  if (i >= 0 && process.argv[i + 1]) return process.argv[i + 1];
  if (process.env.JOB_SPEC) return process.env.JOB_SPEC;
  throw new Error("no job spec: set JOB_SPEC=job.json (hardhat run takes no script arguments)");
}

function contractAddress(network) {
  if (process.env.JOB_MANAGER_ADDRESS) return process.env.JOB_MANAGER_ADDRESS;
  const file = process.env.DEPLOYMENT_OUT || path.join(__dirname, "..", "deployments", `${network}.json`);
  if (!fs.existsSync(file)) throw new Error(`no JOB_MANAGER_ADDRESS and no ${file}: run scripts/deploy_contract.js first`);
  return JSON.parse(fs.readFileSync(file, "utf8")).address;
}

async function main() {
  const { ethers, network } = hre;
  const spec = JSON.parse(fs.readFileSync(specPath(), "utf8"));
  const params = {
    specCid: cidBytes(field(spec, "specCid")),
    rounds: int(spec, "rounds"),
    tasksPerRound: int(spec, "tasksPerRound"),
    localSteps: int(spec, "localSteps"),
    maxWorkUnits: int(spec, "maxWorkUnits"),
    quorum: int(spec, "quorum"),
    baseRate: wei(spec, "baseRate"),
    bonusRate: wei(spec, "bonusRate"),
    validatorFee: wei(spec, "validatorFee"),
    leaderFee: wei(spec, "leaderFee"),
    leaseSeconds: int(spec, "leaseSeconds"),
  };
  const jm = await ethers.getContractAt("IJobManager", contractAddress(network.name));
  const required = await jm.requiredDeposit(params);
  const deposit = wei(spec, "deposit", { required: false }) ?? required;
  const tx = await jm.createJob(params, { value: deposit });
  const receipt = await tx.wait();
  const created = receipt.logs
    .map((l) => {
      try {
        return jm.interface.parseLog(l);
      } catch {
        return null;
      }
    })
    .find((e) => e && e.name === "JobCreated");
  console.log(`created job ${created.args.jobId} with deposit ${deposit} wei (required ${required})`);
  console.log(JSON.stringify({ jobId: Number(created.args.jobId), txHash: receipt.hash, deposit: String(deposit) }));
}

main().catch((err) => {
  console.error(err.shortMessage || err.message || err);
  process.exitCode = 1;
});
