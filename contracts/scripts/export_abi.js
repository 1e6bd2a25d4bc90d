// Exports JobManager's ABI and bytecode from the Hardhat build for the Python chain adapter.
//
//   npx hardhat run scripts/export_abi.js        (compiles first)
//   ABI_OUT=/path/JobManager.json npx hardhat run scripts/export_abi.js
//
// The ABI is IJobManager's (the whole surface: JobManager's own functions and those its fallback delegates to
// JobManagerExtension) plus JobManager's constructor and fallback; the bytecode is JobManager's (its constructor
// deploys the extension) and viewsBytecode JobManagerViews' (deployed first; its address is the constructor's last
// argument). sourceHash is the sha256 of
// contracts/JobManager.sol (kept for the Python staleness test); sourceHashes covers every source file.
const fs = require("fs");
const path = require("path");
const crypto = require("crypto");
const hre = require("hardhat");

const DEFAULT_OUT = path.join(__dirname, "..", "..", "protocols", "chain", "abi", "JobManager.json");

async function main() {
  await hre.run("compile", { quiet: true });
  const artifact = await hre.artifacts.readArtifact("JobManager");
  const surface = await hre.artifacts.readArtifact("IJobManager");
  const views = await hre.artifacts.readArtifact("JobManagerViews");
  const own = artifact.abi.filter((e) => e.type === "constructor" || e.type === "fallback");
  const abi = [...own, ...surface.abi];
  const sha = (file) => crypto.createHash("sha256").update(fs.readFileSync(file)).digest("hex");
  const sourceHash = sha(path.join(hre.config.paths.sources, "JobManager.sol"));
  const sourceHashes = {};
  for (const name of ["IJobManager.sol", "JobManager.sol", "JobManagerExtension.sol", "JobManagerLib.sol", "JobManagerState.sol", "JobManagerVotes.sol", "JobManagerViews.sol"]) {
    sourceHashes[name] = sha(path.join(hre.config.paths.sources, name));
  }
  const out = process.env.ABI_OUT || DEFAULT_OUT;
  const exported = {
    contractName: artifact.contractName,
    abi,
    bytecode: artifact.bytecode,
    deployedBytecode: artifact.deployedBytecode,
    viewsBytecode: views.bytecode,
    solcVersion: hre.config.solidity.compilers[0].version,
    sourceHash,
    sourceHashes,
  };
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify(exported, null, 2) + "\n");
  console.log(`wrote ${out} (sourceHash ${sourceHash})`);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
