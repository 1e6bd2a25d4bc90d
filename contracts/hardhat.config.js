// Hardhat 2 configuration for the JobManager project.
//
// Everything here must work OFFLINE: the machine that builds dtnode reaches npm but not the solc download
// mirror, so the compiler comes from the npm `solc` package (solc-js) pinned in package.json, and the gas
// reporter never asks a price API.
require("@nomicfoundation/hardhat-toolbox");
const { subtask } = require("hardhat/config");
const { TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD } = require("hardhat/builtin-tasks/task-names");

const SOLC_VERSION = "0.8.28";

// Without this override Hardhat tries to download the compiler list and fails with HH502.
subtask(TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD, async (args, hre, runSuper) => {
  if (args.solcVersion !== SOLC_VERSION) {
    return runSuper();
  }
  const solc = require("solc");
  return {
    compilerPath: require.resolve("solc/soljson.js"),
    isSolcJs: true,
    version: args.solcVersion,
    longVersion: solc.version(),
  };
});

/** @type import('hardhat/config').HardhatUserConfig */
module.exports = {
  solidity: {
    version: SOLC_VERSION,
    settings: {
      // cancun: the default of solc 0.8.28; Hardhat node (prague) and py-evm 0.12 (eth-tester) both run it.
      evmVersion: "cancun",
      optimizer: { enabled: true, runs: 200 },
    },
  },
  networks: {
    hardhat: { accounts: { count: 40 }, allowBlocksWithSameTimestamp: true },
    localhost: { url: process.env.HARDHAT_RPC_URL || "http://127.0.0.1:8545" },
  },
  gasReporter: {
    enabled: process.env.REPORT_GAS === "true",
    offline: true,
    currency: "USD",
    noColors: true,
    outputFile: process.env.GAS_REPORT_FILE || undefined,
    reportFormat: "markdown",
  },
  mocha: {
    timeout: 60000,
  },
};
