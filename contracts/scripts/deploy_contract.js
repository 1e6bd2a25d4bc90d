// Deploys JobManager and records where it lives.
//
//   npx hardhat run scripts/deploy_contract.js --network localhost
//
// Environment (all optional): MIN_TRAINER_STAKE, MIN_VALIDATOR_STAKE, MIN_UPDATE_BOND, VALIDATOR_SLASH,
// MIN_LEADER_BOND (wei), DEREGISTRATION_DELAY (seconds), MIN_QUORUM (default 5: at 1/3 of the validator stake a
// fabricated update passes a whole panel with p <= (1/3)^5 = 0.41 %; a 3-validator local chain needs MIN_QUORUM=3),
// DEPLOYMENT_OUT (default deployments/<network>.json).
// Writes {network, chainId, address, abiPath, artifactPath, deployer, blockNumber, txHash, constructorArgs}.
const fs = require("fs");
const path = require("path");
const hre = require("hardhat");

const ABI_PATH = path.resolve(__dirname, "..", "..", "protocols", "chain", "abi", "JobManager.json");

function envWei(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  if (!/^[0-9]+$/.test(raw)) throw new Error(`${name} must be an integer amount of wei, got ${JSON.stringify(raw)}`);
  return BigInt(raw);
}

async function main() {
  const { ethers, network } = hre;
  const args = [
    envWei("MIN_TRAINER_STAKE", ethers.parseEther("0.1")),
    envWei("MIN_VALIDATOR_STAKE", ethers.parseEther("0.1")),
    envWei("MIN_UPDATE_BOND", ethers.parseEther("0.01")),
    envWei("VALIDATOR_SLASH", ethers.parseEther("0.05")),
    envWei("MIN_LEADER_BOND", ethers.parseEther("0.05")),
    envWei("DEREGISTRATION_DELAY", 3600n),
    envWei("MIN_QUORUM", 5n),
  ];
  const [deployer] = await ethers.getSigners();
  // Two transactions: JobManagerViews, then JobManager (its constructor deploys the extension) with the views' address.
  const views = await ethers.deployContract("JobManagerViews", []);
  await views.waitForDeployment();
  const jm = await ethers.deployContract("JobManager", [...args, await views.getAddress()]);
  await jm.waitForDeployment();
  const tx = jm.deploymentTransaction();
  const receipt = await tx.wait();
  const address = await jm.getAddress();
  const { chainId } = await ethers.provider.getNetwork();
  const out = process.env.DEPLOYMENT_OUT || path.join(__dirname, "..", "deployments", `${network.name}.json`);
  const record = {
    network: network.name,
    chainId: Number(chainId),
    address,
    abiPath: ABI_PATH,
    artifactPath: path.resolve(hre.config.paths.artifacts, "contracts", "JobManager.sol", "JobManager.json"),
    deployer: deployer.address,
    blockNumber: receipt.blockNumber,
    txHash: receipt.hash,
    constructorArgs: args.map(String),
  };
  fs.mkdirSync(path.dirname(path.resolve(out)), { recursive: true });
  fs.writeFileSync(out, JSON.stringify(record, null, 2) + "\n");
  console.log(`JobManager deployed at ${address} (chainId ${chainId}); wrote ${out}`);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
