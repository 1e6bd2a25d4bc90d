// One-shot deployer for the compose network: deploy JobManager unless the chain already has it, then write the
// dtnode config fragment every node reads with `--config $NETWORK_DIR/network.toml`.
//
//   cd contracts && HARDHAT_NETWORK=localhost HARDHAT_RPC_URL=http://chain:8545 NETWORK_DIR=/network \
//     node ../docker/chain/deploy_once.js
//
// Idempotent: when network.toml names an address that has code on the chain, nothing is deployed (a restarted
// compose stack keeps its contract; a fresh Hardhat node, whose state lives in memory, gets a new one).
// The deployment itself is the project's scripts/deploy_contract.js (same constructor arguments and env:
// MIN_TRAINER_STAKE, MIN_VALIDATOR_STAKE, SLASH_AMOUNT, DEREGISTRATION_DELAY); its record goes to
// $NETWORK_DIR/deployment.json. The deploying account is the node's first unlocked account: on a Hardhat node that
// is PUBLIC dev account 0, which is only acceptable on a throwaway local chain.
//
// Plain `node` (not `hardhat run`, which forks a second process): Hardhat is loaded from the project in the
// working directory and picks its network from HARDHAT_NETWORK. The contracts must already be compiled.
const fs = require("fs");
const path = require("path");
const { execFileSync } = require("child_process");

process.env.HARDHAT_NETWORK = process.env.HARDHAT_NETWORK || "localhost";
const hre = require(require.resolve("hardhat", { paths: [process.cwd()] }));

const NETWORK_DIR = process.env.NETWORK_DIR || "/network";
const TOML = path.join(NETWORK_DIR, "network.toml");
const DEPLOYMENT = path.join(NETWORK_DIR, "deployment.json");

function recordedAddress() {
  if (!fs.existsSync(TOML)) return null;
  const m = fs.readFileSync(TOML, "utf8").match(/^contract_address\s*=\s*"(0x[0-9a-fA-F]{40})"/m);
  return m ? m[1] : null;
}

function writeAtomic(file, text) {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, text, { mode: 0o644 });
  fs.renameSync(tmp, file);
}

async function main() {
  fs.mkdirSync(NETWORK_DIR, { recursive: true });
  const { ethers, network } = hre;
  const { chainId } = await ethers.provider.getNetwork();
  const known = recordedAddress();
  if (known && (await ethers.provider.getCode(known)) !== "0x") {
    console.log(`JobManager already deployed at ${known} (chainId ${chainId}); ${TOML} unchanged`);
    return;
  }
  execFileSync(process.execPath, [path.join("scripts", "deploy_contract.js")], {
    cwd: hre.config.paths.root,
    env: { ...process.env, HARDHAT_NETWORK: network.name, DEPLOYMENT_OUT: DEPLOYMENT },
    stdio: "inherit",
  });
  const record = JSON.parse(fs.readFileSync(DEPLOYMENT, "utf8"));
  if (!/^0x[0-9a-fA-F]{40}$/.test(record.address)) throw new Error(`bad address in ${DEPLOYMENT}: ${record.address}`);
  writeAtomic(
    TOML,
    [
      "# Written by docker/chain/deploy_once.js: the JobManager this compose network uses.",
      `# chainId ${record.chainId}, deployed by ${record.deployer} in block ${record.blockNumber} (tx ${record.txHash})`,
      `contract_address = "${record.address}"`,
      "",
    ].join("\n"),
  );
  console.log(`wrote ${TOML}: contract_address = ${record.address}`);
}

main().catch((err) => {
  console.error(err.shortMessage || err.message || err);
  process.exitCode = 1;
});
