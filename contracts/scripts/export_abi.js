// Exports JobManager's ABI and bytecode from the Hardhat build for the Python chain adapter.
//
//   npx hardhat run scripts/export_abi.js        (compiles first)
//   ABI_OUT=/path/JobManager.json npx hardhat run scripts/export_abi.js
//
// The output's sourceHash is the sha256 of contracts/JobManager.sol, so the Python side can fail a test when the
// export is older than the source.
const fs = require("fs");
const path = require("path");
const crypto = require("crypto");
const hre = require("hardhat");

const DEFAULT_OUT = path.join(__dirname, "..", "..", "protocols", "chain", "abi", "JobManager.json");

async function main() {
  await hre.run("compile", { quiet: true });
  const artifact = await hre.artifacts.readArtifact("JobManager");
  const sourcePath = path.join(hre.config.paths.sources, "JobManager.sol");
  const sourceHash = crypto.createHash("sha256").update(fs.readFileSync(sourcePath)).digest("hex");
  const out = process.env.ABI_OUT || DEFAULT_OUT;
  const exported = {
    contractName: artifact.contractName,
    abi: artifact.abi,
    bytecode: artifact.bytecode,
    deployedBytecode: artifact.deployedBytecode,
    solcVersion: hre.config.solidity.compilers[0].version,
    sourceHash,
  };
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify(exported, null, 2) + "\n");
  console.log(`wrote ${out} (sourceHash ${sourceHash})`);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
