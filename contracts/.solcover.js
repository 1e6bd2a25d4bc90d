// solidity-coverage: measure JobManager only (the attacker contract is a test fixture).
module.exports = {
  skipFiles: ["test/ReentrantAttacker.sol"],
};
