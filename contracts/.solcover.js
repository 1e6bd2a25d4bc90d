// solidity-coverage: measure the contracts (the attacker contract is a test fixture). The random invariant run is
// left out: it is a separate check (run it on its own), and with it in the same run the hit counts of later test
// files were lost (measured 2026-12: 91.9 % branches without it, 85.6 % with it, same tests passing).
module.exports = {
  skipFiles: ["test/ReentrantAttacker.sol"],
  mocha: { grep: "invariants over random call sequences", invert: true },
};
